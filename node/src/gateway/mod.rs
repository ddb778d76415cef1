//! The HTTP/WebSocket gateway: JSON over HTTP for business applications and for clients that
//! cannot speak QUIC.
//!
//! It is a second door into the same services: user requests become the same
//! [`Request`](veche_protocol::Request)s the QUIC connection handles, through the same
//! `user_request` and so the same `discussions::authorize`; live events are the same
//! events, as JSON text frames on a WebSocket registered in the same registry. The OpenAPI
//! description is generated from the handlers themselves (utoipa), so it cannot drift from
//! the routes: `GET /api/v1/openapi.json`.
//!
//! Who is calling is in the headers:
//! - a user: `Authorization: Bearer <session token>` and `Veche-Device: <device id>` (from
//!   `POST /api/v1/login`);
//! - an application: `Authorization: Bearer vapp_…` and `Veche-Instance: <instance id>` (from
//!   `POST /api/v1/apps/activate`).
//!
//! Browsers cannot set headers on a WebSocket, so `/api/v1/ws` also takes them as the query
//! parameters `access_token` and `device` or `instance`. A file's download and preview take
//! `device` there too (never a token), for links and images of the web client's pages.
//!
//! The web client never sees a token: `POST /api/v1/login` with `"cookie": true` sets the
//! session as an HttpOnly cookie ([`SESSION_COOKIE`], `SameSite=Strict`, `Secure` over TLS),
//! which the node takes only with a `Veche-Device` header (no cross-site form can send one)
//! and, when the request says where it comes from, only from the node's own origin.

mod api;
mod embed;
mod files;
mod tls;
mod ws;

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use veche_protocol::ErrorBody;

use crate::accounts::AccountError;
use crate::apps::{AppError, AppPrincipal};
use crate::config::HttpConfig;
use crate::services::Services;
use crate::services::embed::{EmbedError, EmbedScope};
pub(crate) use tls::Peer;
use veche_core::discussions::{Caller, DiscussionError};

/// What every handler gets.
#[derive(Debug)]
pub(crate) struct Gateway {
    pub(crate) services: Services,
    pub(crate) node_name: String,
    pub(crate) stop: CancellationToken,
    /// Registration requests per source address: each may send mail.
    pub(crate) registrations: AddressLimiter,
    /// Activation attempts per source address.
    pub(crate) activations: AddressLimiter,
    /// Requests started from WebSockets, waited for at shutdown.
    pub(crate) tasks: tokio_util::task::TaskTracker,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub(crate) trusted_proxies: Vec<std::net::IpAddr>,
    /// The gateway serves HTTPS: session cookies are `Secure`, the own origin `https://`.
    pub(crate) tls: bool,
}

impl Gateway {
    /// The client's address: the peer's, or, when the peer is a trusted proxy, the last
    /// address that proxy put in `X-Forwarded-For` (the one it saw).
    pub(crate) fn client_ip(
        &self,
        peer: std::net::IpAddr,
        headers: &HeaderMap,
    ) -> std::net::IpAddr {
        let peer = crate::throttle::address_key(peer);
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
            .next_back()
            .unwrap_or(peer)
    }
}

/// A rate limit per source address.
pub(crate) type AddressLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

/// Registration requests one address may make: 10 at once, then 20 an hour.
pub(crate) fn registration_limiter() -> AddressLimiter {
    per_hour(20, 10)
}

/// Activation attempts one address may make: 20 at once, then 60 an hour.
pub(crate) fn activation_limiter() -> AddressLimiter {
    per_hour(60, 20)
}

fn per_hour(rate: u32, burst: u32) -> AddressLimiter {
    let n = |v: u32| std::num::NonZeroU32::new(v).unwrap_or(std::num::NonZeroU32::MIN);
    governor::RateLimiter::keyed(governor::Quota::per_hour(n(rate)).allow_burst(n(burst)))
}

/// Checks `ip` against `limiter`; the error says when to try again.
pub(crate) fn limit(limiter: &AddressLimiter, ip: std::net::IpAddr) -> Result<(), ApiError> {
    let ip = crate::throttle::address_key(ip);
    limiter.check_key(&ip).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        ApiError::throttled("too many attempts from this address", wait)
    })
}

type AppState = State<Arc<Gateway>>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Veche HTTP API",
        description = "Business applications and clients that cannot speak QUIC. Users \
                       authenticate with `Authorization: Bearer <session token>` and \
                       `Veche-Device`; applications with `Authorization: Bearer vapp_…` and \
                       `Veche-Instance`."
    ),
    tags(
        (name = "node", description = "The node itself"),
        (name = "users", description = "Users: log in, discussions, messages, live events"),
        (name = "apps", description = "Applications: registration, object discussions, \
                                       business events, webhooks"),
        (name = "topics", description = "App-to-app exchange without users"),
        (name = "files", description = "Uploads (resumable) and downloads")
    )
)]
struct ApiDoc;

