//! WASM plugins: context providers for business objects, bots, storage backends.
//!
//! [`Plugins`] owns the wasmtime [`runtime::Runtime`] and the installed plugins. Each
//! installation is one active version ([`Active`]): its manifest, the rights the administrator
//! granted, the compiled component with its warm instances, and a circuit breaker. Replacing a
//! version (reload, dev mode) swaps the `Arc<Active>`; calls in flight finish on the old one.
//!
//! - Object discussions ask [`Plugins::object_access`] through `discussions::authorize`; the
//!   answers are cached for a short TTL and the cache is dropped whenever a plugin changes;
//!   an object's answers are also dropped once a plugin has handled an event about it. A
//!   failing provider denies (fails closed).
//! - Bots are users of kind `bot`. What they are to be told (messages, business events,
//!   button clicks) is written to `plugin_inbox` in the same transaction as its cause; one
//!   dispatcher task per bot delivers it in order, applies the returned actions with the bot's
//!   rights, retries failures with backoff and parks poison items as dead letters.

mod bindings;
mod breaker;
mod host;
pub(crate) mod manifest;
mod runtime;
// The files service (issue 8) is the backend's user in the node; until it lands, tests
// drive the backend through `test_utils`.
#[cfg_attr(not(any(test, feature = "test-utils")), allow(dead_code))]
pub(crate) mod storage;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use veche_base::SharedClock;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use veche_protocol::admin::{DeadLetter, PluginInfo, PluginLogLine};
use veche_protocol::discussions::{Action, ObjectCard, ObjectRef, SendMessage};
use veche_protocol::ids::NodeName;
use veche_protocol::{Reply, Timestamp};

use crate::config::PluginsConfig;
use bindings::exports::veche::plugin::{bot, context_provider};
use bindings::veche::plugin::types as wit;
use breaker::{Admit, Breaker, BreakerConfig};
use host::{PluginEnv, Rights};
use manifest::Manifest;
use runtime::{CallError, Loaded, Runtime};
pub(crate) use veche_core::discussions::access::{
    Access, AccessKey, Decided, InvalidObject, ProviderCache, Providers, Undecided, access_key,
};
use veche_core::discussions::{Caller, Discussions};
pub(crate) use veche_core::inbox::{BotMessage, Click};
use veche_store::{
    AuditRecord, InboxRow, NewBusinessEvent, PluginRow, Recorded, Store, StoreError,
};

/// What an uninstall did.
#[derive(Debug)]
pub(crate) struct Uninstalled {
    pub(crate) purged: bool,
    /// The plugin's folder, if it has or had one.
    pub(crate) folder: Option<String>,
    pub(crate) store: veche_store::Uninstalled,
}

/// Attempts at one inbox item before it is parked as a dead letter.
const MAX_ATTEMPTS: i64 = 5;
/// Actions one bot call may return.
const MAX_ACTIONS: usize = 20;

/// Why a plugin administration command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PluginError {
    #[error("no plugin {0:?} is installed")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The plugin host.
#[derive(Debug, Clone)]
pub(crate) struct Plugins {
    shared: Arc<Shared>,
}

/// One installed plugin as it runs now.
#[derive(Debug)]
pub(crate) struct Active {
    env: Arc<PluginEnv>,
    loaded: Option<Arc<Loaded>>,
    /// Why it could not be loaded at start.
    load_error: Option<String>,
    row: PluginRow,
    breaker: Arc<Mutex<Breaker>>,
    /// Why the last reload from the source folder was refused (this version keeps running).
    reload_error: Mutex<Option<String>>,
    /// Calls, traps and pauses of this plugin.
    metrics: crate::metrics::PluginMetrics,
}

#[derive(Debug)]
pub(crate) struct Shared {
    runtime: Runtime,
    store: Store,
    node: NodeName,
    folder: PathBuf,
    config: PluginsConfig,
    active: RwLock<HashMap<String, Arc<Active>>>,
    /// Bot user id → plugin id.
    bots: RwLock<HashMap<String, String>>,
    /// One per plugin id, kept across versions: wakes its dispatcher.
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    dispatchers: Mutex<HashMap<String, ()>>,
    /// Cleared at shutdown (it refers back to the host).
    /// Where bots' work on discussions goes once the node is serving: a task that owns the
    /// discussions service runs it (see [`Plugins::connect`]). A channel, not a handle, because
    /// the discussions service holds this host: no reference cycle keeps either alive.
    bot_work: Mutex<Option<mpsc::Sender<BotWork>>>,
    /// Log lines on their way to `plugin_logs`.
    logs: tokio::sync::mpsc::Sender<(String, Vec<LogRow>)>,
    /// Administration (install, reload, enable, disable) one at a time.
    admin: tokio::sync::Mutex<()>,
    /// Bumped whenever the caches are dropped: an answer computed before is not cached.
    generation: std::sync::atomic::AtomicU64,
    /// Every installed plugin has been loaded once (compiled artifacts may be pruned).
    loaded_all: std::sync::atomic::AtomicBool,
    access_cache: Mutex<HashMap<AccessKey, (Access, Instant)>>,
    render_cache: Mutex<HashMap<ObjectKeyOwned, (wit::RenderedObject, Instant)>>,
    stop: CancellationToken,
    tasks: TaskTracker,
    clock: SharedClock,
    metrics: crate::metrics::Metrics,
}

/// Application, object type, object id.
type ObjectKeyOwned = (String, String, String);
/// Why the plugin host could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error("cannot read the installed plugins: {0}")]
    Store(#[from] StoreError),
}

/// Why a business event was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EventError {
    #[error("source, kind and idempotency_key are 1 to 128 bytes")]
    Field,
    #[error("an event's payload is at most 64 KiB")]
    TooLarge,
    #[error("the payload is not JSON: {0}")]
    NotJson(serde_json::Error),
}

impl Plugins {
    /// Starts the host and every installed, enabled plugin.
    pub(crate) async fn start(
        store: Store,
        node: NodeName,
        data_dir: &Path,
        config: PluginsConfig,
        clock: SharedClock,
        metrics: crate::metrics::Metrics,
    ) -> Result<Self, StartError> {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (log_tx, log_rx) = tokio::sync::mpsc::channel(1024);
        tasks.spawn(write_logs(store.clone(), log_rx, stop.clone()));
        let folder = data_dir.join("plugins");
        let runtime = Runtime::new(folder.join("cache"))?;
        let plugins = Plugins {
            shared: Arc::new(Shared {
                runtime,
                store: store.clone(),
                node,
                folder,
                config,
                active: RwLock::new(HashMap::new()),
                bots: RwLock::new(HashMap::new()),
                wakers: Mutex::new(HashMap::new()),
                dispatchers: Mutex::new(HashMap::new()),
                bot_work: Mutex::new(None),
                logs: log_tx,
                admin: tokio::sync::Mutex::new(()),
                generation: std::sync::atomic::AtomicU64::new(0),
                loaded_all: std::sync::atomic::AtomicBool::new(false),
                access_cache: Mutex::new(HashMap::new()),
                render_cache: Mutex::new(HashMap::new()),
                stop,
                tasks,
                clock,
                metrics,
            }),
        };
        let rows = store.plugins().list().await?;
        for row in rows {
            let id = row.id.clone();
            match plugins.activate_row(row.clone()).await {
                Ok(()) => tracing::info!(plugin = %id, version = %row.version, "plugin loaded"),
                Err(e) => {
                    tracing::error!(plugin = %id, error = %e, "plugin failed to load");
                    plugins.put_failed(row, e.to_string());
                }
            }
        }
        plugins
            .shared
            .loaded_all
            .store(true, std::sync::atomic::Ordering::Release);
        plugins.prune_artifacts();
        if plugins.shared.config.dev_watch {
            watch::spawn(plugins.clone());
        }
        Ok(plugins)
    }

