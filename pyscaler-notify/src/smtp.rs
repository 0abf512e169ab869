//! The SMTP mailer, over lettre's async transport on tokio.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tracing::debug;

use crate::{Mail, Mailer, NotifyError, Receipt, Secret, SmtpConfig, TlsMode};

/// Sends mail to an SMTP server: plain, STARTTLS (required) or implicit TLS,
/// with an optional login, a bound on connecting and a bound on each send.
///
/// Each mail uses a fresh connection, so a mailer that waits between runs
/// holds nothing open. It does not retry: the step's retry policy does, from
/// the error's classification.
///
/// ```
/// use pyscaler_notify::{Secret, SmtpMailer, TlsMode};
/// use std::time::Duration;
///
/// let mailer = SmtpMailer::builder("smtp.example.com")
///     .tls(TlsMode::Starttls)
///     .credentials("pyscaler", Secret::new("s3cret"))
///     .connect_timeout(Duration::from_secs(5))
///     .send_timeout(Duration::from_secs(30))
///     .build()?;
/// assert!(!format!("{mailer:?}").contains("s3cret"));
/// # Ok::<(), pyscaler_notify::NotifyError>(())
/// ```
#[derive(Clone)]
pub struct SmtpMailer {
    server: String,
    tls: TlsMode,
    username: Option<String>,
    connect_timeout: Duration,
    send_timeout: Duration,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl fmt::Debug for SmtpMailer {
    // The transport holds the credentials: it is left out on purpose.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpMailer")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("connect_timeout", &self.connect_timeout)
            .field("send_timeout", &self.send_timeout)
            .finish_non_exhaustive()
    }
}

impl SmtpMailer {
    /// Starts building a mailer for the server at `host`.
    pub fn builder(host: impl Into<String>) -> SmtpMailerBuilder {
        SmtpMailerBuilder {
            config: SmtpConfig::new(host),
        }
    }

    /// A mailer as `config` says, reading `password_env` from the environment.
    ///
    /// # Errors
    /// [`NotifyError::InvalidConfig`] when the configuration is invalid (see
    /// [`SmtpConfig::validate`]), the password's environment variable is not
    /// set, or the host is not a valid TLS server name.
    pub fn from_config(config: &SmtpConfig) -> Result<Self, NotifyError> {
        config.validate()?;
        let password = match (&config.password, &config.password_env) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(var)) => Some(Secret::new(std::env::var(var).map_err(|_| {
                NotifyError::InvalidConfig(format!(
                    "the environment variable `{var}` (password_env) is not set or not UTF-8"
                ))
            })?)),
            (None, None) => None,
        };
        let host = config.host.trim().to_owned();
        let port = config.port();
        let ca = match &config.ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                NotifyError::InvalidConfig(format!("cannot read `ca_file` {}: {e}", path.display()))
            })?),
            None => None,
        };
        let tls = match config.tls {
            TlsMode::None => Tls::None,
            TlsMode::Starttls => Tls::Required(tls_parameters(&host, ca.as_deref())?),
            TlsMode::Tls => Tls::Wrapper(tls_parameters(&host, ca.as_deref())?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(config.connect_timeout));
        if let (Some(user), Some(password)) = (&config.username, password) {
            builder =
                builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
        }
        let server = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Self {
            server,
            tls: config.tls,
            username: config.username.clone(),
            connect_timeout: config.connect_timeout,
            send_timeout: config.send_timeout,
            transport: builder.build(),
        })
    }

    /// The server, as `host:port`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Turns lettre's error into ours, from its classification (never its text).
    fn classify(&self, e: lettre::transport::smtp::Error) -> NotifyError {
        let server = self.server.clone();
        if let Some(code) = e.status() {
            // The server's reply text is the error's source.
            let reply = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_default();
            return NotifyError::from_reply(&server, u16::from(code), reply);
        }
        if e.is_timeout() {
            return NotifyError::TimedOut {
                server,
                after: self.connect_timeout,
            };
        }
        // tokio-rustls reports a failed handshake (a certificate that does
        // not verify, a name that does not match) as InvalidData; lettre
        // files it as a connection error. Trying again will not help.
        let handshake_failed =
            io_source(&e).is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData);
        if e.is_tls() || handshake_failed {
            return NotifyError::Tls {
                server,
                source: Box::new(e),
            };
        }
        if e.is_response() || e.is_client() {
            return NotifyError::Protocol {
                server,
                source: Box::new(e),
            };
        }
        // What is left: a refused or failed connection, a network error
        // mid-session, a transport shut down. All worth another attempt.
        NotifyError::ConnectionFailed {
            server,
            source: Box::new(e),
        }
    }
}

fn tls_parameters(host: &str, ca_pem: Option<&[u8]>) -> Result<TlsParameters, NotifyError> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(pem) = ca_pem {
        let cert = Certificate::from_pem(pem).map_err(|e| {
            NotifyError::InvalidConfig(format!("`ca_file` holds no usable PEM certificate: {e}"))
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build_rustls().map_err(|e| {
        NotifyError::InvalidConfig(format!("TLS settings for `{host}` are not usable: {e}"))
    })
}

/// The I/O error at the root of `e`, if any.
fn io_source<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        next = err.source();
    }
    None
}

#[async_trait]
impl Mailer for SmtpMailer {
    fn destination(&self) -> String {
        format!("smtp://{} ({})", self.server, self.tls.as_str())
    }

