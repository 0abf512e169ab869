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
///     .finally(email.retry(RetryPolicy::attempts(3)).on(Target::None))
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
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use pyscaler_core::{
        ActionExt, Cluster, Error, ErrorKind, Node, NodeAddress, Pipeline, RetryPolicy, StepStatus,
        Target, TriggerInfo,
    };

    use super::*;
    use crate::{MockMailer, Receipt};

    /// Adds two nodes; removes them again when undone.
    struct Launch;

    #[async_trait]
    impl Action for Launch {
        fn name(&self) -> &str {
            "deploy-ec2-node"
        }
        fn describe(&self) -> Effects {
            Effects::says("launch 2 nodes").creating_nodes()
        }
        async fn run(&self, ctx: &mut Context) -> Result<()> {
            ctx.add_new_nodes([
                Node::new("i-0aaa", "web-03")
                    .with_instance_id("i-0aaa")
                    .with_address(NodeAddress::new("10.0.0.3")),
                Node::new("i-0bbb", "web-04")
                    .with_instance_id("i-0bbb")
                    .with_address(NodeAddress::new("10.0.0.4").with_port(2222)),
            ]);
            Ok(())
        }
        async fn compensate(&self, ctx: &mut Context) -> Result<()> {
            ctx.forget_new_nodes(&["i-0aaa".to_string(), "i-0bbb".to_string()]);
            Ok(())
        }
    }

    /// Fails on web-04 with a Puppet error.
    struct Puppet;

    #[async_trait]
    impl Action for Puppet {
        fn name(&self) -> &str {
            "puppet"
        }
        async fn run(&self, _ctx: &mut Context) -> Result<()> {
            Err(
                Error::other(ErrorKind::RemoteCommandFailed, "puppet exited 4 (failures)")
                    .on_node("web-04"),
            )
        }
    }

    type Outbox = Arc<Mutex<Vec<Mail>>>;

    /// A mock mailer that keeps what it is given and answers with `replies` in turn.
    fn mailer(
        replies: Vec<std::result::Result<Receipt, NotifyError>>,
    ) -> (Arc<dyn Mailer>, Outbox) {
        let outbox: Outbox = Arc::default();
        let kept = outbox.clone();
        let replies = Mutex::new(replies.into_iter());
        let mut mock = MockMailer::new();
        mock.expect_destination().return_const("mock".to_string());
        mock.expect_send().returning(move |mail| {
            kept.lock().expect("outbox").push(mail.clone());
            replies
                .lock()
                .expect("replies")
                .next()
                .unwrap_or_else(|| Ok(Receipt::new("250 ok")))
        });
        (Arc::new(mock), outbox)
    }

    fn email(mailer: Arc<dyn Mailer>) -> Email {
        Email::builder(mailer)
            .from("pyscaler <ops@example.com>")
            .to("oncall@example.com")
            .to("lead@example.com")
            .cc("audit@example.com")
            .build()
            .expect("valid email action")
    }

    fn context() -> Context {
        Context::new(Cluster::new("web").with_nodes([Node::new("i-0old", "web-01")]))
            .with_trigger(TriggerInfo::new("cpu-high", "avg load 3.2 > 2 for 5m"))
    }

    fn sent(outbox: &Outbox) -> Vec<Mail> {
        outbox.lock().expect("outbox").clone()
    }

    #[tokio::test]
    async fn a_successful_run_mails_the_new_nodes_and_each_step() {
        let (mailer, outbox) = mailer(vec![]);
        let pipeline = Pipeline::builder("scale-out")
            .step(Launch.on(Target::None))
            .finally(email(mailer).on(Target::None))
            .build()
            .expect("valid pipeline");
        let report = pipeline.run(&mut context()).await;
        assert!(report.is_success(), "{report}");

        let mails = sent(&outbox);
        assert_eq!(mails.len(), 1);
        let mail = &mails[0];
        assert_eq!(mail.from().to_string(), "pyscaler <ops@example.com>");
        let to: Vec<String> = mail.to().iter().map(MailAddress::email).collect();
        assert_eq!(to, ["oncall@example.com", "lead@example.com"]);
        assert_eq!(mail.cc()[0].email(), "audit@example.com");
        assert_eq!(
            mail.subject(),
            "[pyscaler] web: scale-out succeeded, 2 node(s) added"
        );
        let body = mail.body();
        assert!(
            body.starts_with("scale-out on cluster web succeeded.\n"),
            "{body}"
        );
        assert!(
            body.contains("Trigger:  cpu-high (avg load 3.2 > 2 for 5m)\n"),
            "{body}"
        );
        let started = report
            .started_at
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string();
        assert!(body.contains(&format!("Started:  {started}\n")), "{body}");
        assert!(
            body.contains(
                "Nodes added:\n  - web-03 i-0aaa at 10.0.0.3\n  - web-04 i-0bbb at 10.0.0.4:2222\n"
            ),
            "{body}"
        );
        assert!(
            body.contains("\n  - deploy-ec2-node: succeeded in "),
            "{body}"
        );
        assert!(!body.contains("{{"), "{body}");
    }

    #[tokio::test]
    async fn a_failed_run_mails_the_step_the_node_and_what_was_undone() {
        let (mailer, outbox) = mailer(vec![]);
        let pipeline = Pipeline::builder("scale-out")
            .step(Launch.on(Target::None))
            .step(Puppet.on(Target::NewNodes))
            .finally(email(mailer).on(Target::None))
            .build()
            .expect("valid pipeline");
        let report = pipeline.run(&mut context()).await;
        assert_eq!(report.status, RunStatus::Failed);

        let mails = sent(&outbox);
        assert_eq!(mails.len(), 1);
        let (subject, body) = (mails[0].subject(), mails[0].body());
        assert_eq!(subject, "[pyscaler] web: scale-out FAILED at step puppet");
        assert!(
            body.contains("Error (remote_command_failed): step `puppet` failed on node web-04"),
            "{body}"
        );
        assert!(body.contains("puppet exited 4 (failures)"), "{body}");
        assert!(body.contains("Node:     web-04\n"), "{body}");
        assert!(
            body.contains("  - deploy-ec2-node: compensated in "),
            "{body}"
        );
        assert!(body.contains("  - puppet: failed in "), "{body}");
        assert!(
            body.contains(
                "Undone, last step first:\n  - puppet: undone\n  - deploy-ec2-node: undone\n"
            ),
            "{body}"
        );
        assert!(
            !body.contains("Nodes added"),
            "the nodes were undone: {body}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deferral_is_retried_within_the_steps_policy() {
        let (mailer, outbox) = mailer(vec![Err(NotifyError::from_reply(
            "mx:25",
            451,
            "4.3.2 try again later",
        ))]);
        let pipeline = Pipeline::builder("scale-out")
            .step(Launch.on(Target::None))
            .finally(
                email(mailer)
                    .on(Target::None)
                    .retry(RetryPolicy::attempts(3).initial_delay(Duration::from_secs(5))),
            )
            .build()
            .expect("valid pipeline");
        let report = pipeline.run(&mut context()).await;
        assert!(report.is_success(), "{report}");
        assert_eq!(report.finally[0].attempts, 2);
        assert_eq!(sent(&outbox).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_not_retried_and_undoes_no_node() {
        let (mailer, outbox) = mailer(vec![Err(NotifyError::from_reply(
            "mx:25",
            550,
            "5.1.1 <oncall@example.com>: Recipient address rejected",
        ))]);
        let pipeline = Pipeline::builder("scale-out")
            .step(Launch.on(Target::None))
            .finally(
                email(mailer)
                    .on(Target::None)
                    .retry(RetryPolicy::attempts(3)),
            )
            .build()
            .expect("valid pipeline");
        let mut ctx = context();
        let report = pipeline.run(&mut ctx).await;
        assert_eq!(sent(&outbox).len(), 1, "a 5xx must not be retried");
        assert_eq!(report.status, RunStatus::CompletedWithFailures);
        let step = &report.finally[0];
        assert_eq!(step.status, StepStatus::Failed);
        let error = step.error.as_ref().expect("the step's error");
        assert!(
            error
                .message
                .contains("550 5.1.1 <oncall@example.com>: Recipient address rejected"),
            "{}",
            error.message
        );
        assert_eq!(report.nodes_added.len(), 2, "the deployed nodes stay");
        assert_eq!(ctx.new_nodes().len(), 2);
        assert!(report.undone.is_empty());
    }

    #[tokio::test]
    async fn a_template_that_does_not_render_fails_the_step_before_sending() {
        let mut mock = MockMailer::new();
        mock.expect_destination().return_const("mock".to_string());
        mock.expect_send().never();
        let email = Email::builder(Arc::new(mock))
            .from("ops@example.com")
            .to("oncall@example.com")
            .on_success(Templates::new("{{ clustr }} done", "body"))
            .build()
            .expect("the template parses");
        let pipeline = Pipeline::builder("scale-out")
            .step(Launch.on(Target::None))
            .finally(email.on(Target::None))
            .build()
            .expect("valid pipeline");
        let report = pipeline.run(&mut context()).await;
        let error = report.finally[0].error.as_ref().expect("a render error");
        assert_eq!(error.kind, ErrorKind::InvalidInput);
        assert!(error.message.contains("the success subject template does not render: undefined value at line 1: `{{ clustr }} done`"), "{}", error.message);
        assert!(
            error.chain.iter().any(|m| m.contains("clustr")),
            "{:?}",
            error.chain
        );
    }

    #[test]
    fn a_template_that_does_not_parse_is_refused_when_built() {
        let (mailer, _) = mailer(vec![]);
        let e = Email::builder(mailer)
            .from("ops@example.com")
            .to("oncall@example.com")
            .on_failure(Templates::new("ok", "{% for s in steps %}never closed"))
            .build()
            .expect_err("syntax error");
        assert!(
            matches!(&e, NotifyError::Template { template, .. } if template == "failure body"),
            "{e:?}"
        );
    }

    #[test]
    fn addresses_are_checked_when_built() {
        let (m, _) = mailer(vec![]);
        let e = Email::builder(m)
            .from("ops@example.com")
            .build()
            .expect_err("no recipient");
        assert!(matches!(e, NotifyError::InvalidMail(_)), "{e:?}");
        let (m, _) = mailer(vec![]);
        let e = Email::builder(m)
            .from("ops@example.com")
            .to("oncall@@example.com")
            .build()
            .expect_err("malformed");
        assert!(matches!(e, NotifyError::InvalidAddress { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn as_a_plain_step_it_mails_the_nodes_added_so_far() {
        let (mailer, outbox) = mailer(vec![]);
        // A main step, not a finally one: the report so far is built from the
        // context, with the pipeline's name.
        let pipeline = pyscaler_core::Pipeline::builder("scale-out")
            .step(Launch.on(Target::None))
            .step(email(mailer).on(Target::None))
            .build()
            .expect("pipeline");
        let report = pipeline.run(&mut context()).await;
        assert!(report.is_success(), "{report}");
        let mails = sent(&outbox);
        assert_eq!(
            mails[0].subject(),
            "[pyscaler] web: scale-out running, 2 node(s) added"
        );
        assert!(mails[0].body().contains("  - web-03 i-0aaa at 10.0.0.3\n"));
    }

    #[test]
    fn the_plan_names_recipients_and_destination() {
        let (m, _) = mailer(vec![]);
        let effects = email(m).describe();
        assert_eq!(
            effects.summary,
            ["mail oncall@example.com, lead@example.com, audit@example.com via mock"]
        );
        assert!(!effects.creates_nodes && !effects.removes_nodes);
    }

    #[tokio::test]
    async fn sender_and_recipients_can_come_from_the_config_file() {
        let cfg = SmtpConfig::from_toml(
            "host = \"mx\"\nfrom = \"pyscaler <ops@example.com>\"\nto = [\"a@example.com\", \"b@example.com\"]\ncc = [\"c@example.com\"]",
        )
        .expect("valid config");
        let (m, outbox) = mailer(vec![]);
        let email = Email::builder(m)
            .addresses_from(&cfg)
            .build()
            .expect("addresses from the config");
        email.run(&mut context()).await.expect("sent");
        let mail = &sent(&outbox)[0];
        assert_eq!(mail.from().email(), "ops@example.com");
        let to: Vec<String> = mail.to().iter().map(MailAddress::email).collect();
        assert_eq!(to, ["a@example.com", "b@example.com"]);
        assert_eq!(mail.cc().len(), 1);
    }
}