    /// Removes compiled artifacts of versions no longer current or previous, once every
    /// installed plugin has loaded.
    fn prune_artifacts(&self) {
        if !self
            .shared
            .loaded_all
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        match self.shared.runtime.prune_cache() {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "old compiled plugin artifacts removed"),
            Err(e) => tracing::warn!(error = %e, "cannot remove old compiled plugin artifacts"),
        }
    }

    /// Stops the bot dispatchers and the dev-mode watcher, waiting up to `grace` for calls in
    /// flight.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.shared.stop.cancel();
        self.shared.tasks.close();
        let _ = tokio::time::timeout(grace, self.shared.tasks.wait()).await;
        self.shared.runtime.stop();
        self.shared
            .bot_work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Connects the host to the discussions service (bots post through it) and starts the
    /// bot dispatchers. The task that owns `discussions` ends with [`Plugins::shutdown`] or
    /// with the node's runtime.
    pub(crate) fn connect(&self, discussions: Discussions) {
        let (tx, mut rx) = mpsc::channel::<BotWork>(64);
        let stop = self.shared.stop.clone();
        let tasks = self.shared.tasks.clone();
        self.shared.tasks.spawn(async move {
            loop {
                let work = tokio::select! {
                    () = stop.cancelled() => break,
                    work = rx.recv() => work,
                };
                let Some(work) = work else { break };
                tasks.spawn(work(discussions.clone()));
            }
        });
        *self
            .shared
            .bot_work
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
        for id in self.bot_plugin_ids() {
            self.ensure_dispatcher(&id);
        }
    }

    fn bot_plugin_ids(&self) -> Vec<String> {
        self.shared
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|a| a.env.manifest.roles.bot.is_some())
            .map(|a| a.env.id.clone())
            .collect()
    }

    /// Now, by the node's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    fn get(&self, id: &str) -> Option<Arc<Active>> {
        self.shared
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn all(&self) -> Vec<Arc<Active>> {
        let mut v: Vec<_> = self
            .shared
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.env.id.cmp(&b.env.id));
        v
    }

    fn waker(&self, id: &str) -> Arc<Notify> {
        self.shared
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_owned())
            .or_default()
            .clone()
    }

    fn component_path(&self, id: &str, sha: &str) -> PathBuf {
        self.shared
            .folder
            .join("installed")
            .join(id)
            .join(format!("{sha}.wasm"))
    }

    fn env_for(&self, row: &PluginRow, mut manifest: Manifest) -> Arc<PluginEnv> {
        // A plugin installed before the administrator lowered a cap runs within it.
        let caps = &self.shared.config;
        let limits = &mut manifest.limits;
        limits.cpu_ms = limits.cpu_ms.min(caps.max_cpu_ms);
        limits.call_timeout_ms = limits.call_timeout_ms.min(caps.max_call_timeout_ms);
        limits.memory = limits
            .memory
            .min(bytesize::ByteSize::mib(caps.max_memory_mb.into()));
        let grants: Vec<String> = serde_json::from_str(&row.grants).unwrap_or_default();
        let requested = manifest.requested();
        let rights = Rights::from_names(
            grants
                .iter()
                .map(String::as_str)
                .filter(|g| requested.contains(g)),
        );
        let mut config = manifest.config.clone();
        let own: BTreeMap<String, String> = serde_json::from_str(&row.config).unwrap_or_default();
        config.extend(own);
        let folder = manifest
            .roles
            .storage_backend
            .as_ref()
            .map(|_| self.shared.folder.join("data").join(&row.id));
        Arc::new(PluginEnv {
            id: row.id.clone(),
            manifest,
            rights,
            config,
            bot_user: row.bot_user.clone(),
            store: self.shared.store.clone(),
            folder,
            hub: Arc::downgrade(&self.shared),
            main: self.shared.runtime.main.clone(),
            posts: Mutex::new((Instant::now(), 0)),
            cpu: Mutex::new((Instant::now(), 0)),
            clock: self.shared.clock.clone(),
            cpu_per_second: u64::from(self.shared.config.cpu_share_percent.clamp(1, 100)) * 1000
                / runtime::TICK.as_millis() as u64
                / 100,
        })
    }

    /// Loads a stored installation and makes it the active version.
    async fn activate_row(&self, row: PluginRow) -> Result<(), PluginError> {
        let manifest =
            Manifest::parse(&row.manifest).map_err(|e| PluginError::Refused(e.to_string()))?;
        let path = self.component_path(&row.id, &row.sha256);
        let wasm = std::fs::read(&path).map_err(|error| PluginError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let env = self.env_for(&row, manifest);
        let loaded = self.load(wasm, &env).await?;
        self.swap(row, env, Some(Arc::new(loaded)), None);
        Ok(())
    }

    fn put_failed(&self, row: PluginRow, error: String) {
        self.node_log(&row.id, "error", format!("not loaded: {error}"), &[]);
        if let Ok(manifest) = Manifest::parse(&row.manifest) {
            let env = self.env_for(&row, manifest);
            self.swap(row, env, None, Some(error));
        }
    }

    async fn load(&self, wasm: Vec<u8>, env: &Arc<PluginEnv>) -> Result<Loaded, PluginError> {
        if let Some(folder) = &env.folder {
            std::fs::create_dir_all(folder).map_err(|error| PluginError::Read {
                path: folder.display().to_string(),
                error,
            })?;
        }
        let shared = self.shared.clone();
        let env2 = env.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            shared.runtime.load(&wasm, &env2.manifest, env2.rights)
        })
        .await
        .map_err(|e| PluginError::Refused(format!("compiling failed: {e}")))?
        .map_err(|e| PluginError::Refused(e.to_string()))?;
        Ok(loaded)
    }

    /// Makes `env` the active version of its plugin.
    fn swap(
        &self,
        row: PluginRow,
        env: Arc<PluginEnv>,
        loaded: Option<Arc<Loaded>>,
        load_error: Option<String>,
    ) {
        let id = row.id.clone();
        let old = self.get(&id);
        let breaker = Arc::new(Mutex::new(Breaker::new(self.breaker_config())));
        let is_bot = env.manifest.roles.bot.is_some();
        {
            let mut bots = self.shared.bots.write().unwrap_or_else(|e| e.into_inner());
            if let Some(old_user) = old.as_ref().and_then(|o| o.row.bot_user.as_ref()) {
                bots.remove(old_user);
            }
            if let (true, Some(user)) = (is_bot, &row.bot_user) {
                bots.insert(user.clone(), id.clone());
            }
        }
        let metrics = self.shared.metrics.plugin(&id);
        let active = Arc::new(Active {
            env,
            loaded,
            load_error,
            row,
            breaker,
            reload_error: Mutex::new(None),
            metrics,
        });
        self.shared
            .active
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), active);
        if let Some(old) = old
            && let Some(l) = &old.loaded
        {
            l.cool();
        }
        self.clear_caches();
        let connected = self
            .shared
            .bot_work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if is_bot && connected {
            self.ensure_dispatcher(&id);
        }
        self.waker(&id).notify_one();
        self.prune_artifacts();
    }

    fn breaker_config(&self) -> BreakerConfig {
        let c = &self.shared.config;
        BreakerConfig {
            failures: c.breaker_failures.max(1),
            window: Duration::from_secs(c.breaker_window_secs),
            pause: Duration::from_millis(c.breaker_pause_ms),
            max_pause: Duration::from_secs(15 * 60),
        }
    }

    fn generation(&self) -> u64 {
        self.shared
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Drops the cached answers about one object; an answer being computed meanwhile is not
    /// cached either.
    fn forget_object(&self, object: &ObjectRef) {
        self.shared
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let same = |(application, object_type, object_id): (&String, &String, &String)| {
            *application == object.application
                && *object_type == object.object_type
                && *object_id == object.object_id
        };
        self.shared
            .access_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(a, t, i, _), _| !same((a, t, i)));
        self.shared
            .render_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(a, t, i), _| !same((a, t, i)));
    }

    fn clear_caches(&self) {
        self.shared
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.shared
            .access_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.shared
            .render_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    // ---------------------------------------------------------------- administration

    /// Installs (or upgrades) the plugin in `source`, a folder with `plugin.toml` and the
    /// component. `grants` are the rights the administrator grants.
    pub(crate) async fn install(
        &self,
        source: &Path,
        grants: &[String],
        config: &BTreeMap<String, String>,
        actor: &str,
    ) -> Result<PluginInfo, PluginError> {
        let _one_at_a_time = self.shared.admin.lock().await;
        self.install_locked(source, grants, config, actor, None)
            .await
    }

    /// [`Self::install`] with the administration lock held; `expected` is the id the folder
    /// must hold (a reload).
    async fn install_locked(
        &self,
        source: &Path,
        grants: &[String],
        config: &BTreeMap<String, String>,
        actor: &str,
        expected: Option<&str>,
    ) -> Result<PluginInfo, PluginError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|error| PluginError::Read {
                path: p.display().to_string(),
                error,
            })
        };
        let text = String::from_utf8(read(&source.join("plugin.toml"))?)
            .map_err(|_| PluginError::Refused("plugin.toml is not UTF-8".into()))?;
        let manifest = Manifest::parse(&text).map_err(|e| PluginError::Refused(e.to_string()))?;
        let l = &manifest.limits;
        let over = self
            .shared
            .config
            .over_caps(l.cpu_ms, l.call_timeout_ms, l.memory.as_u64());
        if !over.is_empty() {
            return Err(PluginError::Refused(format!(
                "{} asks for more than this node allows: {}; lower it in plugin.toml, or raise \
                 the cap in the node's config.toml",
                manifest.id,
                over.join(", ")
            )));
        }
        if let Some(expected) = expected
            && manifest.id != expected
        {
            return Err(PluginError::Refused(format!(
                "{} now holds plugin {:?}, not {expected:?}; install it as a plugin of its own",
                source.display(),
                manifest.id
            )));
        }
        for g in grants {
            if !manifest::RIGHTS.contains(&g.as_str()) {
                return Err(PluginError::Refused(format!(
                    "there is no right {g:?} (rights: {})",
                    manifest::RIGHTS.join(", ")
                )));
            }
        }
        let missing: Vec<&str> = manifest
            .requested()
            .into_iter()
            .filter(|r| !grants.iter().any(|g| g == r))
            .collect();
        if !missing.is_empty() {
            return Err(PluginError::Refused(format!(
                "{} asks for the right{} {}; grant {} with --grant, or refuse the plugin",
                manifest.id,
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", "),
                if missing.len() > 1 { "them" } else { "it" },
            )));
        }
        let wasm = read(&source.join(&manifest.component))?;
        let sha = runtime::sha256_hex(&wasm);
        let now = self.now_ms();
        let previous = self.shared.store.plugins().plugin(&manifest.id).await?;
        let bot_user = manifest
            .roles
            .bot
            .as_ref()
            .map(|_| format!("{}@{}", manifest.id, self.shared.node));
        let row = PluginRow {
            id: manifest.id.clone(),
            version: manifest.version.clone(),
            source: std::path::absolute(source)
                .unwrap_or_else(|_| source.to_owned())
                .display()
                .to_string(),
            manifest: text,
            sha256: sha.clone(),
            grants: serde_json::to_string(grants).unwrap_or_else(|_| "[]".into()),
            config: serde_json::to_string(config).unwrap_or_else(|_| "{}".into()),
            enabled: previous.as_ref().is_none_or(|p| p.enabled),
            bot_user,
            installed_at: previous.as_ref().map_or(now, |p| p.installed_at),
            updated_at: now,
        };
        let env = self.env_for(&row, manifest.clone());
        // Compile, check imports and exports, and run `init` once before anything is stored.
        let loaded = Arc::new(self.load(wasm.clone(), &env).await?);
        let (probe, logs, stderr) = loaded
            .call(
                &self.shared.runtime,
                &env,
                false,
                Box::new(|_, _| Box::pin(async { Ok(()) })),
            )
            .await;
        self.keep_logs(&env.id, logs, &stderr);
        probe
            .map_err(|e| PluginError::Refused(format!("the plugin failed its first start: {e}")))?;

        let path = self.component_path(&row.id, &sha);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|error| PluginError::Read {
                path: dir.display().to_string(),
                error,
            })?;
        }
        std::fs::write(&path, &wasm).map_err(|error| PluginError::Read {
            path: path.display().to_string(),
            error,
        })?;
        let display = manifest
            .roles
            .bot
            .as_ref()
            .and_then(|b| b.display_name.clone())
            .unwrap_or_else(|| manifest.name.clone());
        let audit = AuditRecord {
            at: now,
            actor: actor.to_owned(),
            action: if previous.is_some() {
                "plugin.upgrade"
            } else {
                "plugin.install"
            },
            target: row.id.clone(),
            detail: format!(
                "version {} sha256 {sha} rights [{}]",
                row.version,
                env.rights.names().join(",")
            ),
        };
        self.shared
            .store
            .plugins()
            .put_plugin(&row, Some((&row.id, &display)), &audit)
            .await
            .map_err(|e| match e {
                StoreError::Conflict => {
                    PluginError::Refused(format!("the bot's login {:?} is taken by a user", row.id))
                }
                e => PluginError::Store(e),
            })?;
        self.swap(row, env, Some(loaded), None);
        self.info(&manifest.id).await
    }

    /// Reinstalls a plugin from the folder it was installed from, with the same rights.
    pub(crate) async fn reload(&self, id: &str, actor: &str) -> Result<PluginInfo, PluginError> {
        let _one_at_a_time = self.shared.admin.lock().await;
        let row = self
            .shared
            .store
            .plugins()
            .plugin(id)
            .await?
            .ok_or_else(|| PluginError::NotFound(id.to_owned()))?;
        let grants: Vec<String> = serde_json::from_str(&row.grants).unwrap_or_default();
        let config: BTreeMap<String, String> =
            serde_json::from_str(&row.config).unwrap_or_default();
        let result = self
            .install_locked(Path::new(&row.source), &grants, &config, actor, Some(id))
            .await;
        if let Err(e) = &result
            && let Some(a) = self.get(id)
        {
            // The running version stays; its author learns why the new one did not load
            // from the plugin's log and status, not only from the node's log.
            let why = e.to_string();
            self.node_log(
                id,
                "error",
                format!(
                    "reload from {} failed: {why}; version {} keeps running",
                    row.source, a.row.version
                ),
                &[("call", "reload")],
            );
            *a.reload_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        }
        result
    }

    /// Uninstalls plugin `id` (see `AdminRequest::PluginUninstall` for what stays). With
    /// `purge`, also what an earlier uninstall left behind.
    pub(crate) async fn uninstall(
        &self,
        id: &str,
        purge: bool,
        actor: &str,
    ) -> Result<Uninstalled, PluginError> {
        // The id names folders that may be removed: never a path.
        if !manifest::valid_id(id) {
            return Err(PluginError::NotFound(id.to_owned()));
        }
        let _one_at_a_time = self.shared.admin.lock().await;
        // Out of service first, so that nothing new is queued for its bot meanwhile.
        let old = self.take_out(id);
        let audit = AuditRecord {
            at: self.now_ms(),
            actor: actor.to_owned(),
            action: "plugin.uninstall",
            target: id.to_owned(),
            detail: if purge { "purge".into() } else { String::new() },
        };
        let done = match self
            .shared
            .store
            .plugins()
            .uninstall_plugin(id, purge, &audit)
            .await
        {
            Ok(done) => done,
            Err(e) => {
                if let Some(a) = old {
                    self.put_back(a);
                }
                return Err(e.into());
            }
        };
        let data = self.shared.folder.join("data").join(id);
        let folder_exists = data.is_dir();
        if !done.installed
            && !(purge && (done.kv_entries > 0 || done.log_lines > 0 || folder_exists))
        {
            return Err(PluginError::NotFound(id.to_owned()));
        }
        let remove = |dir: &Path| match std::fs::remove_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(PluginError::Read {
                path: dir.display().to_string(),
                error,
            }),
        };
        remove(&self.shared.folder.join("installed").join(id))?;
        if purge {
            remove(&data)?;
        }
        self.shared.runtime.forget(id);
        self.prune_artifacts();
        tracing::info!(plugin = id, purge, "plugin uninstalled");
        Ok(Uninstalled {
            purged: purge,
            folder: (folder_exists || old.as_ref().is_some_and(|a| a.env.folder.is_some()))
                .then(|| data.display().to_string()),
            store: done,
        })
    }

    /// Takes plugin `id` out of service: no more calls, its bot told nothing new.
    fn take_out(&self, id: &str) -> Option<Arc<Active>> {
        let old = self
            .shared
            .active
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)?;
        if let Some(user) = &old.row.bot_user {
            self.shared
                .bots
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(user);
        }
        if let Some(l) = &old.loaded {
            l.cool();
        }
        self.clear_caches();
        // Its dispatcher sees it gone and ends.
        self.waker(id).notify_one();
        Some(old)
    }

    /// Puts back what [`Self::take_out`] took (the uninstall failed).
    fn put_back(&self, a: Arc<Active>) {
        if let (true, Some(user)) = (a.env.manifest.roles.bot.is_some(), &a.row.bot_user) {
            self.shared
                .bots
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(user.clone(), a.env.id.clone());
        }
        let id = a.env.id.clone();
        self.shared
            .active
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), a);
        self.clear_caches();
        let connected = self
            .shared
            .bot_work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if connected
            && self
                .get(&id)
                .is_some_and(|a| a.env.manifest.roles.bot.is_some())
        {
            self.ensure_dispatcher(&id);
        }
    }

    pub(crate) async fn set_enabled(
        &self,
        id: &str,
        enabled: bool,
        actor: &str,
    ) -> Result<PluginInfo, PluginError> {
        let _one_at_a_time = self.shared.admin.lock().await;
        let audit = AuditRecord {
            at: self.now_ms(),
            actor: actor.to_owned(),
            action: if enabled {
                "plugin.enable"
            } else {
                "plugin.disable"
            },
            target: id.to_owned(),
            detail: String::new(),
        };
        if !self
            .shared
            .store
            .plugins()
            .set_plugin_enabled(id, enabled, &audit)
            .await?
        {
            return Err(PluginError::NotFound(id.to_owned()));
        }
        if let Some(row) = self.shared.store.plugins().plugin(id).await?
            && let Err(e) = self.activate_row(row.clone()).await
        {
            self.put_failed(row, e.to_string());
        }
        self.info(id).await
    }

    pub(crate) async fn list(&self) -> Result<Vec<PluginInfo>, PluginError> {
        let mut out = Vec::new();
        for a in self.all() {
            out.push(self.info_of(&a).await?);
        }
        Ok(out)
    }

    async fn info(&self, id: &str) -> Result<PluginInfo, PluginError> {
        let a = self
            .get(id)
            .ok_or_else(|| PluginError::NotFound(id.to_owned()))?;
        self.info_of(&a).await
    }

    async fn info_of(&self, a: &Active) -> Result<PluginInfo, PluginError> {
        let m = &a.env.manifest;
        let mut roles = Vec::new();
        if let Some(c) = &m.roles.context_provider {
            roles.push(format!("context-provider({})", c.object_types.join(",")));
        }
        if m.roles.bot.is_some() {
            // What the bot may do without a further grant: the events it receives and the
            // object discussions it may post in.
            let events = m
                .roles
                .bot
                .as_ref()
                .map(|b| b.events.join(","))
                .unwrap_or_default();
            roles.push(format!(
                "bot(events: {}; posts about: {})",
                if events.is_empty() { "-" } else { &events },
                m.bot_object_types().join(",")
            ));
        }
        if m.roles.storage_backend.is_some() {
            roles.push("storage-backend".into());
        }
        let status = if let Some(e) = &a.load_error {
            format!("failed: {e}")
        } else if !a.row.enabled {
            "disabled".into()
        } else if let Some((why, left)) = a
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .paused(Instant::now())
        {
            format!(
                "paused for {}s after repeated failures: {why}",
                left.as_secs().max(1)
            )
        } else {
            "active".into()
        };
        let status = match &*a.reload_error.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => format!("{status} (reload failed: {e})"),
            None => status,
        };
        let dead = self
            .shared
            .store
            .plugins()
            .dead_letter_count(&a.env.id)
            .await?;
        Ok(PluginInfo {
            id: a.env.id.clone(),
            name: m.name.clone(),
            version: m.version.clone(),
            enabled: a.row.enabled,
            status,
            roles,
            rights: a.env.rights.names().into_iter().map(String::from).collect(),
            bot_user: a.row.bot_user.clone(),
            dead_letters: dead,
            limits: Some(veche_protocol::admin::PluginLimits {
                cpu_ms: m.limits.cpu_ms,
                call_timeout_ms: m.limits.call_timeout_ms,
                memory_mib: m.limits.memory.as_u64().div_ceil(1024 * 1024),
                max_concurrency: m.limits.max_concurrency,
            }),
        })
    }

    pub(crate) async fn logs(
        &self,
        id: &str,
        limit: u32,
    ) -> Result<Vec<PluginLogLine>, PluginError> {
        self.get(id)
            .ok_or_else(|| PluginError::NotFound(id.to_owned()))?;
        Ok(self
            .shared
            .store
            .plugins()
            .plugin_logs(id, limit.clamp(1, 2000))
            .await?
            .into_iter()
            .map(|r| PluginLogLine {
                at: Timestamp(r.at),
                level: r.level,
                message: r.message,
                fields: serde_json::from_str(&r.fields).unwrap_or_default(),
            })
            .collect())
    }

    pub(crate) async fn dead_letters(&self, id: &str) -> Result<Vec<DeadLetter>, PluginError> {
        self.get(id)
            .ok_or_else(|| PluginError::NotFound(id.to_owned()))?;
        Ok(self
            .shared
            .store
            .plugins()
            .dead_letters(id)
            .await?
            .into_iter()
            .map(|r| DeadLetter {
                id: r.id,
                kind: r.kind,
                attempts: r.attempts as u64,
                error: r.last_error.unwrap_or_default(),
                at: Timestamp(r.created_at),
                payload: r.payload,
            })
            .collect())
    }

    pub(crate) async fn replay(
        &self,
        id: &str,
        item: Option<i64>,
        actor: &str,
    ) -> Result<u64, PluginError> {
        self.get(id)
            .ok_or_else(|| PluginError::NotFound(id.to_owned()))?;
        let audit = AuditRecord {
            at: self.now_ms(),
            actor: actor.to_owned(),
            action: "plugin.replay",
            target: id.to_owned(),
            detail: item.map_or("all".into(), |i| i.to_string()),
        };
        let n = self
            .shared
            .store
            .plugins()
            .replay_dead(id, item, self.now_ms(), &audit)
            .await?;
        self.waker(id).notify_one();
        Ok(n)
    }

    /// Hands a call's log lines and output to the log writer. Never waits: the writer needs
    /// the database, and a caller should not wait for it.
    fn keep_logs(&self, plugin: &str, logs: Vec<host::LogLine>, stderr: &str) {
        let mut lines: Vec<LogRow> = logs
            .into_iter()
            .map(|l| {
                let fields: BTreeMap<String, String> = l.fields.into_iter().collect();
                (
                    l.at,
                    l.level.to_owned(),
                    l.message,
                    serde_json::to_string(&fields).unwrap_or_default(),
                )
            })
            .collect();
        for line in stderr.lines().filter(|l| !l.trim().is_empty()).take(20) {
            lines.push((
                self.now_ms(),
                "stderr".into(),
                line.chars().take(4096).collect(),
                "{}".into(),
            ));
        }
        if !lines.is_empty()
            && self
                .shared
                .logs
                .try_send((plugin.to_owned(), lines))
                .is_err()
        {
            tracing::warn!(plugin, "plugin log lines dropped: the log writer is behind");
        }
    }

    // ---------------------------------------------------------------- calls

    /// Runs one call on the active version of a plugin, through its breaker.
    async fn call<R: Send + 'static>(
        &self,
        a: &Active,
        what: &str,
        read_only: bool,
        f: runtime::CallFn<R>,
    ) -> Result<R, CallError> {
        let Some(loaded) = &a.loaded else {
            return Err(CallError::Paused(a.load_error.clone().unwrap_or_default()));
        };
        if !a.row.enabled {
            return Err(CallError::Paused("disabled by the administrator".into()));
        }
        if let Admit::No(left) = a
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(Instant::now())
        {
            return Err(CallError::Paused(format!(
                "paused for {} ms",
                left.as_millis()
            )));
        }
        // Bots and storage backends get a share of one core: one spinning at its CPU limit
        // call after call waits out the rest of each second. (Providers answer the node's own
        // requests; their cost is bounded by the cache and the breaker instead.)
        if !read_only && let Some(wait) = a.env.cpu_wait() {
            tokio::time::sleep(wait).await;
        }
        a.metrics.calls.increment(1);
        let (result, logs, stderr) = loaded
            .call(&self.shared.runtime, &a.env, read_only, f)
            .await;
        self.keep_logs(&a.env.id, logs, &stderr);
        self.record(a, what, &result);
        result
    }

    /// A context-provider call (read-only; never made while the database's writer is held).
    async fn call_provider<R: Send + 'static>(
        &self,
        a: &Active,
        what: &str,
        f: impl for<'a> FnOnce(
            context_provider::Guest,
            &'a mut wasmtime::Store<host::HostState>,
        ) -> BoxFuture<'a, wasmtime::Result<Result<R, wit::PluginError>>>
        + Send
        + 'static,
    ) -> Result<Result<R, wit::PluginError>, CallError> {
        let idx = a.loaded.as_ref().and_then(|l| l.context.clone());
        let call: runtime::CallFn<_> = Box::new(move |store, instance| {
            Box::pin(async move {
                let Some(idx) = idx else {
                    return Ok(Err(wit::PluginError::Unsupported));
                };
                let guest = idx.load(&mut *store, instance)?;
                f(guest, store).await
            })
        });
        self.call(a, what, true, call).await
    }

    /// A bot call.
    async fn call_bot(
        &self,
        a: &Active,
        what: &str,
        f: impl for<'a> FnOnce(
            bot::Guest,
            &'a mut wasmtime::Store<host::HostState>,
        ) -> BoxFuture<
            'a,
            wasmtime::Result<Result<Vec<wit::BotAction>, wit::PluginError>>,
        > + Send
        + 'static,
    ) -> Result<Result<Vec<wit::BotAction>, wit::PluginError>, CallError> {
        let idx = a.loaded.as_ref().and_then(|l| l.bot.clone());
        let call: runtime::CallFn<_> = Box::new(move |store, instance| {
            Box::pin(async move {
                let Some(idx) = idx else {
                    return Ok(Err(wit::PluginError::Unsupported));
                };
                let guest = idx.load(&mut *store, instance)?;
                f(guest, store).await
            })
        });
        self.call(a, what, false, call).await
    }

    /// Counts a call's outcome against the breaker; a failure (trap, exhausted limit) and a
    /// pause go to the plugin's log too, where its author looks.
    fn record<R>(&self, a: &Active, what: &str, result: &Result<R, CallError>) {
        let now = Instant::now();
        let mut breaker = a.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(_) => breaker.success(),
            Err(e) if e.is_failure() => {
                tracing::warn!(plugin = %a.env.id, call = what, error = %e, "plugin call failed");
                a.metrics.traps.increment(1);
                let opened = breaker.failure(now, &e.to_string());
                let pause = breaker.paused(now).map(|(_, left)| left);
                drop(breaker);
                self.node_log(
                    &a.env.id,
                    "error",
                    format!("{what} failed: {e}"),
                    &[("call", what)],
                );
                if opened {
                    a.metrics.pauses.increment(1);
                    tracing::error!(plugin = %a.env.id, error = %e, "plugin paused after repeated failures");
                    let pause = pause.unwrap_or_default();
                    self.node_log(
                        &a.env.id,
                        "error",
                        format!(
                            "paused for {} s after repeated failures: {e}; calls wait, bot \
                             messages stay in the inbox",
                            pause.as_secs().max(1)
                        ),
                        &[("call", what)],
                    );
                }
            }
            Err(_) => breaker.inconclusive(now),
        }
    }

    /// A line the node writes into a plugin's log (marked `by=node`, so that it reads apart
    /// from what the plugin logged itself).
    fn node_log(
        &self,
        plugin: &str,
        level: &'static str,
        message: String,
        fields: &[(&str, &str)],
    ) {
        let mut all = vec![("by".to_owned(), "node".to_owned())];
        all.extend(
            fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let line = host::LogLine {
            at: self.now_ms(),
            level,
            message,
            fields: all,
        };
        self.keep_logs(plugin, vec![line], "");
    }

    /// The plugin serving `object_type` (asked on every access check: no copying).
    fn provider_for(&self, object_type: &str) -> Option<Arc<Active>> {
        self.shared
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|a| {
                a.env
                    .manifest
                    .roles
                    .context_provider
                    .as_ref()
                    .is_some_and(|c| c.object_types.iter().any(|t| t == object_type))
            })
            // Two plugins serving one type: the first by id, as `plugin list` shows them.
            .min_by(|a, b| a.env.id.cmp(&b.env.id))
            .cloned()
    }

    /// What `user` may do in the object's discussion, if a context provider serves its type
    /// (`None`: no provider; the node's own access list decides). Bots may post about the
    /// object types their manifest names.
    pub(crate) async fn object_access(&self, object: &ObjectRef, user: &str) -> Option<Access> {
        if let Some(access) = self.bot_access(object, user) {
            return Some(access);
        }
        self.object_access_many(object, std::slice::from_ref(&user.to_owned()))
            .await
            .map(|v| v.first().copied().unwrap_or(Access::None))
    }

    /// A bot's rights in an object discussion: it may post about the types its manifest names.
    pub(crate) fn bot_access(&self, object: &ObjectRef, user: &str) -> Option<Access> {
        let plugin = self.bot_plugin(user)?;
        let a = self.get(&plugin)?;
        (a.row.enabled
            && a.env
                .manifest
                .bot_object_types()
                .contains(&object.object_type))
        .then_some(Access::Write)
    }

    /// The answers at hand for `users` without calling a plugin: bots' rights, then the
    /// answers in `decided`, then the cache; `None` for a user nobody has decided about yet.
    fn answers_at_hand(
        &self,
        object: &ObjectRef,
        users: &[String],
        decided: &Decided,
    ) -> Vec<Option<Access>> {
        let ttl = Duration::from_millis(self.shared.config.authorize_cache_ms);
        let cache = self
            .shared
            .access_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        users
            .iter()
            .map(|u| {
                let key = access_key(object, u);
                self.bot_access(object, u)
                    .or_else(|| decided.get(&key))
                    .or_else(|| {
                        cache
                            .get(&key)
                            .filter(|(_, at)| at.elapsed() < ttl)
                            .map(|(access, _)| *access)
                    })
            })
            .collect()
    }

    /// Whether any context provider is installed: only then may a command need answers that
    /// are not at hand ([`Undecided`]).
    pub(crate) fn has_providers(&self) -> bool {
        self.shared
            .active
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|a| a.env.manifest.roles.context_provider.is_some())
    }

    /// Asks the providers what `undecided` needs, outside any lock or transaction, and adds
    /// the answers to `decided` (a failing provider's answer is "no access", as always).
    pub(crate) async fn decide(&self, undecided: &Undecided, decided: &mut Decided) {
        let answers = self
            .object_access_many(&undecided.object, &undecided.users)
            .await
            .unwrap_or_default();
        for (user, access) in undecided.users.iter().zip(answers) {
            decided.insert(access_key(&undecided.object, user), access);
        }
    }

    /// [`Self::object_access`] for many users with one plugin call for those not cached.
    pub(crate) async fn object_access_many(
        &self,
        object: &ObjectRef,
        users: &[String],
    ) -> Option<Vec<Access>> {
        let a = self.provider_for(&object.object_type)?;
        let key = |user: &str| access_key(object, user);
        let mut answers = self.answers_at_hand(object, users, &Decided::default());
        let missing: Vec<String> = users
            .iter()
            .zip(&answers)
            .filter(|(_, a)| a.is_none())
            .map(|(u, _)| u.clone())
            .collect();
        if !missing.is_empty() {
            let generation = self.generation();
            let decided = self.ask_authorize(&a, object, &missing).await;
            let fresh = generation == self.generation();
            let mut cache = self
                .shared
                .access_cache
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if cache.len() > 100_000 {
                cache.clear();
            }
            let mut decided_iter = missing.iter().zip(decided.iter().flatten());
            for slot in answers.iter_mut().filter(|a| a.is_none()) {
                *slot = Some(match decided_iter.next() {
                    Some((user, access)) => {
                        if fresh {
                            cache.insert(key(user), (*access, Instant::now()));
                        }
                        *access
                    }
                    // Fail closed, and do not remember a failure.
                    None => Access::None,
                });
            }
        }
        Some(
            answers
                .into_iter()
                .map(|a| a.unwrap_or(Access::None))
                .collect(),
        )
    }

    /// One `authorize` call; `None` if it failed (the caller denies).
    async fn ask_authorize(
        &self,
        a: &Active,
        object: &ObjectRef,
        users: &[String],
    ) -> Option<Vec<Access>> {
        let obj = wit_object(object);
        let cx = invocation(a);
        let result = self
            .call_provider(a, "authorize", {
                let users = users.to_vec();
                move |guest, store| {
                    Box::pin(async move { guest.call_authorize(store, &cx, &obj, &users).await })
                }
            })
            .await;
        match result {
            Ok(Ok(list)) if list.len() == users.len() => Some(
                list.into_iter()
                    .map(|a| match a {
                        wit::Access::None => Access::None,
                        wit::Access::Read => Access::Read,
                        wit::Access::Write => Access::Write,
                    })
                    .collect(),
            ),
            Ok(Ok(_)) => {
                tracing::warn!(plugin = %a.env.id, "authorize answered for the wrong number of users; denying");
                None
            }
            // The provider's own "no" for all of them, remembered like any answer.
            // A transient failure of the provider: deny now, decide again next time.
            Ok(Err(e @ wit::PluginError::Unavailable(_))) => {
                tracing::warn!(plugin = %a.env.id, error = ?e, "authorize unavailable; denying");
                None
            }
            Ok(Err(e)) => {
                tracing::debug!(plugin = %a.env.id, error = ?e, "authorize refused");
                Some(vec![Access::None; users.len()])
            }
            Err(e) => {
                tracing::warn!(plugin = %a.env.id, error = %e, "authorize failed; denying");
                None
            }
        }
    }

    /// How many calls were made into the current version of plugin `id`.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn calls_started(&self, id: &str) -> u64 {
        self.get(id)
            .and_then(|a| a.loaded.as_ref().map(|l| l.calls_started()))
            .unwrap_or(0)
    }

    /// The epoch ticker's ticks so far, and whether it sleeps waiting for a call.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn epoch_ticker(&self) -> (u64, bool) {
        self.shared.runtime.ticker().observe()
    }

    /// How many calls into plugin `id` are running now.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn calls_in_flight(&self, id: &str) -> usize {
        self.get(id)
            .and_then(|a| {
                let max = a.env.manifest.limits.max_concurrency;
                a.loaded.as_ref().map(|l| l.calls_in_flight(max))
            })
            .unwrap_or(0)
    }

    /// Whether a context provider serves this object type.
    pub(crate) fn serves(&self, object_type: &str) -> bool {
        self.provider_for(object_type).is_some()
    }

    /// Asks the type's provider whether the object exists; `Ok` when no provider serves it.
    pub(crate) async fn validate(&self, object: &ObjectRef) -> Result<(), InvalidObject> {
        let Some(a) = self.provider_for(&object.object_type) else {
            return Ok(());
        };
        let obj = wit_object(object);
        let cx = invocation(&a);
        let result = self
            .call_provider(&a, "validate", move |guest, store| {
                Box::pin(async move { guest.call_validate(store, &cx, &obj).await })
            })
            .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(wit::PluginError::NotFound)) => Err(InvalidObject::Missing {
                kind: object.object_type.clone(),
                id: object.object_id.clone(),
            }),
            Ok(Err(e)) => Err(InvalidObject::Invalid {
                kind: object.object_type.clone(),
                id: object.object_id.clone(),
                why: describe(&e),
            }),
            Err(e) => Err(InvalidObject::Unavailable {
                kind: object.object_type.clone(),
                why: e.to_string(),
            }),
        }
    }

    /// How the object looks; `None` when no provider serves it or the provider failed (the
    /// client then shows the bare reference).
    pub(crate) async fn render(&self, object: &ObjectRef) -> Option<ObjectCard> {
        let a = self.provider_for(&object.object_type)?;
        let key = (
            object.application.clone(),
            object.object_type.clone(),
            object.object_id.clone(),
        );
        if let Some((r, until)) = self
            .shared
            .render_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && Instant::now() < *until
        {
            return Some(card(r));
        }
        let obj = wit_object(object);
        let cx = invocation(&a);
        let generation = self.generation();
        let result = self
            .call_provider(&a, "render", move |guest, store| {
                Box::pin(async move { guest.call_render(store, &cx, &obj).await })
            })
            .await;
        match result {
            Ok(Ok(r)) => {
                let r = clamp_rendered(r);
                if r.cache_ttl_secs > 0 && generation == self.generation() {
                    let until =
                        Instant::now() + Duration::from_secs(r.cache_ttl_secs.min(3600).into());
                    let mut cache = self
                        .shared
                        .render_cache
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if cache.len() > 10_000 {
                        cache.clear();
                    }
                    cache.insert(key, (r.clone(), until));
                }
                Some(card(&r))
            }
            _ => None,
        }
    }

    // ---------------------------------------------------------------- bots

    /// Whether any bot is installed.
    pub(crate) fn has_bots(&self) -> bool {
        !self
            .shared
            .bots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// The plugin whose bot `user` is.
    pub(crate) fn bot_plugin(&self, user: &str) -> Option<String> {
        self.shared
            .bots
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .cloned()
    }

    /// Records a business event and queues it for every bot subscribed to its kind, once per
    /// source and idempotency key (see [`Recorded`]).
    pub(crate) async fn post_event(&self, event: BusinessEvent) -> Result<Recorded, StoreError> {
        let subscribers: Vec<String> = self
            .all()
            .into_iter()
            .filter(|a| {
                a.env
                    .manifest
                    .roles
                    .bot
                    .as_ref()
                    .is_some_and(|b| b.events.contains(&event.kind))
            })
            .map(|a| a.env.id.clone())
            .collect();
        let payload = serde_json::to_string(&Inbox::Event(event.clone())).unwrap_or_default();
        let object = event.object.as_ref().map(|o| {
            (
                o.application.as_str(),
                o.object_type.as_str(),
                o.object_id.as_str(),
            )
        });
        let recorded = self
            .shared
            .store
            .plugins()
            .insert_business_event(
                &NewBusinessEvent {
                    source: &event.source,
                    kind: &event.kind,
                    idempotency_key: &event.idempotency_key,
                    object,
                    inbox_payload: &payload,
                    payload: &event.payload,
                    occurred_at: event.occurred_at,
                    webhook_body: &event.webhook_body(),
                },
                &subscribers,
                self.now_ms(),
            )
            .await?;
        if let Recorded::New(_) = recorded {
            for s in &subscribers {
                self.waker(s).notify_one();
            }
        }
        Ok(recorded)
    }

    /// Queues a click on a bot's button.
    pub(crate) async fn clicked(&self, plugin: &str, click: Click) -> Result<(), StoreError> {
        let payload = serde_json::to_string(&Inbox::Click(click)).unwrap_or_default();
        self.shared
            .store
            .plugins()
            .enqueue_plugin(plugin, "click", &payload, self.now_ms())
            .await?;
        self.waker(plugin).notify_one();
        Ok(())
    }

    /// Wakes the dispatchers of these plugins (after a batch queued messages for them).
    pub(crate) fn wake(&self, plugins: &[String]) {
        for p in plugins {
            self.waker(p).notify_one();
        }
    }

    fn ensure_dispatcher(&self, id: &str) {
        let mut running = self
            .shared
            .dispatchers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if running.insert(id.to_owned(), ()).is_some() {
            return;
        }
        // Dispatchers run on the plugin threads, so that a bot call needs no hop between
        // threads; their database work hops to the node's runtime (`on_main`).
        let this = self.clone();
        let id = id.to_owned();
        let task = self
            .shared
            .tasks
            .track_future(async move { this.dispatch(id).await });
        if !self.shared.runtime.spawn_detached(task) {
            tracing::warn!("the plugin threads are gone; bot not started");
        }
    }

    /// Delivers one bot's inbox, in order, for as long as the node runs.
    async fn dispatch(self, id: String) {
        let waker = self.waker(&id);
        let stop = self.shared.stop.clone();
        loop {
            if stop.is_cancelled() {
                return;
            }
            if self.get(&id).is_none() {
                // Uninstalled. Checked again under the lock `ensure_dispatcher` takes: a
                // reinstall meanwhile finds this dispatcher either still running or gone.
                let mut running = self
                    .shared
                    .dispatchers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if self.get(&id).is_none() {
                    running.remove(&id);
                    return;
                }
            }
            let wait = match self.dispatch_one(&id).await {
                Ok(None) => Duration::ZERO,
                Ok(Some(wait)) => wait,
                Err(e) => {
                    tracing::warn!(plugin = %id, error = %e, "bot inbox failed");
                    Duration::from_secs(1)
                }
            };
            if wait > Duration::ZERO {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = waker.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// Runs database work of a dispatcher on the node's runtime: dispatchers run on the
    /// idle-class plugin threads, which must never hold a database connection.
    async fn on_main<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.shared
            .runtime
            .main
            .spawn(work)
            .await
            .map_err(|e| StoreError::Aborted(format!("the node is stopping: {e}")))?
    }

    /// Handles the head of the inbox; `Some(wait)` when there is nothing to do for a while.
    async fn dispatch_one(&self, id: &str) -> Result<Option<Duration>, StoreError> {
        const IDLE: Duration = Duration::from_secs(5);
        let Some(a) = self.get(id) else {
            return Ok(Some(IDLE));
        };
        if !a.row.enabled || a.loaded.is_none() {
            return Ok(Some(IDLE));
        }
        if let Some((_, left)) = a
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .paused(Instant::now())
        {
            return Ok(Some(left.max(Duration::from_millis(10))));
        }
        let now = self.now_ms();
        let (store, plugin) = (self.shared.store.clone(), id.to_owned());
        let next = self
            .on_main(async move {
                match store.plugins().next_inbox(&plugin, now).await? {
                    Some(row) => Ok(Ok(row)),
                    None => Ok(Err(store.plugins().inbox_due_at(&plugin).await?)),
                }
            })
            .await?;
        let row = match next {
            Ok(row) => row,
            Err(due) => {
                return Ok(Some(due.map_or(IDLE, |d| {
                    Duration::from_millis((d - now).clamp(1, 5000) as u64)
                })));
            }
        };
        let outcome = self.deliver(&a, &row).await;
        match outcome {
            Ok(actions) => {
                let (this, a2, key) = (self.clone(), a.clone(), format!("inbox{}", row.id));
                let store = self.shared.store.clone();
                self.on_main(async move {
                    this.apply(&a2, actions, &key).await;
                    store.plugins().inbox_done(row.id).await
                })
                .await?;
            }
            Err(Failed {
                not_called: true, ..
            }) => return Ok(Some(Duration::from_millis(200))),
            Err(Failed { error, retry, .. }) => {
                let attempts = row.attempts + 1;
                let dead = !retry || attempts >= MAX_ATTEMPTS;
                let backoff = 200i64.saturating_mul(1 << attempts.min(10));
                tracing::warn!(plugin = %id, item = row.id, attempts, dead, error = %error, "bot delivery failed");
                let store = self.shared.store.clone();
                let retry_at = self.now_ms() + backoff;
                self.on_main(async move {
                    store
                        .plugins()
                        .inbox_failed(row.id, &error, retry_at, dead)
                        .await
                })
                .await?;
            }
        }
        Ok(None)
    }

    /// Calls a bot's `on-message` `n` times in a row on the plugin threads, as its dispatcher
    /// does, without applying the actions (for benchmarks); the time it took.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) async fn time_bot_calls(
        &self,
        plugin: &str,
        message: BotMessage,
        n: u32,
    ) -> anyhow::Result<Duration> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let this = self.clone();
        let plugin = plugin.to_owned();
        let task = async move {
            let start = Instant::now();
            let mut result = Ok(());
            for _ in 0..n {
                if let Err(e) = this.call_bot_message(&plugin, message.clone()).await {
                    result = Err(e);
                    break;
                }
            }
            let _ = tx.send(result.map(|()| start.elapsed()));
        };
        if !self
            .shared
            .runtime
            .spawn_detached(self.shared.tasks.track_future(task))
        {
            anyhow::bail!("the plugin threads are gone");
        }
        rx.await
            .map_err(|_| anyhow::anyhow!("the benchmark task failed"))?
    }

    /// Calls a bot's `on-event` once with an event of `kind`, as its dispatcher would,
    /// without applying the actions (for benchmarks).
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) async fn call_bot_event(&self, plugin: &str, kind: &str) -> anyhow::Result<usize> {
        let a = self
            .get(plugin)
            .ok_or_else(|| anyhow::anyhow!("no such plugin"))?;
        let event = BusinessEvent::new(
            "bench".into(),
            kind.into(),
            None,
            "{}".into(),
            "b".into(),
            self.now_ms(),
        )?;
        let row = bench_row(
            "event",
            serde_json::to_string(&Inbox::Event(event)).unwrap_or_default(),
        );
        self.deliver(&a, &row)
            .await
            .map(|v| v.len())
            .map_err(|f| anyhow::anyhow!(f.error))
    }

    #[cfg(any(test, feature = "test-utils"))]
    async fn call_bot_message(&self, plugin: &str, message: BotMessage) -> anyhow::Result<usize> {
        let a = self
            .get(plugin)
            .ok_or_else(|| anyhow::anyhow!("no such plugin"))?;
        let row = bench_row("message", message.payload());
        self.deliver(&a, &row)
            .await
            .map(|v| v.len())
            .map_err(|f| anyhow::anyhow!(f.error))
    }

    async fn deliver(&self, a: &Active, row: &InboxRow) -> Result<Vec<wit::BotAction>, Failed> {
        let item: Inbox = serde_json::from_str(&row.payload).map_err(|e| Failed {
            error: format!("unreadable inbox item: {e}"),
            retry: false,
            not_called: false,
        })?;
        let cx = invocation(a);
        let result = match item {
            Inbox::Message(m) => {
                let msg = message_to_wit(&m);
                self.call_bot(a, "on-message", move |guest, store| {
                    Box::pin(async move { guest.call_on_message(store, &cx, &msg).await })
                })
                .await
            }
            Inbox::Event(e) => {
                let evt = e.to_wit();
                let result = self
                    .call_bot(a, "on-event", move |guest, store| {
                        Box::pin(async move { guest.call_on_event(store, &cx, &evt).await })
                    })
                    .await;
                // Having handled an event about an object, a context provider may answer
                // differently for it (the ERP took a reader off an invoice, say).
                if let (Ok(Ok(_)), Some(object)) = (&result, &e.object) {
                    self.forget_object(object);
                }
                result
            }
            Inbox::Click(c) => {
                let click = click_to_wit(&c);
                self.call_bot(a, "on-action", move |guest, store| {
                    Box::pin(async move { guest.call_on_action(store, &cx, &click).await })
                })
                .await
            }
        };
        match result {
            Ok(Ok(actions)) => Ok(actions),
            Ok(Err(e)) => Err(Failed {
                retry: matches!(e, wit::PluginError::Unavailable(_)),
                error: format!("the bot answered: {}", describe(&e)),
                not_called: false,
            }),
            Err(e @ (CallError::Paused(_) | CallError::Host(_))) => Err(Failed {
                error: e.to_string(),
                retry: true,
                not_called: true,
            }),
            Err(e) => Err(Failed {
                error: e.to_string(),
                retry: true,
                not_called: false,
            }),
        }
    }

    /// Applies a bot's actions with its own rights. `key` makes each post exactly-once: a
    /// retried item posts nothing twice.
    async fn apply(&self, a: &Active, actions: Vec<wit::BotAction>, key: &str) {
        if actions.len() > MAX_ACTIONS {
            self.bot_warn(
                a,
                &format!(
                    "returned {} actions; only the first {MAX_ACTIONS} are applied",
                    actions.len()
                ),
            )
            .await;
        }
        for (i, action) in actions.into_iter().take(MAX_ACTIONS).enumerate() {
            let result = match action {
                wit::BotAction::PostMessage(p) => self
                    .shared
                    .post(&a.env, p, &format!("{key}.{i}"))
                    .await
                    .map(|_| ())
                    .map_err(|e| describe(&e)),
                wit::BotAction::React((message, emoji)) => self
                    .shared
                    .react(&a.env, &message, &emoji)
                    .await
                    .map_err(|e| e.to_string()),
                wit::BotAction::OpenDiscussion((object, users)) => self
                    .shared
                    .open_for(&a.env, &object, &users)
                    .await
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = result {
                self.bot_warn(a, &format!("action {i} was not applied: {e}"))
                    .await;
            }
        }
    }

    async fn bot_warn(&self, a: &Active, message: &str) {
        self.node_log(&a.env.id, "warn", message.to_owned(), &[]);
    }

    // ---------------------------------------------------------------- storage

    #[cfg_attr(not(any(test, feature = "test-utils")), allow(dead_code))]
    pub(crate) fn storage_backend(&self, id: &str) -> Option<storage::PluginBlobs> {
        let a = self.get(id)?;
        a.env.manifest.roles.storage_backend.as_ref()?;
        Some(storage::PluginBlobs::new(self.clone(), id.to_owned()))
    }
}

