//! The wasmtime side: one engine with an epoch ticker and the pooling allocator, compiled
//! artifacts cached on disk, install-time checks of a component's imports and exports, and
//! calls under a memory cap, a CPU budget and a wall-clock deadline.
//!
//! The epoch ticker ticks only while some guest code may run (a call, an instantiation and
//! its `init`, a storage stream's operation): every such path holds an [`InFlight`] guard.
//! With nothing in flight it sleeps on a condition variable, so an idle node pays nothing
//! for it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Instance, InstancePre, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap,
    UpdateDeadline,
};

use super::bindings::FullPlugin;
use super::bindings::exports::veche::plugin::{bot, context_provider, lifecycle, storage_backend};
use super::host::{HostState, PluginEnv, Rights};
use super::manifest::Manifest;

/// One epoch tick.
pub(crate) const TICK: Duration = Duration::from_millis(1);
/// Instances alive at once, over all plugins (pooling allocator slots).
const MAX_INSTANCES: u32 = 256;
/// A warm instance serves this many calls, then is replaced.
const CALLS_PER_INSTANCE: u32 = 1000;

/// The engine and the linker every plugin is instantiated with.
pub(crate) struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: PathBuf,
    /// Compiled artifacts in use, by plugin id: the current version's and the previous one's
    /// (a failed upgrade falls back to it). Every other artifact in `cache` is removed by
    /// [`Runtime::prune_cache`].
    kept: Mutex<std::collections::HashMap<String, Vec<PathBuf>>>,
    ticker: Arc<Ticker>,
    /// Where bot and storage code runs: worker threads of their own in `SCHED_IDLE`, so that a
    /// plugin spinning at its CPU limit takes only what the node's own threads leave. Only
    /// wasm runs there: host functions that touch the database hop back to `main`.
    pool: Arc<Mutex<Option<tokio::runtime::Runtime>>>,
    pool_handle: Option<tokio::runtime::Handle>,
    /// The node's own runtime.
    pub(crate) main: tokio::runtime::Handle,
    /// Ends the guard task (see `new`) when this runtime is dropped.
    _dropped: tokio::sync::oneshot::Sender<()>,
}

/// A call into an instance, run on the plugin pool.
pub(crate) type CallFn<R> = Box<
    dyn for<'a> FnOnce(
            &'a mut Store<HostState>,
            &'a Instance,
        ) -> futures_util::future::BoxFuture<'a, wasmtime::Result<R>>
        + Send,
>;

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops the plugin threads when dropped (with the task on the node's runtime that holds it).
struct PoolGuard(Arc<Mutex<Option<tokio::runtime::Runtime>>>, Arc<Ticker>);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        stop_pool(&self.0, &self.1);
    }
}

/// Stops the epoch ticker and the plugin threads (without waiting for them).
fn stop_pool(pool: &Mutex<Option<tokio::runtime::Runtime>>, ticker: &Ticker) {
    ticker.stop();
    let pool = pool.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(pool) = pool {
        // Called from async code: do not wait for the threads here.
        pool.shutdown_background();
    }
}

/// The epoch ticker: it advances the engine's epoch every [`TICK`] while at least one call
/// into a guest is in flight, and sleeps on `wake` otherwise. A store's CPU budget counts the
/// ticks its guest code saw, so a spinning guest is interrupted at its limit exactly as if
/// the ticker never stopped: it cannot run without being in flight.
#[derive(Debug, Default)]
pub(crate) struct Ticker {
    state: Mutex<TickerState>,
    wake: Condvar,
    /// Ticks so far.
    ticks: AtomicU64,
}

#[derive(Debug, Default)]
struct TickerState {
    /// Guest calls that may run now.
    in_flight: usize,
    /// The ticker thread waits for a call.
    parked: bool,
    stop: bool,
}

/// Held while guest code may run; the ticker ticks while any is alive.
#[must_use]
pub(crate) struct InFlight(Arc<Ticker>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
    }
}

