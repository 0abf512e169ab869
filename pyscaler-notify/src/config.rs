//! The SMTP configuration as a file holds it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::{MailAddress, NotifyError, Secret};

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TlsMode {
    /// Plain text: only for a relay on the same host or a test server. Default port 25.
    None,
    /// Plain text upgraded with STARTTLS, which the server must offer:
    /// nothing (no credential, no mail) is sent otherwise. Default port 587.
    #[default]
    #[serde(alias = "required")]
    Starttls,
    /// TLS from the first byte ("SMTPS"). Default port 465.
    #[serde(alias = "implicit")]
    Tls,
}

impl TlsMode {
    /// The usual port for this mode.
    pub fn default_port(self) -> u16 {
        match self {
            Self::None => 25,
            Self::Starttls => 587,
            Self::Tls => 465,
        }
    }

    /// A short name, as in logs (`none`, `STARTTLS`, `TLS`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Starttls => "STARTTLS",
            Self::Tls => "TLS",
        }
    }
}

/// Where notifications go: the SMTP server, how to log in, and who gets the mail.
///
/// ```
/// use pyscaler_notify::{SmtpConfig, TlsMode};
///
/// let cfg = SmtpConfig::from_toml(r#"
///     host = "smtp.example.com"
///     tls = "starttls"
///     username = "pyscaler"
///     password_env = "SMTP_PASSWORD"
///     connect_timeout = "5s"
///     send_timeout = "30s"
///     from = "pyscaler <ops@example.com>"
///     to = ["oncall@example.com"]
/// "#)?;
/// assert_eq!(cfg.tls, TlsMode::Starttls);
/// assert_eq!(cfg.port(), 587);
/// # Ok::<(), pyscaler_notify::NotifyError>(())
/// ```
///
/// The password is given inline (`password`, for tests) or, better, by the name
/// of an environment variable (`password_env`) read when the mailer is built.
/// It never appears in `Debug` output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SmtpConfig {
    /// The server's host name or IP address.
    pub host: String,
    /// Its port; by default the usual one for `tls`.
    #[serde(default)]
    pub port: Option<u16>,
    /// How the connection is protected.
    #[serde(default)]
    pub tls: TlsMode,
    /// The user to log in as, if the server wants a login.
    #[serde(default)]
    pub username: Option<String>,
    /// The password, inline.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A PEM file of certificate authorities to trust besides the usual
    /// public ones (a private relay's CA). Read when the mailer is built.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// How long to wait for the TCP connection.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a whole send (connect, TLS, login, the mail) may take.
    #[serde(default = "default_send_timeout", with = "humantime_serde")]
    pub send_timeout: Duration,
    /// The sender of notifications.
    #[serde(default)]
    pub from: Option<MailAddress>,
    /// Who gets notifications.
    #[serde(default)]
    pub to: Vec<MailAddress>,
    /// Who gets a copy.
    #[serde(default)]
    pub cc: Vec<MailAddress>,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_send_timeout() -> Duration {
    Duration::from_secs(60)
}