/// An inbox item that is not in the inbox (benchmarks call bots directly).
#[cfg(any(test, feature = "test-utils"))]
fn bench_row(kind: &str, payload: String) -> InboxRow {
    InboxRow {
        id: 0,
        kind: kind.to_owned(),
        payload,
        attempts: 0,
        last_error: None,
        created_at: 0,
        next_at: 0,
    }
}

/// One stored log line: at, level, message, fields (JSON).
type LogRow = (i64, String, String, String);

/// Writes plugin log lines (and mirrors them into the node's log); at `stop`, writes what is
/// queued and ends.
async fn write_logs(
    store: Store,
    mut rx: tokio::sync::mpsc::Receiver<(String, Vec<LogRow>)>,
    stop: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            () = stop.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some((plugin, lines)) = next else {
            return;
        };
        for (_, level, message, _) in &lines {
            if level == "stderr" {
                tracing::warn!(plugin, output = %message, "plugin output");
            } else {
                tracing::info!(plugin, level = %level, message = %message, "plugin log");
            }
        }
        if let Err(e) = store.plugins().append_plugin_logs(&plugin, &lines).await {
            tracing::warn!(plugin, error = %e, "cannot store plugin log lines");
        }
    }
}

struct Failed {
    error: String,
    retry: bool,
    /// The plugin was not called (paused, or no instance free): try again later without
    /// counting an attempt.
    not_called: bool,
}

