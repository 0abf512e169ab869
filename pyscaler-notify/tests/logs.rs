//! What the mailer and the pipeline log when an SMTP login is refused.
//!
//! Its own test binary: the capture is the process's global subscriber and
//! is installed before any event is emitted. Sharing a binary with tests
//! that run on other threads loses events: a callsite first hit on another
//! thread can be cached as "not interested" while a subscriber is being
//! registered (a race inside tracing-core), and the CI once saw exactly that.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{context, email, launch, scripted_server};
use pyscaler_core::{ActionExt, ErrorKind, Pipeline, RetryPolicy, Target};
use pyscaler_notify::{SmtpMailer, TlsMode};

/// Every span field and event field, as text.
///
/// Installed once as the global subscriber of this test binary.
#[derive(Clone, Default)]
struct LogCapture(Arc<std::sync::Mutex<String>>);

impl LogCapture {
    /// The binary-wide capture, installed on first use.
    fn global() -> LogCapture {
        static CAPTURE: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = LogCapture::default();
                tracing::subscriber::set_global_default(capture.clone())
                    .expect("no other global subscriber in this test binary");
                capture
            })
            .clone()
    }
}

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
    let logs = LogCapture::global();
    let (port, connections) = scripted_server(vec![]).await;
    let mailer = SmtpMailer::builder("127.0.0.1")
        .port(port)
        .tls(TlsMode::None)
        .credentials("pyscaler", pyscaler_notify::Secret::new(PASSWORD))
        .build()
        .expect("valid mailer");
    let pipeline = Pipeline::builder("scale-out")
        .step(launch().on(Target::None))
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
