//! The mailers against real servers on loopback: aiosmtpd (started by the
//! testkit, read back from its Maildir), a scripted SMTP server for the
//! replies aiosmtpd never gives (4xx, 5xx), a port nobody listens on, and a
//! server that never answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pyscaler_core::{
    async_trait, Action, ActionExt, Classify, Cluster, Context, Effects, Error, ErrorKind, Node,
    NodeAddress, Pipeline, Result, RetryPolicy, RunStatus, StepStatus, Target, TriggerInfo,
};
use pyscaler_notify::{
    Email, FileMailer, Mail, Mailer, NotifyError, SmtpMailer, Templates, TlsMode,
};
use pyscaler_testkit::smtp::{SmtpServer, SmtpTls};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Adds two nodes; takes them back when undone.
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
                .with_address(NodeAddress::new("10.0.0.4")),
        ]);
        Ok(())
    }
    async fn compensate(&self, ctx: &mut Context) -> Result<()> {
        ctx.forget_new_nodes(&["i-0aaa".to_string(), "i-0bbb".to_string()]);
        Ok(())
    }
}

/// Fails on web-04.
struct Puppet;

#[async_trait]
impl Action for Puppet {
    fn name(&self) -> &str {
        "puppet"
    }
    async fn run(&self, _ctx: &mut Context) -> Result<()> {
        Err(Error::other(ErrorKind::RemoteCommandFailed, "puppet exited 4").on_node("web-04"))
    }
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

fn email(mailer: impl Mailer + 'static) -> Email {
    Email::builder(Arc::new(mailer))
        .from("pyscaler <ops@example.com>")
        .to("oncall@example.com")
        .to("lead@example.com")
        .cc("audit@example.com")
        .build()
        .expect("valid email action")
}

fn context() -> Context {
    Context::new(Cluster::new("web").with_nodes([Node::new("i-0old", "web-01")]))
        .with_trigger(TriggerInfo::new("manual", "asked by alice"))
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
        .step(Launch.on(Target::None))
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
        .step(Launch.on(Target::None))
        .step(Puppet.on(Target::NewNodes))
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
        .step(Launch.on(Target::None))
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

/// A minimal SMTP server: it offers `AUTH` and refuses every login (535);
/// connection `i` answers `RCPT` with `rcpt[i]` (`250 OK` past the list);
/// it accepts data.
async fn scripted_server(rcpt: Vec<&'static str>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let i = count.fetch_add(1, Ordering::SeqCst);
            let rcpt_reply = rcpt.get(i).copied().unwrap_or("250 2.1.5 OK");
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 scripted ESMTP\r\n").await;
                let mut in_data = false;
                while let Ok(Some(line)) = lines.next_line().await {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            let _ = write.write_all(b"250 2.0.0 queued as 42\r\n").await;
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let reply = match verb.as_str() {
                        "EHLO" | "HELO" => "250-scripted\r\n250 AUTH PLAIN LOGIN".to_string(),
                        "AUTH" => "535 5.7.8 Authentication credentials invalid".to_string(),
                        "MAIL" => "250 2.1.0 OK".to_string(),
                        "RCPT" => rcpt_reply.to_string(),
                        "DATA" => {
                            in_data = true;
                            "354 go ahead".to_string()
                        }
                        "QUIT" => {
                            let _ = write.write_all(b"221 bye\r\n").await;
                            break;
                        }
                        _ => "250 OK".to_string(),
                    };
                    let _ = write.write_all(format!("{reply}\r\n").as_bytes()).await;
                }
            });
        }
    });
    (port, connections)
}

#[tokio::test]
async fn a_permanent_refusal_keeps_the_servers_reply_and_is_tried_once() {
    let (port, connections) = scripted_server(vec![
        "550 5.1.1 <oncall@example.com>: Recipient address rejected",
    ])
    .await;
    let pipeline = Pipeline::builder("scale-out")
        .step(Launch.on(Target::None))
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
        .step(Launch.on(Target::None))
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
        .step(Launch.on(Target::None))
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

/// Every span field and event field, as text.
#[derive(Clone, Default)]
struct LogCapture(Arc<std::sync::Mutex<String>>);

impl tracing::field::Visit for LogCapture {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let line = format!("{field}={value:?} ");
        self.0.lock().expect("log buffer").push_str(&line);
    }
}

impl tracing::Subscriber for LogCapture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        span.record(&mut self.clone());
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut self.clone());
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        event.record(&mut self.clone());
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn a_refused_login_is_reported_without_the_password() {
    const PASSWORD: &str = "correct-horse-battery-staple";
    let logs = LogCapture::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let (port, connections) = scripted_server(vec![]).await;
    let mailer = SmtpMailer::builder("127.0.0.1")
        .port(port)
        .tls(TlsMode::None)
        .credentials("pyscaler", pyscaler_notify::Secret::new(PASSWORD))
        .build()
        .expect("valid mailer");
    let pipeline = Pipeline::builder("scale-out")
        .step(Launch.on(Target::None))
        .finally(
            email(mailer.clone())
                .on(Target::None)
                .retry(RetryPolicy::attempts(3).initial_delay(Duration::from_millis(10))),
        )
        .build()
        .expect("valid pipeline");
    let report = pipeline.run(&mut context()).await;
    let step = &report.finally[0];
    assert_eq!(step.attempts, 1, "a refused login is not retried");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    let error = step.error.as_ref().expect("the refusal");
    assert_eq!(error.kind, ErrorKind::PermissionDenied);
    assert!(error.message.contains("535 5.7.8"), "{}", error.message);

    let logs = logs.0.lock().expect("log buffer").clone();
    assert!(logs.contains("535 5.7.8"), "the failure was logged: {logs}");
    for text in [
        format!("{report}"),
        format!("{report:?}"),
        format!("{mailer:?}"),
        logs,
    ] {
        assert!(!text.contains(PASSWORD), "{text}");
    }
}