/// The host as the discussions layer sees it (the trait is theirs, so they never name the host).
impl ProviderCache for Plugins {
    fn serves(&self, object_type: &str) -> bool {
        Plugins::serves(self, object_type)
    }

    fn has_bots(&self) -> bool {
        Plugins::has_bots(self)
    }

    fn has_providers(&self) -> bool {
        Plugins::has_providers(self)
    }

    fn bot_plugin(&self, user: &str) -> Option<String> {
        Plugins::bot_plugin(self, user)
    }

    fn bot_access(&self, object: &ObjectRef, user: &str) -> Option<Access> {
        Plugins::bot_access(self, object, user)
    }

    fn wake(&self, plugins: &[String]) {
        Plugins::wake(self, plugins);
    }

    fn answers_at_hand(
        &self,
        object: &ObjectRef,
        users: &[String],
        decided: &Decided,
    ) -> Vec<Option<Access>> {
        Plugins::answers_at_hand(self, object, users, decided)
    }
}

impl Providers for Plugins {
    fn object_access(&self, object: ObjectRef, user: String) -> BoxFuture<'static, Option<Access>> {
        let this = self.clone();
        Box::pin(async move { this.object_access(&object, &user).await })
    }

    fn decide(&self, undecided: Undecided, mut decided: Decided) -> BoxFuture<'static, Decided> {
        let this = self.clone();
        Box::pin(async move {
            this.decide(&undecided, &mut decided).await;
            decided
        })
    }

    fn render(&self, object: ObjectRef) -> BoxFuture<'static, Option<ObjectCard>> {
        let this = self.clone();
        Box::pin(async move { this.render(&object).await })
    }

    fn validate(&self, object: ObjectRef) -> BoxFuture<'static, Result<(), InvalidObject>> {
        let this = self.clone();
        Box::pin(async move { this.validate(&object).await })
    }

    fn clicked(&self, plugin: String, click: Click) -> BoxFuture<'static, Result<(), StoreError>> {
        let this = self.clone();
        Box::pin(async move { this.clicked(&plugin, click).await })
    }
}

