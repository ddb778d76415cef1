//! `veche plugin new`: a plugin crate to start from, outside the node's workspace.
//!
//! The crate depends on the SDK (`plugin-api/` of a Veche checkout) by path, builds its
//! component with a plain `cargo build` (its `.cargo/config.toml` targets wasm32-wasip2), and
//! holds a symbolic link to the built component next to its `plugin.toml`: installed from that
//! folder on a node in dev mode, every `cargo build` reloads it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::plugins::manifest::valid_id;

/// The role a new plugin plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Role {
    /// Answers messages in the discussions it belongs to.
    Bot,
    /// Tells the node who may see an object's discussion and how the object looks.
    Context,
    /// Keeps files' contents.
    Storage,
}

/// What `plugin new` made.
#[derive(Debug)]
pub(crate) struct Created {
    pub(crate) folder: PathBuf,
    pub(crate) sdk: PathBuf,
    pub(crate) component: String,
}

/// Creates the crate `name` in `parent`, with the SDK at `sdk` (detected when `None`).
pub(crate) fn create(
    name: &str,
    role: Role,
    parent: &Path,
    sdk: Option<&Path>,
) -> anyhow::Result<Created> {
    // The name is the plugin's id, the crate's name and its bot's login: one word.
    if !valid_id(name) || name.contains('.') || !name.starts_with(|c: char| c.is_ascii_lowercase())
    {
        bail!(
            "{name:?} is not a plugin name: a-z, 0-9 and '-', starting with a letter, at most 64 \
             characters"
        );
    }
    let sdk = find_sdk(sdk)?;
    let folder = parent.join(name);
    if folder.exists() {
        bail!("{} already exists", folder.display());
    }
    let lib = name.replace('-', "_");
    let component = format!("{lib}.wasm");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{lib}}", &lib)
            .replace("{{component}}", &component)
            .replace("{{sdk}}", &toml_string(&sdk.display().to_string()))
    };
    let (manifest, code, test, test_file, grant) = match role {
        Role::Bot => (BOT_MANIFEST, BOT_LIB, BOT_TEST, "bot.rs", ""),
        Role::Context => (
            CONTEXT_MANIFEST,
            CONTEXT_LIB,
            CONTEXT_TEST,
            "context.rs",
            "",
        ),
        Role::Storage => (
            STORAGE_MANIFEST,
            STORAGE_LIB,
            STORAGE_TEST,
            "storage.rs",
            " --grant filesystem",
        ),
    };
    let files = [
        ("Cargo.toml".to_owned(), fill(CARGO_TOML)),
        (".cargo/config.toml".to_owned(), CARGO_CONFIG.to_owned()),
        (".gitignore".to_owned(), "/target\n".to_owned()),
        ("plugin.toml".to_owned(), fill(manifest)),
        (
            "README.md".to_owned(),
            fill(README).replace("{{grant}}", grant),
        ),
        ("src/lib.rs".to_owned(), fill(code)),
        (format!("tests/{test_file}"), fill(test)),
    ];
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    for (path, text) in &files {
        let path = folder.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // The component as `cargo build` leaves it, where plugin.toml names it.
    let built = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::path::absolute(PathBuf::from(dir))?,
        None => PathBuf::from("target"),
    }
    .join("wasm32-wasip2")
    .join("debug")
    .join(&component);
    symlink(&built, &folder.join(&component))?;
    Ok(Created {
        folder,
        sdk,
        component,
    })
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} to {}", link.display(), target.display()))
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> anyhow::Result<()> {
    bail!(
        "symbolic links need a Unix system here: copy {} to {} after each build",
        target.display(),
        link.display()
    )
}

/// The SDK crate's folder: `given` (the SDK itself or a checkout holding `plugin-api/`), else
/// the checkout around the current folder, else the checkout this `veche` was built from.
fn find_sdk(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let is_sdk = |dir: &Path| {
        std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|t| t.contains("name = \"veche-plugin-api\""))
    };
    let resolve = |dir: &Path| -> Option<PathBuf> {
        [dir.to_owned(), dir.join("plugin-api")]
            .into_iter()
            .find(|d| is_sdk(d))
            .and_then(|d| std::path::absolute(d).ok())
    };
    if let Some(given) = given {
        return resolve(given).with_context(|| {
            format!(
                "{} is neither the SDK (plugin-api/ of a Veche checkout) nor a checkout holding it",
                given.display()
            )
        });
    }
    let here = std::env::current_dir()?;
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned);
    here.ancestors()
        .map(Path::to_owned)
        .chain(built_from)
        .find_map(|d| resolve(&d))
        .context(
            "cannot find the plugin SDK: pass --sdk with the path of a Veche checkout (or its \
             plugin-api folder)",
        )
}

