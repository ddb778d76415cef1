//! What a plugin instance sees of the node: the host side of `log`, `config`, `kv` and
//! `messaging`, and a WASI context with nothing in it but what was granted.
//!
//! Host functions never panic and never trust their arguments: sizes are capped, rights are
//! checked again on every call (install already refused a component importing an interface it
//! was not granted), and every call counts against the per-call quota.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Shared;
use super::bindings::veche::plugin::{config, kv, log, messaging, types};
use super::manifest::Manifest;
use veche_store::Store;

/// Bytes of stdout and stderr an instance may write in its life; an instance that used half
/// of it is retired after its call.
pub(crate) const STDERR_CAPACITY: usize = 16 * 1024;
/// Host calls one plugin call may make.
pub(crate) const MAX_HOST_CALLS: u32 = 10_000;
/// Log lines one plugin call may write; more are dropped (and counted).
const MAX_LOG_LINES: usize = 100;
/// Bytes of one log message kept.
const MAX_LOG_BYTES: usize = 4096;
/// Bytes of one key-value key.
const MAX_KV_KEY: usize = 256;
/// Bytes of one key-value value.
const MAX_KV_VALUE: usize = 64 * 1024;
/// Keys one `list-keys` returns at most.
const MAX_KV_LIST: u32 = 1000;

/// Rights the administrator granted, intersected with what the manifest asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Rights {
    pub(crate) kv: bool,
    pub(crate) messaging: bool,
    pub(crate) filesystem: bool,
}

impl Rights {
    pub(crate) fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut r = Rights::default();
        for n in names {
            match n {
                "kv" => r.kv = true,
                "messaging" => r.messaging = true,
                "filesystem" => r.filesystem = true,
                _ => {}
            }
        }
        r
    }

    pub(crate) fn names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.kv {
            v.push("kv");
        }
        if self.messaging {
            v.push("messaging");
        }
        if self.filesystem {
            v.push("filesystem");
        }
        v
    }
}

/// Everything about one installed plugin version that its instances share.
#[derive(Debug)]
pub(crate) struct PluginEnv {
    pub(crate) id: String,
    pub(crate) manifest: Manifest,
    pub(crate) rights: Rights,
    pub(crate) config: BTreeMap<String, String>,
    pub(crate) bot_user: Option<String>,
    pub(crate) store: Store,
    /// The storage backend's own folder.
    pub(crate) folder: Option<std::path::PathBuf>,
    pub(crate) hub: Weak<Shared>,
    /// The node's runtime: database work of host functions runs there, never on the plugin
    /// threads (an idle-class thread must not hold a database connection).
    pub(crate) main: tokio::runtime::Handle,
    /// Posts made through `messaging` in the current minute.
    pub(crate) posts: Mutex<(Instant, u32)>,
    /// CPU the plugin's bot and storage calls used in the current second (epoch ticks), and
    /// how many ticks a second it may use.
    pub(crate) cpu: Mutex<(Instant, u64)>,
    pub(crate) cpu_per_second: u64,
    /// The node's clock, for log lines' times.
    pub(crate) clock: veche_base::SharedClock,
}

/// One log line from a plugin.
#[derive(Debug, Clone)]
pub(crate) struct LogLine {
    pub(crate) at: i64,
    pub(crate) level: &'static str,
    pub(crate) message: String,
    pub(crate) fields: Vec<(String, String)>,
}

/// The data of one store (one instance).
pub(crate) struct HostState {
    pub(crate) env: Arc<PluginEnv>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    /// Epoch ticks this call has run; the budget is `cpu_budget`.
    pub(crate) cpu_ticks: u32,
    pub(crate) cpu_budget: u32,
    pub(crate) host_calls: u32,
    pub(crate) logs: Vec<LogLine>,
    pub(crate) dropped_logs: u32,
    /// Captured stderr and stdout (panic messages end up here); `stderr_seen` bytes of it
    /// were already handed out.
    pub(crate) stderr: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
    pub(crate) stderr_seen: usize,
    /// Context-provider calls answer questions the node asks at any time and caches: they
    /// may read their store but not write it, nor post.
    pub(crate) read_only: bool,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostState")
            .field("plugin", &self.env.id)
            .finish_non_exhaustive()
    }
}

/// The plugin's folder could not be opened for it.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the plugin's folder {}: {source}", .path.display())]
pub(crate) struct FolderError {
    path: std::path::PathBuf,
    source: wasmtime::Error,
}

