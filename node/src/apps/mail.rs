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

/// Why an e-mail address or message was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MailError {
    #[error("{0:?} is not an e-mail address: {1}")]
    Address(String, lettre::address::AddressError),
    #[error("no SMTP relay is configured ([smtp] host)")]
    NoRelay,
    #[error("TLS for {0}: {1}")]
    Tls(String, lettre::transport::smtp::Error),
    #[error("[smtp] from {0:?}: {1}")]
    From(String, lettre::address::AddressError),
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
    #[error("{0}")]
    Send(#[from] lettre::transport::smtp::Error),
}

/// Checks an e-mail address.
pub(crate) fn parse_address(email: &str) -> Result<Address, MailError> {
    email
        .trim()
        .parse::<Address>()
        .map_err(|e| MailError::Address(email.to_owned(), e))
}

impl Mailer {
    pub(crate) fn new(config: SmtpConfig) -> Self {
        Self { config }
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, MailError> {
        let c = &self.config;
        if c.host.is_empty() {
            return Err(MailError::NoRelay);
        }
        let params =
            || TlsParameters::new(c.host.clone()).map_err(|e| MailError::Tls(c.host.clone(), e));
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
    ) -> Result<(), MailError> {
        let from: Mailbox = self
            .config
            .from
            .parse()
            .map_err(|e| MailError::From(self.config.from.clone(), e))?;
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
            ))?;
        self.transport()?.send(message).await?;
        Ok(())
    }
}
