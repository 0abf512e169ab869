//! The mail provider role.

use std::fmt;

use async_trait::async_trait;

use crate::{Mail, NotifyError};

/// What a [`Mailer`] says after handing a mail on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// One line: the server's reply (`250 2.0.0 Ok: queued`) or the file written.
    pub summary: String,
}

impl Receipt {
    /// A receipt saying `summary`.
    pub fn new(summary: impl Into<String>) -> Self {
        Self {
            summary: summary.into(),
        }
    }
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

/// Sends mail: [`SmtpMailer`](crate::SmtpMailer) over SMTP,
/// [`FileMailer`](crate::FileMailer) into `.eml` files.
///
/// Implementations do not retry: the step's retry policy does, from the
/// error's classification.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Where mail goes, in words (`smtp://mx.example.com:587 (STARTTLS)`), for plans and logs.
    fn destination(&self) -> String;

    /// Sends one mail.
    ///
    /// # Errors
    /// A classified [`NotifyError`]: a refused connection, a timeout or a 4xx
    /// reply is retryable; a 5xx reply (with the server's words) is not.
    async fn send(&self, mail: &Mail) -> Result<Receipt, NotifyError>;
}