/// Work a bot asked for, run by the task that owns the discussions service.
type BotWork =
    Box<dyn FnOnce(Discussions) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The discussion of an object the bot may post about (`types`), opened as `caller`.
async fn open_object(
    discussions: &Discussions,
    types: &[String],
    caller: &Caller,
    o: &wit::ObjectRef,
) -> Result<String, BotError> {
    let object = ObjectRef {
        application: o.application.clone(),
        object_type: o.object_type.clone(),
        object_id: o.id.clone(),
    };
    if !types.contains(&object.object_type) {
        return Err(BotError::ObjectType(object.object_type));
    }
    match discussions.open_object(caller, object, "").await? {
        Reply::Discussion { discussion } => Ok(discussion.id),
        _ => Err(BotError::UnexpectedAnswer),
    }
}

/// Why something a bot asked of the node failed; the plugin is told the text.
#[derive(Debug, thiserror::Error)]
enum BotError {
    #[error("the node is not running")]
    NotRunning,
    #[error("the plugin has no bot user")]
    NoBotUser,
    #[error("the bot may not post about {0} objects")]
    ObjectType(String),
    #[error("no such message")]
    NoSuchMessage,
    #[error("unexpected answer")]
    UnexpectedAnswer,
    #[error(transparent)]
    Discussion(#[from] veche_core::discussions::DiscussionError),
}

impl Shared {
    /// Runs `work` with the discussions service, on the node's runtime.
    async fn with_discussions<T, F, Fut>(&self, work: F) -> Result<T, BotError>
    where
        T: Send + 'static,
        F: FnOnce(Discussions) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let sender = self
            .bot_work
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(BotError::NotRunning)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: BotWork = Box::new(move |discussions| {
            Box::pin(async move {
                let _ = tx.send(work(discussions).await);
            })
        });
        sender.send(job).await.map_err(|_| BotError::NotRunning)?;
        rx.await.map_err(|_| BotError::NotRunning)
    }

