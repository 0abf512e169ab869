//! The mailers against real servers on loopback: aiosmtpd (started by the
//! testkit, read back from its Maildir), a scripted SMTP server for the
//! replies aiosmtpd never gives (4xx, 5xx), a port nobody listens on, and a
//! server that never answers.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{context, email, launch, scripted_server};
use pyscaler_core::testing::{CallLog, Probe};
use pyscaler_core::{
    ActionExt, Classify, ErrorKind, Pipeline, RetryPolicy, RunStatus, StepStatus, Target,
};
use pyscaler_notify::{
    Email, FileMailer, Mail, Mailer, NotifyError, SmtpMailer, Templates, TlsMode,
};
use pyscaler_testkit::smtp::{SmtpServer, SmtpTls};
use tokio::net::TcpListener;

/// Fails on web-04.
fn puppet() -> Probe {
    Probe::new("puppet", &CallLog::default())
        .failing(u32::MAX, ErrorKind::RemoteCommandFailed)
        .failing_with("puppet exited 4")
        .failing_on("web-04")
}

fn plain_mailer(port: u16) -> SmtpMailer {
    SmtpMailer::builder("127.0.0.1")
        .port(port)
        .tls(TlsMode::None)
        .connect_timeout(Duration::from_secs(5))
        .send_timeout(Duration::from_secs(10))
        .build()
        .expect("valid mailer")
}

/// A stored message as `(headers, body)`, line ends made `\n` and a
/// quoted-printable body decoded.
fn parse(raw: &str) -> (String, String) {
    let raw = raw.replace("\r\n", "\n");
    let (headers, body) = raw.split_once("\n\n").expect("headers, blank line, body");
    let body = if headers
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: quoted-printable")
    {
        decode_quoted_printable(body)
    } else {
        body.to_owned()
    };
    (headers.to_owned(), body)
}

fn decode_quoted_printable(s: &str) -> String {
    let s = s.replace("=\n", "");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() + 1 {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..(i + 3).min(bytes.len())])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).expect("utf-8 body")
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn a_scale_out_mail_arrives_with_its_recipients_and_the_new_nodes() {
    let server = SmtpServer::start();
    let pipeline = Pipeline::builder("scale-out")
        .step(launch().on(Target::None))
        .finally(email(plain_mailer(server.port())).on(Target::None))
        .build()
        .expect("valid pipeline");
    let report = pipeline.run(&mut context()).await;
    assert!(report.is_success(), "{report}");

    let messages = server.messages();
    assert_eq!(messages.len(), 1, "log: {}", server.log().display());
    let (headers, body) = parse(&messages[0]);
    assert_eq!(header(&headers, "From"), Some("pyscaler <ops@example.com>"));
    assert_eq!(
        header(&headers, "To"),
        Some("oncall@example.com, lead@example.com")
    );
    assert_eq!(header(&headers, "Cc"), Some("audit@example.com"));
    assert_eq!(
        header(&headers, "Subject"),
        Some("[pyscaler] web: scale-out succeeded, 2 node(s) added")
    );
    // aiosmtpd's Mailbox handler records the envelope: the copy went out too.
    assert_eq!(
        header(&headers, "X-RcptTo"),
        Some("oncall@example.com, lead@example.com, audit@example.com")
    );
    assert!(
        body.contains(
            "Nodes added:\n  - web-03 i-0aaa at 10.0.0.3\n  - web-04 i-0bbb at 10.0.0.4\n"
        ),
        "{body}"
    );
    assert!(body.contains("Trigger:  manual (asked by alice)"), "{body}");
}

