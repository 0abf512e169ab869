//! The `Email` action: tells people how a run went.

use std::fmt;
use std::sync::Arc;

use pyscaler_core::{
    async_trait, Action, Context, Effects, NodeSummary, Result, RunReport, RunStatus,
};
use tracing::info;

use crate::mail::parse_all;
use crate::{Mail, MailAddress, Mailer, NotifyError, SmtpConfig, Templates};

/// Sends a mail about the run: meant as a pipeline's `finally` step, so
/// people hear about failures as well as successes.
///
/// The subject and body are [`Templates`] filled from the run report:
/// [`Templates::scale_out_succeeded`] when the run succeeded,
/// [`Templates::scale_out_failed`] otherwise (failed, cancelled, or completed
/// with failures), unless you give your own. Used as an ordinary step (no
/// report yet), it renders the success templates with status `running` and the
/// nodes added so far.
///
/// A failure to send is this step's failure, with the server's reply; it
/// undoes nothing (a `finally` step is never undone, and this action has
/// nothing to undo). Wrap the step in a retry policy to retry a refused
/// connection or a 4xx reply; a 5xx reply is never retried.
///
/// ```
/// use std::sync::Arc;
/// use pyscaler_core::{ActionExt, Pipeline, RetryPolicy, Target};
/// use pyscaler_notify::{Email, FileMailer};
/// # #[derive(Debug)] struct Deploy;
/// # #[pyscaler_core::async_trait]
/// # impl pyscaler_core::Action for Deploy {
/// #     fn name(&self) -> &str { "deploy" }
/// #     async fn run(&self, _: &mut pyscaler_core::Context) -> pyscaler_core::Result<()> { Ok(()) }
/// # }
///
/// let email = Email::builder(Arc::new(FileMailer::new("target/mail")))
///     .from("pyscaler <ops@example.com>")
///     .to("oncall@example.com")
///     .build()?;
/// let pipeline = Pipeline::builder("scale-out")
///     .step(Deploy.on(Target::None))
///     .finally(email.on(Target::None).retry(RetryPolicy::attempts(3)))
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Email {
    name: String,
    mailer: Arc<dyn Mailer>,
    from: MailAddress,
    to: Vec<MailAddress>,
    cc: Vec<MailAddress>,
    on_success: Templates,
    on_failure: Templates,
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Email")
            .field("name", &self.name)
            .field("mailer", &self.mailer.destination())
            .field("from", &self.from)
            .field("to", &self.to)
            .field("cc", &self.cc)
            .finish_non_exhaustive()
    }
}

impl Email {
    /// Starts building the action, which sends through `mailer`.
    pub fn builder(mailer: Arc<dyn Mailer>) -> EmailBuilder {
        EmailBuilder {
            name: "email".into(),
            mailer,
            from: None,
            to: Vec::new(),
            cc: Vec::new(),
            on_success: Templates::scale_out_succeeded(),
            on_failure: Templates::scale_out_failed(),
        }
    }

    /// Renders the mail this action would send for `report`, without sending it.
    ///
    /// # Errors
    /// [`NotifyError::Template`] when a template does not render for this run.
    pub fn render(
        &self,
        report: &RunReport,
        vars: &std::collections::BTreeMap<String, String>,
    ) -> Result<Mail, NotifyError> {
        let (templates, which) =
            if report.status == RunStatus::Succeeded || report.status == RunStatus::Running {
                (&self.on_success, "success")
            } else {
                (&self.on_failure, "failure")
            };
        let values = crate::template::run_values(report, vars);
        let (subject, body) = templates.render(which, &values)?;
        Ok(Mail::new_checked(
            self.from.clone(),
            self.to.clone(),
            self.cc.clone(),
            subject,
            body,
        ))
    }
}