    fn bot_caller(env: &PluginEnv) -> Result<Caller, BotError> {
        let user = env.bot_user.clone().ok_or(BotError::NoBotUser)?;
        Ok(Caller {
            user,
            device: "plugin".into(),
            admin: false,
            connection: 0,
        })
    }

    /// Posts as the plugin's bot, exactly once per `key`.
    async fn post(
        &self,
        env: &PluginEnv,
        p: wit::Post,
        key: &str,
    ) -> Result<String, wit::PluginError> {
        let invalid = |e: BotError| wit::PluginError::Invalid(e.to_string());
        let caller = Self::bot_caller(env).map_err(invalid)?;
        let target = match (p.discussion, p.object) {
            (Some(d), None) => Ok(d),
            (None, Some(o)) => Err(o),
            _ => {
                return Err(wit::PluginError::Invalid(
                    "a post names either a discussion or an object".into(),
                ));
            }
        };
        let data = match p.data {
            Some(d) => Some(
                serde_json::from_str(&d)
                    .map_err(|e| wit::PluginError::Invalid(format!("data is not JSON: {e}")))?,
            ),
            None => None,
        };
        let mut hash = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(key, &mut hash);
        let client_msg_id = format!(
            "{}-{:016x}",
            &key.chars().take(40).collect::<String>(),
            std::hash::Hasher::finish(&hash)
        );
        let actions = p
            .actions
            .into_iter()
            .map(|a| Action {
                id: a.id,
                label: a.label,
            })
            .collect();
        let (text, reply_to) = (p.text, p.reply_to);
        let types = env.manifest.bot_object_types();
        let posted = self
            .with_discussions(move |discussions| async move {
                let discussion = match target {
                    Ok(d) => d,
                    Err(o) => open_object(&discussions, &types, &caller, &o).await?,
                };
                let message = SendMessage {
                    files: Vec::new(),
                    discussion,
                    client_msg_id,
                    text,
                    reply_to,
                    data,
                    actions,
                };
                match discussions.send(&caller, message).await? {
                    Reply::Sent { message_id, .. } => Ok(message_id),
                    _ => Err(BotError::UnexpectedAnswer),
                }
            })
            .await
            .map_err(|e| wit::PluginError::Unavailable(e.to_string()))?;
        posted.map_err(|e| match e {
            BotError::UnexpectedAnswer => wit::PluginError::Internal(e.to_string()),
            e => invalid(e),
        })
    }

