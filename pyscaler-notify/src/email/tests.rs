//! Email's unit tests.

use std::sync::Mutex;
use std::time::Duration;

use pyscaler_core::testing::{CallLog, Probe};
use pyscaler_core::{
    ActionExt, Cluster, ErrorKind, Node, NodeAddress, Pipeline, RetryPolicy, StepStatus, Target,
    TriggerInfo,
};

use super::*;
use crate::{MockMailer, Receipt};

/// Adds two nodes; removes them again when undone.
fn launch() -> Probe {
    Probe::new("deploy-ec2-node", &CallLog::default())
        .effects(Effects::says("launch 2 nodes").creating_nodes())
        .adding([
            Node::new("i-0aaa", "web-03")
                .with_instance_id("i-0aaa")
                .with_address(NodeAddress::new("10.0.0.3")),
            Node::new("i-0bbb", "web-04")
                .with_instance_id("i-0bbb")
                .with_address(NodeAddress::new("10.0.0.4").with_port(2222)),
        ])
}

/// Fails on web-04 with a Puppet error.
fn puppet() -> Probe {
    Probe::new("puppet", &CallLog::default())
        .failing(u32::MAX, ErrorKind::RemoteCommandFailed)
        .failing_with("puppet exited 4 (failures)")
        .failing_on("web-04")
}

type Outbox = Arc<Mutex<Vec<Mail>>>;

/// A mock mailer that keeps what it is given and answers with `replies` in turn.
fn mailer(replies: Vec<std::result::Result<Receipt, NotifyError>>) -> (Arc<dyn Mailer>, Outbox) {
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
        .step(launch().on(Target::None))
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
        .step(launch().on(Target::None))
        .step(puppet().on(Target::NewNodes))
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
        .step(launch().on(Target::None))
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
        .step(launch().on(Target::None))
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
        .step(launch().on(Target::None))
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
        .step(launch().on(Target::None))
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