/// The router and the OpenAPI description it was generated with.
pub(crate) fn router(gateway: Arc<Gateway>, max_body: usize) -> axum::Router {
    let (router, api) = embed::routes(files::routes(api::routes(OpenApiRouter::with_openapi(
        ApiDoc::openapi(),
    ))))
    .routes(utoipa_axum::routes!(ws::socket))
    .split_for_parts();
    let spec = Arc::new(api);
    router
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let spec = spec.clone();
                async move { Json(spec.as_ref().clone()) }
            }),
        )
        .fallback(
            |State(g): AppState,
             method: axum::http::Method,
             uri: axum::http::Uri,
             headers: HeaderMap| async move {
                // The widget's page, framed only by the origins its application may use.
                if let Some(app) = embed_page_app(uri.path()) {
                    return match crate::services::embed::origins(&g.services, &app).await {
                        Ok(origins) if !origins.is_empty() => {
                            crate::web::serve_embed(method, headers, &origins)
                        }
                        Ok(_) => crate::web::not_found(),
                        Err(e) => ApiError::from(e).into_response(),
                    };
                }
                // Everything outside the API is the web client's.
                if uri.path() != "/api" && !uri.path().starts_with("/api/") {
                    return crate::web::serve(method, uri, headers).await;
                }
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no_route",
                    "no such endpoint; see /api/v1/openapi.json",
                )
                .into_response()
            },
        )
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(gateway)
}

/// The application of a widget page's path, `/embed/object/{app}/{type}/{id}`.
fn embed_page_app(path: &str) -> Option<String> {
    let rest = path.strip_prefix("/embed/object/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [app, kind, id] if !app.is_empty() && !kind.is_empty() && !id.is_empty() => {
            Some((*app).to_owned())
        }
        _ => None,
    }
}

/// Serves the gateway on `listener` until `stop`: HTTPS with `tls`, else plain HTTP.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    config: HttpConfig,
    tls: Option<rustls::ServerConfig>,
) {
    let stop = gateway.stop.clone();
    let app = router(gateway, config.max_body_bytes);
    let result = match tls {
        Some(tls) => match tls::TlsListener::new(listener, tls) {
            Ok(listener) => {
                axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }
            Err(e) => Err(e),
        },
        None => {
            axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "the HTTP gateway stopped");
    }
}

/// An error as the gateway answers it: `{"error": {"code", "message", "retry_after_ms"?}}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    retry_after_ms: Option<u64>,
    rule: Option<String>,
}

