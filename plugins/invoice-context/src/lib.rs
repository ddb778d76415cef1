//! Invoices as business objects: the ERP posts `invoice.posted` / `invoice.updated` events with
//! the invoice's facts and who may see it; this plugin keeps them in its key-value store and
//! answers the node's questions about invoice discussions from there.

use serde::{Deserialize, Serialize};
use veche_plugin_api::*;

/// What the ERP says about an invoice (the event's JSON payload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub number: String,
    pub counterparty: String,
    /// Decimal string, as the ERP formats it.
    pub amount: String,
    #[serde(default)]
    pub currency: String,
    /// Users who may read the invoice's discussion.
    #[serde(default)]
    pub readers: Vec<String>,
    /// Users who may also post in it.
    #[serde(default)]
    pub writers: Vec<String>,
}

impl Invoice {
    /// What `user` may do in the invoice's discussion.
    pub fn access(&self, user: &str) -> Access {
        if self.writers.iter().any(|u| u == user) {
            Access::Write
        } else if self.readers.iter().any(|u| u == user) {
            Access::Read
        } else {
            Access::None
        }
    }

    /// The card shown in the discussion's header.
    pub fn render(&self) -> RenderedObject {
        let amount = if self.currency.is_empty() {
            self.amount.clone()
        } else {
            format!("{} {}", self.amount, self.currency)
        };
        RenderedObject {
            title: format!("Invoice {}", self.number),
            subtitle: Some(self.counterparty.clone()),
            url: None,
            status: None,
            fields: vec![
                ("Number".into(), self.number.clone()),
                ("Counterparty".into(), self.counterparty.clone()),
                ("Amount".into(), amount),
            ],
            cache_ttl_secs: 60,
        }
    }
}

fn key(obj: &ObjectRef) -> String {
    format!("invoice/{}/{}", obj.application, obj.id)
}

fn load(obj: &ObjectRef) -> Result<Option<Invoice>, PluginError> {
    let Some(bytes) = kv::get(&key(obj))? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| PluginError::Internal(format!("stored invoice is unreadable: {e}")))
}

struct InvoiceContext;

impl Plugin for InvoiceContext {
    fn validate(_cx: Invocation, obj: ObjectRef) -> Result<(), PluginError> {
        match load(&obj)? {
            Some(_) => Ok(()),
            None => Err(PluginError::NotFound),
        }
    }

    fn render(_cx: Invocation, obj: ObjectRef) -> Result<RenderedObject, PluginError> {
        load(&obj)?.map(|i| i.render()).ok_or(PluginError::NotFound)
    }

    fn authorize(
        _cx: Invocation,
        obj: ObjectRef,
        users: Vec<String>,
    ) -> Result<Vec<Access>, PluginError> {
        let invoice = load(&obj)?;
        Ok(users
            .iter()
            .map(|u| invoice.as_ref().map_or(Access::None, |i| i.access(u)))
            .collect())
    }

    fn on_event(_cx: Invocation, evt: BusinessEvent) -> Result<Vec<BotAction>, PluginError> {
        let Some(obj) = evt.object.filter(|o| o.object_type == "invoice") else {
            return Err(PluginError::Invalid(
                "an invoice event names no invoice".into(),
            ));
        };
        let invoice: Invoice = serde_json::from_str(&evt.payload)
            .map_err(|e| PluginError::Invalid(format!("invoice payload: {e}")))?;
        let bytes =
            serde_json::to_vec(&invoice).map_err(|e| PluginError::Internal(e.to_string()))?;
        kv::set(&key(&obj), &bytes)?;
        Ok(Vec::new())
    }
}

register_plugin!(InvoiceContext);

#[cfg(test)]
mod tests {
    use super::*;

    fn invoice() -> Invoice {
        Invoice {
            number: "ПТУ-000123".into(),
            counterparty: "ООО Ромашка".into(),
            amount: "1 250,00".into(),
            currency: "RUB".into(),
            readers: vec!["anna@hq".into()],
            writers: vec!["boris@hq".into()],
        }
    }

    #[test]
    fn access_comes_from_the_lists() {
        let i = invoice();
        assert_eq!(i.access("boris@hq"), Access::Write);
        assert_eq!(i.access("anna@hq"), Access::Read);
        assert_eq!(i.access("eve@hq"), Access::None);
    }

    #[test]
    fn render_shows_number_counterparty_and_amount() {
        let r = invoice().render();
        assert_eq!(r.title, "Invoice ПТУ-000123");
        assert_eq!(r.subtitle.as_deref(), Some("ООО Ромашка"));
        assert!(r.fields.contains(&("Amount".into(), "1 250,00 RUB".into())));
    }

    #[test]
    fn payload_without_lists_admits_nobody() {
        let i: Invoice =
            serde_json::from_str(r#"{"number":"1","counterparty":"c","amount":"2"}"#).unwrap();
        assert_eq!(i.access("anna@hq"), Access::None);
    }
}