#[tokio::test]
async fn a_failed_run_mails_the_failed_step_and_what_was_undone() {
    let server = SmtpServer::start();
    let pipeline = Pipeline::builder("scale-out")
        .step(launch().on(Target::None))
        .step(puppet().on(Target::NewNodes))
        .finally(email(plain_mailer(server.port())).on(Target::None))
        .build()
        .expect("valid pipeline");
    let report = pipeline.run(&mut context()).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.finally[0].status, StepStatus::Succeeded, "{report}");

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let (headers, body) = parse(&messages[0]);
    assert_eq!(
        header(&headers, "Subject"),
        Some("[pyscaler] web: scale-out FAILED at step puppet")
    );
    assert!(
        body.contains("step `puppet` failed on node web-04"),
        "{body}"
    );
    assert!(
        body.contains(
            "Undone, last step first:\n  - puppet: undone\n  - deploy-ec2-node: undone\n"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn a_template_that_does_not_render_sends_nothing() {
    let server = SmtpServer::start();
    let email = Email::builder(Arc::new(plain_mailer(server.port())))
        .from("ops@example.com")
        .to("oncall@example.com")
        .on_success(Templates::new(
            "{{ cluster }}",
            "{{ nodes_added[0].hostname }}",
        ))
        .build()
        .expect("the templates parse");
    let pipeline = Pipeline::builder("scale-out")
        .step(launch().on(Target::None))
        .finally(email.on(Target::None))
        .build()
        .expect("valid pipeline");
    let report = pipeline.run(&mut context()).await;
    assert_eq!(report.status, RunStatus::CompletedWithFailures);
    let error = report.finally[0].error.as_ref().expect("a render error");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert!(error.message.contains("success body"), "{}", error.message);
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn nothing_listening_is_a_retryable_connection_error() {
    let port = pyscaler_testkit::free_port();
    let e = plain_mailer(port)
        .send(&mail())
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(&e, NotifyError::ConnectionFailed { server, .. } if *server == format!("127.0.0.1:{port}")),
        "{e:?}"
    );
    assert_eq!(e.kind(), ErrorKind::Transient);
    assert!(e.is_retryable());
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_after_the_send_timeout() {
    // Accepts connections and never says a word (no 220 greeting).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let bound = Duration::from_millis(300);
    let mailer = SmtpMailer::builder("127.0.0.1")
        .port(port)
        .tls(TlsMode::None)
        .send_timeout(bound)
        .build()
        .expect("valid");
    let started = tokio::time::Instant::now();
    let e = mailer.send(&mail()).await.expect_err("no greeting");
    assert!(started.elapsed() >= bound);
    assert!(
        matches!(e, NotifyError::TimedOut { after, .. } if after == bound),
        "{e:?}"
    );
    assert!(e.is_retryable());
    silent.abort();
}

fn mail() -> Mail {
    Mail::builder()
        .from("ops@example.com")
        .to("nobody@example.com")
        .subject("test")
        .body("test")
        .build()
        .expect("valid mail")
}

#[tokio::test]
async fn a_permanent_refusal_keeps_the_servers_reply_and_is_tried_once() {
    let (port, connections) = scripted_server(vec![
        "550 5.1.1 <oncall@example.com>: Recipient address rejected",
    ])
    .await;
    let pipeline = Pipeline::builder("scale-out")
        .step(launch().on(Target::None))
        .finally(
            email(plain_mailer(port))
                .on(Target::None)
                .retry(RetryPolicy::attempts(3).initial_delay(Duration::from_millis(10))),
        )
        .build()
        .expect("valid pipeline");
    let mut ctx = context();
    let report = pipeline.run(&mut ctx).await;
    assert_eq!(report.status, RunStatus::CompletedWithFailures, "{report}");
    let step = &report.finally[0];
    assert_eq!(step.attempts, 1);
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    let error = step.error.as_ref().expect("the refusal");
    assert!(
        error.message.contains(
            "refused the mail: 550 5.1.1 <oncall@example.com>: Recipient address rejected"
        ),
        "{}",
        error.message
    );
    assert_eq!(
        report.nodes_added.len(),
        2,
        "a failed notification undoes nothing"
    );
    assert!(report.undone.is_empty());
}

#[tokio::test]
async fn a_deferral_is_retried_and_the_second_attempt_goes_through() {
    let (port, connections) = scripted_server(vec!["451 4.3.0 try again later"]).await;
    let pipeline = Pipeline::builder("scale-out")
        .step(launch().on(Target::None))
        .finally(
            email(plain_mailer(port))
                .on(Target::None)
                .retry(RetryPolicy::attempts(3).initial_delay(Duration::from_millis(10))),
        )
        .build()
        .expect("valid pipeline");
    let report = pipeline.run(&mut context()).await;
    assert!(report.is_success(), "{report}");
    assert_eq!(report.finally[0].attempts, 2);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_file_mailer_writes_a_readable_eml() {
    let dir = tempfile::tempdir().expect("temp dir");
    let folder = dir.path().join("outbox");
    let pipeline = Pipeline::builder("scale-out")
        .step(launch().on(Target::None))
        .finally(email(FileMailer::new(&folder)).on(Target::None))
        .build()
        .expect("valid pipeline");
    let report = pipeline.run(&mut context()).await;
    assert!(report.is_success(), "{report}");

    let files: Vec<_> = std::fs::read_dir(&folder)
        .expect("the folder was created")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let raw = std::fs::read_to_string(&files[0]).expect("read the mail");
    let (headers, body) = parse(&raw);
    assert_eq!(header(&headers, "From"), Some("pyscaler <ops@example.com>"));
    assert_eq!(header(&headers, "Cc"), Some("audit@example.com"));
    assert_eq!(
        header(&headers, "Subject"),
        Some("[pyscaler] web: scale-out succeeded, 2 node(s) added")
    );
    assert!(header(&headers, "Date").is_some(), "{headers}");
    assert!(body.contains("  - web-03 i-0aaa at 10.0.0.3\n"), "{body}");
}

fn tls_mailer(server: &SmtpServer, mode: TlsMode, trust_ca: bool) -> SmtpMailer {
    let mut builder = SmtpMailer::builder("127.0.0.1")
        .port(server.port())
        .tls(mode)
        .connect_timeout(Duration::from_secs(5))
        .send_timeout(Duration::from_secs(10));
    if trust_ca {
        builder = builder.ca_file(server.ca_file().expect("a TLS server has a CA"));
    }
    builder.build().expect("valid mailer")
}

#[tokio::test]
async fn starttls_and_implicit_tls_deliver_to_a_server_with_a_private_ca() {
    for (server_tls, mode) in [
        (SmtpTls::Starttls, TlsMode::Starttls),
        (SmtpTls::Implicit, TlsMode::Tls),
    ] {
        let server = SmtpServer::start_with(server_tls);
        let receipt = tls_mailer(&server, mode, true)
            .send(&mail())
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}; log {}", server.log().display()));
        assert!(receipt.summary.starts_with("250"), "{receipt}");
        let messages = server.messages();
        assert_eq!(messages.len(), 1, "{mode:?}");
        let (headers, _) = parse(&messages[0]);
        assert_eq!(header(&headers, "X-RcptTo"), Some("nobody@example.com"));
    }
}

#[tokio::test]
async fn required_starttls_sends_nothing_to_a_server_without_it() {
    let server = SmtpServer::start();
    let mailer = SmtpMailer::builder("127.0.0.1")
        .port(server.port())
        .tls(TlsMode::Starttls)
        .build()
        .expect("valid mailer");
    let e = mailer.send(&mail()).await.expect_err("no STARTTLS offered");
    assert!(!e.is_retryable(), "{e:?}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_is_refused_and_not_retried() {
    let server = SmtpServer::start_with(SmtpTls::Implicit);
    let e = tls_mailer(&server, TlsMode::Tls, false)
        .send(&mail())
        .await
        .expect_err("the test CA is not trusted");
    assert!(matches!(e, NotifyError::Tls { .. }), "{e:?}");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(!e.is_retryable());
    assert!(server.messages().is_empty());
}