/// The report of a run still going: what the context knows so far.
fn report_so_far(ctx: &Context) -> RunReport {
    RunReport {
        run_id: ctx.run_id().clone(),
        pipeline: match ctx.pipeline() {
            "" => "run".into(),
            name => name.to_owned(),
        },
        cluster: ctx.cluster().name().to_owned(),
        trigger: ctx.trigger().clone(),
        started_at: chrono::Utc::now(),
        ended_at: None,
        status: RunStatus::Running,
        steps: Vec::new(),
        finally: Vec::new(),
        nodes_added: ctx.new_nodes().iter().map(NodeSummary::from).collect(),
        nodes_removed: ctx.removed_nodes().iter().map(NodeSummary::from).collect(),
        error: None,
        undone: Vec::new(),
        resumed_from: None,
    }
}

#[async_trait]
impl Action for Email {
    fn name(&self) -> &str {
        &self.name
    }

    fn describe(&self) -> Effects {
        let to: Vec<String> = self
            .to
            .iter()
            .chain(&self.cc)
            .map(MailAddress::email)
            .collect();
        Effects::says(format!(
            "mail {} via {}",
            to.join(", "),
            self.mailer.destination()
        ))
    }

    async fn run(&self, ctx: &mut Context) -> Result<()> {
        let mail = match ctx.report() {
            Some(report) => self.render(report, &ctx.vars())?,
            None => self.render(&report_so_far(ctx), &ctx.vars())?,
        };
        let receipt = self.mailer.send(&mail).await?;
        info!(
            step = %self.name,
            to = mail.to().len() + mail.cc().len(),
            subject = mail.subject(),
            reply = %receipt,
            "Notification sent."
        );
        Ok(())
    }
}

/// Builds an [`Email`]; `build()` reports the first malformed address or
/// template that does not parse.
pub struct EmailBuilder {
    name: String,
    mailer: Arc<dyn Mailer>,
    from: Option<String>,
    to: Vec<String>,
    cc: Vec<String>,
    on_success: Templates,
    on_failure: Templates,
}

impl fmt::Debug for EmailBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailBuilder")
            .field("name", &self.name)
            .field("from", &self.from)
            .field("to", &self.to)
            .field("cc", &self.cc)
            .finish_non_exhaustive()
    }
}

impl EmailBuilder {
    /// Names the action (default `email`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the sender.
    pub fn from(mut self, address: impl Into<String>) -> Self {
        self.from = Some(address.into());
        self
    }

    /// Adds a recipient.
    pub fn to(mut self, address: impl Into<String>) -> Self {
        self.to.push(address.into());
        self
    }

    /// Adds a recipient in copy.
    pub fn cc(mut self, address: impl Into<String>) -> Self {
        self.cc.push(address.into());
        self
    }

    /// Takes the sender and recipients of a configuration (those it names).
    pub fn addresses_from(mut self, config: &SmtpConfig) -> Self {
        if let Some(from) = &config.from {
            self.from = Some(from.to_string());
        }
        self.to.extend(config.to.iter().map(ToString::to_string));
        self.cc.extend(config.cc.iter().map(ToString::to_string));
        self
    }

    /// The templates for a run that succeeded.
    pub fn on_success(mut self, templates: Templates) -> Self {
        self.on_success = templates;
        self
    }

    /// The templates for a run that failed, was cancelled or completed with failures.
    pub fn on_failure(mut self, templates: Templates) -> Self {
        self.on_failure = templates;
        self
    }

    /// Checks the addresses and the templates' syntax, and builds the action.
    ///
    /// # Errors
    /// [`NotifyError::InvalidAddress`], [`NotifyError::InvalidMail`] (no
    /// sender, no recipient) or [`NotifyError::Template`].
    pub fn build(self) -> Result<Email, NotifyError> {
        let from = self
            .from
            .as_deref()
            .ok_or_else(|| NotifyError::InvalidMail("the email action has no sender (from)".into()))
            .and_then(MailAddress::parse)?;
        let to = parse_all(&self.to)?;
        if to.is_empty() {
            return Err(NotifyError::InvalidMail(
                "the email action has no recipient (to)".into(),
            ));
        }
        self.on_success.check("success")?;
        self.on_failure.check("failure")?;
        Ok(Email {
            name: self.name,
            mailer: self.mailer,
            from,
            to,
            cc: parse_all(&self.cc)?,
            on_success: self.on_success,
            on_failure: self.on_failure,
        })
    }
}

#[cfg(test)]
mod tests;