    async fn send(&self, mail: &Mail) -> Result<Receipt, NotifyError> {
        let message = mail.to_message()?;
        debug!(server = %self.server, to = mail.to().len(), cc = mail.cc().len(), "Sending mail.");
        let sent = match tokio::time::timeout(self.send_timeout, self.transport.send(message)).await
        {
            Err(_) => Err(NotifyError::TimedOut {
                server: self.server.clone(),
                after: self.send_timeout,
            }),
            Ok(Err(e)) => Err(self.classify(e)),
            Ok(Ok(response)) => {
                let text = response.message().collect::<Vec<_>>().join(" ");
                Ok(Receipt::new(format!("{} {text}", response.code())))
            }
        };
        // The core's metrics count every send, by its error kind.
        pyscaler_core::record_provider_call(pyscaler_core::ProviderCall {
            provider: "SMTP",
            operation: "Send",
            attempts: 1,
            error: sent.as_ref().err().map(pyscaler_core::Classify::kind),
        });
        sent
    }
}

/// Builds an [`SmtpMailer`]; `build()` reports the first problem.
#[derive(Debug, Clone)]
pub struct SmtpMailerBuilder {
    config: SmtpConfig,
}

impl SmtpMailerBuilder {
    /// The port (by default the usual one for the TLS mode).
    pub fn port(mut self, port: u16) -> Self {
        self.config.port = Some(port);
        self
    }

    /// How the connection is protected (default: STARTTLS, required).
    pub fn tls(mut self, tls: TlsMode) -> Self {
        self.config.tls = tls;
        self
    }

    /// Logs in as `username`.
    pub fn credentials(mut self, username: impl Into<String>, password: Secret) -> Self {
        self.config.username = Some(username.into());
        self.config.password = Some(password);
        self.config.password_env = None;
        self
    }

    /// Logs in as `username` with the password in the environment variable `var`,
    /// read when the mailer is built.
    pub fn credentials_from_env(
        mut self,
        username: impl Into<String>,
        var: impl Into<String>,
    ) -> Self {
        self.config.username = Some(username.into());
        self.config.password = None;
        self.config.password_env = Some(var.into());
        self
    }

    /// Trusts the certificate authorities in this PEM file besides the usual
    /// public ones (for a relay with a private CA).
    pub fn ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.ca_file = Some(path.into());
        self
    }

    /// Bounds the TCP connection (default 10 s).
    pub fn connect_timeout(mut self, after: Duration) -> Self {
        self.config.connect_timeout = after;
        self
    }

    /// Bounds a whole send: connection, TLS, login and mail (default 60 s).
    pub fn send_timeout(mut self, after: Duration) -> Self {
        self.config.send_timeout = after;
        self
    }

    /// Checks the settings and builds the mailer.
    ///
    /// # Errors
    /// As [`SmtpMailer::from_config`].
    pub fn build(self) -> Result<SmtpMailer, NotifyError> {
        SmtpMailer::from_config(&self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyscaler_core::Classify;

    #[test]
    fn credentials_never_show_in_debug_output() {
        let mailer = SmtpMailer::builder("smtp.example.com")
            .credentials("pyscaler", Secret::new("hunter2"))
            .build()
            .expect("valid");
        let dbg = format!(
            "{mailer:?} {:?}",
            SmtpMailer::builder("mx").credentials("u", Secret::new("hunter2"))
        );
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("pyscaler"), "{dbg}");
        assert_eq!(
            mailer.destination(),
            "smtp://smtp.example.com:587 (STARTTLS)"
        );
    }

    #[test]
    fn a_missing_password_variable_is_named_not_guessed() {
        let e = SmtpMailer::builder("mx")
            .credentials_from_env("u", "PYSCALER_TEST_SURELY_UNSET_PASSWORD")
            .build()
            .expect_err("unset variable");
        assert!(matches!(e, NotifyError::InvalidConfig(_)));
        assert!(
            e.to_string()
                .contains("`PYSCALER_TEST_SURELY_UNSET_PASSWORD`"),
            "{e}"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn invalid_settings_fail_at_build_time() {
        let e = SmtpMailer::builder("mx")
            .send_timeout(Duration::ZERO)
            .build()
            .expect_err("zero timeout");
        assert!(matches!(e, NotifyError::InvalidConfig(_)), "{e:?}");
        let e = SmtpMailer::builder("").build().expect_err("empty host");
        assert!(e.to_string().contains("`host` is empty"), "{e}");
    }

    #[test]
    fn the_destination_names_server_and_tls_mode() {
        let mailer = SmtpMailer::builder("127.0.0.1")
            .tls(TlsMode::Tls)
            .port(2465)
            .build()
            .expect("valid");
        assert_eq!(mailer.server(), "127.0.0.1:2465");
        assert_eq!(mailer.destination(), "smtp://127.0.0.1:2465 (TLS)");
        let plain = SmtpMailer::builder("::1")
            .tls(TlsMode::None)
            .build()
            .expect("valid");
        assert_eq!(plain.server(), "[::1]:25");
    }

    #[test]
    fn the_password_can_come_from_the_environment() {
        // A name no other test uses, so setting it races with nothing.
        std::env::set_var("PYSCALER_NOTIFY_TEST_PASSWORD_FROM_ENV", "from-the-env");
        let cfg = SmtpConfig::from_toml(
            "host = \"mx\"\nusername = \"u\"\npassword_env = \"PYSCALER_NOTIFY_TEST_PASSWORD_FROM_ENV\"",
        )
        .expect("valid config");
        let mailer = SmtpMailer::from_config(&cfg).expect("the variable is set");
        assert!(!format!("{mailer:?} {cfg:?}").contains("from-the-env"));
    }

    #[test]
    fn an_unreadable_ca_file_is_a_config_error() {
        let e = SmtpMailer::builder("mx")
            .ca_file("/nonexistent/ca.pem")
            .build()
            .expect_err("no such file");
        assert!(matches!(e, NotifyError::InvalidConfig(_)), "{e:?}");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