/// The body of every error answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorResponse {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Machine-readable: `not_found`, `bad_request`, `wrong_code`, `database_copy`, ….
    code: String,
    /// Safe to show to a person.
    message: String,
    /// When throttled: milliseconds until a new attempt may succeed.
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_ms: Option<u64>,
    /// When the node's policy refused: the setting that did, such as `files.max_size_mb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
            retry_after_ms: None,
            rule: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn throttled(message: &str, wait: std::time::Duration) -> Self {
        Self {
            retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "throttled", message)
        }
    }

    fn unauthenticated(message: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                retry_after_ms: self.retry_after_ms,
                rule: self.rule,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<ErrorBody> for ApiError {
    fn from(e: ErrorBody) -> Self {
        let status = crate::errors::http_status(e.code);
        let code = serde_json::to_value(e.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "internal".into());
        Self {
            status,
            code,
            message: e.message,
            retry_after_ms: e.retry_after_ms,
            rule: e.rule,
        }
    }
}

impl From<DiscussionError> for ApiError {
    fn from(e: DiscussionError) -> Self {
        crate::errors::body(&e).into()
    }
}

impl From<EmbedError> for ApiError {
    fn from(e: EmbedError) -> Self {
        let mut error: Self = crate::errors::body(&e).into();
        if let Some(code) = e.code() {
            code.clone_into(&mut error.code);
        }
        error
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        crate::errors::body(&e).into()
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        use AppError as E;
        let (status, code) = match &e {
            E::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            E::NameTaken(_) | E::AlreadyActive(_) | E::Conflict(_) => {
                (StatusCode::CONFLICT, "conflict")
            }
            E::TooSoon { .. } => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            E::NotAllowed => (StatusCode::FORBIDDEN, "forbidden"),
            E::Mail => (StatusCode::BAD_GATEWAY, "mail_failed"),
            E::Revoked(_) => (StatusCode::FORBIDDEN, "forbidden"),
            E::WrongCode => (StatusCode::BAD_REQUEST, "wrong_code"),
            E::ExpiredCode => (StatusCode::BAD_REQUEST, "expired_code"),
            E::UsedCode => (StatusCode::BAD_REQUEST, "used_code"),
            E::TooManyAttempts => (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts"),
            E::NoRegistration(_) => (StatusCode::NOT_FOUND, "not_found"),
            E::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            E::DatabaseCopy { .. } => (StatusCode::FORBIDDEN, "database_copy"),
            E::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            E::Store(err) => {
                tracing::error!(error = %err, "application operation failed");
                return Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; try again",
                );
            }
        };
        let retry_after_ms = match &e {
            E::TooSoon { retry_after_ms } => Some(*retry_after_ms),
            _ => None,
        };
        Self {
            status,
            code: code.to_owned(),
            message: e.to_string(),
            retry_after_ms,
            rule: None,
        }
    }
}

/// The cookie that carries a browser's session token.
pub(crate) const SESSION_COOKIE: &str = "veche_s";

/// A `Set-Cookie` value that stores `token` as the session cookie (or, with `None`, removes
/// it). Only the API reads it; scripts never can.
pub(crate) fn session_cookie(token: Option<&str>, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    match token {
        // Browsers keep a cookie at most 400 days; the session itself ends after its idle
        // days on the node, whatever the cookie says.
        Some(token) => format!(
            "{SESSION_COOKIE}={token}; Path=/api; HttpOnly; SameSite=Strict; Max-Age=34560000{secure}"
        ),
        None => {
            format!("{SESSION_COOKIE}=; Path=/api; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
        }
    }
}

/// Who a request says it is.
struct Credentials {
    token: String,
    device: Option<String>,
    instance: Option<String>,
    /// The token came from the session cookie.
    cookie: bool,
}

/// The session token in the `Cookie` header, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether a request that carries an `Origin` comes from the node's own origin: the one
/// its `Host` names, over the scheme the gateway serves.
fn same_origin(headers: &HeaderMap, tls: bool) -> bool {
    let Some(origin) = headers.get(axum::http::header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let scheme = if tls { "https" } else { "http" };
    !host.is_empty() && origin.to_str().ok() == Some(format!("{scheme}://{host}").as_str())
}

/// The credentials of a request: the `Authorization` header, else `access_token` in the
/// query (for WebSockets from browsers), else the session cookie.
fn credentials(parts: &Parts) -> Option<Credentials> {
    let headers: &HeaderMap = &parts.headers;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // Tokens in URLs end up in proxies' logs: only the WebSocket, which browsers cannot give
    // headers, takes them there. A file's download also takes the device there (never a
    // token), so that a plain link or `<img>` of the node's own pages can use the session
    // cookie: the browser then streams the file to disk instead of the page holding it.
    let ws = parts.uri.path() == "/api/v1/ws";
    let download = parts.method == axum::http::Method::GET && is_file_path(parts.uri.path());
    let query: Vec<(String, String)> = parts
        .uri
        .query()
        .filter(|_| ws || download)
        .map(|q| {
            url_pairs(q)
                .into_iter()
                .filter(|(k, _)| match k.as_str() {
                    "access_token" | "instance" => ws,
                    "device" => true,
                    _ => false,
                })
                .collect()
        })
        .unwrap_or_default();
    let from_query = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // A widget's WebSocket names its embed session as a subprotocol (`veche.embed` and the
    // token), which keeps the token out of the URL and so out of logs.
    let subprotocol = (parts.uri.path() == "/api/v1/ws")
        .then(|| {
            headers
                .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .find(|p| p.starts_with(crate::services::embed::SESSION_PREFIX))
                .map(str::to_owned)
        })
        .flatten();
    let bearer = header("authorization")
        .and_then(|h| h.strip_prefix("Bearer ").map(str::to_owned))
        .or(subprotocol)
        .or_else(|| from_query("access_token"));
    let cookie = bearer.is_none();
    let token = bearer.or_else(|| cookie_token(headers))?;
    let device = header("veche-device").or_else(|| from_query("device"));
    let instance = header("veche-instance").or_else(|| from_query("instance"));
    Some(Credentials {
        token,
        device,
        instance,
        cookie,
    })
}

/// Whether `path` is a file's download or preview: `/api/v1/files/{id}` or
/// `/api/v1/files/{id}/thumbnail`.
fn is_file_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/v1/files/") else {
        return false;
    };
    let id = rest.strip_suffix("/thumbnail").unwrap_or(rest);
    !id.is_empty() && !id.contains('/')
}

/// Decodes `a=b&c=d` (percent-encoding and `+` included).
fn url_pairs(query: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://query/?{query}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

/// Whoever is calling: a user's session or an application.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    User {
        caller: Caller,
        session: String,
        /// Signed in through the session cookie (a browser of the web client).
        cookie: bool,
        /// Where the request came from (for throttling password attempts).
        ip: std::net::IpAddr,
    },
    App {
        caller: Caller,
        app: AppPrincipal,
    },
    /// A widget's embed session: one discussion only. Only the handlers that take
    /// [`AnyPrincipal`] or [`Embedded`] see one; [`Principal`] refuses it.
    Embed(EmbedScope),
}

