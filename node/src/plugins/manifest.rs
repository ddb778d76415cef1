//! `plugin.toml`: what a plugin is, which roles it plays, which rights and limits it asks for.

use std::collections::BTreeMap;

use bytesize::ByteSize;
use serde::Deserialize;

/// The API this node implements: `veche:plugin@0.<API_MINOR>`; plugins built against
/// `0.x` with `API_OLDEST_MINOR` ≤ x ≤ `API_MINOR` load.
pub(crate) const API_PACKAGE: &str = "veche:plugin";
pub(crate) const API_MAJOR: u64 = 0;
pub(crate) const API_MINOR: u64 = 1;
/// The oldest minor version of `API_MAJOR` still loaded (`0.0` never was an API).
pub(crate) const API_OLDEST_MINOR: u64 = 1;

/// Whether a plugin built against `major.minor` loads here.
pub(crate) fn api_supported(major: u64, minor: u64) -> bool {
    major == API_MAJOR && (API_OLDEST_MINOR..=API_MINOR).contains(&minor)
}

/// What a plugin author is told when their plugin's API does not load here.
pub(crate) fn api_advice() -> String {
    format!(
        "this node loads plugins built against {API_PACKAGE}@{API_MAJOR}.{API_OLDEST_MINOR} \
         to {API_MAJOR}.{API_MINOR}: rebuild it with the SDK crate veche-plugin-api \
         {API_MAJOR}.{API_MINOR} (`veche-plugin-api = \"{API_MAJOR}.{API_MINOR}\"` in Cargo.toml)"
    )
}

/// The most memory any plugin may be given, whatever it asks for.
pub(crate) const MAX_MEMORY: u64 = 128 * 1024 * 1024;

/// A parsed and checked `plugin.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Manifest {
    pub(crate) schema: u32,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) version: String,
    /// `veche:plugin@MAJOR.MINOR`, the API the plugin was built against.
    pub(crate) api: String,
    /// The component file, relative to the manifest.
    pub(crate) component: String,
    #[serde(default)]
    pub(crate) roles: Roles,
    #[serde(default)]
    pub(crate) capabilities: Capabilities,
    #[serde(default)]
    pub(crate) limits: Limits,
    /// Default configuration; the installation's own values override it.
    #[serde(default)]
    pub(crate) config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Roles {
    pub(crate) context_provider: Option<ContextRole>,
    pub(crate) bot: Option<BotRole>,
    pub(crate) storage_backend: Option<StorageRole>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ContextRole {
    pub(crate) object_types: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct BotRole {
    /// The bot user's display name (defaults to the plugin's name).
    pub(crate) display_name: Option<String>,
    /// Business event kinds it receives, e.g. `invoice.posted`.
    #[serde(default)]
    pub(crate) events: Vec<String>,
    /// Object types in whose discussions the bot may post (defaults to the types of the
    /// plugin's own context provider).
    #[serde(default)]
    pub(crate) object_types: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct StorageRole {}

/// Rights the plugin asks for. What it gets is this ∩ what the administrator grants.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Capabilities {
    pub(crate) kv: Option<KvCapability>,
    pub(crate) messaging: Option<MessagingCapability>,
    /// A folder of its own (storage backends only).
    pub(crate) filesystem: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct KvCapability {
    #[serde(default = "default_kv_bytes")]
    pub(crate) max_bytes: ByteSize,
}

fn default_kv_bytes() -> ByteSize {
    ByteSize::mib(16)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct MessagingCapability {
    #[serde(default = "default_posts")]
    pub(crate) post_per_minute: u32,
}

fn default_posts() -> u32 {
    60
}

/// Per-call limits the plugin asks for (capped by the node).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub(crate) struct Limits {
    pub(crate) memory: ByteSize,
    /// Pure guest execution per call.
    pub(crate) cpu_ms: u32,
    /// Wall clock per call, host calls included.
    pub(crate) call_timeout_ms: u32,
    pub(crate) max_concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory: ByteSize::mib(32),
            cpu_ms: 100,
            call_timeout_ms: 1000,
            max_concurrency: 4,
        }
    }
}

/// The rights a plugin can be granted.
pub(crate) const RIGHTS: &[&str] = &["kv", "messaging", "filesystem"];

/// Why a manifest is refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("plugin.toml: {0}")]
    Parse(String),
    #[error("plugin.toml: {0}")]
    Invalid(String),
    #[error("the plugin was built against {found}; {}", api_advice())]
    IncompatibleApi { found: String },
}

impl Manifest {
    pub(crate) fn parse(text: &str) -> Result<Self, ManifestError> {
        let m: Manifest = toml::from_str(text).map_err(|e| ManifestError::Parse(e.to_string()))?;
        m.check()?;
        Ok(m)
    }

    fn check(&self) -> Result<(), ManifestError> {
        let invalid = |s: String| Err(ManifestError::Invalid(s));
        if self.schema != 1 {
            return invalid(format!(
                "schema {} is unknown (this node reads 1)",
                self.schema
            ));
        }
        if !valid_id(&self.id) {
            return invalid(format!(
                "id {:?} must be 1 to 64 characters: dot-separated words of a-z, 0-9 and '-', each starting with a letter or digit",
                self.id
            ));
        }
        if self.component.contains('/') || self.component.contains("..") {
            return invalid("component must be a file name next to plugin.toml".into());
        }
        check_api(&self.api)?;
        let r = &self.roles;
        if r.context_provider.is_none() && r.bot.is_none() && r.storage_backend.is_none() {
            return invalid("declares no role ([roles.context-provider], [roles.bot] or [roles.storage-backend])".into());
        }
        if let Some(c) = &r.context_provider
            && c.object_types.is_empty()
        {
            return invalid("[roles.context-provider] serves no object-types".into());
        }
        if self.capabilities.filesystem == Some(true) && r.storage_backend.is_none() {
            return invalid("only a storage backend may ask for a folder (filesystem)".into());
        }
        let l = &self.limits;
        if l.memory.as_u64() > MAX_MEMORY {
            return invalid(format!(
                "limits.memory is over the node's maximum of {}",
                ByteSize(MAX_MEMORY)
            ));
        }
        if l.cpu_ms == 0
            || l.cpu_ms > 10_000
            || l.call_timeout_ms == 0
            || l.call_timeout_ms > 60_000
        {
            return invalid(
                "limits.cpu-ms must be 1..=10000 and limits.call-timeout-ms 1..=60000".into(),
            );
        }
        if l.max_concurrency == 0 || l.max_concurrency > 64 {
            return invalid("limits.max-concurrency must be 1..=64".into());
        }
        Ok(())
    }

