//! A client profile: where the node is, how to trust it, and personal settings. Kept as
//! `profile.toml` next to the client's database in its data folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use veche_client::{ClientConfig, Trust};

/// Which key sends the message; the other Enter combinations insert a new line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SendKey {
    /// Enter sends; Ctrl+Enter or Alt+Enter insert a new line.
    #[default]
    Enter,
    /// Ctrl+Enter sends; Enter inserts a new line.
    CtrlEnter,
    /// Alt+Enter sends; Enter inserts a new line.
    AltEnter,
}

impl SendKey {
    /// How the key is written for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::Enter => "Enter",
            Self::CtrlEnter => "Ctrl+Enter",
            Self::AltEnter => "Alt+Enter",
        }
    }
}

/// Connection and personal settings of one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The node's QUIC address.
    pub server: SocketAddr,
    /// The name the node's certificate carries.
    pub server_name: String,
    /// Trust certificates issued by this CA (the node's `tls/ca.pem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Or trust exactly the certificate with this SHA-256 fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The key that sends a message in `veche chat`.
    #[serde(default)]
    pub send_key: SendKey,
    /// A command to run instead of the terminal bell on a new message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound_command: Option<String>,
}

impl Profile {
    /// The SDK configuration for this profile.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let trust = match (&self.ca_file, &self.fingerprint) {
            (_, Some(fp)) => Trust::Fingerprint(fp.clone()),
            (Some(ca), None) => Trust::CaFile(ca.clone()),
            (None, None) => anyhow::bail!("the profile names neither a CA file nor a fingerprint"),
        };
        let mut config = ClientConfig::new(self.server, trust);
        config.server_name = self.server_name.clone();
        Ok(config)
    }

    /// Reads `profile.toml` from the client folder.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("profile.toml");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no client profile at {} (run `veche login` first)",
                path.display()
            )
        })?;
        toml::from_str(&text).with_context(|| format!("invalid client profile {}", path.display()))
    }

    /// Writes `profile.toml` to the client folder, readable by its owner only.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        veche_client::private::prepare_folder(dir)?;
        let path = dir.join("profile.toml");
        veche_client::private::write_private(&path, toml::to_string_pretty(self)?.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

/// The client folder: `--profile DIR`, else `$VECHE_CLIENT_DIR`, else
/// `$HOME/.local/share/veche-client`.
pub(crate) fn client_dir(arg: Option<&Path>) -> PathBuf {
    if let Some(dir) = arg {
        return dir.to_owned();
    }
    if let Some(dir) = std::env::var_os("VECHE_CLIENT_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/veche-client")
}
