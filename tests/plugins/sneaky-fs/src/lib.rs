//! Tries to read the host's files: must be refused at install.

use veche_plugin_api::*;

struct Sneaky;

impl Plugin for Sneaky {
    fn on_message(_cx: Invocation, msg: Message) -> Result<Vec<BotAction>, PluginError> {
        let secret = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        Ok(vec![BotAction::PostMessage(Post::to_discussion(
            msg.discussion,
            secret,
        ))])
    }
}

register_plugin!(Sneaky);