/// `s` as a TOML basic string's contents.
fn toml_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

const CARGO_TOML: &str = r#"[package]
name = "{{name}}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
# cdylib: the component; rlib: for the tests in tests/.
crate-type = ["cdylib", "rlib"]

[dependencies]
# The SDK, veche:plugin@0.1, from a Veche checkout.
veche-plugin-api = { path = "{{sdk}}" }

# A workspace of its own, wherever the folder is.
[workspace]
"#;

const CARGO_CONFIG: &str = r#"# `cargo build` builds the component (target/wasm32-wasip2/debug/*.wasm, which the link
# next to plugin.toml points at); `cargo test-native` runs the tests on this machine.
[build]
target = "wasm32-wasip2"

[alias]
test-native = "test --target host-tuple"
"#;

const README: &str = r#"# {{name}}

A Veche plugin. `plugin.toml` says what it is and asks for; `src/lib.rs` is its code, built
against the SDK `veche-plugin-api` (the WIT package `veche:plugin@0.1`).

## Build and test

    cargo build              # the component: target/wasm32-wasip2/debug/{{component}}
    cargo test-native        # the tests in tests/, on this machine

`{{component}}` next to `plugin.toml` is a link to the built component (it points into
`target/`; with `CARGO_TARGET_DIR` set when the crate was made, into that folder).

## Try it on a node

On a node started with `dev_watch = true` under `[plugins]` in its config.toml:

    veche plugin install .{{grant}}
    cargo build              # every build is reloaded within a second
    veche plugin logs {{name}}   # what it logged, and why a reload or a call failed
    veche plugin list            # its status, e.g. `active (reload failed: …)`

A build the node refuses leaves the previous version running.

## Ship it

    cargo build --release

Copy `plugin.toml` and `target/wasm32-wasip2/release/{{component}}` (named `{{component}}`)
into one folder on the other node's machine, then run `veche plugin install FOLDER{{grant}}`
there. `veche plugin uninstall {{name}}` removes it again; what it stored stays unless `--purge`.

See docs/plugins.md in the Veche checkout for every key of `plugin.toml` and what each role
may do.
"#;

const BOT_MANIFEST: &str = r#"schema = 1
id = "{{name}}"
name = "{{name}}"
version = "0.1.0"
api = "veche:plugin@0.1"
component = "{{component}}"

# Its bot user is {{name}}@<node>: add it to a group or write to it to talk to it.
[roles.bot]
# Business event kinds it receives, e.g. ["invoice.posted"].
events = []

[limits]
memory = "16MiB"
cpu-ms = 50
call-timeout-ms = 1000
"#;

const BOT_LIB: &str = r#"//! A bot: answers "ping" with "pong", under the message it answers.

use veche_plugin_api::*;

pub struct Bot;

impl Plugin for Bot {
    fn on_message(_cx: Invocation, msg: Message) -> Result<Vec<BotAction>, PluginError> {
        Ok(answer(&msg).into_iter().collect())
    }
}

/// What the bot says to `msg`, if anything.
pub fn answer(msg: &Message) -> Option<BotAction> {
    if !msg.text.trim().eq_ignore_ascii_case("ping") {
        return None;
    }
    let mut post = Post::to_discussion(msg.discussion.clone(), "pong");
    post.reply_to = Some(msg.id.clone());
    Some(BotAction::PostMessage(post))
}

register_plugin!(Bot);
"#;

const BOT_TEST: &str = r#"use veche_plugin_api::*;
use {{lib}}::Bot;

fn message(text: &str) -> Message {
    Message {
        id: "m1@node.test".into(),
        discussion: "d1@node.test".into(),
        object: None,
        author: "anna@node.test".into(),
        text: text.into(),
        mentions: Vec::new(),
        reply_to: None,
        sent_at_ms: 0,
    }
}

fn cx() -> Invocation {
    Invocation {
        request_id: "r1".into(),
        deadline_ms: 1000,
    }
}

#[test]
fn answers_ping_under_the_message() {
    let actions = Bot::on_message(cx(), message("ping")).unwrap();
    let [BotAction::PostMessage(post)] = actions.as_slice() else {
        panic!("expected one post: {actions:?}");
    };
    assert_eq!(post.text, "pong");
    assert_eq!(post.discussion.as_deref(), Some("d1@node.test"));
    assert_eq!(post.reply_to.as_deref(), Some("m1@node.test"));
}

#[test]
fn keeps_quiet_otherwise() {
    assert!(Bot::on_message(cx(), message("hello")).unwrap().is_empty());
}
"#;

