//! Blobs kept by a storage-backend plugin. A write or a read holds one instance of its own for
//! its whole life (the plugin's `writer`/`reader` resources live in it); every chunk is one
//! call under the plugin's limits, so memory stays bounded by the chunk size.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use wasmtime::component::ResourceAny;

use super::bindings::exports::veche::plugin::storage_backend::Guest;
use super::bindings::veche::plugin::types as wit;
use super::runtime::{CallError, CallFn, Warm, call_on};
use super::{Active, Plugins, describe, invocation};
use futures_util::future::BoxFuture;

/// Bytes passed to the plugin per call.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BlobError {
    #[error("the storage backend plugin {0:?} is not installed")]
    NoBackend(String),
    #[error("the storage backend refused: {0}")]
    Backend(String),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("reading the upload failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blob {
    pub(crate) key: String,
    pub(crate) size: u64,
}

/// The blobs of one storage-backend plugin.
#[derive(Debug, Clone)]
pub(crate) struct PluginBlobs {
    plugins: Plugins,
    id: String,
}

type Indices = super::bindings::exports::veche::plugin::storage_backend::GuestIndices;

impl PluginBlobs {
    pub(super) fn new(plugins: Plugins, id: String) -> Self {
        Self { plugins, id }
    }

    fn active(&self) -> Result<Arc<Active>, BlobError> {
        self.plugins
            .get(&self.id)
            .filter(|a| a.loaded.is_some() && a.row.enabled)
            .ok_or_else(|| BlobError::NoBackend(self.id.clone()))
    }

    /// A fresh instance for one operation, if the plugin's breaker lets calls through.
    async fn instance(&self, a: &Active) -> Result<(Option<Warm>, Indices), BlobError> {
        let loaded = a
            .loaded
            .as_ref()
            .ok_or_else(|| BlobError::NoBackend(self.id.clone()))?;
        let idx = loaded
            .storage
            .clone()
            .ok_or_else(|| BlobError::NoBackend(self.id.clone()))?;
        let admit = a
            .breaker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(std::time::Instant::now());
        if let super::breaker::Admit::No(left) = admit {
            let paused = format!("paused for {} ms", left.as_millis());
            return Err(CallError::Paused(paused).into());
        }
        let result = loaded.fresh(&self.plugins.shared.runtime, &a.env).await;
        self.plugins.record(a, "storage", &result);
        Ok((Some(result?), idx))
    }

