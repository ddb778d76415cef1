//! Echoes each message back into its discussion, prefixed with its configured label.

use veche_plugin_api::*;

struct Echo;

impl Plugin for Echo {
    fn on_message(_cx: Invocation, msg: Message) -> Result<Vec<BotAction>, PluginError> {
        let label = config::get("label").unwrap_or_default();
        let mut post = Post::to_discussion(msg.discussion, format!("{label}: {}", msg.text));
        post.reply_to = Some(msg.id);
        Ok(vec![BotAction::PostMessage(post)])
    }
}

register_plugin!(Echo);
