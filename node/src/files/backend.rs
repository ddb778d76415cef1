//! Where contents are kept: the node's own `files/blobs/` folder, or a storage-backend plugin.
//! Keys are `<sha256>` for a content and `<sha256>.thumb` for its preview, so no key comes
//! from user input.

use std::io::{ErrorKind, SeekFrom};
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc::{self, Sender};

use crate::plugins::Plugins;
use crate::plugins::storage::{BlobError, CHUNK, PluginBlobs};

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    #[error("{0:?} is not a storage backend (\"fs\" or \"plugin:<id>\")")]
    Unknown(String),
    #[error("the content is missing from the storage backend")]
    Missing,
    #[error("the storage backend kept {stored} bytes of a {size}-byte content")]
    Size { stored: u64, size: u64 },
    #[error(transparent)]
    Plugin(#[from] BlobError),
    #[error("file storage: {0}")]
    Io(#[from] std::io::Error),
}

/// The backends a node can use.
#[derive(Debug, Clone)]
pub(crate) struct Backends {
    root: PathBuf,
    plugins: Plugins,
}

/// One backend.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// Files under a folder, two hex digits of fan-out.
    Fs(PathBuf),
    /// A storage-backend plugin.
    Plugin(PluginBlobs),
}

impl Backends {
    pub(crate) fn new(root: PathBuf, plugins: Plugins) -> Self {
        Self { root, plugins }
    }

    /// Whether `name` names a backend that can be used now.
    pub(crate) fn get(&self, name: &str) -> Result<Backend, BackendError> {
        if name == "fs" {
            return Ok(Backend::Fs(self.root.clone()));
        }
        let id = name
            .strip_prefix("plugin:")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| BackendError::Unknown(name.to_owned()))?;
        self.plugins
            .storage_backend(id)
            .map(Backend::Plugin)
            .ok_or_else(|| BlobError::NoBackend(id.to_owned()).into())
    }
}

/// Drops from the front of `chunk` what is left of `skip` bytes to pass over.
pub(crate) fn skip_prefix(chunk: &mut Vec<u8>, skip: &mut u64) {
    if *skip > 0 {
        let n = usize::try_from(*skip)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        chunk.drain(..n);
        *skip -= n as u64;
    }
}

