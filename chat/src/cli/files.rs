//! `veche download`: a file into the local folder, resumable and verified.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::args::FileArg;
use super::{ClientDir, Session, refusal};
use crate::download::{destination, fetch, size};
use crate::untrusted::one_line;

/// Downloads `file` to `output` (a folder, or a file name; by default the file's own name in
/// the current folder). The bytes go to `NAME.part` first: an interrupted download continues
/// from what that holds, and the whole is checked against the file's SHA-256 before it is
/// renamed into place.
pub(super) async fn download(
    dir: &ClientDir,
    file: &FileArg,
    output: Option<PathBuf>,
    force: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let session = Session::start(dir).await?;
    let info = session
        .conn
        .file_info(file.as_str())
        .await
        .map_err(refusal)
        .with_context(|| format!("cannot download {file}"))?;
    let target = destination(&info.name, file.as_str(), output)?;
    if !force && target.exists() {
        bail!(
            "{} exists already: choose another name with -o, or replace it with --force",
            target.display()
        );
    }
    fetch(&session.conn, &info, &target).await.map_err(|e| {
        match e.downcast::<veche_client::RequestError>() {
            Ok(refused) => refusal(refused).context(format!("cannot download {file}")),
            Err(e) => e,
        }
    })?;
    session.end().await;
    writeln!(
        out,
        "downloaded {} to {} ({})",
        one_line(&info.name),
        one_line(&target.display().to_string()),
        size(info.size)
    )?;
    Ok(())
}