impl HostState {
    pub(crate) fn new(
        env: Arc<PluginEnv>,
        memory: usize,
        cpu_budget: u32,
    ) -> Result<Self, FolderError> {
        let stderr = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(STDERR_CAPACITY);
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone()).stdout(stderr.clone());
        if let (true, Some(folder)) = (env.rights.filesystem, &env.folder) {
            wasi.preopened_dir(folder, "/", wasmtime_wasi::FsPerms::ReadWrite)
                .map_err(|source| FolderError {
                    path: folder.clone(),
                    source,
                })?;
        }
        let limits = wasmtime::StoreLimitsBuilder::new()
            .memory_size(memory)
            .instances(16)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(10_000);
        Ok(Self {
            env,
            wasi: wasi.build(),
            table,
            limits,
            cpu_ticks: 0,
            cpu_budget,
            host_calls: 0,
            logs: Vec::new(),
            dropped_logs: 0,
            stderr,
            stderr_seen: 0,
            read_only: false,
        })
    }

    /// Prepares a warm instance's state for its next call.
    pub(crate) fn reset_call(&mut self, read_only: bool) {
        self.cpu_ticks = 0;
        self.host_calls = 0;
        self.dropped_logs = 0;
        self.read_only = read_only;
    }

    /// What the instance printed since the last time this was asked.
    pub(crate) fn take_output(&mut self) -> String {
        let bytes = self.stderr.contents();
        let new = bytes.get(self.stderr_seen..).unwrap_or_default();
        self.stderr_seen = bytes.len();
        String::from_utf8_lossy(new).into_owned()
    }

    /// Whether the instance's output buffer is filling up (it is then retired).
    pub(crate) fn output_full(&self) -> bool {
        self.stderr_seen > STDERR_CAPACITY / 2
    }

    /// `None` if the call may write; else the refusal, which also goes to the plugin's log
    /// (the provider's answer may hide it: an `authorize` that fails denies access).
    fn writable(&mut self, what: &str) -> Option<types::PluginError> {
        if !self.read_only {
            return None;
        }
        let why = format!(
            "{what} refused: a context provider may not write or post while answering \
             (authorize, validate, render); keep state from business events or a bot instead"
        );
        if self.logs.len() < MAX_LOG_LINES {
            self.logs.push(LogLine {
                at: self.env.clock.now_ms(),
                level: "warn",
                message: why.clone(),
                fields: Vec::new(),
            });
        }
        Some(types::PluginError::Unavailable(why))
    }

    fn count(&mut self) -> wasmtime::Result<()> {
        self.host_calls += 1;
        if self.host_calls > MAX_HOST_CALLS {
            return Err(wasmtime::Error::msg(format!(
                "the plugin made more than {MAX_HOST_CALLS} host calls in one call"
            )));
        }
        Ok(())
    }
}

impl PluginEnv {
    /// Records `ticks` of CPU used by a call.
    pub(crate) fn charge_cpu(&self, ticks: u32) {
        let mut cpu = self.cpu.lock().unwrap_or_else(|e| e.into_inner());
        if cpu.0.elapsed() >= std::time::Duration::from_secs(1) {
            *cpu = (Instant::now(), 0);
        }
        cpu.1 += u64::from(ticks);
    }

    /// How long to wait before the next call, if the plugin used up its CPU share for this
    /// second.
    pub(crate) fn cpu_wait(&self) -> Option<std::time::Duration> {
        let cpu = self.cpu.lock().unwrap_or_else(|e| e.into_inner());
        let second = std::time::Duration::from_secs(1);
        (cpu.1 >= self.cpu_per_second && cpu.0.elapsed() < second)
            .then(|| second.saturating_sub(cpu.0.elapsed()))
    }

    /// Runs `work` on the node's runtime and waits for it.
    async fn on_main<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, veche_store::StoreError>> + Send + 'static,
    ) -> Result<T, types::PluginError> {
        match self.main.spawn(work).await {
            Ok(r) => r.map_err(storage_failed),
            Err(e) => Err(types::PluginError::Unavailable(format!(
                "the node is stopping: {e}"
            ))),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    async fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        self.count()?;
        if self.logs.len() >= MAX_LOG_LINES {
            self.dropped_logs += 1;
            return Ok(());
        }
        let level = match level {
            log::Level::Trace => "trace",
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        let fields = fields
            .into_iter()
            .take(16)
            .map(|(k, v)| (truncate(k, 64), truncate(v, 512)))
            .collect();
        self.logs.push(LogLine {
            at: self.env.clock.now_ms(),
            level,
            message: truncate(message, MAX_LOG_BYTES),
            fields,
        });
        Ok(())
    }
}

impl config::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        self.count()?;
        Ok(self.env.config.get(&key).cloned())
    }
}

