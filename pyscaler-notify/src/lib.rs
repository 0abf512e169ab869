//! # pyscaler-notify
//!
//! Tells people how a scaling run went. The [`Email`] action renders a
//! subject and a body from the run report ([`Templates`], in minijinja's
//! Jinja2 syntax, with good defaults for a scale-out that succeeded or
//! failed) and hands the [`Mail`] to a [`Mailer`]: [`SmtpMailer`] (plain,
//! STARTTLS or implicit TLS, optional login, bounded in time) or
//! [`FileMailer`] (`.eml` files in a folder, no server needed).
//!
//! Add it as a pipeline's `finally` step, so a failure is heard of too:
//!
//! ```no_run
//! use std::sync::Arc;
//! use pyscaler_core::{ActionExt, Cluster, Context, Pipeline, RetryPolicy, Target};
//! use pyscaler_notify::{Email, SmtpConfig, SmtpMailer};
//! # #[derive(Debug)] struct Deploy;
//! # #[pyscaler_core::async_trait]
//! # impl pyscaler_core::Action for Deploy {
//! #     fn name(&self) -> &str { "deploy" }
//! #     async fn run(&self, _: &mut Context) -> pyscaler_core::Result<()> { Ok(()) }
//! # }
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = SmtpConfig::from_toml(&std::fs::read_to_string("notify.toml")?)?;
//! let email = Email::builder(Arc::new(SmtpMailer::from_config(&config)?))
//!     .addresses_from(&config)
//!     .build()?;
//! let pipeline = Pipeline::builder("scale-out")
//!     .step(Deploy.on(Target::None))
//!     .finally(email.on(Target::None).retry(RetryPolicy::attempts(3)))
//!     .build()?;
//! let report = pipeline.run(&mut Context::new(Cluster::new("web"))).await;
//! println!("{report}");
//! # Ok(()) }
//! ```
//!
//! [`FailureAlerts`] mails the same people when a trigger fails for lack of
//! data ([`MissingData::Fail`](pyscaler_core::MissingData::Fail)): once when
//! it starts, once when its data is back.
//!
//! Errors are [`NotifyError`]s, classified once here: a refused connection, a
//! timeout or a 4xx reply is retried by the step's policy; a 5xx reply, a
//! malformed address or a broken template is not. Passwords are [`Secret`]s:
//! they never reach a log line, a `Debug` output or a report.

mod alert;
mod config;
mod email;
mod error;
mod file;
mod mail;
mod mailer;
mod secret;
mod smtp;
mod template;

pub use alert::FailureAlerts;
pub use config::{SmtpConfig, TlsMode};
pub use email::{Email, EmailBuilder};
pub use error::NotifyError;
pub use file::FileMailer;
pub use mail::{Mail, MailAddress, MailBuilder};
#[cfg(any(test, feature = "mocks"))]
pub use mailer::MockMailer;
pub use mailer::{Mailer, Receipt};
pub use secret::Secret;
pub use smtp::{SmtpMailer, SmtpMailerBuilder};
pub use template::Templates;