impl Principal {
    pub(crate) fn caller(&self) -> &Caller {
        match self {
            Self::User { caller, .. } | Self::App { caller, .. } => caller,
            Self::Embed(scope) => &scope.caller,
        }
    }
}

impl FromRequestParts<Arc<Gateway>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Arc<Gateway>,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, gateway).await? {
            Self::Embed(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "an embed session is used by its widget only (POST /api/v1/embed/rpc)",
            )),
            principal => Ok(principal),
        }
    }
}

/// Any caller, a widget's embed session included (the WebSocket, and the file routes, which
/// keep an embed session within its discussion).
pub(crate) struct AnyPrincipal(pub(crate) Principal);

impl FromRequestParts<Arc<Gateway>> for AnyPrincipal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Arc<Gateway>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(authenticate(parts, gateway).await?))
    }
}

/// A widget's embed session, and nobody else.
pub(crate) struct Embedded(pub(crate) EmbedScope);

impl FromRequestParts<Arc<Gateway>> for Embedded {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Arc<Gateway>,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(parts, gateway).await? {
            Principal::Embed(scope) => Ok(Self(scope)),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "embed sessions only",
            )),
        }
    }
}

/// Who the request's credentials name.
async fn authenticate(parts: &Parts, gateway: &Arc<Gateway>) -> Result<Principal, ApiError> {
    let Credentials {
        token,
        device,
        instance,
        cookie,
    } = credentials(parts)
        .ok_or_else(|| ApiError::unauthenticated("send Authorization: Bearer <token>"))?;
    if cookie && !same_origin(&parts.headers, gateway.tls) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the session cookie is taken only from the node's own pages",
        ));
    }
    let services = &gateway.services;
    if token.starts_with(crate::services::embed::SESSION_PREFIX) {
        return Ok(Principal::Embed(
            crate::services::embed::resume(services, &token).await?,
        ));
    }
    if token.starts_with("vapp_") {
        let instance = instance
            .ok_or_else(|| ApiError::unauthenticated("applications send Veche-Instance"))?;
        let app = services.apps.authenticate(&token, &instance).await?;
        return Ok(Principal::App {
            caller: Caller {
                user: app.user_id.clone(),
                device: format!("app-{instance}"),
                admin: false,
                connection: 0,
            },
            app,
        });
    }
    let device = device.ok_or_else(|| ApiError::unauthenticated("users send Veche-Device"))?;
    let auth = services.accounts.resume(&token, &device).await?;
    Ok(Principal::User {
        caller: Caller {
            user: auth.user.id.clone(),
            device: auth.session.device_id.clone(),
            admin: auth.admin,
            connection: 0,
        },
        session: auth.session.id,
        cookie,
        ip: parts
            .extensions
            .get::<axum::extract::ConnectInfo<Peer>>()
            .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |info| {
                gateway.client_ip(info.0.0.ip(), &parts.headers)
            }),
    })
}

/// An application, and nobody else.
#[derive(Debug, Clone)]
pub(crate) struct AppAuth {
    pub(crate) caller: Caller,
    pub(crate) app: AppPrincipal,
}

impl FromRequestParts<Arc<Gateway>> for AppAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        gateway: &Arc<Gateway>,
    ) -> Result<Self, Self::Rejection> {
        match Principal::from_request_parts(parts, gateway).await? {
            Principal::App { caller, app } => Ok(Self { caller, app }),
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "applications only",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_file_path;

    #[test]
    fn only_a_files_download_and_preview_are_file_paths() {
        assert!(is_file_path("/api/v1/files/f_1"));
        assert!(is_file_path("/api/v1/files/f_1/thumbnail"));
        for path in [
            "/api/v1/files/",
            "/api/v1/files//thumbnail",
            "/api/v1/files/f_1/other",
            "/api/v1/files/f_1/thumbnail/x",
            "/api/v1/uploads/up_1",
            "/api/v1/discussions",
        ] {
            assert!(!is_file_path(path), "{path}");
        }
    }
}