    async fn react(&self, env: &PluginEnv, message: &str, emoji: &str) -> Result<(), BotError> {
        let caller = Self::bot_caller(env)?;
        let (message, emoji) = (message.to_owned(), emoji.to_owned());
        self.with_discussions(move |discussions| async move {
            let discussion = discussions
                .discussion_of(&message)
                .await
                .ok_or(BotError::NoSuchMessage)?;
            discussions
                .react(&caller, &discussion, &message, &emoji, true)
                .await?;
            Ok(())
        })
        .await?
    }

    async fn open_for(
        &self,
        env: &PluginEnv,
        o: &wit::ObjectRef,
        users: &[String],
    ) -> Result<(), BotError> {
        let caller = Self::bot_caller(env)?;
        let types = env.manifest.bot_object_types();
        let o = o.clone();
        let users: Vec<String> = users.iter().take(1000).cloned().collect();
        self.with_discussions(move |discussions| async move {
            let discussion = open_object(&discussions, &types, &caller, &o).await?;
            for user in users {
                let as_user = Caller {
                    user,
                    device: "plugin".into(),
                    admin: false,
                    connection: 0,
                };
                // Only users who may read the object get it in their list.
                if let Err(e) = discussions.follow(&as_user, &discussion, true).await {
                    tracing::debug!(user = %as_user.user, error = %e, "not added to an object discussion");
                }
            }
            Ok(())
        })
        .await?
    }
}