    /// The rights the plugin asks for.
    pub(crate) fn requested(&self) -> Vec<&'static str> {
        let c = &self.capabilities;
        let mut rights = Vec::new();
        if c.kv.is_some() {
            rights.push("kv");
        }
        if c.messaging.is_some() {
            rights.push("messaging");
        }
        if c.filesystem == Some(true) {
            rights.push("filesystem");
        }
        rights
    }

    /// The object types the plugin's bot may post about.
    pub(crate) fn bot_object_types(&self) -> Vec<String> {
        match (&self.roles.bot, &self.roles.context_provider) {
            (Some(b), _) if !b.object_types.is_empty() => b.object_types.clone(),
            (Some(_), Some(c)) => c.object_types.clone(),
            _ => Vec::new(),
        }
    }
}

/// Whether `id` may be a plugin's id: 1 to 64 characters, dot-separated words of a-z, 0-9 and
/// '-', each starting with a letter or digit. The id names folders and the bot's login, so `.`
/// and `..` must be impossible.
pub(crate) fn valid_id(id: &str) -> bool {
    let word_ok = |w: &str| {
        w.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    id.len() <= 64 && id.split('.').all(word_ok)
}

/// Checks `veche:plugin@MAJOR.MINOR[.PATCH]` against what this node implements.
pub(crate) fn check_api(api: &str) -> Result<(), ManifestError> {
    let incompatible = || ManifestError::IncompatibleApi {
        found: api.to_owned(),
    };
    let version = api
        .strip_prefix(API_PACKAGE)
        .and_then(|v| v.strip_prefix('@'))
        .ok_or_else(incompatible)?;
    let mut parts = version.split('.').map(str::parse::<u64>);
    let (Some(Ok(major)), Some(Ok(minor))) = (parts.next(), parts.next()) else {
        return Err(incompatible());
    };
    if !api_supported(major, minor) {
        return Err(incompatible());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOT: &str = r#"
schema = 1
id = "approval-bot"
name = "Approvals"
version = "0.1.0"
api = "veche:plugin@0.1"
component = "approval_bot.wasm"
[roles.bot]
events = ["invoice.posted"]
object-types = ["invoice"]
[capabilities]
kv = { max-bytes = "1MiB" }
[limits]
cpu-ms = 50
"#;

    #[test]
    fn a_bot_manifest_parses() {
        let m = Manifest::parse(BOT).unwrap();
        assert_eq!(m.requested(), vec!["kv"]);
        assert_eq!(
            m.capabilities.kv.as_ref().unwrap().max_bytes,
            ByteSize::mib(1)
        );
        assert_eq!(m.limits.cpu_ms, 50);
        assert_eq!(m.limits.call_timeout_ms, 1000);
        assert_eq!(m.bot_object_types(), vec!["invoice".to_owned()]);
    }

    #[test]
    fn api_versions() {
        assert!(check_api("veche:plugin@0.1").is_ok());
        assert!(check_api("veche:plugin@0.1.3").is_ok());
        for bad in [
            "veche:plugin@0.0",
            "veche:plugin@1.0",
            "veche:plugin@0.2",
            "other:plugin@0.1",
            "veche:plugin@x",
        ] {
            let e = check_api(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
            // The range it names is the one that loads, and it says how to get there.
            assert!(e.contains("veche:plugin@0.1 to 0.1"), "{e}");
            assert!(e.contains("veche-plugin-api = \"0.1\""), "{e}");
        }
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let cases = [
            (BOT.replace("schema = 1", "schema = 2"), "schema 2"),
            (BOT.replace("approval-bot\"", "Approval Bot\""), "id"),
            (BOT.replace("id = \"approval-bot\"", "id = \"..\""), "id"),
            (BOT.replace("id = \"approval-bot\"", "id = \"a..b\""), "id"),
            (
                BOT.replace("id = \"approval-bot\"", "id = \".hidden\""),
                "id",
            ),
            (BOT.replace("\"approval-bot\"", "\"..\""), "id"),
            (BOT.replace("\"approval-bot\"", "\"a..b\""), "id"),
            (BOT.replace("\"approval-bot\"", "\".hidden\""), "id"),
            (
                BOT.replace(
                    "[roles.bot]\nevents = [\"invoice.posted\"]\nobject-types = [\"invoice\"]",
                    "",
                ),
                "no role",
            ),
            (
                BOT.replace("cpu-ms = 50", "memory = \"1GiB\""),
                "limits.memory",
            ),
            (
                BOT.replace("cpu-ms = 50", "cpu-ms = 50\nsurprise = 1"),
                "surprise",
            ),
        ];
        for (text, expected) in cases {
            let e = Manifest::parse(&text).unwrap_err().to_string();
            assert!(e.contains(expected), "{expected}: {e}");
        }
    }
}
