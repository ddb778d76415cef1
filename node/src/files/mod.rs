//! Files: uploads (resumable, verified by SHA-256), contents stored once per hash in a
//! backend (the node's folder or a storage-backend plugin), downloads authorized through the
//! messages a file is attached to, previews, clean-up and migration between backends.
//!
//! ```text
//! create_upload ─▶ policy (kind, size, extension, quota) ─▶ uploads row
//! transfer stream ─▶ files/uploads/<id> (fsync + `confirmed` every confirm_every_kb)
//!   last byte ─▶ SHA-256 check ─▶ type from the content ─▶ preview
//!             ─▶ backend (once per hash) ─▶ blobs + files rows, in one transaction
//! send{files} ─▶ sequencer checks uploader and discussion ─▶ message_files
//! download ─▶ a message it is attached to that the caller may read (or its uploader, before
//!             it is attached) ─▶ backend, hash verified on full reads
//! ```
//!
//! Files travel over federation links by reference: a linked node's post names each file's
//! hash, size, name and type, and the content stays where it is (its blob is recorded with
//! the backend `remote`). The first download here fetches it over the link, piece by piece,
//! checks it against its hash and stores it like an upload: a replica asks the discussion's
//! home, the home asks the node of the file's uploader. `serve_linked` answers such a
//! request from a linked node.
//!
//! Contents are kept under their hash, so identical files are stored once; a file's id is
//! random and gives nothing by itself. Work on one hash (storing, removing, migrating) is
//! serialised by a striped lock, so that a content is never removed while a new file starts
//! to use it.

mod backend;
mod thumbnail;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use veche_federation::event::node_of;
use veche_federation::net::QueryError;
use veche_protocol::files::{FileInfo, FilePolicy, NewUpload, UploadInfo, is_sha256_hex};
use veche_protocol::{ErrorBody, ErrorCode, Timestamp};

pub(crate) use backend::{Backend, BackendError, Backends};
use veche_core::discussions::attachments::{info, source_node};
pub(crate) use veche_core::file_policy::inline;

use crate::config::FilesConfig;
use crate::plugins::Plugins;
use veche_core::discussions::links::Links;
use veche_core::discussions::{Caller, DiscussionError, Discussions};
use veche_store::{BlobRow, FileRow, REMOTE_BACKEND, Store, StoreError, UploadRow};

/// The `meta` key of the backend chosen by `veche admin files migrate`.
const BACKEND_KEY: &str = "files.backend";
/// Stripes of the per-hash lock.
const STRIPES: usize = 64;
/// Bytes read from the upload per write.
const READ_CHUNK: usize = 256 * 1024;
/// What a linked node is told when it may not have, or this node does not have, a file.
pub(crate) const LINKED_NOT_FOUND: &str = "file not found";
/// What a linked node is told when this node will not send a file it has (its content broke
/// a rule here): asking again does not help.
pub(crate) const LINKED_REFUSED: &str = "the file cannot be sent";
/// Fetches from linked nodes at once at most.
const FETCHES: usize = 4;
/// How often the home looks for its discussions' files to fetch, besides when woken.
const PREFETCH_EVERY: Duration = Duration::from_secs(60);
/// How long the home waits before fetching a file again whose fetch failed.
const PREFETCH_RETRY: Duration = Duration::from_secs(600);
/// How long the home waits before fetching a file again that was refused here.
const PREFETCH_REFUSED: Duration = Duration::from_secs(86_400);

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{}", .0.message)]
    Refused(Box<ErrorBody>),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Busy(String),
    /// The bytes stopped before the end; the upload continues from this offset.
    #[error("the stream ended at byte {0}; continue from there")]
    Incomplete(u64),
    #[error(transparent)]
    Discussion(#[from] DiscussionError),
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("file staging: {0}")]
    Io(#[from] std::io::Error),
    #[error("the stored content of {0} does not match its SHA-256")]
    Corrupt(String),
}

impl From<ErrorBody> for FileError {
    fn from(e: ErrorBody) -> Self {
        Self::Refused(Box::new(e))
    }
}

impl From<FileError> for DiscussionError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::NotFound(what) => DiscussionError::NotFound(what),
            FileError::Refused(body) => DiscussionError::Refused(body),
            FileError::BadRequest(m) => DiscussionError::BadRequest(m),
            FileError::Conflict(m) => DiscussionError::Conflict(m),
            FileError::Busy(m) => DiscussionError::NotReady(m),
            e @ FileError::Incomplete(_) => DiscussionError::Conflict(e.to_string()),
            FileError::Discussion(e) => e,
            FileError::Store(e) => DiscussionError::Store(e),
            e @ (FileError::Backend(_) | FileError::Io(_) | FileError::Corrupt(_)) => {
                tracing::error!(error = %e, "file operation failed");
                DiscussionError::NotReady("the file storage failed; try again later".into())
            }
        }
    }
}

impl crate::errors::Classified for FileError {
    fn kind(&self) -> crate::errors::Kind<'_> {
        use crate::errors::Kind;
        Kind::Public(match self {
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Refused(body) => return Kind::Decided(body),
            Self::BadRequest(_) => ErrorCode::BadRequest,
            Self::Conflict(_) | Self::Incomplete(_) => ErrorCode::Conflict,
            Self::Busy(_) => ErrorCode::Unavailable,
            Self::Discussion(e) => return e.kind(),
            Self::Store(_) => return Kind::Internal,
            Self::Backend(_) | Self::Io(_) | Self::Corrupt(_) => {
                return Kind::Degraded("the file storage failed; try again later");
            }
        })
    }
}

/// The files service.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: FilesConfig,
    discussions: Discussions,
    /// This node's name: which side of a link holds a file's content.
    node: veche_protocol::ids::NodeName,
    /// Contents held at linked nodes are fetched through the federation transport.
    links: Arc<dyn Links>,
    backends: Backends,
    /// `files/uploads/`: one staging file per upload in progress.
    staging: PathBuf,
    /// Where new contents go.
    current: Mutex<String>,
    /// Uploads a stream is writing now.
    busy: Mutex<HashSet<String>>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Downloads reading each content now: a migration removes a moved content from its old
    /// backend only once none reads it there.
    reading: Mutex<std::collections::HashMap<String, usize>>,
    /// Previews are made one at a time: decoding an image takes up to
    /// `max_image_pixels` × 5 bytes.
    previews: Arc<tokio::sync::Semaphore>,
    /// One migration at a time.
    migrating: tokio::sync::Mutex<()>,
    /// Contents being fetched from linked nodes, by hash and source: each is fetched once at a
    /// time, and everyone waiting learns how it ended.
    fetches: Mutex<std::collections::HashMap<FetchKey, Fetching>>,
    /// Fetches from linked nodes running at once at most.
    fetching: Arc<tokio::sync::Semaphore>,
    /// Wakes the home's fetching of its discussions' files from linked nodes.
    prefetch: tokio::sync::Notify,
    clock: veche_base::SharedClock,
    /// Files whose fetch for the home failed, and when to try again.
    prefetch_failed: Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How a fetch from a linked node ended (`None` while it runs).
