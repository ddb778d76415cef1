//! The widget's endpoints: an application mints tokens, the widget's page exchanges one for
//! an embed session and makes its requests with it (see `services::embed`).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use veche_protocol::Request;
use veche_protocol::discussions::ObjectRef;

use super::api::{Wire, wire};
use super::{ApiError, AppAuth, AppState, Embedded, ErrorResponse, Gateway};
use crate::services::embed;

type Result<T> = std::result::Result<T, ApiError>;

pub(super) fn routes(r: OpenApiRouter<Arc<Gateway>>) -> OpenApiRouter<Arc<Gateway>> {
    r.routes(routes!(mint))
        .routes(routes!(session))
        .routes(routes!(origins))
        .routes(routes!(rpc))
}

/// A token for one user and one of the application's objects.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct MintBody {
    object_type: String,
    object_id: String,
    /// The user's login or id.
    user: String,
    /// The token's life: 1–300 s (default 60). It is used once, when the page loads.
    ttl_secs: Option<u64>,
}

/// A minted token: put it in the widget page's fragment (`#t=…`), never in a query string.
#[derive(Debug, Serialize, ToSchema)]
struct MintReply {
    token: String,
    /// When it stops working (ms since the epoch, UTC).
    expires_at: i64,
    /// The object's discussion.
    discussion: String,
    /// The widget's page on this node, token included: `/embed/object/{app}/{type}/{id}#t=…`.
    page: String,
}

/// The widget page's path for an object, its segments percent-encoded.
fn page_path(object: &ObjectRef) -> String {
    let mut url = match reqwest::Url::parse("http://node/") {
        Ok(url) => url,
        Err(_) => return String::new(),
    };
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.extend([
            "embed",
            "object",
            &object.application,
            &object.object_type,
            &object.object_id,
        ]);
    }
    url.path().to_owned()
}

#[utoipa::path(post, path = "/api/v1/embed/tokens", tag = "apps", request_body = MintBody,
    description = "Mints a short-lived, single-use token that opens the object-discussion \
                   widget for one user and one of the application's objects. Only for \
                   applications an administrator allowed to embed (`veche admin app \
                   allow-embed`), for an unlocked user who may see the object now. The \
                   object's discussion is created if needed.",
    responses((status = 200, body = MintReply), (status = 403, body = ErrorResponse),
              (status = 404, body = ErrorResponse)))]
async fn mint(
    State(g): AppState,
    app: AppAuth,
    Json(body): Json<MintBody>,
) -> Result<Json<MintReply>> {
    let object = ObjectRef {
        application: app.app.name.clone(),
        object_type: body.object_type,
        object_id: body.object_id,
    };
    veche_core::discussions::check_object(&object)?;
    let minted = embed::mint(
        &g.services,
        &app.caller,
        &app.app.name,
        object.clone(),
        &body.user,
        body.ttl_secs.map(Duration::from_secs),
    )
    .await?;
    Ok(Json(MintReply {
        page: format!("{}#t={}", page_path(&object), minted.token),
        token: minted.token,
        expires_at: minted.expires_at,
        discussion: minted.discussion,
    }))
}

/// The token the page was opened with, and the object the page shows.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SessionBody {
    token: String,
    app: String,
    object_type: String,
    object_id: String,
}

/// An embed session: keep the token in the page's memory only.
#[derive(Debug, Serialize, ToSchema)]
struct SessionReply {
    /// Send as `Authorization: Bearer …` to `/api/v1/embed/rpc`, or as a WebSocket
    /// subprotocol after `veche.embed`.
    session_token: String,
    user: String,
    discussion: String,
    /// Where the page may post its events: the origins allowed to frame it.
    origins: Vec<String>,
    /// When it ends unless used (ms since the epoch, UTC).
    expires_at: i64,
}

#[utoipa::path(post, path = "/api/v1/embed/session", tag = "apps", request_body = SessionBody,
    description = "Exchanges an embed token for an embed session covering the object's \
                   discussion only. A token works once and only before it expires: \
                   `used_token`, `expired_token` and `invalid_token` (401) say which.",
    responses((status = 200, body = SessionReply), (status = 401, body = ErrorResponse),
              (status = 404, body = ErrorResponse)))]
async fn session(State(g): AppState, Json(body): Json<SessionBody>) -> Result<Json<SessionReply>> {
    let object = ObjectRef {
        application: body.app,
        object_type: body.object_type,
        object_id: body.object_id,
    };
    let s = embed::exchange(&g.services, &body.token, &object).await?;
    Ok(Json(SessionReply {
        session_token: s.token,
        user: s.user,
        discussion: s.discussion,
        origins: s.origins,
        expires_at: s.expires_at,
    }))
}

/// The origins that may frame an application's widget.
#[derive(Debug, Serialize, ToSchema)]
struct OriginsReply {
    origins: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/embed/apps/{app}/origins", tag = "apps",
    params(("app" = String, Path)),
    description = "The web origins allowed to frame the application's widget (the page's \
                   `frame-ancestors`), empty when it may not embed. The widget's page asks \
                   before it takes a token by `postMessage`.",
    responses((status = 200, body = OriginsReply)))]
async fn origins(State(g): AppState, Path(app): Path<String>) -> Result<Json<OriginsReply>> {
    Ok(Json(OriginsReply {
        origins: embed::origins(&g.services, &app).await?,
    }))
}

#[utoipa::path(post, path = "/api/v1/embed/rpc", tag = "apps", request_body = Wire,
    description = "A request of the widget's embed session (`Authorization: Bearer vembs_…`): \
                   `get_discussion`, `history`, `sync`, `send`, `edit`, `delete`, `react`, \
                   `typing`, `mark_read`, `edit_history`, `click`, all in its one discussion, \
                   and `file_policy`. Its files go through the file routes with the same \
                   token, within that discussion. Anything else is `forbidden`; once the user lost access to the object the \
                   session has ended (`session_ended`).",
    responses((status = 200, body = Wire), (status = 401, body = ErrorResponse),
              (status = 403, body = ErrorResponse)))]
async fn rpc(
    State(g): AppState,
    Embedded(scope): Embedded,
    Json(body): Json<Wire>,
) -> Result<Json<Wire>> {
    let request: Request = serde_json::from_value(body.0)
        .map_err(|e| ApiError::bad_request(format!("not a request: {e}")))?;
    if matches!(request, Request::Watch { .. }) {
        return Err(ApiError::bad_request(
            "watch delivers live events to a connection: send it on the WebSocket",
        ));
    }
    let caller = scope.caller.clone();
    Ok(wire(
        &embed::request(&g.services, &scope, &caller, request).await?,
    ))
}
