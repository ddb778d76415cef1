//! Files over transfer streams: uploads (resumable) and downloads (verified).

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use veche_protocol::files::{
    FileInfo, MAX_TRANSFER_FRAME, NewUpload, TransferReply, TransferRequest, UploadInfo,
};
use veche_protocol::frame;
use veche_protocol::{ErrorBody, Reply, Request};

use crate::{Connection, RequestError};

/// Bytes read from the source per write.
const CHUNK: usize = 256 * 1024;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A request on the control stream failed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The node refused the transfer (the body says why, and `rule` which policy setting).
    #[error("{:?}: {}", .0.code, .0.message)]
    Refused(ErrorBody),
    /// The stream broke (connection lost, reset by the node); an upload continues from its
    /// confirmed offset on a new connection.
    #[error("the transfer stream failed: {0}")]
    Stream(String),
    /// Reading the source or writing the destination failed.
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
    /// A downloaded file does not match its SHA-256.
    #[error("the downloaded content does not match its SHA-256")]
    HashMismatch,
}

fn stream_error(e: impl std::fmt::Display) -> TransferError {
    TransferError::Stream(e.to_string())
}

/// The SHA-256 (hex) and size of what `source` yields.
pub async fn sha256_of(mut source: impl AsyncRead + Unpin) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = source.read(&mut buf).await?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), size));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

impl Connection {
    /// Declares an upload (`create_upload`).
    pub async fn create_upload(&self, new: NewUpload) -> Result<UploadInfo, RequestError> {
        match self.request(Request::CreateUpload(new)).await? {
            Reply::Upload { upload } => Ok(upload),
            _ => Err(RequestError::UnexpectedReply("create_upload")),
        }
    }

    /// How far an upload has come (`upload_status`).
    pub async fn upload_status(&self, upload: &str) -> Result<UploadInfo, RequestError> {
        let request = Request::UploadStatus {
            upload: upload.to_owned(),
        };
        match self.request(request).await? {
            Reply::Upload { upload } => Ok(upload),
            _ => Err(RequestError::UnexpectedReply("upload_status")),
        }
    }

    /// Sends an upload's bytes from `offset` (its `confirmed`), reading them from `data`
    /// (already positioned at `offset`), on a transfer stream of its own. `progress` sees
    /// each confirmed offset. Returns the file once the node has verified and stored it.
    pub async fn send_upload(
        &self,
        upload: &str,
        offset: u64,
        mut data: impl AsyncRead + Unpin,
        mut progress: impl FnMut(u64),
    ) -> Result<FileInfo, TransferError> {
        let (mut send, mut recv) = self.quic().open_bi().await.map_err(stream_error)?;
        let header = TransferRequest::Upload {
            upload: upload.to_owned(),
            offset,
        };
        frame::write(&mut send, &header, MAX_TRANSFER_FRAME)
            .await
            .map_err(stream_error)?;
        // Bytes go out while the node's answers come back; the first final answer wins (the
        // node may refuse before all bytes are sent).
        let write = async {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = data.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                send.write_all(&buf[..n])
                    .await
                    .map_err(std::io::Error::other)?;
            }
            send.finish().map_err(std::io::Error::other)?;
            Ok::<_, std::io::Error>(())
        };
        let read = async {
            loop {
                match frame::read::<TransferReply, _>(&mut recv, MAX_TRANSFER_FRAME).await {
                    Ok(Some(TransferReply::Progress { confirmed })) => progress(confirmed),
                    Ok(Some(TransferReply::Uploaded { file })) => return Ok(file),
                    Ok(Some(TransferReply::Error { error })) => {
                        return Err(TransferError::Refused(error));
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(stream_error("the node ended the stream")),
                    Err(e) => return Err(stream_error(e)),
                }
            }
        };
        tokio::pin!(read);
        tokio::select! {
            result = &mut read => result,
            written = write => match written {
                Ok(()) => read.await,
                // The node may have answered (a refusal stops the stream); prefer its word.
                Err(e) => match tokio::time::timeout(std::time::Duration::from_secs(2), read).await {
                    Ok(Err(TransferError::Stream(_))) | Err(_) => Err(TransferError::Io(e)),
                    Ok(other) => other,
                },
            },
        }
    }