type Fetching = watch::Receiver<Option<Result<(), ErrorBody>>>;
/// A fetch's content, source and discussion.
type FetchKey = (String, String, String);

/// Removes a fetch's entry when its task ends, however it ends.
struct FetchEntry(Files, FetchKey);

impl Drop for FetchEntry {
    fn drop(&mut self) {
        lock(&self.0.inner.fetches).remove(&self.1);
    }
}

/// A download ready to stream.
#[derive(Debug)]
pub(crate) struct Download {
    pub(crate) file: FileInfo,
    pub(crate) offset: u64,
    pub(crate) length: u64,
    pub(crate) mime: String,
    key: String,
    /// The hash to verify: downloads of the content (not of its preview).
    verify: Option<String>,
}

/// What `veche admin files migrate` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Migrated {
    pub(crate) moved: u64,
    pub(crate) bytes: u64,
    pub(crate) failed: Vec<String>,
}

/// Releases an upload's busy mark when its stream ends, however it ends.
struct BusyGuard<'a>(&'a Inner, String);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        lock(&self.0.busy).remove(&self.1);
    }
}

impl<'a> BusyGuard<'a> {
    /// Marks the upload busy, unless a stream (or a removal) has it already.
    fn take(inner: &'a Inner, id: &str) -> Option<Self> {
        lock(&inner.busy)
            .insert(id.to_owned())
            .then(|| Self(inner, id.to_owned()))
    }
}

/// Counts a download reading a content, until dropped.
struct ReadingGuard<'a>(&'a Inner, String);

impl<'a> ReadingGuard<'a> {
    fn new(inner: &'a Inner, sha256: &str) -> Self {
        *lock(&inner.reading).entry(sha256.to_owned()).or_default() += 1;
        Self(inner, sha256.to_owned())
    }
}

