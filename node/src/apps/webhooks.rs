//! The sender of outgoing webhook requests and pushed topic messages.
//!
//! Both are durable rows: a request is sent, and marked delivered only after a 2xx answer;
//! otherwise it is retried with exponential backoff and, for webhooks, given up after the
//! configured attempts and shown as failed to the administrator. Receivers get each request
//! at least once and deduplicate by `Veche-Delivery`.
//!
//! Every request is signed: `Veche-Signature: v1=<hex HMAC-SHA256 of "<Veche-Timestamp>.<body>">`
//! keyed with the webhook's secret (its ASCII bytes), or
//! `Veche-Signature: ed25519=<hex signature of "veche-webhook:<Veche-Timestamp>.<body>">` by the
//! node's identity key (the prefix keeps these signatures apart from anything else the key
//! signs).

use std::time::Duration;

use ed25519_dalek::Signer;
use futures_util::future::join_all;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::Apps;
use veche_store::{Attempt, DeliveryRow, PushRow};

/// Requests sent per round.
const BATCH: i64 = 64;
/// The longest the sender sleeps: it is woken by the store's doorbell when something is
/// queued and otherwise sleeps until the earliest retry is due, so this is only a safety net
/// (and the rhythm of the queues' pruning).
const IDLE_LOOK: Duration = Duration::from_secs(60);
/// The longest pause between two attempts.
const MAX_BACKOFF_MS: i64 = 10 * 60 * 1000;

/// What ed25519 signatures of webhook requests sign before the timestamp.
pub(crate) const ED25519_CONTEXT: &str = "veche-webhook:";
/// How often finished queue rows are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The headers that sign one request.
#[derive(Debug)]
pub(crate) struct Signature {
    pub(crate) timestamp: String,
    pub(crate) value: String,
}

/// Signs `body` at `timestamp` (ms) with an HMAC secret or the node's key.
pub(crate) fn sign(
    signing: &str,
    secret: &str,
    key: &ed25519_dalek::SigningKey,
    timestamp: i64,
    body: &str,
) -> Signature {
    let message = format!("{timestamp}.{body}");
    let value = if signing == "ed25519" {
        let signed = format!("{ED25519_CONTEXT}{message}");
        format!(
            "ed25519={}",
            hex::encode(key.sign(signed.as_bytes()).to_bytes())
        )
    } else {
        // HMAC accepts keys of any length.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(message.as_bytes());
        format!("v1={}", hex::encode(mac.finalize().into_bytes()))
    };
    Signature {
        timestamp: timestamp.to_string(),
        value,
    }
}

pub(super) async fn run(apps: Apps, stop: CancellationToken) {
    let timeout = Duration::from_secs(apps.inner.config.webhook_timeout_secs);
    let client = match reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("veche/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client: webhooks are not sent");
            return;
        }
    };
    let mut pruned = tokio::time::Instant::now();
    loop {
        if stop.is_cancelled() {
            return;
        }
        if pruned.elapsed() >= PRUNE_EVERY {
            pruned = tokio::time::Instant::now();
            match apps
                .inner
                .store
                .apps()
                .prune_app_queues(apps.now_ms())
                .await
            {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "pruned webhook and topic queues"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot prune webhook and topic queues"),
            }
        }
        let busy = round(&apps, &client).await;
        if busy {
            continue;
        }
        let wait = match apps.inner.store.apps().next_due(apps.now_ms()).await {
            Ok(Some(due)) => {
                Duration::from_millis(u64::try_from(due.saturating_sub(apps.now_ms())).unwrap_or(0))
                    .min(IDLE_LOOK)
            }
            Ok(None) => IDLE_LOOK,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read when the next delivery is due");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = apps.inner.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sends what is due; `true` if a full batch was found (more may be waiting).
async fn round(apps: &Apps, client: &reqwest::Client) -> bool {
    let store = &apps.inner.store;
    let now = apps.now_ms();
    let deliveries = match store.apps().due_deliveries(now, BATCH).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the webhook queue");
            Vec::new()
        }
    };
    let pushes = match store.apps().due_pushes(now, BATCH).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the topic push queue");
            Vec::new()
        }
    };
    let full = deliveries.len() as i64 == BATCH || pushes.len() as i64 == BATCH;
    // Webhooks and pushes go out side by side; a slow receiver holds up its round for at
    // most the request timeout.
    futures_util::future::join(
        join_all(
            deliveries
                .into_iter()
                .map(|d| async move { deliver(apps, client, d).await }),
        ),
        join_all(
            pushes
                .into_iter()
                .map(|p| async move { push(apps, client, p).await }),
        ),
    )
    .await;
    full
}

/// One signed request to send.
struct Outgoing<'a> {
    url: &'a str,
    kind: &'a str,
    delivery: String,
    signing: &'a str,
    secret: &'a str,
    body: String,
}

/// Why a receiver did not take a delivery: coarse, because the owner sees it; the details stay
/// in the node's log, so that a receiver's address cannot be used to probe the node's network.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("the request timed out")]
    Timeout,
    #[error("could not connect to the receiver")]
    Connect,
    #[error("the request failed")]
    Failed,
    #[error("the receiver answered {0}")]
    Status(reqwest::StatusCode),
}