impl SmtpConfig {
    /// A configuration for `host` with every default (STARTTLS, no login, no recipient).
    pub fn new(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: None,
            tls: TlsMode::default(),
            username: None,
            password: None,
            password_env: None,
            ca_file: None,
            connect_timeout: default_connect_timeout(),
            send_timeout: default_send_timeout(),
            from: None,
            to: Vec::new(),
            cc: Vec::new(),
        }
    }

    /// Parses and checks a TOML configuration.
    ///
    /// # Errors
    /// [`NotifyError::InvalidConfig`] for a TOML error, an unknown key, a
    /// malformed address (named in the message) or anything
    /// [`SmtpConfig::validate`] refuses.
    pub fn from_toml(text: &str) -> Result<Self, NotifyError> {
        // Not the parser's `Display`: it quotes the line, which may be the
        // password cut short.
        let cfg: Self = toml::from_str(text).map_err(|e| {
            NotifyError::InvalidConfig(pyscaler_core::config_error_at(text, e.span(), e.message()))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.tls.default_port())
    }

    /// Checks the configuration without reading the environment.
    ///
    /// # Errors
    /// [`NotifyError::InvalidConfig`] for an empty or malformed host, port 0, a
    /// zero timeout, a `ca_file` without TLS, a password without a user (or a user without a password),
    /// or both `password` and `password_env`.
    pub fn validate(&self) -> Result<(), NotifyError> {
        let invalid = |m: &str| Err(NotifyError::InvalidConfig(m.to_owned()));
        let host = self.host.trim();
        if host.is_empty() {
            return invalid("`host` is empty");
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return invalid(
                "`host` must be a host name or an IP address, without a scheme or a path",
            );
        }
        if self.port == Some(0) {
            return invalid("`port` must not be 0");
        }
        if self.connect_timeout.is_zero() || self.send_timeout.is_zero() {
            return invalid("`connect_timeout` and `send_timeout` must be longer than zero");
        }
        if self.ca_file.is_some() && self.tls == TlsMode::None {
            return invalid("`ca_file` is set but `tls` is \"none\"");
        }
        if self.password.is_some() && self.password_env.is_some() {
            return invalid("give `password` or `password_env`, not both");
        }
        let has_password = self.password.is_some() || self.password_env.is_some();
        match (&self.username, has_password) {
            (Some(_), false) => invalid("`username` is set but no `password` or `password_env`"),
            (None, true) => invalid("a password is set but no `username`"),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_tls_mode() {
        let cfg = SmtpConfig::from_toml("host = \"mx\"\ntls = \"tls\"").expect("valid");
        assert_eq!(cfg.port(), 465);
        assert_eq!(cfg.connect_timeout, Duration::from_secs(10));
        let cfg =
            SmtpConfig::from_toml("host = \"mx\"\ntls = \"none\"\nport = 2525").expect("valid");
        assert_eq!(cfg.port(), 2525);
        assert_eq!(SmtpConfig::new("mx").port(), 587);
    }

    #[test]
    fn a_malformed_address_is_a_clear_error_at_load_time() {
        let e =
            SmtpConfig::from_toml("host = \"mx\"\nfrom = \"ops@example.com\"\nto = [\"oncall@\"]")
                .expect_err("malformed recipient");
        assert!(matches!(e, NotifyError::InvalidConfig(_)), "{e:?}");
        assert!(
            e.to_string().contains("invalid mail address `oncall@`"),
            "{e}"
        );
    }

    #[test]
    fn mistakes_are_refused_before_anything_is_sent() {
        for (toml, says) in [
            ("host = \"\"", "`host` is empty"),
            ("host = \"smtp://mx\"", "without a scheme"),
            ("host = \"mx\"\nport = 0", "`port` must not be 0"),
            ("host = \"mx\"\nsend_timeout = \"0s\"", "longer than zero"),
            ("host = \"mx\"\nusername = \"u\"", "no `password`"),
            ("host = \"mx\"\npassword = \"p\"", "no `username`"),
            (
                "host = \"mx\"\nusername = \"u\"\npassword = \"p\"\npassword_env = \"P\"",
                "not both",
            ),
            (
                "host = \"mx\"\ntls = \"none\"\nca_file = \"ca.pem\"",
                "`tls` is \"none\"",
            ),
            ("host = \"mx\"\nhots = \"typo\"", "unknown field `hots`"),
            ("host = \"mx\"\ntls = \"ssl\"", "unknown variant `ssl`"),
        ] {
            let e = SmtpConfig::from_toml(toml).expect_err(toml);
            assert!(e.to_string().contains(says), "{toml}: {e}");
        }
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let cfg = SmtpConfig::from_toml("host = \"mx\"\nusername = \"u\"\npassword = \"hunter2\"")
            .expect("valid");
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("***"), "{dbg}");
    }
}
