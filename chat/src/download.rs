//! Downloads to a local folder, shared by `veche download` and `veche chat`: resumable through
//! `NAME.part`, verified against the file's SHA-256, under the node's name made safe.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use veche_client::protocol::files::FileInfo;
use veche_client::{Connection, RequestError, TransferError};

/// Downloads the file `info` describes to `target`, through `target.part`: an interrupted
/// download continues from what that holds, and the whole is checked against the file's
/// SHA-256 before it is renamed into place.
pub async fn fetch(conn: &Connection, info: &FileInfo, target: &Path) -> anyhow::Result<()> {
    let file = info.id.as_str();
    let mut part_name = target.as_os_str().to_owned();
    part_name.push(".part");
    let part = PathBuf::from(part_name);
    let mut offset = match tokio::fs::metadata(&part).await {
        Ok(m) if m.is_file() && m.len() <= info.size => m.len(),
        Ok(_) | Err(_) => 0,
    };
    let mut sink = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(offset == 0)
        .open(&part)
        .await
        .with_context(|| format!("cannot write {}", part.display()))?;
    if offset > 0 {
        tokio::io::AsyncSeekExt::seek(&mut sink, std::io::SeekFrom::Start(offset)).await?;
    }
    if offset < info.size {
        let result = conn.download(file, offset, false, &mut sink).await;
        match result {
            Ok(_) => {}
            Err(TransferError::HashMismatch) => {
                drop(sink);
                let _ = tokio::fs::remove_file(&part).await;
                bail!("the downloaded content does not match its SHA-256; try again");
            }
            // The caller says it in its words (the CLI names the code and a hint).
            Err(TransferError::Refused(body)) => {
                return Err(RequestError::Server(body).into());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "the download stopped; download it again to continue from {}",
                    part.display()
                )));
            }
        }
        offset = info.size;
    }
    sink.flush().await?;
    sink.sync_all().await?;
    drop(sink);
    // A continued download was checked by nobody yet: the whole is, here.
    let (sha256, len) = veche_client::sha256_of(tokio::fs::File::open(&part).await?).await?;
    if sha256 != info.sha256 || len != offset {
        let _ = tokio::fs::remove_file(&part).await;
        bail!(
            "the downloaded content does not match its SHA-256 (the partial download was \
             discarded); try again"
        );
    }
    tokio::fs::rename(&part, &target)
        .await
        .with_context(|| format!("cannot write {}", target.display()))?;
    Ok(())
}

/// Where a file named `name` (by the node: untrusted) goes: `output` if it names a file, else
/// a file of that name in `output` (a folder) or in the current folder. Only the name's last
/// part is used, with control characters replaced, so no name writes outside that folder.
pub fn destination(name: &str, id: &str, output: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let folder = match output {
        Some(path) if !path.is_dir() => return Ok(path),
        Some(folder) => folder,
        None => PathBuf::from("."),
    };
    Ok(folder.join(safe_name(name, id)))
}

/// The last part of `name` with controls replaced; `id` if nothing usable is left.
fn safe_name(name: &str, id: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() || trimmed.chars().all(|c| c == '.') || Path::new(trimmed).is_absolute() {
        id.to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// A size for people: bytes, KB, MB, GB (powers of 1024).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_from_the_node_stays_in_the_folder() {
        assert_eq!(safe_name("отчёт.pdf", "f_1"), "отчёт.pdf");
        assert_eq!(safe_name("../../.bashrc", "f_1"), ".bashrc");
        assert_eq!(safe_name("..\\..\\x.exe", "f_1"), "x.exe");
        assert_eq!(safe_name("..", "f_1"), "f_1");
        assert_eq!(safe_name("a/", "f_1"), "f_1");
        assert_eq!(safe_name("a\x1b[2Jb", "f_1"), "a_[2Jb");
    }
}
