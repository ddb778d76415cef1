//! Files over HTTP, for browsers and ERPs that cannot speak QUIC: the same uploads (declared,
//! then sent with `PUT`, resumable from the confirmed offset) and downloads (with `Range:
//! bytes=N-` to resume), authorized exactly as on QUIC.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use veche_protocol::files::NewUpload;

use super::api::{Wire, wire};
use super::{AnyPrincipal, ApiError, AppState, ErrorResponse, Gateway, Principal};
use crate::files::{Download, FileError};

type Result<T> = std::result::Result<T, ApiError>;

pub(super) fn routes(r: OpenApiRouter<Arc<Gateway>>) -> OpenApiRouter<Arc<Gateway>> {
    r.routes(routes!(create_upload))
        .routes(routes!(upload_status, send_upload, cancel_upload))
        .routes(routes!(download))
        .routes(routes!(thumbnail))
}

fn file_error(e: FileError) -> ApiError {
    crate::errors::body(&e).into()
}

/// A widget's embed session reaches the files of its one discussion only: its uploads
/// there, and files attached to that discussion's messages (checked after `authenticate`
/// has checked that the user still has access).
async fn upload_in_scope(g: &Gateway, principal: &Principal, upload: &str) -> Result<()> {
    if let Principal::Embed(scope) = principal {
        g.services
            .files
            .upload_within(&scope.caller, upload, &scope.discussion)
            .await
            .map_err(file_error)?;
    }
    Ok(())
}

async fn file_in_scope(g: &Gateway, principal: &Principal, file: &str) -> Result<()> {
    if let Principal::Embed(scope) = principal {
        g.services
            .files
            .readable_within(&scope.caller, file, &scope.discussion)
            .await
            .map_err(file_error)?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/uploads", tag = "files", request_body = Wire,
    description = "Declares an upload: `{\"discussion\", \"name\", \"size\", \"sha256\"}`. \
                   Checked against the policy before any byte is sent; a refusal names the \
                   rule (`error.rule`).",
    responses((status = 200, body = Wire), (status = 403, body = ErrorResponse),
              (status = 404, body = ErrorResponse)))]
async fn create_upload(
    State(g): AppState,
    AnyPrincipal(principal): AnyPrincipal,
    Json(body): Json<Wire>,
) -> Result<Json<Wire>> {
    let new: NewUpload = serde_json::from_value(body.0)
        .map_err(|e| ApiError::bad_request(format!("not an upload: {e}")))?;
    if let Principal::Embed(scope) = &principal
        && new.discussion != scope.discussion
    {
        return Err(crate::services::embed::EmbedError::OutOfScope.into());
    }
    let upload = g
        .services
        .files
        .create_upload(principal.caller(), new)
        .await
        .map_err(file_error)?;
    Ok(wire(&upload))
}

#[utoipa::path(get, path = "/api/v1/uploads/{upload}", tag = "files",
    params(("upload" = String, Path)),
    responses((status = 200, body = Wire), (status = 404, body = ErrorResponse)))]
async fn upload_status(
    State(g): AppState,
    AnyPrincipal(principal): AnyPrincipal,
    Path(upload): Path<String>,
) -> Result<Json<Wire>> {
    upload_in_scope(&g, &principal, &upload).await?;
    let status = g
        .services
        .files
        .upload_status(principal.caller(), &upload)
        .await
        .map_err(file_error)?;
    Ok(wire(&status))
}

#[utoipa::path(delete, path = "/api/v1/uploads/{upload}", tag = "files",
    params(("upload" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorResponse)))]