fn fs_path(root: &Path, key: &str) -> PathBuf {
    root.join(key.get(..2).unwrap_or("00")).join(key)
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

impl Backend {
    /// Stores the complete, fsynced file at `path` under `key`. The file itself is left where
    /// it is.
    pub(crate) async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
    ) -> Result<(), BackendError> {
        match self {
            Self::Fs(root) => {
                let dest = fs_path(root, key);
                let dir = dest.parent().unwrap_or(root);
                if !tokio::fs::try_exists(dir).await? {
                    tokio::fs::create_dir_all(dir).await?;
                    // The new fan-out folder's own entry must be durable too.
                    sync_dir(root).await?;
                }
                // Linked beside its place, then renamed over it: the content appears complete
                // or not at all, and whatever a crash or a failed removal left there is
                // replaced by this verified copy rather than trusted.
                let tmp = dir.join(format!("{key}.{}.tmp", uuid::Uuid::new_v4().simple()));
                tokio::fs::hard_link(path, &tmp).await?;
                if let Err(e) = tokio::fs::rename(&tmp, &dest).await {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(e.into());
                }
                sync_dir(dir).await?;
                match tokio::fs::metadata(&dest).await?.len() {
                    n if n == size => Ok(()),
                    n => Err(BackendError::Size { stored: n, size }),
                }
            }
            Self::Plugin(blobs) => {
                let file = tokio::fs::File::open(path).await?;
                match blobs.put(key, file).await?.size {
                    n if n == size => Ok(()),
                    n => Err(BackendError::Size { stored: n, size }),
                }
            }
        }
    }

    /// Stores a small content (a preview).
    pub(crate) async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<(), BackendError> {
        match self {
            Self::Fs(root) => {
                let dest = fs_path(root, key);
                let dir = dest.parent().unwrap_or(root).to_owned();
                tokio::fs::create_dir_all(&dir).await?;
                let tmp = dir.join(format!("{key}.{}.tmp", uuid::Uuid::new_v4().simple()));
                let mut f = tokio::fs::File::create(&tmp).await?;
                f.write_all(bytes).await?;
                f.sync_all().await?;
                drop(f);
                tokio::fs::rename(&tmp, &dest).await?;
                sync_dir(&dir).await?;
                Ok(())
            }
            Self::Plugin(blobs) => {
                blobs.put(key, bytes).await?;
                Ok(())
            }
        }
    }

    /// Reads `key` from `offset` to its end, sending chunks of at most 256 KiB to `sink`;
    /// returns the bytes sent. A receiver that went away ends the read with an error.
    pub(crate) async fn read(
        &self,
        key: &str,
        offset: u64,
        sink: Sender<Vec<u8>>,
    ) -> Result<u64, BackendError> {
        let gone = || std::io::Error::new(ErrorKind::BrokenPipe, "the reader went away");
        match self {
            Self::Fs(root) => {
                let mut f = match tokio::fs::File::open(fs_path(root, key)).await {
                    Ok(f) => f,
                    Err(e) if e.kind() == ErrorKind::NotFound => return Err(BackendError::Missing),
                    Err(e) => return Err(e.into()),
                };
                f.seek(SeekFrom::Start(offset)).await?;
                let mut total = 0u64;
                loop {
                    let mut buf = vec![0u8; CHUNK];
                    let n = f.read(&mut buf).await?;
                    if n == 0 {
                        return Ok(total);
                    }
                    buf.truncate(n);
                    total += n as u64;
                    sink.send(buf).await.map_err(|_| gone())?;
                }
            }
            Self::Plugin(blobs) => {
                if blobs.stat(key).await?.is_none() {
                    return Err(BackendError::Missing);
                }
                // The plugin interface reads from the start; what comes before `offset` is
                // skipped here.
                let (tx, rx) = mpsc::channel::<Vec<u8>>(2);
                let forward = async {
                    // Owned here: when the receiver goes away, this ends and the plugin's
                    // read stops.
                    let mut rx = rx;
                    let (mut skip, mut total) = (offset, 0u64);
                    while let Some(mut chunk) = rx.recv().await {
                        skip_prefix(&mut chunk, &mut skip);
                        if chunk.is_empty() {
                            continue;
                        }
                        total += chunk.len() as u64;
                        sink.send(chunk).await.map_err(|_| gone())?;
                    }
                    Ok::<_, std::io::Error>(total)
                };
                let (read, forwarded) = tokio::join!(blobs.get(key, tx), forward);
                read?;
                Ok(forwarded?)
            }
        }
    }

    /// Reads a whole small content (a preview) into memory.
    pub(crate) async fn read_all(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(2);
        let collect = async {
            let mut out = Vec::new();
            while let Some(chunk) = rx.recv().await {
                out.extend_from_slice(&chunk);
            }
            out
        };
        let (read, out) = tokio::join!(self.read(key, 0, tx), collect);
        read?;
        Ok(out)
    }

    /// The stored size of `key`, if it is there.
    pub(crate) async fn size(&self, key: &str) -> Result<Option<u64>, BackendError> {
        match self {
            Self::Fs(root) => match tokio::fs::metadata(fs_path(root, key)).await {
                Ok(m) => Ok(Some(m.len())),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e.into()),
            },
            Self::Plugin(blobs) => Ok(blobs.stat(key).await?.map(|b| b.size)),
        }
    }

    /// Removes `key`; nothing to remove is fine.
    pub(crate) async fn delete(&self, key: &str) -> Result<(), BackendError> {
        match self {
            Self::Fs(root) => match tokio::fs::remove_file(fs_path(root, key)).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e.into()),
            },
            Self::Plugin(blobs) => {
                blobs.delete(key).await?;
                Ok(())
            }
        }
    }
}