impl Ticker {
    fn lock(&self) -> std::sync::MutexGuard<'_, TickerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks a call in flight until the guard is dropped, waking the ticker if it slept.
    pub(crate) fn enter(self: &Arc<Self>) -> InFlight {
        let mut s = self.lock();
        s.in_flight += 1;
        if s.in_flight == 1 {
            self.wake.notify_one();
        }
        InFlight(self.clone())
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    /// The ticker thread's loop: until stopped or the engine is gone.
    fn run(&self, engine: wasmtime::EngineWeak) {
        loop {
            {
                let mut s = self.lock();
                while s.in_flight == 0 && !s.stop {
                    s.parked = true;
                    s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                }
                s.parked = false;
                if s.stop {
                    return;
                }
            }
            std::thread::sleep(TICK);
            match engine.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ticks so far, and whether the ticker sleeps waiting for a call.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn observe(&self) -> (u64, bool) {
        let s = self.lock();
        (self.ticks.load(Ordering::Relaxed), s.parked)
    }
}

/// Puts the calling thread in the `SCHED_IDLE` class (best effort): it runs only when no
/// other thread of the machine wants the CPU, and any of the node's threads waking up
/// preempts it at once. (A nice value is not enough: the kernel lets a low-priority thread
/// finish its time slice, a few milliseconds, before a waking thread runs.)
fn lower_priority() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::debug!(error = ?e, "cannot lower the plugin thread's priority");
    }
}

/// Why a component cannot be installed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error("the component does not compile: {0}")]
    Compile(String),
    #[error("the component imports {interface}, {why}")]
    Import { interface: String, why: String },
    #[error("the component {0}")]
    Export(String),
    #[error(
        "the component was built against {found}; {}",
        super::manifest::api_advice()
    )]
    IncompatibleApi { found: String },
    #[error("the component cannot be linked: {0}")]
    Link(String),
    #[error("cannot cache the compiled component: {0}")]
    Cache(String),
}

/// Why the plugin runtime could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RuntimeError {
    #[error("cannot start wasmtime: {0:#}")]
    Engine(wasmtime::Error),
    #[error("cannot link WASI: {0:#}")]
    Wasi(wasmtime::Error),
    #[error("cannot link the plugin API: {0:#}")]
    Api(wasmtime::Error),
    #[error("cannot create {}: {source}", .path.display())]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the epoch ticker: {0}")]
    Ticker(std::io::Error),
    #[error("cannot start the plugin threads: {0}")]
    Threads(std::io::Error),
    #[error("the plugin host needs a tokio runtime: {0}")]
    NoRuntime(tokio::runtime::TryCurrentError),
}

impl Runtime {
    pub(crate) fn new(cache: PathBuf) -> Result<Self, RuntimeError> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        cfg.max_wasm_stack(512 * 1024);
        // Reserve each linear memory's maximum (128 MiB) plus a small guard, not wasmtime's
        // default 4 GiB + guard: 256 slots of that would reserve 2 TiB of address space per
        // node, which a machine running many nodes (the test suite) runs out of. The cost is
        // explicit bounds checks in compiled code.
        cfg.memory_reservation(super::manifest::MAX_MEMORY);
        cfg.memory_guard_size(2 << 20);
        cfg.memory_reservation_for_growth(0);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(MAX_INSTANCES)
            .total_core_instances(4 * MAX_INSTANCES)
            .total_memories(MAX_INSTANCES)
            .total_tables(4 * MAX_INSTANCES)
            .total_stacks(MAX_INSTANCES)
            .max_memory_size(super::manifest::MAX_MEMORY as usize)
            .max_component_instance_size(1 << 20);
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(RuntimeError::Engine)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(RuntimeError::Wasi)?;
        FullPlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(RuntimeError::Api)?;