const CONTEXT_MANIFEST: &str = r#"schema = 1
id = "{{name}}"
name = "{{name}}"
version = "0.1.0"
api = "veche:plugin@0.1"
component = "{{component}}"

# The object types it answers for: the discussion of {application}/order/ORD-1 asks it who may
# read and write, and how the order looks.
[roles.context-provider]
object-types = ["order"]

[limits]
memory = "16MiB"
cpu-ms = 50
call-timeout-ms = 500
"#;

const CONTEXT_LIB: &str = r#"//! A context provider for "order" objects. Its answers must come from what it knows already:
//! while answering it may read its key-value store but not write or post.

use veche_plugin_api::*;

pub struct Orders;

impl Plugin for Orders {
    fn validate(_cx: Invocation, obj: ObjectRef) -> Result<(), PluginError> {
        if number(&obj.id).is_some() {
            Ok(())
        } else {
            Err(PluginError::NotFound)
        }
    }

    fn render(_cx: Invocation, obj: ObjectRef) -> Result<RenderedObject, PluginError> {
        let n = number(&obj.id).ok_or(PluginError::NotFound)?;
        Ok(RenderedObject {
            title: format!("Order {n}"),
            subtitle: None,
            url: None,
            status: None,
            fields: vec![("Number".into(), n.to_string())],
            cache_ttl_secs: 60,
        })
    }

    fn authorize(
        _cx: Invocation,
        obj: ObjectRef,
        users: Vec<String>,
    ) -> Result<Vec<Access>, PluginError> {
        number(&obj.id).ok_or(PluginError::NotFound)?;
        // One answer per user, in order. Ask your application here (or keep its answers from
        // business events in the key-value store): this one lets everybody write.
        Ok(users.iter().map(|_| Access::Write).collect())
    }
}

/// The order's number: ids look like `ORD-42`.
pub fn number(id: &str) -> Option<u64> {
    id.strip_prefix("ORD-")?.parse().ok()
}

register_plugin!(Orders);
"#;

const CONTEXT_TEST: &str = r#"use veche_plugin_api::*;
use {{lib}}::Orders;

fn cx() -> Invocation {
    Invocation {
        request_id: "r1".into(),
        deadline_ms: 500,
    }
}

fn order(id: &str) -> ObjectRef {
    ObjectRef {
        application: "erp".into(),
        object_type: "order".into(),
        id: id.into(),
    }
}

#[test]
fn an_order_is_shown_with_its_number() {
    let card = Orders::render(cx(), order("ORD-42")).unwrap();
    assert_eq!(card.title, "Order 42");
}

#[test]
fn one_answer_per_user_and_none_for_a_bad_id() {
    let users = vec!["anna@node.test".to_owned(), "boris@node.test".to_owned()];
    assert_eq!(
        Orders::authorize(cx(), order("ORD-1"), users.clone()).unwrap().len(),
        2
    );
    assert!(matches!(
        Orders::validate(cx(), order("INV-1")),
        Err(PluginError::NotFound)
    ));
}
"#;

const STORAGE_MANIFEST: &str = r#"schema = 1
id = "{{name}}"
name = "{{name}}"
version = "0.1.0"
api = "veche:plugin@0.1"
component = "{{component}}"

[roles.storage-backend]

# A folder of its own, pre-opened as `/`: `veche plugin install . --grant filesystem`.
[capabilities]
filesystem = true

[limits]
memory = "32MiB"
cpu-ms = 500
call-timeout-ms = 5000
"#;

const STORAGE_LIB: &str = r#"//! A storage backend: each blob is a file in the plugin's folder (pre-opened as `/`), named
//! by its key in hex so that no key names a path outside it. A blob is written to a temporary
//! file and renamed into place when finished.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use veche_plugin_api::*;

/// Blobs in a folder.
#[derive(Debug, Clone)]
pub struct Folder {
    root: PathBuf,
}

