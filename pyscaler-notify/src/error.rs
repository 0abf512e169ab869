//! The one error type of this crate, classified once for the pipeline's retry policy.

use std::time::Duration;

use pyscaler_core::{BoxError, Classify, ErrorKind};

/// What went wrong while building or sending a notification.
///
/// Every variant answers [`Classify::kind`] and [`Classify::is_retryable`]:
/// a refused or dropped connection, a timeout and a 4xx reply are worth
/// trying again; a 5xx reply (a bad recipient, a refused sender), a malformed
/// address and a template that does not render are not.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// A mail address does not parse (`ops@`, `"no at sign"`).
    #[error("invalid mail address `{address}`: {reason}")]
    InvalidAddress {
        /// The address as given.
        address: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A mail cannot be built (no recipient, no sender).
    #[error("invalid mail: {0}")]
    InvalidMail(String),
    /// A configuration value is wrong; nothing was sent.
    #[error("invalid mail configuration: {0}")]
    InvalidConfig(String),
    /// A subject or body template does not parse, or does not render for this run.
    #[error("the {template} template does not render: {detail}")]
    Template {
        /// Which template (`failure subject`).
        template: String,
        /// What is wrong, and the line it is on.
        detail: String,
        /// The template engine's error, with the line it points at.
        #[source]
        source: BoxError,
    },
    /// The SMTP server could not be reached, or dropped the connection.
    #[error("cannot reach the SMTP server at {server}: {source}")]
    ConnectionFailed {
        /// `host:port`.
        server: String,
        /// The network error.
        #[source]
        source: BoxError,
    },
    /// Connecting to, or talking with, the SMTP server took longer than allowed.
    #[error("the SMTP server at {server} did not answer within {}", humantime_serde::re::humantime::format_duration(*after))]
    TimedOut {
        /// `host:port`.
        server: String,
        /// The bound that ran out.
        after: Duration,
    },
    /// The SMTP server refused the mail for now (a 4xx reply: busy, greylisting).
    #[error("the SMTP server at {server} deferred the mail: {code} {reply}")]
    Deferred {
        /// `host:port`.
        server: String,
        /// The reply code (421, 450, 451, 452).
        code: u16,
        /// The server's reply text.
        reply: String,
    },
    /// The SMTP server refused the mail for good (a 5xx reply: bad recipient,
    /// refused sender, authentication failed).
    #[error("the SMTP server at {server} refused the mail: {code} {reply}")]
    Rejected {
        /// `host:port`.
        server: String,
        /// The reply code (550, 553, 535).
        code: u16,
        /// The server's reply text.
        reply: String,
    },
    /// The TLS handshake failed (a certificate that does not verify, no STARTTLS).
    #[error("TLS with the SMTP server at {server} failed: {source}")]
    Tls {
        /// `host:port`.
        server: String,
        /// The TLS error.
        #[source]
        source: BoxError,
    },
    /// The SMTP server said something the client could not understand or accept.
    #[error("SMTP exchange with {server} failed: {source}")]
    Protocol {
        /// `host:port`.
        server: String,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// A mail file could not be written.
    #[error("cannot write the mail file {path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl NotifyError {
    /// The error for an SMTP reply code that is not a success: 4xx is
    /// [`NotifyError::Deferred`], anything else [`NotifyError::Rejected`].
    pub(crate) fn from_reply(server: &str, code: u16, reply: impl Into<String>) -> Self {
        let (server, reply) = (server.to_owned(), reply.into());
        if (400..500).contains(&code) {
            Self::Deferred {
                server,
                code,
                reply,
            }
        } else {
            Self::Rejected {
                server,
                code,
                reply,
            }
        }
    }

    /// The SMTP reply code, when the server answered with one.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Self::Deferred { code, .. } | Self::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl Classify for NotifyError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidAddress { .. }
            | Self::InvalidMail(_)
            | Self::InvalidConfig(_)
            | Self::Template { .. }
            // A certificate that does not verify or a server without STARTTLS
            // is a configuration problem: trying again will not fix it.
            | Self::Tls { .. } => ErrorKind::InvalidInput,
            Self::ConnectionFailed { .. } => ErrorKind::Transient,
            Self::TimedOut { .. } => ErrorKind::Timeout,
            // RFC 5321 4.2.1: 4yz is a transient negative completion.
            Self::Deferred { .. } => ErrorKind::Transient,
            // RFC 4954: 530 authentication required, 534 mechanism too weak,
            // 535 credentials invalid.
            Self::Rejected { code: 530 | 534 | 535, .. } => ErrorKind::PermissionDenied,
            // RFC 5321 4.2.1: 5yz is a permanent negative completion (550
            // mailbox unavailable, 553 mailbox name not allowed, 554 failed).
            Self::Rejected { .. } => ErrorKind::InvalidInput,
            Self::Protocol { .. } => ErrorKind::Unexpected,
            Self::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                _ => ErrorKind::Unexpected,
            },
        }
    }
}

impl From<NotifyError> for pyscaler_core::Error {
    fn from(e: NotifyError) -> Self {
        pyscaler_core::Error::provider(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_hundreds_are_retried_and_five_hundreds_are_not() {
        let deferred = NotifyError::from_reply("mx:25", 451, "4.7.1 try again later");
        assert_eq!(deferred.kind(), ErrorKind::Transient);
        assert!(deferred.is_retryable());

        let bad_rcpt = NotifyError::from_reply("mx:25", 550, "5.1.1 <nobody@x.org>: no such user");
        assert_eq!(bad_rcpt.kind(), ErrorKind::InvalidInput);
        assert!(!bad_rcpt.is_retryable());
        assert_eq!(bad_rcpt.reply_code(), Some(550));

        let auth = NotifyError::from_reply("mx:25", 535, "5.7.8 bad credentials");
        assert_eq!(auth.kind(), ErrorKind::PermissionDenied);
        assert!(!auth.is_retryable());
    }

    #[test]
    fn refused_connections_and_timeouts_are_retried() {
        let refused = NotifyError::ConnectionFailed {
            server: "127.0.0.1:2525".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
        };
        assert!(refused.is_retryable());
        let slow = NotifyError::TimedOut {
            server: "127.0.0.1:2525".into(),
            after: Duration::from_secs(5),
        };
        assert_eq!(slow.kind(), ErrorKind::Timeout);
        assert!(slow.is_retryable());
        assert_eq!(
            slow.to_string(),
            "the SMTP server at 127.0.0.1:2525 did not answer within 5s"
        );
    }

    #[test]
    fn input_errors_are_not_retried() {
        for e in [
            NotifyError::InvalidMail("no recipient".into()),
            NotifyError::InvalidConfig("no host".into()),
            NotifyError::InvalidAddress {
                address: "ops@".into(),
                reason: "no domain".into(),
            },
        ] {
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            assert!(!e.is_retryable(), "{e}");
        }
    }

    #[test]
    fn the_core_error_keeps_the_server_reply_and_the_classification() {
        let e: pyscaler_core::Error =
            NotifyError::from_reply("mx:25", 550, "5.1.1 no such user").into();
        assert!(!e.is_retryable());
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "the SMTP server at mx:25 refused the mail: 550 5.1.1 no such user"
        );
    }
}
