//! An application of the Veche node, as an ERP would write it: plain HTTP and JSON.
//!
//! [`App`] wraps the endpoints an application uses; [`scenario`] is the whole walk-through
//! that `veche-erp-example` runs (and the integration tests run against a real node).

use std::future::Future;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// An activated application.
#[derive(Debug, Clone)]
pub struct App {
    http: reqwest::Client,
    base: String,
    /// The application's name.
    pub name: String,
    instance: String,
    secret: String,
}

async fn check(response: reqwest::Response) -> anyhow::Result<Value> {
    let status = response.status();
    let body: Value =
        if status == reqwest::StatusCode::NO_CONTENT || status == reqwest::StatusCode::ACCEPTED {
            Value::Null
        } else {
            response
                .json()
                .await
                .context("the node answered something that is not JSON")?
        };
    if !status.is_success() {
        let error = &body["error"];
        bail!("{status}: {} ({})", error["message"], error["code"]);
    }
    Ok(body)
}

/// Asks the node to e-mail a registration code for `name` to `email`.
pub async fn register(base: &str, name: &str, email: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/apps/register"))
        .json(&json!({ "name": name, "email": email }))
        .send()
        .await?;
    check(response).await?;
    Ok(())
}

impl App {
    /// Activates `name` with the e-mailed `code`, bound to this `instance` (an ERP would use
    /// its database's unique id: a copy of the database is then refused).
    pub async fn activate(
        base: &str,
        name: &str,
        code: &str,
        instance: &str,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let body = check(
            http.post(format!("{base}/api/v1/apps/activate"))
                .json(&json!({ "name": name, "code": code, "instance_id": instance }))
                .send()
                .await?,
        )
        .await?;
        let secret = body["secret"]
            .as_str()
            .context("activation returned no secret")?
            .to_owned();
        Ok(Self {
            http,
            base: base.to_owned(),
            name: name.to_owned(),
            instance: instance.to_owned(),
            secret,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.secret)
            .header("Veche-Instance", &self.instance);
        if let Some(body) = body {
            request = request.json(&body);
        }
        check(request.send().await?).await
    }

    /// The discussion of an object of this application, created on first use; its id.
    pub async fn ensure_discussion(
        &self,
        kind: &str,
        id: &str,
        title: &str,
    ) -> anyhow::Result<String> {
        let body = self
            .send(
                reqwest::Method::PUT,
                &format!("/api/v1/objects/{kind}/{id}/discussion"),
                Some(json!({ "title": title })),
            )
            .await?;
        Ok(body["discussion"]["id"]
            .as_str()
            .context("no discussion id")?
            .to_owned())
    }

    /// Sets who may see the object (and so its discussion).
    pub async fn set_access(&self, kind: &str, id: &str, users: &[&str]) -> anyhow::Result<()> {
        self.send(
            reqwest::Method::PUT,
            &format!("/api/v1/objects/{kind}/{id}/access"),
            Some(json!({ "users": users })),
        )
        .await?;
        Ok(())
    }

    /// Mints a single-use token that opens the discussion widget of an object for `user`
    /// (the application must be allowed to embed: `veche admin app allow-embed`); returns
    /// the widget page's path with the token in its fragment, for an iframe's `src` after
    /// the node's origin (see `web/invoice.html` and docs/embed.md). Mint one per page load.
    pub async fn embed_page(&self, kind: &str, id: &str, user: &str) -> anyhow::Result<String> {
        let body = self
            .send(
                reqwest::Method::POST,
                "/api/v1/embed/tokens",
                Some(json!({ "object_type": kind, "object_id": id, "user": user })),
            )
            .await?;
        Ok(body["page"]
            .as_str()
            .context("no widget page in the answer")?
            .to_owned())
    }

    /// Publishes a business event; `true` if the node had not seen `key` before.
    pub async fn post_event(
        &self,
        kind: &str,
        object: (&str, &str),
        payload: Value,
        key: &str,
        timeline: Option<&str>,
    ) -> anyhow::Result<bool> {
        let body = self
            .send(
                reqwest::Method::POST,
                "/api/v1/events",
                Some(json!({
                    "kind": kind,
                    "object_type": object.0,
                    "object_id": object.1,
                    "payload": payload,
                    "idempotency_key": key,
                    "timeline": timeline,
                })),
            )
            .await?;
        Ok(body["fresh"].as_bool().unwrap_or(false))
    }

    /// Subscribes to a topic (pulled).
    pub async fn subscribe(&self, topic: &str) -> anyhow::Result<()> {
        self.send(
            reqwest::Method::PUT,
            &format!("/api/v1/topics/{topic}/subscription"),
            Some(json!({})),
        )
        .await?;
        Ok(())
    }

    /// Publishes on a topic once per `key`.
    pub async fn publish(&self, topic: &str, payload: Value, key: &str) -> anyhow::Result<i64> {
        let body = self
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/topics/{topic}/messages"),
                Some(json!({ "payload": payload, "idempotency_key": key, "ttl_secs": 3600 })),
            )
            .await?;
        body["id"].as_i64().context("no message id")
    }