async fn cancel_upload(
    State(g): AppState,
    AnyPrincipal(principal): AnyPrincipal,
    Path(upload): Path<String>,
) -> Result<StatusCode> {
    upload_in_scope(&g, &principal, &upload).await?;
    g.services
        .files
        .cancel_upload(principal.caller(), &upload)
        .await
        .map_err(file_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where the body's bytes start.
#[derive(Debug, Deserialize, IntoParams)]
struct OffsetQuery {
    /// The upload's `confirmed` offset (0 for a new upload).
    #[serde(default)]
    offset: u64,
}

#[utoipa::path(put, path = "/api/v1/uploads/{upload}", tag = "files",
    params(("upload" = String, Path), OffsetQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    description = "The upload's bytes from `offset`. 200 with the file once all bytes are in \
                   and verified; 202 with the upload (its `confirmed` offset) if the body \
                   ended early: send the rest from there.",
    responses((status = 200, body = Wire), (status = 202, body = Wire),
              (status = 400, body = ErrorResponse), (status = 409, body = ErrorResponse)))]
async fn send_upload(
    State(g): AppState,
    AnyPrincipal(principal): AnyPrincipal,
    Path(upload): Path<String>,
    Query(q): Query<OffsetQuery>,
    body: Body,
) -> Result<Response> {
    upload_in_scope(&g, &principal, &upload).await?;
    let files = &g.services.files;
    let data = tokio_util::io::StreamReader::new(
        body.into_data_stream()
            .map(|chunk| chunk.map_err(std::io::Error::other)),
    );
    let (progress, _) = watch::channel(q.offset);
    match files
        .receive(principal.caller(), &upload, q.offset, data, progress)
        .await
    {
        Ok(file) => Ok(wire(&file).into_response()),
        Err(FileError::Incomplete(_)) => {
            let status = files
                .upload_status(principal.caller(), &upload)
                .await
                .map_err(file_error)?;
            Ok((StatusCode::ACCEPTED, wire(&status)).into_response())
        }
        Err(e) => Err(file_error(e)),
    }
}

/// Streams a prepared download as the response body; a failure after the headers went out
/// aborts the body, so the client never takes a broken file for a whole one.
fn stream(g: Arc<Gateway>, d: Download, status: StatusCode, mut headers: HeaderMap) -> Response {
    let (tx, rx) = mpsc::channel::<Vec<u8>>(2);
    let (body_tx, body_rx) = mpsc::channel::<std::io::Result<Bytes>>(2);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(d.length));
    tokio::spawn(async move {
        // Owns the receiver: a client that leaves stops the file's reader.
        let forward = async {
            let mut rx = rx;
            while let Some(chunk) = rx.recv().await {
                // A client that stops reading lets go of the file after a while.
                let sent = tokio::time::timeout(
                    std::time::Duration::from_secs(60),
                    body_tx.send(Ok(Bytes::from(chunk))),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    break;
                }
            }
        };
        let (sent, ()) = tokio::join!(g.services.files.send(&d, tx), forward);
        if let Err(e) = sent {
            tracing::warn!(file = %d.file.id, error = %e, "download failed midway");
            let _ = body_tx
                .send(Err(std::io::Error::other("download failed")))
                .await;
        }
    });
    let body = futures_util::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (status, headers, Body::from_stream(body)).into_response()
}

/// `Content-Disposition` with the name in RFC 5987 form; shown in place only for raster
/// images, saved otherwise (HTML, SVG, scripts and unknown types never render in a page).
fn disposition(name: &str, mime: &str) -> HeaderValue {
    let kind = if crate::files::inline(mime) {
        "inline"
    } else {
        "attachment"
    };
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._- ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent_encode(name);
    HeaderValue::from_str(&format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The start of `Range: bytes=N-`; other forms are ignored (the whole file is sent).
fn range_start(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    v.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok()
}

fn base_headers(mime: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let content_type = if crate::files::inline(mime) {
        mime
    } else {
        "application/octet-stream"
    };
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    h
}

#[utoipa::path(get, path = "/api/v1/files/{file}", tag = "files",
    params(("file" = String, Path)),
    description = "The file, for whoever may read a message it is attached to (its \
                   uploader before that). `Range: bytes=N-` resumes; the `ETag` is the \
                   SHA-256.",
    responses((status = 200, content_type = "application/octet-stream"),
              (status = 206, content_type = "application/octet-stream"),
              (status = 404, body = ErrorResponse)))]
async fn download(
    State(g): AppState,
    AnyPrincipal(principal): AnyPrincipal,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    file_in_scope(&g, &principal, &file).await?;
    let offset = range_start(&headers);
    if let Some(start) = offset {
        let size = g
            .services
            .files
            .get(principal.caller(), &file)
            .await
            .map_err(file_error)?
            .size;
        if start >= size {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, h).into_response());
        }
    }
    let d = g
        .services
        .files
        .download(principal.caller(), &file, offset.unwrap_or(0), false)
        .await
        .map_err(file_error)?;
    let mut h = base_headers(&d.mime);
    h.insert(
        header::CONTENT_DISPOSITION,
        disposition(&d.file.name, &d.mime),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", d.file.sha256)) {
        h.insert(header::ETAG, etag);
    }
    let status = match offset {
        Some(start) => {
            let range = format!(
                "bytes {start}-{}/{}",
                d.file.size.saturating_sub(1),
                d.file.size
            );
            if let Ok(v) = HeaderValue::from_str(&range) {
                h.insert(header::CONTENT_RANGE, v);
            }
            StatusCode::PARTIAL_CONTENT
        }
        None => StatusCode::OK,
    };
    Ok(stream(g, d, status, h))
}

#[utoipa::path(get, path = "/api/v1/files/{file}/thumbnail", tag = "files",
    params(("file" = String, Path)),
    responses((status = 200, content_type = "image/png"), (status = 404, body = ErrorResponse)))]
async fn thumbnail(
    State(g): AppState,
    AnyPrincipal(principal): AnyPrincipal,
    Path(file): Path<String>,
) -> Result<Response> {
    file_in_scope(&g, &principal, &file).await?;
    let d = g
        .services
        .files
        .download(principal.caller(), &file, 0, true)
        .await
        .map_err(file_error)?;
    let h = base_headers("image/png");
    Ok(stream(g, d, StatusCode::OK, h))
}