impl Drop for ReadingGuard<'_> {
    fn drop(&mut self) {
        let mut reading = lock(&self.0.reading);
        if let Some(n) = reading.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                reading.remove(&self.1);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn thumb_key(sha256: &str) -> String {
    format!("{sha256}.thumb")
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Files {
    /// Now, by the node's clock.
    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }
}

impl Files {
    /// Opens the service over `<data>/files/`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn open(
        store: Store,
        config: FilesConfig,
        data: &Path,
        discussions: Discussions,
        plugins: Plugins,
        node: veche_protocol::ids::NodeName,
        links: Arc<dyn Links>,
        clock: veche_base::SharedClock,
    ) -> Result<Self, FileError> {
        let root = data.join("files");
        let staging = root.join("uploads");
        tokio::fs::create_dir_all(&staging).await?;
        tokio::fs::create_dir_all(root.join("blobs")).await?;
        // A migration's copies left by a crash (no migration runs before the node is up).
        let mut dir = tokio::fs::read_dir(&staging).await?;
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("mig_") || name.starts_with("fetch_") {
                remove_quietly(&entry.path()).await;
            }
        }
        let current = match store.meta().get(BACKEND_KEY).await? {
            Some(stored) => {
                if stored != config.backend {
                    tracing::warn!(
                        stored = %stored,
                        configured = %config.backend,
                        "new files go to the backend chosen by `veche admin files migrate`, \
                         not to [files] backend"
                    );
                }
                stored
            }
            None => config.backend.clone(),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                config,
                discussions,
                node,
                links,
                backends: Backends::new(root.join("blobs"), plugins),
                staging,
                current: Mutex::new(current),
                busy: Mutex::default(),
                stripes: (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                reading: Mutex::default(),
                previews: Arc::new(tokio::sync::Semaphore::new(1)),
                migrating: tokio::sync::Mutex::new(()),
                clock,
                fetches: Mutex::default(),
                fetching: Arc::new(tokio::sync::Semaphore::new(FETCHES)),
                prefetch: tokio::sync::Notify::new(),
                prefetch_failed: Mutex::default(),
            }),
        })
    }

    fn stripe(&self, sha256: &str) -> &tokio::sync::Mutex<()> {
        let i = usize::from_str_radix(sha256.get(..2).unwrap_or("0"), 16).unwrap_or(0);
        &self.inner.stripes[i % STRIPES]
    }

    fn staging_path(&self, upload: &str) -> PathBuf {
        self.inner.staging.join(upload)
    }

    /// The backend new contents go to.
    pub(crate) fn current_backend(&self) -> String {
        lock(&self.inner.current).clone()
    }

    /// Why `backend` may not go away: new contents go there, or some are kept there (a
    /// plugin's uninstall is refused then).
    pub(crate) async fn backend_in_use(&self, backend: &str) -> Result<Option<String>, FileError> {
        if self.current_backend() == backend {
            return Ok(Some(format!(
                "new files go to {backend}; send them elsewhere first (veche admin files migrate --to fs)"
            )));
        }
        let usage = self.inner.store.files().backend_usage().await?;
        Ok(usage
            .into_iter()
            .find(|u| u.backend == backend && u.blobs > 0)
            .map(|u| {
                format!(
                    "{backend} keeps {} file contents; move them first (veche admin files migrate --to fs)",
                    u.blobs
                )
            }))
    }

    /// The policy, with the caller's usage.
    pub(crate) async fn policy(&self, caller: &Caller) -> Result<FilePolicy, FileError> {
        let c = &self.inner.config;
        Ok(FilePolicy {
            enabled: c.enabled,
            discussion_kinds: c.discussion_kinds.clone(),
            max_size: c.max_size_mb.saturating_mul(1024 * 1024),
            allowed_types: c.allowed_types.clone(),
            blocked_types: c.blocked_types.clone(),
            blocked_extensions: c.blocked_extensions.clone(),
            quota: c.quota_mb.saturating_mul(1024 * 1024),
            used: self.inner.store.files().file_usage(&caller.user).await?,
            retention_days: c.retention_days,
        })
    }

    /// Declares an upload, after every check that needs no content.
    pub(crate) async fn create_upload(
        &self,
        caller: &Caller,
        new: NewUpload,
    ) -> Result<UploadInfo, FileError> {
        let c = &self.inner.config;
        if new.name.is_empty() || new.name.len() > 255 {
            return Err(FileError::BadRequest("name is 1 to 255 bytes".into()));
        }
        if !is_sha256_hex(&new.sha256) {
            return Err(FileError::BadRequest(
                "sha256 is 64 lowercase hex digits".into(),
            ));
        }
        let (d, grant) = self
            .inner
            .discussions
            .granted(caller, &new.discussion)
            .await?;
        if !grant.write {
            return Err(FileError::Discussion(DiscussionError::Forbidden(
                "you may read this discussion but not post in it".into(),
            )));
        }
        let name = veche_core::file_policy::sanitize_name(&new.name);
        veche_core::file_policy::check_declared(c, d.kind.as_str(), &name, new.size)?;
        let size = i64::try_from(new.size)
            .map_err(|_| FileError::BadRequest("size is too large".into()))?;
        let at = self.now();
        let row = UploadRow {
            id: random_id("up_"),
            user_id: caller.user.clone(),
            discussion_id: d.id.clone(),
            name,
            size,
            sha256: new.sha256,
            confirmed: 0,
            created_at: at,
            expires_at: at.saturating_add(
                i64::try_from(c.upload_expiry_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX),
            ),
            file_id: None,
        };
        let quota = c.quota_mb.saturating_mul(1024 * 1024);
        if !self.inner.store.files().insert_upload(&row, quota).await? {
            let used = self.inner.store.files().file_usage(&caller.user).await?;
            return Err(ErrorBody::refused_by(
                "files.quota_mb",
                format!(
                    "you keep {used} bytes in files; {} more would exceed your quota of {} MiB",
                    new.size, c.quota_mb
                ),
            )
            .into());
        }
        tracing::debug!(upload = %row.id, size = row.size, "upload created");
        self.upload_info(&row).await
    }

    async fn upload_info(&self, row: &UploadRow) -> Result<UploadInfo, FileError> {
        let file = match &row.file_id {
            Some(id) => self.inner.store.files().file(id).await?.as_ref().map(info),
            None => None,
        };
        Ok(UploadInfo {
            id: row.id.clone(),
            size: to_u64(row.size),
            confirmed: to_u64(row.confirmed),
            expires_at: Timestamp(row.expires_at),
            file,
        })
    }

    async fn own_upload(&self, caller: &Caller, id: &str) -> Result<UploadRow, FileError> {
        self.inner
            .store
            .files()
            .upload(id)
            .await?
            .filter(|u| u.user_id == caller.user)
            .ok_or(FileError::NotFound("upload"))
    }

    /// How far an upload has come.
    pub(crate) async fn upload_status(
        &self,
        caller: &Caller,
        id: &str,
    ) -> Result<UploadInfo, FileError> {
        let row = self.own_upload(caller, id).await?;
        self.upload_info(&row).await
    }

    /// Drops an unfinished upload.
    pub(crate) async fn cancel_upload(&self, caller: &Caller, id: &str) -> Result<(), FileError> {
        let row = self.own_upload(caller, id).await?;
        if row.file_id.is_some() {
            return Err(FileError::Conflict(
                "the upload is complete; its file is removed when no message uses it".into(),
            ));
        }
        let Some(_busy) = BusyGuard::take(&self.inner, id) else {
            return Err(FileError::Busy(
                "the upload is being written; stop its stream first".into(),
            ));
        };
        self.inner.store.files().delete_upload(id).await?;
        remove_quietly(&self.staging_path(id)).await;
        Ok(())
    }

    /// Takes an upload's bytes from `offset` (which must be its confirmed length) from
    /// `data` until it ends. Progress is made durable and published on `progress` every
    /// `confirm_every_kb`; on the last byte the file is verified and stored. If `data` ends
    /// early or fails, what arrived is kept and the upload can continue later.
    pub(crate) async fn receive(
        &self,
        caller: &Caller,
        id: &str,
        offset: u64,
        mut data: impl AsyncRead + Unpin,
        progress: watch::Sender<u64>,
    ) -> Result<FileInfo, FileError> {
        let row = self.own_upload(caller, id).await?;
        if let Some(file) = &row.file_id {
            return match self.inner.store.files().file(file).await? {
                Some(f) => Ok(info(&f)),
                None => Err(FileError::NotFound("file")),
            };
        }
        let Some(_busy) = BusyGuard::take(&self.inner, id) else {
            return Err(FileError::Busy(
                "another stream is writing this upload; try again in a moment".into(),
            ));
        };
        // Read again now that no other stream can move it.
        let row = self.own_upload(caller, id).await?;
        let size = to_u64(row.size);
        let mut confirmed = to_u64(row.confirmed);
        if offset != confirmed {
            return Err(FileError::Conflict(format!(
                "the upload continues at byte {confirmed}, not {offset}"
            )));
        }
        let path = self.staging_path(id);
        let created = !tokio::fs::try_exists(&path).await?;
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .await?;
        if created {
            tokio::fs::File::open(&self.inner.staging)
                .await?
                .sync_all()
                .await?;
        }
        let on_disk = file.metadata().await?.len();
        if on_disk < confirmed {
            // The staging file lost what was confirmed (it was removed or damaged outside
            // the node): continue from what is really there.
            self.confirm(&mut file, id, on_disk).await?;
            return Err(FileError::Conflict(format!(
                "the node holds only {on_disk} bytes of this upload; continue from byte {on_disk}"
            )));
        }
        // Bytes past the confirmed length were never confirmed: they are written again.
        file.set_len(confirmed).await?;
        let mut hasher = Sha256::new();
        if confirmed > 0 {
            hash_prefix(&mut file, confirmed, &mut hasher).await?;
        }
        file.seek(std::io::SeekFrom::Start(confirmed)).await?;
        let every = self.inner.config.confirm_every_kb.saturating_mul(1024);
        let mut written = confirmed;
        let mut buf = vec![0u8; READ_CHUNK];
        let ended = loop {
            let n = match data.read(&mut buf).await {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) => break Err(e),
            };
            if written + n as u64 > size {
                // Keep what was valid; the client learns the limit.
                self.confirm(&mut file, id, written).await?;
                return Err(FileError::BadRequest(format!(
                    "the upload was declared as {size} bytes; more arrived"
                )));
            }
            file.write_all(&buf[..n]).await?;
            hasher.update(&buf[..n]);
            written += n as u64;
            if written - confirmed >= every {
                self.confirm(&mut file, id, written).await?;
                confirmed = written;
                progress.send_replace(confirmed);
            }
        };
        if written != confirmed {
            self.confirm(&mut file, id, written).await?;
            confirmed = written;
            progress.send_replace(confirmed);
        }
        if let Err(e) = ended {
            tracing::debug!(upload = %id, confirmed, error = %e, "upload interrupted");
            return Err(FileError::Incomplete(confirmed));
        }
        if confirmed < size {
            return Err(FileError::Incomplete(confirmed));
        }
        drop(file);
        let actual = hex::encode(hasher.finalize());
        if actual != row.sha256 {
            self.inner.store.files().delete_upload(id).await?;
            remove_quietly(&path).await;
            return Err(FileError::BadRequest(format!(
                "the content's SHA-256 is {actual}, not the declared {}; the upload is dropped",
                row.sha256
            )));
        }
        let stored = self.store_upload(&row, &path).await;
        if let Err(FileError::Refused(_)) = &stored {
            self.inner.store.files().delete_upload(id).await?;
            remove_quietly(&path).await;
        }
        stored
    }

    /// Makes `written` bytes of the staging file durable and records them.
    async fn confirm(
        &self,
        file: &mut tokio::fs::File,
        id: &str,
        written: u64,
    ) -> Result<(), FileError> {
        file.flush().await?;
        file.sync_data().await?;
        let written = i64::try_from(written).unwrap_or(i64::MAX);
        self.inner
            .store
            .files()
            .set_upload_confirmed(id, written)
            .await?;
        Ok(())
    }

    /// Checks the complete, verified staging file's type, stores its content (unless it is
    /// stored already) and records the file.
    async fn store_upload(&self, row: &UploadRow, path: &Path) -> Result<FileInfo, FileError> {
        let mut head = vec![0u8; veche_core::file_policy::SNIFF_BYTES];
        let n = read_head(path, &mut head).await?;
        let mime = veche_core::file_policy::sniff(&head[..n]);
        veche_core::file_policy::check_type(&self.inner.config, &mime)?;
        let file = FileRow {
            id: random_id("f_"),
            name: row.name.clone(),
            size: row.size,
            discussion_id: row.discussion_id.clone(),
            uploader: row.user_id.clone(),
            created_at: self.now(),
            attached: false,
            sha256: row.sha256.clone(),
            backend: String::new(),
            mime: mime.clone(),
            thumbnail: false,
            width: None,
            height: None,
            linked_from: None,
        };
        let store = &self.inner.store;
        // The preview is made before the per-hash lock is taken (it can take a while), only
        // for a content not stored yet.
        let held = |b: Option<BlobRow>| b.is_some_and(|b| b.backend != REMOTE_BACKEND);
        let preview = if !held(store.files().blob(&row.sha256).await?) {
            self.preview(path, &mime).await
        } else {
            thumbnail::Preview::default()
        };
        let _stripe = self.stripe(&row.sha256).lock().await;
        let stored_already = held(store.files().blob(&row.sha256).await?)
            && store.files().complete_upload(&row.id, &file, None).await?;
        if !stored_already {
            let blob = self
                .put_content(&row.sha256, row.size, path, mime, preview)
                .await?;
            store
                .files()
                .complete_upload(&row.id, &file, Some(&blob))
                .await?;
        }
        remove_quietly(path).await;
        let stored = store
            .files()
            .file(&file.id)
            .await?
            .ok_or(FileError::NotFound("file"))?;
        tracing::debug!(file = %stored.id, sha256 = %stored.sha256, dedup = stored_already, "file stored");
        Ok(info(&stored))
    }

    /// Stores the verified content at `path` (and its preview) in the backend new contents go
    /// to; the blob row to record. The caller holds the content's hash lock.
    async fn put_content(
        &self,
        sha256: &str,
        size: i64,
        path: &Path,
        mime: String,
        preview: thumbnail::Preview,
    ) -> Result<BlobRow, FileError> {
        let name = self.current_backend();
        let backend = self.inner.backends.get(&name)?;
        backend.put_file(sha256, path, to_u64(size)).await?;
        if let Some(png) = &preview.png {
            backend.put_bytes(&thumb_key(sha256), png).await?;
        }
        Ok(BlobRow {
            sha256: sha256.to_owned(),
            size,
            backend: name,
            mime,
            thumbnail: preview.png.is_some(),
            width: preview.dimensions.map(|d| i64::from(d.0)),
            height: preview.dimensions.map(|d| i64::from(d.1)),
            created_at: self.now(),
        })
    }

    /// A preview of the content at `path`, if previews are on and it is an image.
    async fn preview(&self, path: &Path, mime: &str) -> thumbnail::Preview {
        let c = &self.inner.config;
        if !c.thumbnails {
            return thumbnail::Preview::default();
        }
        // The permit goes with the decoding itself: it is released when decoding ends, even
        // if the caller's future is dropped meanwhile.
        let one = self.inner.previews.clone().acquire_owned().await;
        let (p, m, size, max) = (
            path.to_owned(),
            mime.to_owned(),
            c.thumbnail_size,
            c.max_image_pixels,
        );
        tokio::task::spawn_blocking(move || {
            let _one = one;
            thumbnail::make(&p, &m, size, max)
        })
        .await
        .unwrap_or_default()
    }

    /// The file, if the caller may download it: its uploader until it is attached, then
    /// whoever may read a message (not deleted) it is attached to.
    async fn readable(&self, caller: &Caller, id: &str) -> Result<FileRow, FileError> {
        let store = &self.inner.store;
        let file = store
            .files()
            .file(id)
            .await?
            .ok_or(FileError::NotFound("file"))?;
        if !file.attached && file.uploader == caller.user {
            return Ok(file);
        }
        for a in store.files().file_attachments(id).await? {
            if !a.deleted
                && self
                    .inner
                    .discussions
                    .granted(caller, &a.discussion_id)
                    .await
                    .is_ok()
            {
                return Ok(file);
            }
        }
        Err(FileError::NotFound("file"))
    }

    /// Whether the caller's upload `id` is for `discussion` (an embed session's uploads stay
    /// in its discussion); "not found" otherwise.
    pub(crate) async fn upload_within(
        &self,
        caller: &Caller,
        id: &str,
        discussion: &str,
    ) -> Result<(), FileError> {
        match self.own_upload(caller, id).await? {
            row if row.discussion_id == discussion => Ok(()),
            _ => Err(FileError::NotFound("upload")),
        }
    }

    /// Whether the caller may download file `id` from `discussion` alone (an embed session):
    /// its own upload for that discussion until it is attached, then a message of that
    /// discussion (not deleted) that it is attached to; "not found" otherwise.
    pub(crate) async fn readable_within(
        &self,
        caller: &Caller,
        id: &str,
        discussion: &str,
    ) -> Result<(), FileError> {
        let file = self.readable(caller, id).await?;
        if !file.attached {
            return if file.discussion_id == discussion {
                Ok(())
            } else {
                Err(FileError::NotFound("file"))
            };
        }
        let store = &self.inner.store;
        if store
            .files()
            .file_attachments(id)
            .await?
            .iter()
            .any(|a| !a.deleted && a.discussion_id == discussion)
        {
            Ok(())
        } else {
            Err(FileError::NotFound("file"))
        }
    }

    /// A file's description.
    pub(crate) async fn get(&self, caller: &Caller, id: &str) -> Result<FileInfo, FileError> {
        Ok(info(&self.readable(caller, id).await?))
    }

    /// Prepares a download of the file (or its preview) from `offset`.
    pub(crate) async fn download(
        &self,
        caller: &Caller,
        id: &str,
        offset: u64,
        thumbnail: bool,
    ) -> Result<Download, FileError> {
        let mut row = self.readable(caller, id).await?;
        if row.linked_from.is_some() || row.backend == REMOTE_BACKEND {
            // Not fetched for a preview: that waits until someone downloads the file.
            if thumbnail {
                return Err(FileError::NotFound("preview"));
            }
            self.fetch_linked(&row, None).await?;
            row = self.readable(caller, id).await?;
            if row.linked_from.is_some() || row.backend == REMOTE_BACKEND {
                return Err(FileError::Busy(
                    "the file is still on its way here; try again later".into(),
                ));
            }
        }
        let file = info(&row);
        let (key, mime, total) = if thumbnail {
            if !row.thumbnail {
                return Err(FileError::NotFound("preview"));
            }
            let key = thumb_key(&row.sha256);
            let backend = self.inner.backends.get(&row.backend)?;
            let size = backend.size(&key).await?.ok_or(BackendError::Missing)?;
            (key, "image/png".to_owned(), size)
        } else {
            (row.sha256.clone(), row.mime.clone(), file.size)
        };
        if offset > total {
            return Err(FileError::BadRequest(format!(
                "offset {offset} is beyond the end ({total} bytes)"
            )));
        }
        // The content is checked at any offset (a resumed download reads and hashes the part
        // before it too), so that no resumption completes a damaged file.
        let verify = (!thumbnail).then(|| row.sha256.clone());
        Ok(Download {
            file,
            offset,
            length: total - offset,
            mime,
            key,
            verify,
        })
    }

    /// Streams a prepared download into `sink`. A full download is hashed on the way: a
    /// content that does not match its hash ends in `Corrupt` after its last chunk, so that
    /// the caller can fail the transfer instead of completing it.
    pub(crate) async fn send(
        &self,
        d: &Download,
        sink: mpsc::Sender<Vec<u8>>,
    ) -> Result<u64, FileError> {
        // Counted before the row is read: a migration that switches the row after this
        // waits for us before removing the old copy; one that switched before, we see.
        let _reading = ReadingGuard::new(&self.inner, &d.file.sha256);
        let gone = || {
            FileError::Io(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the receiver went away",
            ))
        };
        let mut backend_name = match self.inner.store.files().blob(&d.file.sha256).await? {
            Some(b) => b.backend,
            None => return Err(FileError::NotFound("file")),
        };
        // A verified read starts at 0 and forwards from the offset.
        let (read_from, mut skip) = match d.verify {
            Some(_) => (0, d.offset),
            None => (d.offset, 0),
        };
        for attempt in 0..2 {
            let backend = self.inner.backends.get(&backend_name)?;
            let (tx, rx) = mpsc::channel::<Vec<u8>>(2);
            // Each chunk goes on when the next arrives: the last one is held back until the
            // hash is checked, so that a receiver that counts bytes (HTTP `Content-Length`)
            // never gets a complete but wrong file. The receiver is dropped on the way out,
            // so the reader stops as soon as nobody takes its chunks.
            let forward = async {
                let mut rx = rx;
                let mut hasher = d.verify.as_ref().map(|_| Sha256::new());
                let mut held: Option<Vec<u8>> = None;
                let mut sent = 0u64;
                while let Some(mut chunk) = rx.recv().await {
                    if let Some(h) = hasher.as_mut() {
                        h.update(&chunk);
                    }
                    backend::skip_prefix(&mut chunk, &mut skip);
                    if chunk.is_empty() {
                        continue;
                    }
                    sent += chunk.len() as u64;
                    if let Some(previous) = held.replace(chunk)
                        && sink.send(previous).await.is_err()
                    {
                        return None;
                    }
                }
                Some((held, sent, hasher.map(|h| hex::encode(h.finalize()))))
            };
            let (read, forwarded) = tokio::join!(backend.read(&d.key, read_from, tx), forward);
            match read {
                Ok(_) => {
                    let (last, sent, hashed) = forwarded.ok_or_else(gone)?;
                    if let (Some(actual), Some(want)) = (hashed, &d.verify)
                        && actual != *want
                    {
                        tracing::error!(file = %d.file.id, sha256 = %want, backend = %backend_name,
                            "stored content does not match its hash");
                        return Err(FileError::Corrupt(d.file.id.clone()));
                    }
                    if sent != d.length {
                        tracing::error!(file = %d.file.id, sent, length = d.length, backend = %backend_name,
                            "stored content has another length than recorded");
                        return Err(FileError::Corrupt(d.file.id.clone()));
                    }
                    if let Some(last) = last {
                        sink.send(last).await.map_err(|_| gone())?;
                    }
                    return Ok(sent);
                }
                // Moved by a migration since the row was read: read it again from where it
                // is now (nothing was sent yet).
                Err(BackendError::Missing) if attempt == 0 => {
                    match self.inner.store.files().blob(&d.file.sha256).await? {
                        Some(b) if b.backend != backend_name => backend_name = b.backend,
                        Some(_) => return Err(BackendError::Missing.into()),
                        None => return Err(FileError::NotFound("file")),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(BackendError::Missing.into())
    }

    /// The linked node a file's content is fetched from (and which must show it holds it):
    /// the one the file names, or for a content not fetched yet the discussion's home (for the
    /// home itself: the node of the file's uploader).
    fn source_of(&self, row: &FileRow) -> Option<String> {
        if let Some(source) = &row.linked_from {
            return Some(source.clone());
        }
        source_node(self.inner.node.as_str(), &row.discussion_id, &row.uploader).map(str::to_owned)
    }

    /// Makes sure the content of a linked node's file is here and proven: fetched from its
    /// source once (one fetch per content, source and discussion at a time, on a task of its
    /// own, so an abandoned download does not stop it). Waits for it, or at most `wait`.
    async fn fetch_linked(&self, row: &FileRow, wait: Option<Duration>) -> Result<(), FileError> {
        let Some(source) = self.source_of(row) else {
            return Err(FileError::NotFound("file"));
        };
        // Proof is per discussion: a content a source sent for one discussion proves nothing
        // about another discussion's claim of the same hash.
        let key = (
            row.sha256.clone(),
            source.clone(),
            row.discussion_id.clone(),
        );
        let mut done = {
            let mut fetches = lock(&self.inner.fetches);
            match fetches.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    fetches.insert(key.clone(), rx.clone());
                    let (this, row) = (self.clone(), row.clone());
                    tokio::spawn(async move {
                        // Removes the entry however the task ends (after the result is out).
                        let entry = FetchEntry(this.clone(), key);
                        let result = this.fetch_now(&row, &entry.1.1).await;
                        if let Err(e) = &result {
                            tracing::warn!(sha256 = %row.sha256, from = %entry.1.1, error = %e, "fetching a file from a linked node failed");
                        }
                        tx.send_replace(Some(result.map_err(|e| crate::errors::body(&e))));
                        drop(entry);
                    });
                    rx
                }
            }
        };
        let finished = async {
            match done.wait_for(Option::is_some).await {
                Ok(result) => result.clone(),
                Err(_) => Some(Err(ErrorBody::new(
                    ErrorCode::Unavailable,
                    "fetching the file failed; try again",
                ))),
            }
        };
        let result = match wait {
            Some(wait) => tokio::time::timeout(wait, finished)
                .await
                .map_err(|_| later(&source, "and it is still on its way".into()))?,
            None => finished.await,
        };
        match result {
            Some(Ok(())) | None => Ok(()),
            Some(Err(body)) => Err(match body.code {
                ErrorCode::NotFound => FileError::NotFound("file"),
                ErrorCode::Unavailable => FileError::Busy(body.message),
                _ => FileError::Refused(Box::new(body)),
            }),
        }
    }

    /// Fetches the content of `row` from `source` over the link, checks it against its hash
    /// and size and this node's type policy, and stores it like an upload (or, if it is held
    /// here already, only records that `source` has shown it holds it).
    async fn fetch_now(&self, row: &FileRow, source: &str) -> Result<(), FileError> {
        let store = &self.inner.store;
        let now = store
            .files()
            .file(&row.id)
            .await?
            .ok_or(FileError::NotFound("file"))?;
        if now.linked_from.is_none() && now.backend != REMOTE_BACKEND {
            return Ok(());
        }
        let kind = store
            .discussions()
            .discussion(&row.discussion_id)
            .await?
            .ok_or(FileError::NotFound("file"))?
            .kind;
        veche_core::file_policy::check_declared(
            &self.inner.config,
            kind.as_str(),
            &row.name,
            to_u64(row.size),
        )?;
        let _one = self
            .inner
            .fetching
            .acquire()
            .await
            .map_err(|_| later(source, "and this node is stopping".into()))?;
        let link = store
            .links()
            .fed_links()
            .await?
            .into_iter()
            .find(|l| l.peer_node == source && l.state == "active")
            .ok_or_else(|| later(source, "and there is no active link with it".into()))?;
        let max_mb = serde_json::from_str::<veche_federation::grant::Scope>(&link.scope)
            .map_err(|e| StoreError::Aborted(e.to_string()))?
            .max_file_mb;
        let size = to_u64(row.size);
        if max_mb == 0 || size > max_mb.saturating_mul(1024 * 1024) {
            return Err(ErrorBody::refused_by(
                "link.max_file_mb",
                format!(
                    "the file is on {source}, and the link with it carries files of at most \
                     {max_mb} MiB"
                ),
            )
            .into());
        }
        let path = self.inner.staging.join(random_id("fetch_"));
        // At least 200 KiB a second: a source cannot hold a fetch (and its permit) by
        // dripping pieces just under the request timeout.
        let deadline = Duration::from_secs(30 + size / (200 * 1024));
        let fetched =
            tokio::time::timeout(deadline, self.fetch_into(&link.link, source, row, &path))
                .await
                .unwrap_or_else(|_| Err(later(source, "which sends it too slowly".into())));
        let stored = match fetched {
            Ok(()) => self.store_fetched(row, source, &path).await,
            Err(e) => Err(e),
        };
        remove_quietly(&path).await;
        stored?;
        tracing::info!(sha256 = %row.sha256, size, from = source, "file fetched from a linked node");
        Ok(())
    }

    /// Stores the verified content at `path` of a file from `source` unless it is held here
    /// already, and records the content proven for `source`'s files.
    async fn store_fetched(
        &self,
        row: &FileRow,
        source: &str,
        path: &Path,
    ) -> Result<(), FileError> {
        let store = &self.inner.store;
        let held = |b: &Option<BlobRow>| b.as_ref().is_some_and(|b| b.backend != REMOTE_BACKEND);
        if held(&store.files().blob(&row.sha256).await?) {
            store.files().fed_content_proven(row, source, None).await?;
            return Ok(());
        }
        let mut head = vec![0u8; veche_core::file_policy::SNIFF_BYTES];
        let n = read_head(path, &mut head).await?;
        let mime = veche_core::file_policy::sniff(&head[..n]);
        veche_core::file_policy::check_type(&self.inner.config, &mime)?;
        let preview = self.preview(path, &mime).await;
        let _stripe = self.stripe(&row.sha256).lock().await;
        let blob = store.files().blob(&row.sha256).await?;
        if blob.is_none() {
            return Err(FileError::NotFound("file"));
        }
        if held(&blob) {
            store.files().fed_content_proven(row, source, None).await?;
            return Ok(());
        }
        let blob = self
            .put_content(&row.sha256, row.size, path, mime, preview)
            .await?;
        store
            .files()
            .fed_content_proven(row, source, Some(&blob))
            .await?;
        Ok(())
    }

    /// Writes the content of `row` from the peer of `link` (the node `source`) to `path`,
    /// piece by piece (each as large as a piece can be, so a peer cannot drip it), and checks
    /// it against the file's size and hash.
    async fn fetch_into(
        &self,
        link: &str,
        source: &str,
        row: &FileRow,
        path: &Path,
    ) -> Result<(), FileError> {
        let size = to_u64(row.size);
        let wrong =
            || FileError::Conflict(format!("{source} sent a content that is not the file's"));
        let mut file = tokio::fs::File::create(path).await?;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        while offset < size {
            let piece = self
                .inner
                .links
                .fetch(link, &row.discussion_id, &row.sha256, offset)
                .await
                .map_err(|e| match e {
                    QueryError::Refused(why) if why == LINKED_NOT_FOUND => {
                        FileError::NotFound("file")
                    }
                    QueryError::Refused(why) if why == LINKED_REFUSED => {
                        FileError::Conflict(format!("{source} will not send the file"))
                    }
                    QueryError::Malformed(why) => later(source, why),
                    e => later(source, e.to_string()),
                })?;
            let want = (size - offset).min(veche_federation::wire::MAX_CHUNK as u64);
            if piece.total != size || piece.bytes.len() as u64 != want {
                return Err(wrong());
            }
            file.write_all(&piece.bytes).await?;
            hasher.update(&piece.bytes);
            offset += want;
        }
        if hex::encode(hasher.finalize()) != row.sha256 {
            return Err(wrong());
        }
        file.sync_all().await?;
        Ok(())
    }

    /// Answers a linked node's request for a piece of a file. The peer of `link` (the node
    /// `peer`) gets what a discussion it takes part in has (one homed at it, or one shared
    /// over the link): a file attached to a message not deleted, or one waiting in a
    /// submission to it, that it did not upload itself; at most `max_bytes` files (the link's
    /// scope). A content this node, as home, has not fetched (or had proven) yet is fetched
    /// from its source first, waiting a few seconds at most: the peer asks again later.
    pub(crate) async fn serve_linked(
        &self,
        link: &str,
        peer: &str,
        discussion: &str,
        sha256: &str,
        offset: u64,
        (max_bytes, wait): (u64, Duration),
    ) -> Result<veche_federation::wire::Chunk, FileError> {
        let store = &self.inner.store;
        let peer_is_home = node_of(discussion) == Some(peer);
        let mut row = store
            .files()
            .fed_servable_file(link, peer, peer_is_home, discussion, sha256)
            .await?
            .ok_or(FileError::NotFound("file"))?;
        let size = to_u64(row.size);
        if size > max_bytes {
            return Err(FileError::BadRequest(format!(
                "the link carries files of at most {max_bytes} bytes; this one is {size}"
            )));
        }
        if offset > size {
            return Err(FileError::BadRequest(format!(
                "offset {offset} is beyond the end ({size} bytes)"
            )));
        }
        if row.linked_from.is_some() || row.backend == REMOTE_BACKEND {
            // Only the home fetches for another node (never from the asker: see the query).
            if node_of(discussion) != Some(self.inner.node.as_str()) {
                return Err(FileError::NotFound("file"));
            }
            self.fetch_linked(&row, Some(wait)).await?;
            row = store
                .files()
                .file(&row.id)
                .await?
                .ok_or(FileError::NotFound("file"))?;
            if row.linked_from.is_some() || row.backend == REMOTE_BACKEND {
                return Err(FileError::Busy("not proven yet".into()));
            }
        }
        let want = usize::try_from(size - offset)
            .unwrap_or(usize::MAX)
            .min(veche_federation::wire::MAX_CHUNK);
        if want == 0 {
            return Ok(veche_federation::wire::Chunk {
                total: size,
                bytes: Vec::new(),
            });
        }
        let _reading = ReadingGuard::new(&self.inner, sha256);
        let blob = store
            .files()
            .blob(sha256)
            .await?
            .ok_or(FileError::NotFound("file"))?;
        let backend = self.inner.backends.get(&blob.backend)?;
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(2);
        // Takes what the piece needs, then lets the reader stop.
        let collect = async move {
            let mut bytes = Vec::with_capacity(want);
            while bytes.len() < want {
                match rx.recv().await {
                    Some(chunk) => bytes.extend_from_slice(&chunk),
                    None => break,
                }
            }
            bytes.truncate(want);
            bytes
        };
        let (read, bytes) = tokio::join!(backend.read(sha256, offset, tx), collect);
        if bytes.len() < want {
            read?;
            return Err(FileError::Corrupt(row.id));
        }
        Ok(veche_federation::wire::Chunk { total: size, bytes })
    }

    /// Removes expired uploads, files no message uses (or past retention) and contents no
    /// file uses. Returns how many files and contents were removed.
    pub(crate) async fn cleanup(&self) -> Result<(usize, usize), FileError> {
        let store = &self.inner.store;
        let c = &self.inner.config;
        let at = self.now();
        for id in store.files().expired_uploads(at, 1000).await? {
            let Some(_busy) = BusyGuard::take(&self.inner, &id) else {
                continue;
            };
            store.files().delete_upload(&id).await?;
            remove_quietly(&self.staging_path(&id)).await;
        }
        self.remove_stray_staging().await?;
        let hours = |h: u64| i64::try_from(h.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
        let retention =
            (c.retention_days > 0).then(|| at - hours(u64::from(c.retention_days) * 24));
        let mut files = 0;
        let unattached = at - hours(c.unattached_hours);
        loop {
            let ids = store
                .files()
                .removable_files(unattached, retention, 500)
                .await?;
            if ids.is_empty() {
                break;
            }
            let removed = store
                .files()
                .delete_files(&ids, unattached, retention)
                .await?;
            files += removed;
            if removed == 0 {
                break;
            }
        }
        let mut blobs = 0;
        loop {
            let orphans = store.files().orphan_blobs(200).await?;
            if orphans.is_empty() {
                break;
            }
            let mut removed_any = false;
            for blob in orphans {
                let _stripe = self.stripe(&blob.sha256).lock().await;
                // The backend is the one the row names now (a migration may have moved it).
                let Some(backend_name) = store.files().delete_orphan_blob(&blob.sha256).await?
                else {
                    continue;
                };
                removed_any = true;
                blobs += 1;
                if backend_name == REMOTE_BACKEND {
                    // Never fetched: nothing is stored here.
                    continue;
                }
                // The row is gone first: a crash here leaves an unreferenced content behind,
                // never a row without its content.
                match self.inner.backends.get(&backend_name) {
                    Ok(backend) => {
                        for key in [blob.sha256.clone(), thumb_key(&blob.sha256)] {
                            if let Err(e) = backend.delete(&key).await {
                                tracing::warn!(error = %e, key, "could not remove a content");
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not remove a content"),
                }
            }
            if !removed_any {
                break;
            }
        }
        if files > 0 || blobs > 0 {
            tracing::info!(files, contents = blobs, "files cleaned up");
        }
        Ok((files, blobs))
    }

    /// Staging files whose upload is gone (a crash between the two).
    async fn remove_stray_staging(&self) -> Result<(), FileError> {
        let mut dir = tokio::fs::read_dir(&self.inner.staging).await?;
        while let Some(entry) = dir.next_entry().await? {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only uploads' staging files (a migration's copies are its own).
            if !name.starts_with("up_") || lock(&self.inner.busy).contains(&name) {
                continue;
            }
            let live = self.inner.store.files().upload(&name).await?;
            if live.is_none_or(|u| u.file_id.is_some()) {
                remove_quietly(&entry.path()).await;
            }
        }
        Ok(())
    }

    /// A linked node's message may have brought files: the home fetches them soon.
    pub(crate) fn prefetch_soon(&self) {
        self.inner.prefetch.notify_one();
    }

    /// At the home: fetches the files linked nodes attached to its discussions' messages, so
    /// that the home holds every file of its discussions (and serves them at once) even after
    /// the node that had it goes away. Runs when woken and every minute until `stop`; a
    /// failed fetch waits ten minutes.
    pub(crate) async fn run_prefetch(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.inner.prefetch.notified() => {}
                () = tokio::time::sleep(PREFETCH_EVERY) => {}
            }
            let now = std::time::Instant::now();
            let skip: Vec<String> = {
                let mut failed = lock(&self.inner.prefetch_failed);
                failed.retain(|_, at| *at > now);
                failed.keys().cloned().collect()
            };
            let rows = match self
                .inner
                .store
                .files()
                .fed_unproven_at_home(self.inner.node.as_str(), &skip, 20)
                .await
            {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(error = %e, "looking for files to fetch failed");
                    continue;
                }
            };
            for row in rows {
                // One already on its way is not waited for twice.
                let on_its_way = self.source_of(&row).is_some_and(|source| {
                    let key = (row.sha256.clone(), source, row.discussion_id.clone());
                    lock(&self.inner.fetches).contains_key(&key)
                });
                if on_its_way {
                    continue;
                }
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.fetch_linked(&row, None).await {
                        // A refusal (the type here, the content sent) stands for a day.
                        let wait = match e {
                            FileError::Refused(_) | FileError::Conflict(_) => PREFETCH_REFUSED,
                            _ => PREFETCH_RETRY,
                        };
                        tracing::debug!(file = %row.id, error = %e, "the home could not fetch a file; trying later");
                        let at = std::time::Instant::now() + wait;
                        lock(&this.inner.prefetch_failed).insert(row.id, at);
                    }
                });
            }
        }
    }

    /// Runs `cleanup` every `cleanup_secs` until `stop`.
    pub(crate) async fn run_cleanup(self, stop: CancellationToken) {
        let period = Duration::from_secs(self.inner.config.cleanup_secs);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            if let Err(e) = self.cleanup().await {
                tracing::warn!(error = %e, "file clean-up failed; trying again later");
            }
        }
    }

    /// Sends new contents to `to` and moves every stored content there, one at a time:
    /// copied, verified, switched, then removed from where it was. Files stay readable
    /// throughout.
    pub(crate) async fn migrate(&self, actor: &str, to: &str) -> Result<Migrated, FileError> {
        let Ok(_one) = self.inner.migrating.try_lock() else {
            return Err(FileError::Busy(
                "a migration is running; wait for it to finish".into(),
            ));
        };
        let target = self
            .inner
            .backends
            .get(to)
            .map_err(|e| FileError::BadRequest(e.to_string()))?;
        let audit = veche_store::AuditRecord {
            at: self.now(),
            actor: actor.to_owned(),
            action: "files.backend",
            target: to.to_owned(),
            detail: format!("from {}", self.current_backend()),
        };
        self.inner
            .store
            .files()
            .set_files_backend(BACKEND_KEY, to, &audit)
            .await?;
        *lock(&self.inner.current) = to.to_owned();
        // Uploads choose their backend and record their content under their hash's lock:
        // once every lock has been taken after the switch, no upload still writes to the
        // old backend, and one scan sees every content that is not on the new one.
        for stripe in &self.inner.stripes {
            drop(stripe.lock().await);
        }
        tracing::info!(
            backend = to,
            "new files go to this backend; moving the others"
        );
        let mut report = Migrated::default();
        let mut failed = HashSet::new();
        let mut deferred = Vec::new();
        // Uploads that chose the old backend just before the switch may commit behind the
        // scan: passes repeat until one finds nothing left to move.
        for _pass in 0..4 {
            let mut moved_now = 0;
            let mut after = String::new();
            loop {
                let rows = self
                    .inner
                    .store
                    .files()
                    .blobs_elsewhere(to, &after, 100)
                    .await?;
                let Some(last) = rows.last() else { break };
                after = last.sha256.clone();
                for blob in rows {
                    if failed.contains(&blob.sha256) {
                        continue;
                    }
                    match self.move_blob(&blob, to, &target).await {
                        Ok(Some((source_name, source))) => {
                            moved_now += 1;
                            report.moved += 1;
                            report.bytes += to_u64(blob.size);
                            deferred.push((blob.sha256.clone(), source_name, source));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(sha256 = %blob.sha256, error = %e, "could not move a content");
                            failed.insert(blob.sha256.clone());
                            report.failed.push(blob.sha256.clone());
                        }
                    }
                }
            }
            if moved_now == 0 {
                break;
            }
        }
        // A content leaves its old backend once no download reads it, and only if its row
        // does not point there again.
        for (sha256, source_name, source) in deferred {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while lock(&self.inner.reading).contains_key(&sha256)
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _stripe = self.stripe(&sha256).lock().await;
            let row = self.inner.store.files().blob(&sha256).await?;
            if row.is_some_and(|b| b.backend == source_name) {
                continue;
            }
            for key in [sha256.clone(), thumb_key(&sha256)] {
                if let Err(e) = source.delete(&key).await {
                    tracing::warn!(error = %e, key, "a moved content stays behind on its old backend");
                }
            }
        }
        tracing::info!(
            moved = report.moved,
            bytes = report.bytes,
            failed = report.failed.len(),
            "migration finished"
        );
        Ok(report)
    }

    /// Moves one content; returns its old backend (name and handle), from which it is still
    /// to be removed.
    async fn move_blob(
        &self,
        blob: &BlobRow,
        to: &str,
        target: &Backend,
    ) -> Result<Option<(String, Backend)>, FileError> {
        let _stripe = self.stripe(&blob.sha256).lock().await;
        let Some(now) = self.inner.store.files().blob(&blob.sha256).await? else {
            return Ok(None);
        };
        if now.backend == to {
            return Ok(None);
        }
        let source = self.inner.backends.get(&now.backend)?;
        // Through a staging copy, verified against the hash before the target sees it.
        let tmp = self.staging_path(&random_id("mig_"));
        let copied = self.copy_out(&source, &now.sha256, &tmp).await;
        let result = async {
            copied?;
            target.put_file(&now.sha256, &tmp, to_u64(now.size)).await?;
            if now.thumbnail {
                let png = source.read_all(&thumb_key(&now.sha256)).await?;
                target.put_bytes(&thumb_key(&now.sha256), &png).await?;
            }
            if !self
                .inner
                .store
                .files()
                .move_blob(&now.sha256, &now.backend, to)
                .await?
            {
                return Ok(None);
            }
            Ok(Some((now.backend.clone(), source)))
        }
        .await;
        remove_quietly(&tmp).await;
        result
    }

    async fn copy_out(&self, source: &Backend, sha256: &str, to: &Path) -> Result<(), FileError> {
        let mut out = tokio::fs::File::create(to).await?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>(2);
        let write = async {
            let mut rx = rx;
            let mut hasher = Sha256::new();
            while let Some(chunk) = rx.recv().await {
                hasher.update(&chunk);
                out.write_all(&chunk).await?;
            }
            out.sync_all().await?;
            Ok::<_, std::io::Error>(hex::encode(hasher.finalize()))
        };
        let (read, written) = tokio::join!(source.read(sha256, 0, tx), write);
        read?;
        if written? != sha256 {
            return Err(FileError::Corrupt(sha256.to_owned()));
        }
        Ok(())
    }

    /// Blobs and bytes per backend, and where new contents go.
    pub(crate) async fn status(
        &self,
    ) -> Result<(String, Vec<veche_store::BackendUsage>), FileError> {
        Ok((
            self.current_backend(),
            self.inner.store.files().backend_usage().await?,
        ))
    }
}

async fn hash_prefix(
    file: &mut tokio::fs::File,
    len: u64,
    hasher: &mut Sha256,
) -> std::io::Result<()> {
    file.seek(std::io::SeekFrom::Start(0)).await?;
    let mut left = len;
    let mut buf = vec![0u8; READ_CHUNK];
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = file.read(&mut buf[..want]).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the staging file is shorter than confirmed",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

async fn read_head(path: &Path, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// A file held at `source` cannot be fetched now, for this reason.
fn later(source: &str, why: String) -> FileError {
    FileError::Busy(format!("the file is on {source}, {why}; try again later"))
}

async fn remove_quietly(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, path = %path.display(), "could not remove a staging file");
    }
}
