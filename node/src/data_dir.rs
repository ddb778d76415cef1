//! The data folder: one directory holding everything a node owns.
//!
//! ```text
//! veche-data/
//!   config.toml      commented configuration, written only if absent
//!   veche.db         SQLite database (plus -wal and -shm)
//!   identity.pem     the node's ed25519 key (0600)
//!   tls/             local CA and server certificate (keys 0600)
//!   setup-token      one-time token for the first administrator (0600, removed once used)
//!   admin.sock       local admin socket while the node runs (0600)
//!   veche.lock       held by the running node
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The data folder of one node.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

/// Held while a node (or an offline admin command) uses the data folder; released on drop.
#[derive(Debug)]
pub struct DataLock {
    _file: File,
}

/// Why the data folder could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock: a node is running on this folder.
    #[error("the data folder {0} is in use by a running node")]
    InUse(PathBuf),
    /// The lock file could not be opened.
    #[error("cannot open the lock file in {path}: {source}")]
    Io {
        /// The data folder.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl DataDir {
    /// Uses `root` as the data folder, creating it if needed and closing it to other users
    /// (mode 0700). The database file
    /// is created empty with mode 0600 so that SQLite's WAL and index files inherit it.
    pub fn create(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        let root = root.canonicalize()?;
        // Keys, tokens and the admin socket live here: only the node's user may enter.
        let mode = fs::metadata(&root)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            fs::set_permissions(&root, fs::Permissions::from_mode(mode & 0o700))?;
        }
        fs::create_dir_all(root.join("tls"))?;
        let db = root.join("veche.db");
        if !db.exists() {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&db)?;
        }
        Ok(Self { root })
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `config.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.root.join("veche.db")
    }
    /// The node's identity key.
    pub fn identity_path(&self) -> PathBuf {
        self.root.join("identity.pem")
    }
    /// The node's VAPID key (Web Push), PKCS#8 PEM.
    pub fn vapid_key_path(&self) -> PathBuf {
        self.root.join("vapid.pem")
    }
    /// The folder with the generated CA and certificate.
    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }
    /// The file holding the first-start setup token.
    pub fn setup_token_path(&self) -> PathBuf {
        self.root.join("setup-token")
    }
    /// The local admin socket.
    pub fn admin_socket_path(&self) -> PathBuf {
        self.root.join("admin.sock")
    }

    /// Writes the commented configuration template unless a config file exists.
    /// Returns whether it wrote one.
    pub fn write_config_template(&self) -> io::Result<bool> {
        let path = self.config_path();
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut file) => {
                file.write_all(crate::config::TEMPLATE.as_bytes())?;
                file.sync_all()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes the exclusive lock of the data folder, failing at once if a node holds it.
    pub fn lock(&self) -> Result<DataLock, LockError> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.root.join("veche.lock"))
            .map_err(|source| LockError::Io {
                path: self.root.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(DataLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(LockError::InUse(self.root.clone())),
            Err(fs::TryLockError::Error(source)) => Err(LockError::Io {
                path: self.root.clone(),
                source,
            }),
        }
    }
}

/// Writes a file readable only by its owner (0600), replacing it atomically and durably.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_with_mode(path, contents, 0o600)
}

/// Writes a file anyone may read (0644): certificates that clients need.
pub(crate) fn write_public(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_with_mode(path, contents, 0o644)
}

fn write_with_mode(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_template_is_written_once_and_never_over_an_existing_file() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::create(tmp.path().join("veche-data")).unwrap();
        assert!(data.write_config_template().unwrap());
        std::fs::write(data.config_path(), "[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
        assert!(!data.write_config_template().unwrap());
        let kept = std::fs::read_to_string(data.config_path()).unwrap();
        assert!(
            kept.contains("127.0.0.1:1"),
            "the administrator's file is kept"
        );
    }

    #[test]
    fn a_second_lock_on_a_data_folder_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::create(tmp.path()).unwrap();
        let _held = data.lock().unwrap();
        assert!(matches!(data.lock(), Err(LockError::InUse(_))));
    }
}