impl Folder {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str, suffix: &str) -> PathBuf {
        let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        self.root.join(format!("{hex}{suffix}"))
    }

    pub fn writer(&self, key: &str) -> Result<Writer, PluginError> {
        if key.is_empty() || key.len() > 512 {
            return Err(PluginError::Invalid("a key is 1 to 512 bytes".into()));
        }
        let tmp = self.path(key, ".tmp");
        Ok(Writer {
            file: Some(File::create(&tmp).map_err(io)?),
            tmp,
            done: self.path(key, ""),
            key: key.to_owned(),
            size: 0,
        })
    }

    pub fn reader(&self, key: &str) -> Result<Reader, PluginError> {
        match File::open(self.path(key, "")) {
            Ok(file) => Ok(Reader { file }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PluginError::NotFound),
            Err(e) => Err(io(e)),
        }
    }

    pub fn stat(&self, key: &str) -> Result<Option<BlobInfo>, PluginError> {
        match std::fs::metadata(self.path(key, "")) {
            Ok(m) => Ok(Some(BlobInfo {
                key: key.to_owned(),
                size: m.len(),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    pub fn delete(&self, key: &str) -> Result<bool, PluginError> {
        match std::fs::remove_file(self.path(key, "")) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(e)),
        }
    }

    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BlobInfo>, PluginError> {
        let mut keys = Vec::new();
        for entry in std::fs::read_dir(&self.root).map_err(io)? {
            let name = entry.map_err(io)?.file_name();
            let Some(key) = name.to_str().and_then(unhex) else {
                continue;
            };
            if key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a) {
                keys.push(key);
            }
        }
        keys.sort();
        keys.truncate(limit as usize);
        keys.iter()
            .filter_map(|k| self.stat(k).transpose())
            .collect()
    }
}

fn unhex(name: &str) -> Option<String> {
    if name.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn io(e: std::io::Error) -> PluginError {
    PluginError::Unavailable(format!("file system: {e}"))
}

/// A blob being written.
#[derive(Debug)]
pub struct Writer {
    file: Option<File>,
    tmp: PathBuf,
    done: PathBuf,
    key: String,
    size: u64,
}

impl BlobWriter for Writer {
    fn write(&mut self, chunk: Vec<u8>) -> Result<(), PluginError> {
        let file = self.file.as_mut().ok_or(PluginError::Invalid("finished".into()))?;
        file.write_all(&chunk).map_err(io)?;
        self.size += chunk.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<BlobInfo, PluginError> {
        let file = self.file.take().ok_or(PluginError::Invalid("finished".into()))?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&self.tmp, &self.done).map_err(io)?;
        Ok(BlobInfo {
            key: self.key.clone(),
            size: self.size,
        })
    }

    fn abort(&mut self) {
        self.file = None;
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// A blob being read.
#[derive(Debug)]
pub struct Reader {
    file: File,
}

impl BlobReader for Reader {
    fn read(&mut self, max_bytes: u32) -> Result<Option<Vec<u8>>, PluginError> {
        let mut buf = vec![0; max_bytes.clamp(1, 1 << 20) as usize];
        let n = self.file.read(&mut buf).map_err(io)?;
        buf.truncate(n);
        Ok((n > 0).then_some(buf))
    }
}

pub struct Store;

/// The plugin's folder, as the node pre-opens it.
fn folder() -> Folder {
    Folder::new("/")
}

impl Plugin for Store {
    fn open_write(_cx: Invocation, key: String) -> Result<Box<dyn BlobWriter>, PluginError> {
        Ok(Box::new(folder().writer(&key)?))
    }

    fn open_read(_cx: Invocation, key: String) -> Result<Box<dyn BlobReader>, PluginError> {
        Ok(Box::new(folder().reader(&key)?))
    }

    fn stat(_cx: Invocation, key: String) -> Result<Option<BlobInfo>, PluginError> {
        folder().stat(&key)
    }

    fn delete(_cx: Invocation, key: String) -> Result<bool, PluginError> {
        folder().delete(&key)
    }

    fn list(
        _cx: Invocation,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> Result<Vec<BlobInfo>, PluginError> {
        folder().list(&prefix, after.as_deref(), limit)
    }
}

register_plugin!(Store);
"#;

const STORAGE_TEST: &str = r#"use veche_plugin_api::{BlobReader, BlobWriter};
use {{lib}}::Folder;

#[test]
fn a_blob_is_read_back_and_listed_by_prefix() {
    let dir = std::env::temp_dir().join(format!("{{name}}-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let folder = Folder::new(&dir);
    let mut w = folder.writer("files/a").unwrap();
    w.write(b"hello ".to_vec()).unwrap();
    w.write(b"world".to_vec()).unwrap();
    assert_eq!(w.finish().unwrap().size, 11);
    let mut r = folder.reader("files/a").unwrap();
    let mut read = Vec::new();
    while let Some(chunk) = r.read(4).unwrap() {
        read.extend(chunk);
    }
    assert_eq!(read, b"hello world");
    let listed: Vec<String> = folder.list("files/", None, 10).unwrap().into_iter().map(|b| b.key).collect();
    assert_eq!(listed, ["files/a"]);
    assert!(folder.delete("files/a").unwrap());
    assert!(folder.stat("files/a").unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}
"#;
