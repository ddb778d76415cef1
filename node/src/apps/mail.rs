//! Sending registration codes through the configured SMTP relay (lettre).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{SmtpConfig, SmtpSecurity};

/// Sends mail through one relay. A connection is opened per message: codes are rare.
#[derive(Debug)]
pub(crate) struct Mailer {
    config: SmtpConfig,
}

/// Checks an e-mail address.
pub(crate) fn parse_address(email: &str) -> Result<Address, String> {
    email
        .trim()
        .parse::<Address>()
        .map_err(|e| format!("{email:?} is not an e-mail address: {e}"))
}

impl Mailer {
    pub(crate) fn new(config: SmtpConfig) -> Self {
        Self { config }
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let c = &self.config;
        if c.host.is_empty() {
            return Err("no SMTP relay is configured ([smtp] host)".into());
        }
        let params =
            || TlsParameters::new(c.host.clone()).map_err(|e| format!("TLS for {}: {e}", c.host));
        let tls = match c.security {
            SmtpSecurity::Opportunistic => Tls::Opportunistic(params()?),
            SmtpSecurity::Starttls => Tls::Required(params()?),
            SmtpSecurity::Tls => Tls::Wrapper(params()?),
            SmtpSecurity::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&c.host)
            .port(c.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(c.timeout_secs)));
        if let (Some(user), Some(password)) = (&c.username, &c.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(builder.build())
    }

    /// Sends `code` for application `app` to `to`.
    pub(crate) async fn send_code(
        &self,
        to: Address,
        app: &str,
        code: &str,
        ttl_secs: u64,
    ) -> Result<(), String> {
        let from: Mailbox = self
            .config
            .from
            .parse()
            .map_err(|e| format!("[smtp] from {:?}: {e}", self.config.from))?;
        let minutes = ttl_secs.div_ceil(60);
        let message = Message::builder()
            .from(from)
            .to(Mailbox::new(None, to))
            .subject(format!("Veche registration code for {app}"))
            .header(ContentType::TEXT_PLAIN)
            .body(format!(
                "Your code to register the application \"{app}\" with Veche is\n\n    {code}\n\n\
                 It works once and expires in {minutes} minutes. If you did not ask for it, \
                 ignore this message.\n"
            ))
            .map_err(|e| e.to_string())?;
        self.transport()?
            .send(message)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
