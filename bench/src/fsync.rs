//! How many durable commits the disk allows: the upper bound of any node's group commits.

use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes 4 KiB at the start of a temporary file in `dir` and `fdatasync`s it, again and
/// again for `for_how_long`; returns the syncs per second. SQLite in WAL mode with
/// `synchronous=FULL` pays one such sync per commit.
pub fn fsync_rate(dir: &Path, for_how_long: Duration) -> io::Result<f64> {
    let path = dir.join(format!(".veche-bench-fsync-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        let block = [0x5au8; 4096];
        file.write_all(&block)?;
        file.sync_all()?;
        let start = Instant::now();
        let mut syncs = 0u64;
        while start.elapsed() < for_how_long {
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&block)?;
            file.sync_data()?;
            syncs += 1;
        }
        Ok(syncs as f64 / start.elapsed().as_secs_f64())
    })();
    let _ = std::fs::remove_file(&path);
    result
}