    /// Takes up to `max` messages; each comes again unless acknowledged.
    pub async fn pull(&self, topic: &str, max: u32) -> anyhow::Result<Vec<Value>> {
        let body = self
            .send(
                reqwest::Method::POST,
                &format!("/api/v1/topics/{topic}/pull"),
                Some(json!({ "max": max })),
            )
            .await?;
        Ok(body["messages"].as_array().cloned().unwrap_or_default())
    }

    /// Acknowledges messages by id.
    pub async fn ack(&self, topic: &str, ids: &[i64]) -> anyhow::Result<()> {
        self.send(
            reqwest::Method::POST,
            &format!("/api/v1/topics/{topic}/ack"),
            Some(json!({ "ids": ids })),
        )
        .await?;
        Ok(())
    }
}

/// What the walk-through did.
#[derive(Debug)]
pub struct Report {
    /// The invoice's discussion.
    pub discussion: String,
    /// Whether the node took `invoice.posted` as new.
    pub event_fresh: bool,
    /// What the warehouse application received over the topic.
    pub received: Vec<Value>,
}

/// Registers `erp` and `warehouse` (codes from `code_for`, which gets the application's
/// name), opens the discussion of invoice INV-1, lets `users` see it, publishes
/// `invoice.posted` and sends the shipment order to the warehouse over a topic. When the
/// approval bot is installed and among `users`, it asks for the invoice's approval in the
/// discussion.
pub async fn scenario<F, Fut>(
    base: &str,
    email: &str,
    users: &[&str],
    instance: &str,
    mut code_for: F,
) -> anyhow::Result<Report>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<String>>,
{
    register(base, "erp", email).await?;
    let erp = App::activate(base, "erp", &code_for("erp".into()).await?, instance).await?;
    register(base, "warehouse", email).await?;
    let warehouse = App::activate(
        base,
        "warehouse",
        &code_for("warehouse".into()).await?,
        &format!("{instance}-wh"),
    )
    .await?;

    let discussion = erp
        .ensure_discussion("invoice", "INV-1", "Invoice INV-1")
        .await?;
    erp.set_access("invoice", "INV-1", users).await?;
    let event_fresh = erp
        .post_event(
            "invoice.posted",
            ("invoice", "INV-1"),
            json!({
                "number": "INV-1",
                "counterparty": "Acme",
                "amount": "1250.00",
                "currency": "EUR",
            }),
            "INV-1/posted/1",
            Some("Invoice INV-1 was posted: 1250.00 EUR"),
        )
        .await?;

    warehouse.subscribe("shipments").await?;
    erp.publish(
        "shipments",
        json!({ "invoice": "INV-1", "items": [{ "sku": "A-100", "qty": 3 }] }),
        "INV-1/ship",
    )
    .await?;
    let received = warehouse.pull("shipments", 10).await?;
    let ids: Vec<i64> = received.iter().filter_map(|m| m["id"].as_i64()).collect();
    warehouse.ack("shipments", &ids).await?;
    Ok(Report {
        discussion,
        event_fresh,
        received,
    })
}