async fn post(apps: &Apps, client: &reqwest::Client, out: Outgoing<'_>) -> Result<(), PostError> {
    let signature = sign(
        out.signing,
        out.secret,
        &apps.inner.key,
        apps.now_ms(),
        &out.body,
    );
    let response = client
        .post(out.url)
        .header("content-type", "application/json")
        .header("veche-event", out.kind)
        .header("veche-delivery", out.delivery)
        .header("veche-timestamp", signature.timestamp)
        .header("veche-signature", signature.value)
        .body(out.body)
        .send()
        .await
        .map_err(|e| {
            tracing::debug!(url = out.url, error = %e, "webhook request failed");
            if e.is_timeout() {
                PostError::Timeout
            } else if e.is_connect() {
                PostError::Connect
            } else {
                PostError::Failed
            }
        })?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(PostError::Status(status))
    }
}

fn backoff(apps: &Apps, attempts: i64) -> i64 {
    let base = i64::try_from(apps.inner.config.webhook_retry_base_ms).unwrap_or(1000);
    let shift = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    base.saturating_mul(1i64 << shift).min(MAX_BACKOFF_MS)
}

async fn deliver(apps: &Apps, client: &reqwest::Client, d: DeliveryRow) {
    let result = post(
        apps,
        client,
        Outgoing {
            url: &d.url,
            kind: &d.kind,
            delivery: format!("wh-{}", d.id),
            signing: &d.signing,
            secret: &d.secret,
            body: d.body,
        },
    )
    .await
    .map_err(|e| e.to_string());
    let now = apps.now_ms();
    if result.is_err() {
        apps.inner.metrics.webhook_failed();
    }
    let outcome = match &result {
        Ok(()) => Attempt::Delivered,
        Err(error) if d.attempts + 1 >= i64::from(apps.inner.config.webhook_attempts) => {
            tracing::warn!(webhook = %d.webhook_id, %error, "webhook request failed for good");
            Attempt::Failed { error }
        }
        Err(error) => {
            tracing::debug!(webhook = %d.webhook_id, %error, "webhook request failed; will retry");
            Attempt::Retry {
                at: now.saturating_add(backoff(apps, d.attempts)),
                error,
            }
        }
    };
    if let Err(e) = apps
        .inner
        .store
        .apps()
        .delivery_attempted(d.id, outcome, now)
        .await
    {
        tracing::warn!(error = %e, "cannot record a webhook attempt; it will be sent again");
    }
}

async fn push(apps: &Apps, client: &reqwest::Client, p: PushRow) {
    let m = &p.message;
    let payload: serde_json::Value =
        serde_json::from_str(&m.payload).unwrap_or(serde_json::Value::Null);
    let body = serde_json::json!({
        "type": "topic_message",
        "topic": m.topic,
        "id": m.id,
        "publisher": m.publisher,
        "payload": payload,
        "published_at": m.published_at,
        "expires_at": m.expires_at,
        "attempt": m.attempts,
    })
    .to_string();
    let result = post(
        apps,
        client,
        Outgoing {
            url: &p.push_url,
            kind: "topic.message",
            delivery: format!("topic-{}-{}", m.topic, m.id),
            signing: &p.signing,
            secret: &p.secret,
            body,
        },
    )
    .await
    .map_err(|e| e.to_string());
    let store = &apps.inner.store;
    let recorded = match result {
        Ok(()) => store
            .apps()
            .ack_topic(&m.topic, &p.subscriber, &[m.id])
            .await
            .map(|_| ()),
        Err(error) => {
            tracing::debug!(topic = %m.topic, subscriber = %p.subscriber, %error, "push failed; will retry");
            let at = apps.now_ms().saturating_add(backoff(apps, m.attempts - 1));
            store
                .apps()
                .push_failed(&m.topic, &p.subscriber, m.id, at)
                .await
        }
    };
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "cannot record a push attempt; it will be sent again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_signature_is_the_documented_one() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let s = sign("hmac-sha256", "secret", &key, 1_700_000_000_000, "{}");
        // Computed independently: printf '1700000000000.{}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            s.value,
            "v1=8399216d111287e3bb28e25c0f4f31dffdf831c68c9ee2b96c2f67c9b81d341b"
        );
        assert_eq!(s.timestamp, "1700000000000");
    }

    #[test]
    fn ed25519_signature_verifies_with_the_node_key() {
        use ed25519_dalek::Verifier;
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let s = sign("ed25519", "", &key, 5, "body");
        let hex_sig = s.value.strip_prefix("ed25519=").unwrap_or_default();
        let bytes: [u8; 64] = hex::decode(hex_sig).unwrap().try_into().unwrap();
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        let key = key.verifying_key();
        assert!(key.verify(b"veche-webhook:5.body", &sig).is_ok());
        assert!(
            key.verify(b"5.body", &sig).is_err(),
            "signed with its context only"
        );
        assert!(key.verify(b"veche-webhook:6.body", &sig).is_err());
    }
}