/// A right the plugin was not granted (install refuses components importing such an
/// interface, so this is a second line of defence).
fn denied(right: &str) -> types::PluginError {
    tracing::debug!(right, "plugin used an ungranted right");
    types::PluginError::Unauthorized
}

fn storage_failed(e: impl std::fmt::Display) -> types::PluginError {
    tracing::warn!(error = %e, "plugin key-value storage failed");
    types::PluginError::Unavailable("the node's storage failed; try again".into())
}

impl kv::Host for HostState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, types::PluginError>> {
        self.count()?;
        if !self.env.rights.kv {
            return Ok(Err(denied("kv")));
        }
        let (store, id) = (self.env.store.clone(), self.env.id.clone());
        Ok(self
            .env
            .on_main(async move { store.plugins().kv_get(&id, &key).await })
            .await)
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), types::PluginError>> {
        self.count()?;
        if !self.env.rights.kv {
            return Ok(Err(denied("kv")));
        }
        if let Some(e) = self.writable("kv.set") {
            return Ok(Err(e));
        }
        if key.is_empty() || key.len() > MAX_KV_KEY || key.contains('\0') {
            return Ok(Err(types::PluginError::Invalid(format!(
                "a key is 1 to {MAX_KV_KEY} bytes, without NUL"
            ))));
        }
        if value.len() > MAX_KV_VALUE {
            return Ok(Err(types::PluginError::Invalid(format!(
                "a value is at most {MAX_KV_VALUE} bytes"
            ))));
        }
        let quota = self
            .env
            .manifest
            .capabilities
            .kv
            .as_ref()
            .map_or(0, |k| k.max_bytes.as_u64());
        let (store, id) = (self.env.store.clone(), self.env.id.clone());
        let stored = self
            .env
            .on_main(async move { store.plugins().kv_set(&id, &key, &value, quota).await })
            .await;
        Ok(match stored {
            Ok(true) => Ok(()),
            Ok(false) => Err(types::PluginError::Invalid(format!(
                "the plugin's key-value store is full ({quota} bytes)"
            ))),
            Err(e) => Err(e),
        })
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), types::PluginError>> {
        self.count()?;
        if !self.env.rights.kv {
            return Ok(Err(denied("kv")));
        }
        if let Some(e) = self.writable("kv.delete") {
            return Ok(Err(e));
        }
        let (store, id) = (self.env.store.clone(), self.env.id.clone());
        Ok(self
            .env
            .on_main(async move { store.plugins().kv_delete(&id, &key).await })
            .await)
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<String>, types::PluginError>> {
        self.count()?;
        if !self.env.rights.kv {
            return Ok(Err(denied("kv")));
        }
        if prefix.contains('\0') || after.as_deref().is_some_and(|a| a.contains('\0')) {
            return Ok(Ok(Vec::new()));
        }
        let (store, id) = (self.env.store.clone(), self.env.id.clone());
        let limit = limit.min(MAX_KV_LIST);
        Ok(self
            .env
            .on_main(async move {
                store
                    .plugins()
                    .kv_keys(&id, &prefix, after.as_deref(), limit)
                    .await
            })
            .await)
    }
}

impl messaging::Host for HostState {
    async fn post_message(
        &mut self,
        p: types::Post,
    ) -> wasmtime::Result<Result<String, types::PluginError>> {
        self.count()?;
        if !self.env.rights.messaging {
            return Ok(Err(denied("messaging")));
        }
        if let Some(e) = self.writable("messaging.post") {
            return Ok(Err(e));
        }
        let per_minute = self
            .env
            .manifest
            .capabilities
            .messaging
            .as_ref()
            .map_or(0, |m| m.post_per_minute);
        {
            let mut posts = self.env.posts.lock().unwrap_or_else(|e| e.into_inner());
            if posts.0.elapsed().as_secs() >= 60 {
                *posts = (Instant::now(), 0);
            }
            if posts.1 >= per_minute {
                return Ok(Err(types::PluginError::Unavailable(format!(
                    "the plugin may post {per_minute} messages a minute"
                ))));
            }
            posts.1 += 1;
        }
        let Some(hub) = self.env.hub.upgrade() else {
            return Ok(Err(types::PluginError::Unavailable(
                "the node is stopping".into(),
            )));
        };
        let key = format!("post:{}", uuid::Uuid::now_v7());
        let env = self.env.clone();
        Ok(
            match self
                .env
                .main
                .spawn(async move { hub.post(&env, p, &key).await })
                .await
            {
                Ok(posted) => posted,
                Err(e) => Err(types::PluginError::Unavailable(format!(
                    "the node is stopping: {e}"
                ))),
            },
        )
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}