    /// Runs one call on the operation's instance, recording its outcome in the breaker.
    async fn run<R: Send + 'static>(
        &self,
        a: &Active,
        warm: &mut Option<Warm>,
        f: CallFn<Result<R, wit::PluginError>>,
    ) -> Result<R, BlobError> {
        let (result, logs, output) = call_on(&self.plugins.shared.runtime, warm, &a.env, f).await;
        self.plugins.keep_logs(&a.env.id, logs, &output);
        self.plugins.record(a, "storage", &result);
        result?.map_err(|e| BlobError::Backend(describe(&e)))
    }

    /// One storage-backend call on the operation's instance.
    async fn op<R: Send + 'static>(
        &self,
        a: &Active,
        warm: &mut Option<Warm>,
        idx: &Indices,
        f: impl for<'a> FnOnce(
            Guest,
            &'a mut wasmtime::Store<super::host::HostState>,
        ) -> BoxFuture<'a, wasmtime::Result<Result<R, wit::PluginError>>>
        + Send
        + 'static,
    ) -> Result<R, BlobError> {
        let idx = idx.clone();
        let call: CallFn<Result<R, wit::PluginError>> = Box::new(move |store, instance| {
            Box::pin(async move {
                let guest = idx.load(&mut *store, instance)?;
                f(guest, store).await
            })
        });
        self.run(a, warm, call).await
    }

    /// Streams `data` into the blob `key`, chunk by chunk; the blob appears only when all of
    /// it is written.
    pub(crate) async fn put(
        &self,
        key: &str,
        mut data: impl AsyncRead + Unpin,
    ) -> Result<Blob, BlobError> {
        let a = self.active()?;
        let (mut warm, idx) = self.instance(&a).await?;
        let (cx, k) = (invocation(&a), key.to_owned());
        let writer: ResourceAny = self
            .op(&a, &mut warm, &idx, move |g, store| {
                Box::pin(async move { g.call_open_write(store, &cx, &k).await })
            })
            .await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            let (n, failed) = match read_full(&mut data, &mut buf).await {
                Ok(0) => break,
                Ok(n) => (n, None),
                Err(e) => (0, Some(BlobError::Io(e))),
            };
            let wrote = match failed {
                Some(e) => Err(e),
                None => {
                    let chunk = buf[..n].to_vec();
                    self.op(&a, &mut warm, &idx, move |g, store| {
                        Box::pin(async move { g.writer().call_write(store, writer, &chunk).await })
                    })
                    .await
                }
            };
            if let Err(e) = wrote {
                // The upload or the backend failed: the backend drops what it has (unless its
                // instance is gone after a trap or a timeout).
                if warm.is_some() {
                    let _ = self
                        .op(&a, &mut warm, &idx, move |g, store| {
                            Box::pin(async move {
                                g.writer().call_abort(store, writer).await?;
                                Ok(Ok(()))
                            })
                        })
                        .await;
                }
                return Err(e);
            }
        }
        let info = self
            .op(&a, &mut warm, &idx, move |g, store| {
                Box::pin(async move { g.writer().call_finish(store, writer).await })
            })
            .await?;
        Ok(Blob {
            key: info.key,
            size: info.size,
        })
    }

    /// Reads the whole blob, sending each chunk to `sink` as it arrives (a bounded channel
    /// keeps memory bounded when the receiver is slower than the plugin). A receiver that
    /// went away ends the read with an error.
    pub(crate) async fn get(
        &self,
        key: &str,
        sink: tokio::sync::mpsc::Sender<Vec<u8>>,
    ) -> Result<u64, BlobError> {
        let a = self.active()?;
        let (mut warm, idx) = self.instance(&a).await?;
        let (cx, k) = (invocation(&a), key.to_owned());
        let reader: ResourceAny = self
            .op(&a, &mut warm, &idx, move |g, store| {
                Box::pin(async move { g.call_open_read(store, &cx, &k).await })
            })
            .await?;
        let mut total = 0u64;
        loop {
            let chunk = self
                .op(&a, &mut warm, &idx, move |g, store| {
                    Box::pin(async move { g.reader().call_read(store, reader, CHUNK as u32).await })
                })
                .await?;
            let Some(chunk) = chunk else { break };
            if chunk.len() > CHUNK {
                return Err(BlobError::Backend(format!(
                    "the backend returned {} bytes where at most {CHUNK} were asked for",
                    chunk.len()
                )));
            }
            total += chunk.len() as u64;
            sink.send(chunk).await.map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader went away")
            })?;
        }
        Ok(total)
    }

    pub(crate) async fn stat(&self, key: &str) -> Result<Option<Blob>, BlobError> {
        let a = self.active()?;
        let (mut warm, idx) = self.instance(&a).await?;
        let (cx, k) = (invocation(&a), key.to_owned());
        let info = self
            .op(&a, &mut warm, &idx, move |g, store| {
                Box::pin(async move { g.call_stat(store, &cx, &k).await })
            })
            .await?;
        Ok(info.map(|i| Blob {
            key: i.key,
            size: i.size,
        }))
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool, BlobError> {
        let a = self.active()?;
        let (mut warm, idx) = self.instance(&a).await?;
        let (cx, k) = (invocation(&a), key.to_owned());
        self.op(&a, &mut warm, &idx, move |g, store| {
            Box::pin(async move { g.call_delete(store, &cx, &k).await })
        })
        .await
    }

    /// Blobs under `prefix` in key order after `after`, at most `limit`.
    pub(crate) async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Blob>, BlobError> {
        let a = self.active()?;
        let (mut warm, idx) = self.instance(&a).await?;
        let (cx, p, after) = (invocation(&a), prefix.to_owned(), after.map(str::to_owned));
        let list = self
            .op(&a, &mut warm, &idx, move |g, store| {
                Box::pin(async move {
                    g.call_list_blobs(store, &cx, &p, after.as_deref(), limit.min(1000))
                        .await
                })
            })
            .await?;
        Ok(list
            .into_iter()
            .map(|i| Blob {
                key: i.key,
                size: i.size,
            })
            .collect())
    }
}

async fn read_full(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = r.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}