    /// Uploads the file at `path` for `discussion` under `name`: declares it (or, given
    /// `resume`, continues that upload from its confirmed offset) and sends its bytes.
    pub async fn upload_file(
        &self,
        discussion: &str,
        path: &Path,
        name: &str,
        resume: Option<&str>,
    ) -> Result<FileInfo, TransferError> {
        let upload = match resume {
            Some(id) => self.upload_status(id).await?,
            None => {
                let (sha256, size) = sha256_of(tokio::fs::File::open(path).await?).await?;
                self.create_upload(NewUpload {
                    discussion: discussion.to_owned(),
                    name: name.to_owned(),
                    size,
                    sha256,
                })
                .await?
            }
        };
        if let Some(file) = upload.file {
            return Ok(file);
        }
        let mut file = tokio::fs::File::open(path).await?;
        file.seek(std::io::SeekFrom::Start(upload.confirmed))
            .await?;
        self.send_upload(&upload.id, upload.confirmed, file, |_| {})
            .await
    }

    /// Downloads a file (or its preview) from `offset` into `out`; returns the file and the
    /// bytes written. A full download of the file is checked against its SHA-256.
    pub async fn download(
        &self,
        file: &str,
        offset: u64,
        thumbnail: bool,
        mut out: impl AsyncWrite + Unpin,
    ) -> Result<(FileInfo, u64), TransferError> {
        let (mut send, mut recv) = self.quic().open_bi().await.map_err(stream_error)?;
        let header = TransferRequest::Download {
            file: file.to_owned(),
            offset,
            thumbnail,
        };
        frame::write(&mut send, &header, MAX_TRANSFER_FRAME)
            .await
            .map_err(stream_error)?;
        send.finish().map_err(stream_error)?;
        let (info, length) = match frame::read::<TransferReply, _>(&mut recv, MAX_TRANSFER_FRAME)
            .await
            .map_err(stream_error)?
        {
            Some(TransferReply::Download { file, length, .. }) => (file, length),
            Some(TransferReply::Error { error }) => return Err(TransferError::Refused(error)),
            Some(_) => return Err(stream_error("unexpected frame")),
            None => return Err(stream_error("the node ended the stream")),
        };
        let mut hasher = (offset == 0 && !thumbnail).then(Sha256::new);
        let mut left = length;
        while left > 0 {
            let chunk = recv
                .read_chunk(CHUNK, true)
                .await
                .map_err(stream_error)?
                .ok_or_else(|| stream_error("the stream ended early"))?;
            let bytes = &chunk.bytes[..];
            let n = bytes.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some(h) = hasher.as_mut() {
                h.update(&bytes[..n]);
            }
            out.write_all(&bytes[..n]).await?;
            left -= n as u64;
        }
        // The node finishes the stream only after a verified read; a reset means it failed.
        let mut rest = [0u8; 1];
        match recv.read(&mut rest).await {
            Ok(None) => {}
            Ok(Some(_)) => return Err(stream_error("more bytes than announced")),
            Err(e) => return Err(stream_error(e)),
        }
        out.flush().await?;
        if let Some(h) = hasher
            && hex::encode(h.finalize()) != info.sha256
        {
            return Err(TransferError::HashMismatch);
        }
        Ok((info, length))
    }

    /// A file's description, if the caller may download it.
    pub async fn file_info(&self, file: &str) -> Result<FileInfo, RequestError> {
        let request = Request::GetFile {
            file: file.to_owned(),
        };
        match self.request(request).await? {
            Reply::File { file } => Ok(file),
            _ => Err(RequestError::UnexpectedReply("get_file")),
        }
    }
}