        std::fs::create_dir_all(&cache).map_err(|source| RuntimeError::Cache {
            path: cache.clone(),
            source,
        })?;
        let ticker = Arc::new(Ticker::default());
        let ticking = ticker.clone();
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("veche-epoch".into())
            .spawn(move || ticking.run(weak))
            .map_err(RuntimeError::Ticker)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let pool = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("veche-plugin")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .map_err(RuntimeError::Threads)?;
        let main = tokio::runtime::Handle::try_current().map_err(RuntimeError::NoRuntime)?;
        let pool_handle = Some(pool.handle().clone());
        let pool = Arc::new(Mutex::new(Some(pool)));
        // The plugin threads end with the node's runtime, however the node ends: their tasks
        // hold the node's services, which hold this runtime, so nothing else would free them
        // if the node were dropped without `stop` (a test's runtime ending, say).
        let guard = PoolGuard(pool.clone(), ticker.clone());
        let (dropped, gone) = tokio::sync::oneshot::channel::<()>();
        main.spawn(async move {
            let _guard = guard;
            // Until this runtime is dropped (or the node's runtime ends, dropping the task).
            let _ = gone.await;
        });
        Ok(Self {
            engine,
            linker,
            cache,
            kept: Mutex::new(std::collections::HashMap::new()),
            ticker,
            pool_handle,
            pool,
            main,
            _dropped: dropped,
        })
    }

    /// Compiles (or loads the cached artifact of) a component, checks its imports against
    /// `rights` and its exports against the manifest's roles, and prepares instantiation.
    pub(crate) fn load(
        &self,
        wasm: &[u8],
        manifest: &Manifest,
        rights: Rights,
    ) -> Result<Loaded, LoadError> {
        let (component, artifact) = self.compile(wasm)?;
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            check_import(name, rights)?;
        }
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        check_exports(&exports, manifest)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        fn missing(role: &'static str) -> impl Fn(wasmtime::Error) -> LoadError {
            move |e| LoadError::Export(format!("does not export the {role} role correctly: {e:#}"))
        }
        let lifecycle = lifecycle::GuestIndices::new(&pre).map_err(missing("lifecycle"))?;
        let roles = &manifest.roles;
        let context = match roles.context_provider {
            Some(_) => Some(
                context_provider::GuestIndices::new(&pre).map_err(missing("context-provider"))?,
            ),
            None => None,
        };
        let bot = match roles.bot {
            Some(_) => Some(bot::GuestIndices::new(&pre).map_err(missing("bot"))?),
            None => None,
        };
        let storage = match roles.storage_backend {
            Some(_) => {
                Some(storage_backend::GuestIndices::new(&pre).map_err(missing("storage-backend"))?)
            }
            None => None,
        };
        self.keep(&manifest.id, artifact);
        Ok(Loaded {
            pre,
            lifecycle,
            context,
            bot,
            storage,
            warm: Mutex::new(Vec::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(
                manifest.limits.max_concurrency as usize,
            )),
            started: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The compiled component, from the on-disk cache when this wasmtime and configuration
    /// compiled it before.
    fn compile(&self, wasm: &[u8]) -> Result<(Component, PathBuf), LoadError> {
        let mut h = Sha256::new();
        h.update(wasm);
        let mut compat = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&self.engine.precompile_compatibility_hash(), &mut compat);
        let key = format!(
            "{}-{:016x}.cwasm",
            hex::encode(h.finalize()),
            std::hash::Hasher::finish(&compat)
        );
        let path = self.cache.join(key);
        if path.exists() {
            // SAFETY: the file is an artifact this node wrote itself, into its own 0700 data
            // folder, named by the component's hash and the engine's compatibility hash.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok((c, path)),
                Err(e) => {
                    tracing::warn!(error = %e, path = %path.display(), "cached plugin artifact unusable; recompiling")
                }
            }
        }
        let component =
            Component::new(&self.engine, wasm).map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let bytes = component
            .serialize()
            .map_err(|e| LoadError::Cache(format!("{e:#}")))?;
        write_atomically(&path, &bytes).map_err(|e| LoadError::Cache(e.to_string()))?;
        Ok((component, path))
    }

    /// Records `artifact` as plugin `id`'s current one; the one before stays as the previous.
    fn keep(&self, id: &str, artifact: PathBuf) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let list = kept.entry(id.to_owned()).or_default();
        list.retain(|p| *p != artifact);
        list.push(artifact);
        if list.len() > 2 {
            list.remove(0);
        }
    }

    /// Forgets plugin `id`'s artifacts (it was uninstalled): the next prune removes them.
    pub(crate) fn forget(&self, id: &str) {
        self.kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Removes every compiled artifact that is neither the current nor the previous one of an
    /// installed plugin; how many it removed. Only once every installed plugin has loaded:
    /// before that, an artifact not yet asked for would be compiled again.
    pub(crate) fn prune_cache(&self) -> std::io::Result<usize> {
        let kept: std::collections::HashSet<PathBuf> = self
            .kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect();
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.cache)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "cwasm") && !kept.contains(&path) {
                std::fs::remove_file(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Stops the epoch ticker and the plugin threads (calls still running there are dropped).
    pub(crate) fn stop(&self) {
        stop_pool(&self.pool, &self.ticker);
    }

    /// The epoch ticker (tests observe it).
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn ticker(&self) -> &Ticker {
        &self.ticker
    }

    /// Whether the current task runs on the plugin threads (bot dispatchers do): calls then
    /// run inline, without a hop.
    fn on_pool(&self) -> bool {
        let current = tokio::runtime::Handle::try_current().map(|h| h.id());
        matches!((&self.pool_handle, current), (Some(pool), Ok(id)) if pool.id() == id)
    }

    /// Runs `task` on the plugin threads without waiting for it; `false` if they are gone.
    pub(crate) fn spawn_detached(
        &self,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> bool {
        self.spawn(task).is_some()
    }

    /// Runs `task` on the plugin pool; `None` if the pool is gone (the node is stopping).
    fn spawn<T: Send + 'static>(
        &self,
        task: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<T>> {
        let running = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        running
            .then(|| self.pool_handle.as_ref().map(|h| h.spawn(task)))
            .flatten()
    }
}

/// A fresh store for one instance of `env`'s plugin.
fn new_store(engine: &Engine, env: &Arc<PluginEnv>) -> Result<Store<HostState>, CallError> {
    {
        let limits = &env.manifest.limits;
        let budget = (limits.cpu_ms as u64)
            .div_ceil(TICK.as_millis() as u64)
            .max(1) as u32;
        let state = HostState::new(env.clone(), limits.memory.as_u64() as usize, budget)
            .map_err(|e| CallError::Host(e.to_string()))?;
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut cx| {
            let s = cx.data_mut();
            s.cpu_ticks += 1;
            Ok(if s.cpu_ticks > s.cpu_budget {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        Ok(store)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Interfaces every plugin may import: its own API's host side and the harmless parts of WASI
/// that Rust's standard library always links (no files, no network).
fn check_import(name: &str, rights: Rights) -> Result<(), LoadError> {
    let (interface, _version) = name.split_once('@').unwrap_or((name, ""));
    let refuse = |why: String| {
        Err(LoadError::Import {
            interface: name.to_owned(),
            why,
        })
    };
    if let Some(rest) = interface.strip_prefix("veche:plugin/") {
        check_api_version(name)?;
        return match rest {
            "types" | "log" | "config" => Ok(()),
            "kv" if rights.kv => Ok(()),
            "messaging" if rights.messaging => Ok(()),
            "kv" | "messaging" => refuse(format!(
                "which needs the right `{rest}`: ask for it in plugin.toml [capabilities] and have the administrator grant it"
            )),
            _ => refuse("which this node does not provide".into()),
        };
    }
    let Some((package, iface)) = interface.split_once('/') else {
        return refuse("which this node does not provide".into());
    };
    match package {
        "wasi:io" | "wasi:clocks" | "wasi:random" => Ok(()),
        "wasi:cli" => Ok(()),
        "wasi:filesystem" if rights.filesystem => Ok(()),
        "wasi:filesystem" => refuse(
            "but file system access is only for storage backends granted the right `filesystem`"
                .into(),
        ),
        "wasi:sockets" | "wasi:http" => refuse(format!(
            "but plugins get no network access ({package}/{iface} is never granted)"
        )),
        _ => refuse("which this node does not provide".into()),
    }
}

/// `veche:plugin/x@MAJOR.MINOR.PATCH` must be an API this node implements.
fn check_api_version(name: &str) -> Result<(), LoadError> {
    let version = name.split_once('@').map_or("", |(_, v)| v);
    let mut parts = version.split('.').map(str::parse::<u64>);
    let ok = matches!(
        (parts.next(), parts.next()),
        (Some(Ok(major)), Some(Ok(minor))) if super::manifest::api_supported(major, minor)
    );
    if ok {
        Ok(())
    } else {
        Err(LoadError::IncompatibleApi {
            found: name.to_owned(),
        })
    }
}

/// Every role the manifest declares must be exported, at a compatible API version.
fn check_exports(exports: &[String], manifest: &Manifest) -> Result<(), LoadError> {
    for e in exports.iter().filter(|e| e.starts_with("veche:plugin/")) {
        check_api_version(e)?;
    }
    let has = |iface: &str| {
        exports
            .iter()
            .any(|e| e.split_once('@').is_some_and(|(i, _)| i == iface))
    };
    let mut wanted = vec!["lifecycle"];
    let roles = &manifest.roles;
    if roles.context_provider.is_some() {
        wanted.push("context-provider");
    }
    if roles.bot.is_some() {
        wanted.push("bot");
    }
    if roles.storage_backend.is_some() {
        wanted.push("storage-backend");
    }
    for w in wanted {
        if !has(&format!("veche:plugin/{w}")) {
            return Err(LoadError::Export(format!(
                "does not export veche:plugin/{w}, which plugin.toml declares"
            )));
        }
    }
    Ok(())
}

/// A compiled plugin version, ready to instantiate.
pub(crate) struct Loaded {
    pre: InstancePre<HostState>,
    lifecycle: lifecycle::GuestIndices,
    pub(crate) context: Option<context_provider::GuestIndices>,
    pub(crate) bot: Option<bot::GuestIndices>,
    pub(crate) storage: Option<storage_backend::GuestIndices>,
    /// Instances that finished their last call cleanly, ready for the next.
    warm: Mutex<Vec<Warm>>,
    /// `max-concurrency` calls (or storage streams) at once.
    permits: Arc<tokio::sync::Semaphore>,
    /// Calls made into this version so far.
    started: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded").finish_non_exhaustive()
    }
}

/// A live instance in its own store.
pub(crate) struct Warm {
    pub(crate) store: Store<HostState>,
    pub(crate) instance: Instance,
    calls: u32,
    /// Held by a storage stream for its life.
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Why a plugin call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CallError {
    #[error("the plugin used up its CPU time ({0} ms)")]
    Cpu(u32),
    #[error("the plugin did not answer within {0} ms")]
    Timeout(u32),
    #[error("the plugin went over its memory limit")]
    Memory,
    #[error("the plugin crashed: {0}")]
    Trap(String),
    #[error("the plugin's init failed: {0}")]
    Init(String),
    /// The node could not set up the call.
    #[error("{0}")]
    Host(String),
    #[error("the plugin is paused: {0}")]
    Paused(String),
}

impl CallError {
    /// Whether this counts against the plugin's circuit breaker.
    pub(crate) fn is_failure(&self) -> bool {
        !matches!(self, CallError::Paused(_) | CallError::Host(_))
    }
}

/// What one call left behind: its outcome, its log lines, what it printed.
pub(crate) type Outcome<R> = (Result<R, CallError>, Vec<super::host::LogLine>, String);

/// Extra time the caller waits for the plugin pool beyond the plugin's own deadline.
const POOL_GRACE: Duration = Duration::from_secs(1);

impl Loaded {
    /// How many calls were made into this version.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn calls_started(&self) -> u64 {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many of its `max_concurrency` calls are running.
    #[cfg(any(test, feature = "test-utils"))]
    pub(crate) fn calls_in_flight(&self, max_concurrency: u32) -> usize {
        (max_concurrency as usize).saturating_sub(self.permits.available_permits())
    }

    /// Runs `f` on an instance, on the plugin pool: a warm instance if there is one, else a
    /// fresh one (instantiated and initialised). The instance returns to the warm list only if
    /// the call went cleanly.
    pub(crate) async fn call<R: Send + 'static>(
        self: &Arc<Self>,
        runtime: &Runtime,
        env: &Arc<PluginEnv>,
        read_only: bool,
        f: CallFn<R>,
    ) -> Outcome<R> {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let limits = &env.manifest.limits;
        let timeout = Duration::from_millis(limits.call_timeout_ms.into());
        let Ok(Ok(permit)) =
            tokio::time::timeout(timeout, self.permits.clone().acquire_owned()).await
        else {
            let busy = format!("all {} of its instances are busy", limits.max_concurrency);
            return (Err(CallError::Host(busy)), Vec::new(), String::new());
        };
        if read_only || runtime.on_pool() {
            // Context providers answer a user who waits (a read, or a command being decided
            // before the sequencer applies it; never the sequencer itself, which holds the
            // database's writer): they run right here, at the node's priority, never waiting
            // for an idle-class thread. Dispatchers already run on the plugin threads.
            let _permit = permit;
            let _ticking = runtime.ticker.enter();
            return self.run(&runtime.engine, env, read_only, timeout, f).await;
        }
        let this = self.clone();
        let env2 = env.clone();
        let engine = runtime.engine.clone();
        let ticker = runtime.ticker.clone();
        let task = runtime.spawn(async move {
            let _permit = permit;
            let _ticking = ticker.enter();
            this.run(&engine, &env2, read_only, timeout, f).await
        });
        let Some(task) = task else {
            let stopping = "the node is stopping".to_owned();
            return (Err(CallError::Host(stopping)), Vec::new(), String::new());
        };
        on_pool(task, timeout, limits.call_timeout_ms)
            .await
            .unwrap_or_else(|e| (Err(e), Vec::new(), String::new()))
    }

    /// Runs `f`; the caller holds an [`InFlight`] guard for the whole call.
    async fn run<R>(
        &self,
        engine: &Engine,
        env: &Arc<PluginEnv>,
        read_only: bool,
        timeout: Duration,
        f: CallFn<R>,
    ) -> Outcome<R> {
        let limits = &env.manifest.limits;
        let started = Instant::now();
        let warm = self.warm.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut warm = match warm {
            Some(w) => w,
            None => match self.instantiate(engine, env, timeout).await {
                Ok(w) => w,
                Err((e, logs, stderr)) => return (Err(e), logs, stderr),
            },
        };
        warm.store.data_mut().reset_call(read_only);
        warm.store.set_epoch_deadline(1);
        let left = timeout.saturating_sub(started.elapsed());
        let outcome = tokio::time::timeout(left, f(&mut warm.store, &warm.instance)).await;
        env.charge_cpu(warm.store.data().cpu_ticks);
        let logs = std::mem::take(&mut warm.store.data_mut().logs);
        let stderr = warm.store.data_mut().take_output();
        let result = match outcome {
            Err(_) => Err(timed_out(&warm.store, limits.call_timeout_ms)),
            Ok(Err(e)) => Err(classify(&e, &warm.store, &stderr)),
            Ok(Ok(r)) => Ok(r),
        };
        if result.is_ok() && !warm.store.data().output_full() {
            warm.calls += 1;
            if warm.calls < CALLS_PER_INSTANCE {
                let mut list = self.warm.lock().unwrap_or_else(|e| e.into_inner());
                if list.len() < limits.max_concurrency as usize {
                    list.push(warm);
                }
            }
        }
        // Otherwise the store (and its instance) is dropped here: never reused after a trap.
        (result, logs, stderr)
    }

    /// Instantiates and initialises; the caller holds an [`InFlight`] guard.
    async fn instantiate(
        &self,
        engine: &Engine,
        env: &Arc<PluginEnv>,
        timeout: Duration,
    ) -> Result<Warm, (CallError, Vec<super::host::LogLine>, String)> {
        let mut store = new_store(engine, env).map_err(|e| (e, Vec::new(), String::new()))?;
        store.set_epoch_deadline(1);
        let ms = env.manifest.limits.call_timeout_ms;
        let outcome = tokio::time::timeout(timeout, async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            let init = self
                .lifecycle
                .load(&mut store, &instance)?
                .call_init(&mut store)
                .await?;
            Ok::<_, wasmtime::Error>((instance, init))
        })
        .await;
        let logs = std::mem::take(&mut store.data_mut().logs);
        let stderr = store.data_mut().take_output();
        match outcome {
            Err(_) => Err((CallError::Timeout(ms), logs, stderr)),
            Ok(Err(e)) => Err((classify(&e, &store, &stderr), logs, stderr)),
            Ok(Ok((_, Err(msg)))) => Err((CallError::Init(msg), logs, stderr)),
            Ok(Ok((instance, Ok(())))) => {
                // What `init` logged goes out with the lines of the call it was made for.
                store.data_mut().logs = logs;
                Ok(Warm {
                    store,
                    instance,
                    calls: 0,
                    _permit: None,
                })
            }
        }
    }

    /// Forgets warm instances (after a failure elsewhere, or when the plugin is replaced).
    pub(crate) fn cool(&self) {
        self.warm.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A fresh, initialised instance of its own, holding one of the plugin's concurrency
    /// permits for its life (storage streams keep one instance from start to end).
    pub(crate) async fn fresh(
        self: &Arc<Self>,
        runtime: &Runtime,
        env: &Arc<PluginEnv>,
    ) -> Result<Warm, CallError> {
        let ms = env.manifest.limits.call_timeout_ms;
        let timeout = Duration::from_millis(ms.into());
        let permit = tokio::time::timeout(timeout, self.permits.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| CallError::Host("all of the plugin's instances are busy".into()))?;
        let this = self.clone();
        let env2 = env.clone();
        let engine = runtime.engine.clone();
        let ticker = runtime.ticker.clone();
        let task = runtime
            .spawn(async move {
                let _ticking = ticker.enter();
                this.instantiate(&engine, &env2, timeout).await
            })
            .ok_or_else(|| CallError::Host("the node is stopping".into()))?;
        let mut warm = on_pool(task, timeout, ms).await?.map_err(|(e, _, _)| e)?;
        warm._permit = Some(permit);
        Ok(warm)
    }
}

/// Waits for a task on the plugin pool: at most the plugin's deadline plus a grace period,
/// after which the task is aborted (dropping its store). Not the plugin's fault: the pool
/// could not run it in time (the machine is saturated), so it is not counted against it.
async fn on_pool<T>(
    mut task: tokio::task::JoinHandle<T>,
    timeout: Duration,
    ms: u32,
) -> Result<T, CallError> {
    match tokio::time::timeout(timeout + POOL_GRACE, &mut task).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError::Host(format!("the plugin task failed: {e}"))),
        Err(_) => {
            task.abort();
            Err(CallError::Host(format!(
                "the plugin threads did not finish a {ms} ms call in time (the machine is busy)"
            )))
        }
    }
}

/// A call that ran out of wall-clock time: the plugin's fault if it was running (it used at
/// least half its CPU budget, or it was stuck in a host call of its own making), the host's
/// if its thread hardly ran at all.
fn timed_out(store: &Store<HostState>, ms: u32) -> CallError {
    let s = store.data();
    if s.cpu_ticks * 2 < s.cpu_budget && s.host_calls == 0 {
        CallError::Host(format!(
            "the plugin threads were starved during a {ms} ms call (the machine is busy)"
        ))
    } else {
        CallError::Timeout(ms)
    }
}

/// Runs one call on an instance held by the caller (a storage stream), on the plugin pool,
/// under the plugin's limits. The instance comes back in `warm` only if the call finished
/// (successfully or with an error the instance survives); otherwise `warm` is left empty.
pub(crate) async fn call_on<R: Send + 'static>(
    runtime: &Runtime,
    warm: &mut Option<Warm>,
    env: &PluginEnv,
    f: CallFn<R>,
) -> (Result<R, CallError>, Vec<super::host::LogLine>, String) {
    let ms = env.manifest.limits.call_timeout_ms;
    let timeout = Duration::from_millis(ms.into());
    let Some(mut w) = warm.take() else {
        let gone = "the stream's instance is gone".to_owned();
        return (Err(CallError::Host(gone)), Vec::new(), String::new());
    };
    let ticker = runtime.ticker.clone();
    let task = runtime.spawn(async move {
        let _ticking = ticker.enter();
        w.store.data_mut().reset_call(false);
        w.store.set_epoch_deadline(1);
        let outcome = tokio::time::timeout(timeout, f(&mut w.store, &w.instance)).await;
        w.store.data().env.charge_cpu(w.store.data().cpu_ticks);
        let logs = std::mem::take(&mut w.store.data_mut().logs);
        let stderr = w.store.data_mut().take_output();
        let result = match outcome {
            Err(_) => Err(timed_out(&w.store, ms)),
            Ok(Err(e)) => Err(classify(&e, &w.store, &stderr)),
            Ok(Ok(r)) => Ok(r),
        };
        (w, result, logs, stderr)
    });
    let Some(task) = task else {
        let stopping = "the node is stopping".to_owned();
        return (Err(CallError::Host(stopping)), Vec::new(), String::new());
    };
    match on_pool(task, timeout, ms).await {
        Ok((w, result, logs, stderr)) => {
            if result.is_ok() {
                *warm = Some(w);
            }
            (result, logs, stderr)
        }
        Err(e) => (Err(e), Vec::new(), String::new()),
    }
}

/// What a wasmtime error means for the plugin; `stderr` is what it printed during the call.
fn classify(e: &wasmtime::Error, store: &Store<HostState>, stderr: &str) -> CallError {
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        // The node's instance slots are all taken: not the plugin's fault.
        return CallError::Host("the node has no free plugin instance slot; try again".into());
    }
    let text = format!("{e:#}");
    let out_of_memory = stderr.contains("memory allocation of")
        || text.contains("forcing trap when growing memory");
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => CallError::Cpu(store.data().env.manifest.limits.cpu_ms),
        Some(Trap::AllocationTooLarge) => CallError::Memory,
        _ if out_of_memory => CallError::Memory,
        Some(trap) => match stderr.lines().find(|l| l.contains("panicked")) {
            Some(panic) => CallError::Trap(format!("{trap}: {}", panic.trim())),
            None => CallError::Trap(trap.to_string()),
        },
        None => CallError::Trap(text),
    }
}

/// A digest of a component's bytes.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