fn invocation(a: &Active) -> wit::Invocation {
    wit::Invocation {
        request_id: uuid::Uuid::now_v7().to_string(),
        deadline_ms: a.env.manifest.limits.call_timeout_ms,
    }
}

fn wit_object(o: &ObjectRef) -> wit::ObjectRef {
    wit::ObjectRef {
        application: o.application.clone(),
        object_type: o.object_type.clone(),
        id: o.object_id.clone(),
    }
}

fn describe(e: &wit::PluginError) -> String {
    match e {
        wit::PluginError::NotFound => "not found".into(),
        wit::PluginError::Invalid(s) => format!("invalid: {s}"),
        wit::PluginError::Unauthorized => "unauthorized".into(),
        wit::PluginError::Unavailable(s) => format!("unavailable: {s}"),
        wit::PluginError::Unsupported => "unsupported".into(),
        wit::PluginError::Internal(s) => format!("internal error: {s}"),
    }
}

/// Caps what a plugin renders, so that a plugin cannot flood clients.
fn clamp_rendered(mut r: wit::RenderedObject) -> wit::RenderedObject {
    let cut = |s: &mut String, n: usize| {
        if s.chars().count() > n {
            *s = s.chars().take(n).collect();
        }
    };
    cut(&mut r.title, 256);
    for s in [&mut r.subtitle, &mut r.url, &mut r.status]
        .into_iter()
        .flatten()
    {
        cut(s, 1024);
    }
    r.fields.truncate(32);
    for (k, v) in &mut r.fields {
        cut(k, 128);
        cut(v, 1024);
    }
    r
}

fn card(r: &wit::RenderedObject) -> ObjectCard {
    ObjectCard {
        title: r.title.clone(),
        subtitle: r.subtitle.clone(),
        url: r.url.clone(),
        status: r.status.clone(),
        fields: r.fields.clone(),
    }
}

/// A business event as the node keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BusinessEvent {
    pub(crate) source: String,
    pub(crate) kind: String,
    pub(crate) object: Option<ObjectRef>,
    pub(crate) payload: String,
    pub(crate) occurred_at: i64,
    pub(crate) idempotency_key: String,
}

impl BusinessEvent {
    /// Checks an event as an application sends it.
    pub(crate) fn new(
        source: String,
        kind: String,
        object: Option<ObjectRef>,
        payload: String,
        idempotency_key: String,
        occurred_at: i64,
    ) -> Result<Self, EventError> {
        let short = |s: &str| !s.is_empty() && s.len() <= 128;
        if !short(&source) || !short(&kind) || !short(&idempotency_key) {
            return Err(EventError::Field);
        }
        if payload.len() > 64 * 1024 {
            return Err(EventError::TooLarge);
        }
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&payload) {
            return Err(EventError::NotJson(e));
        }
        Ok(Self {
            source,
            kind,
            object,
            payload,
            occurred_at,
            idempotency_key,
        })
    }

    /// The JSON body webhooks receive for this event.
    pub(crate) fn webhook_body(&self) -> String {
        let payload: serde_json::Value =
            serde_json::from_str(&self.payload).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "type": "business_event",
            "source": self.source,
            "kind": self.kind,
            "object": self.object,
            "payload": payload,
            "occurred_at": veche_protocol::Timestamp(self.occurred_at),
            "idempotency_key": self.idempotency_key,
        })
        .to_string()
    }

    fn to_wit(&self) -> wit::BusinessEvent {
        wit::BusinessEvent {
            source: self.source.clone(),
            kind: self.kind.clone(),
            object: self.object.as_ref().map(wit_object),
            payload: self.payload.clone(),
            occurred_at_ms: self.occurred_at.max(0) as u64,
            idempotency_key: self.idempotency_key.clone(),
        }
    }
}

/// A message from a bot's inbox as the guest receives it.
fn message_to_wit(m: &BotMessage) -> wit::Message {
    wit::Message {
        id: m.id.clone(),
        discussion: m.discussion.clone(),
        object: m.object.as_ref().map(wit_object),
        author: m.author.clone(),
        text: m.text.clone(),
        mentions: m.mentions.clone(),
        reply_to: m.reply_to.clone(),
        sent_at_ms: m.sent_at.max(0) as u64,
    }
}

/// A click from a bot's inbox as the guest receives it.
fn click_to_wit(c: &Click) -> wit::ActionClick {
    wit::ActionClick {
        message: c.message.clone(),
        discussion: c.discussion.clone(),
        object: c.object.as_ref().map(wit_object),
        action: c.action.clone(),
        user: c.user.clone(),
        data: c.data.clone(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Inbox {
    Message(BotMessage),
    Event(BusinessEvent),
    Click(Click),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_reads_back_the_messages_the_sequencer_queues() {
        let message = BotMessage {
            id: "m1@a.test".into(),
            discussion: "d1@a.test".into(),
            object: None,
            author: "anna@a.test".into(),
            text: "привет".into(),
            mentions: vec!["bot@a.test".into()],
            reply_to: None,
            sent_at: 7,
        };
        match serde_json::from_str::<Inbox>(&message.payload()) {
            Ok(Inbox::Message(read)) => {
                assert_eq!(
                    (read.id, read.text, read.sent_at),
                    (message.id, message.text, 7)
                );
            }
            other => panic!("not read back as a message: {other:?}"),
        }
    }
}
