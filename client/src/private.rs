//! The client folder holds the session token (in `client.db`): it is the user's alone. The
//! folder is kept at mode 0700 and every file in it at 0600, also when an earlier version (or
//! a careless copy) left them readable by others: they are tightened each time a client opens
//! the folder.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// The folder's mode: its owner alone may list, read and write it.
#[cfg(unix)]
const FOLDER_MODE: u32 = 0o700;
/// Every file's mode: its owner alone may read and write it.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Why a client folder could not be made private.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateFolderError {
    /// The folder is shared with other users by design (a sticky, world-writable folder
    /// such as `/tmp`): the session token cannot be kept there.
    #[error(
        "{0} is a folder other users write to (like /tmp); give the client a folder of its own"
    )]
    Shared(String),
    /// Creating the folder or changing a mode failed.
    #[error("client folder {path}: {source}")]
    Io {
        /// The folder or file.
        path: String,
        /// What failed.
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PrivateFolderError + '_ {
    move |source| PrivateFolderError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Creates `dir` (mode 0700) if needed, and tightens it and every file directly in it.
pub fn prepare_folder(dir: &Path) -> Result<(), PrivateFolderError> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    builder.mode(FOLDER_MODE);
    match builder.create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(io_error(dir)(e)),
    }
    #[cfg(unix)]
    {
        let mode = std::fs::metadata(dir)
            .map_err(io_error(dir))?
            .permissions()
            .mode();
        // Sticky and writable by everyone: /tmp, /var/tmp. Tightening it would break the
        // machine; keeping a token in it would share it.
        if mode & 0o1002 == 0o1002 {
            return Err(PrivateFolderError::Shared(dir.display().to_string()));
        }
        if mode & 0o777 != FOLDER_MODE {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(FOLDER_MODE))
                .map_err(io_error(dir))?;
        }
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(io_error(&path))?;
            if meta.is_file() && meta.permissions().mode() & 0o777 != FILE_MODE {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(FILE_MODE))
                    .map_err(io_error(&path))?;
            }
        }
    }
    Ok(())
}

/// Options that create a file readable and writable by its owner only.
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    options.mode(FILE_MODE);
    options
}

/// Creates `path` empty, private, unless it exists: SQLite gives a database's `-wal` and
/// `-shm` files the mode of the database itself, so creating it private keeps them private.
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    private_file().create(true).append(true).open(path)
}

/// Writes `contents` to `path`, private to its owner (a new file is never readable by others,
/// not even for a moment).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), PrivateFolderError> {
    use std::io::Write;
    let mut file = private_file()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(io_error(path))?;
    #[cfg(unix)]
    file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
        .map_err(io_error(path))?;
    file.write_all(contents).map_err(io_error(path))?;
    file.sync_all().map_err(io_error(path))
}
