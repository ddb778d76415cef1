//! The one place where a failure becomes what a client is told: every operation's error says
//! what kind of failure it is ([`Classified`]), [`body`] turns that into the protocol's
//! [`ErrorBody`] (logging internal details instead of sending them), and [`http_status`] gives
//! the gateway its status code for each protocol error code.

use std::time::Duration;

use axum::http::StatusCode;
use veche_protocol::{ErrorBody, ErrorCode};

/// What a client learns about a failure.
#[derive(Debug)]
pub(crate) enum Kind<'a> {
    /// The client's own doing or a state it can see: sent with the error's text.
    Public(ErrorCode),
    /// A body decided where the rule lives (a policy refusal naming its rule), sent as it is.
    Decided(&'a ErrorBody),
    /// A failure inside the node: logged, and the client hears only "internal error".
    Internal,
    /// A failure inside the node that clears by itself (a storage backend is down): logged,
    /// and the client hears `unavailable` with this text.
    Degraded(&'static str),
}

/// An operation's error, classified for clients.
pub(crate) trait Classified: std::error::Error {
    /// What kind of failure this is.
    fn kind(&self) -> Kind<'_>;

    /// For [`ErrorCode::Throttled`]: how long the client should wait.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

/// The protocol error for `e`.
pub(crate) fn body(e: &(impl Classified + ?Sized)) -> ErrorBody {
    match e.kind() {
        Kind::Public(code) => {
            let mut body = ErrorBody::new(code, e.to_string());
            if let Some(wait) = e.retry_after() {
                body.retry_after_ms =
                    Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
            }
            body
        }
        Kind::Decided(body) => body.clone(),
        Kind::Internal => {
            tracing::error!(error = %e, "request failed");
            ErrorBody::new(ErrorCode::Internal, "internal error; try again")
        }
        Kind::Degraded(message) => {
            tracing::error!(error = %e, "request failed");
            ErrorBody::new(ErrorCode::Unavailable, message)
        }
    }
}

/// The error code `e` becomes, as a metrics label (nothing is logged).
pub(crate) fn outcome(e: &(impl Classified + ?Sized)) -> &'static str {
    let code = match e.kind() {
        Kind::Public(code) => code,
        Kind::Decided(body) => body.code,
        Kind::Internal => ErrorCode::Internal,
        Kind::Degraded(_) => ErrorCode::Unavailable,
    };
    match code {
        ErrorCode::AccountLocked => "account_locked",
        ErrorCode::BadRequest => "bad_request",
        ErrorCode::Conflict => "conflict",
        ErrorCode::FrameTooLarge => "frame_too_large",
        ErrorCode::Forbidden => "forbidden",
        ErrorCode::Internal => "internal",
        ErrorCode::InvalidCredentials => "invalid_credentials",
        ErrorCode::MalformedFrame => "malformed_frame",
        ErrorCode::NotFound => "not_found",
        ErrorCode::Throttled => "throttled",
        ErrorCode::Unauthenticated => "unauthenticated",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::UnsupportedVersion => "unsupported_version",
        _ => "unknown",
    }
}

/// The HTTP status the gateway answers with for a protocol error code.
pub(crate) fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest | ErrorCode::MalformedFrame | ErrorCode::FrameTooLarge => {
            StatusCode::BAD_REQUEST
        }
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Forbidden | ErrorCode::AccountLocked => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Throttled => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unauthenticated | ErrorCode::InvalidCredentials => StatusCode::UNAUTHORIZED,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        // Internal, UnsupportedVersion (not an HTTP matter) and codes added later.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl Classified for veche_core::discussions::DiscussionError {
    fn kind(&self) -> Kind<'_> {
        use veche_core::discussions::DiscussionError as E;
        Kind::Public(match self {
            E::NotFound(_) => ErrorCode::NotFound,
            E::Forbidden(_) => ErrorCode::Forbidden,
            E::BadRequest(_) => ErrorCode::BadRequest,
            E::Conflict(_) => ErrorCode::Conflict,
            E::Unavailable | E::NotReady(_) | E::Undecided(_) => ErrorCode::Unavailable,
            E::Refused(body) => return Kind::Decided(body),
            E::Store(_) => return Kind::Internal,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    enum Failure {
        #[error("slow down")]
        Throttled,
        #[error("disk on fire at /var/secret")]
        Disk,
        #[error("backend gone")]
        Backend,
    }

    impl Classified for Failure {
        fn kind(&self) -> Kind<'_> {
            match self {
                Self::Throttled => Kind::Public(ErrorCode::Throttled),
                Self::Disk => Kind::Internal,
                Self::Backend => Kind::Degraded("try again later"),
            }
        }

        fn retry_after(&self) -> Option<Duration> {
            matches!(self, Self::Throttled).then_some(Duration::from_micros(10))
        }
    }

    #[test]
    fn internal_details_stay_in_the_log_and_waits_are_at_least_a_millisecond() {
        let throttled = body(&Failure::Throttled);
        assert_eq!(throttled.code, ErrorCode::Throttled);
        assert_eq!(throttled.message, "slow down");
        assert_eq!(throttled.retry_after_ms, Some(1));
        let internal = body(&Failure::Disk);
        assert_eq!(internal.code, ErrorCode::Internal);
        assert!(!internal.message.contains("secret"), "{}", internal.message);
        let degraded = body(&Failure::Backend);
        assert_eq!(
            (degraded.code, degraded.message.as_str()),
            (ErrorCode::Unavailable, "try again later")
        );
        assert_eq!(
            http_status(ErrorCode::Throttled),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(ErrorCode::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
