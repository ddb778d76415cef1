//! Asks for an invoice's approval when the ERP posts it, and records who decided.

use serde_json::{Value, json};
use veche_plugin_api::*;

/// The approval request for a posted invoice.
pub fn request(object: ObjectRef, payload: &Value) -> Post {
    let field = |k: &str| {
        payload
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    };
    let text = format!(
        "Invoice {} from {} for {} {} awaits approval.",
        field("number"),
        field("counterparty"),
        field("amount"),
        payload
            .get("currency")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    let mut post = Post::to_object(object.clone(), text.trim_end().replace(" .", "."));
    post.data = Some(json!({ "invoice": object.id }).to_string());
    post.actions = vec![
        ActionButton {
            id: "approve".into(),
            label: "Approve".into(),
        },
        ActionButton {
            id: "reject".into(),
            label: "Reject".into(),
        },
    ];
    post
}

/// What to say about a click, given the decision already recorded (if any).
pub fn decide(
    action: &str,
    user: &str,
    earlier: Option<&str>,
) -> Result<(String, bool), PluginError> {
    let verb = match action {
        "approve" => "Approved",
        "reject" => "Rejected",
        other => return Err(PluginError::Invalid(format!("unknown action {other}"))),
    };
    Ok(match earlier {
        Some(decision) => (format!("Already decided: {decision}."), false),
        None => (format!("{verb} by {user}."), true),
    })
}

struct ApprovalBot;

impl Plugin for ApprovalBot {
    fn on_event(_cx: Invocation, evt: BusinessEvent) -> Result<Vec<BotAction>, PluginError> {
        let Some(object) = evt.object else {
            return Err(PluginError::Invalid(
                "invoice.posted names no invoice".into(),
            ));
        };
        let payload: Value = serde_json::from_str(&evt.payload)
            .map_err(|e| PluginError::Invalid(format!("payload: {e}")))?;
        Ok(vec![BotAction::PostMessage(request(object, &payload))])
    }

    fn on_action(_cx: Invocation, click: ActionClick) -> Result<Vec<BotAction>, PluginError> {
        let key = format!("decision/{}", click.message);
        let earlier = kv::get(&key)?.map(|b| String::from_utf8_lossy(&b).into_owned());
        let (text, record) = decide(&click.action, &click.user, earlier.as_deref())?;
        if record {
            kv::set(&key, text.trim_end_matches('.').as_bytes())?;
            log::info(&format!("{} decided on {}", click.user, click.message));
        }
        let mut post = Post::to_discussion(click.discussion, text);
        post.reply_to = Some(click.message);
        Ok(vec![BotAction::PostMessage(post)])
    }
}

register_plugin!(ApprovalBot);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_invoice_and_offers_two_buttons() {
        let obj = ObjectRef {
            application: "erp".into(),
            object_type: "invoice".into(),
            id: "INV-1".into(),
        };
        let p = request(
            obj,
            &json!({"number": "ПТУ-000123", "counterparty": "ООО Ромашка", "amount": "1 250,00", "currency": "RUB"}),
        );
        assert_eq!(
            p.text,
            "Invoice ПТУ-000123 from ООО Ромашка for 1 250,00 RUB awaits approval."
        );
        assert_eq!(p.actions.len(), 2);
        assert!(p.data.unwrap().contains("INV-1"));
    }

    #[test]
    fn the_first_decision_wins() {
        assert_eq!(
            decide("approve", "anna@hq", None).unwrap(),
            ("Approved by anna@hq.".into(), true)
        );
        assert_eq!(
            decide("reject", "boris@hq", Some("Approved by anna@hq")).unwrap(),
            ("Already decided: Approved by anna@hq.".into(), false)
        );
        assert!(decide("shred", "eve@hq", None).is_err());
    }
}
