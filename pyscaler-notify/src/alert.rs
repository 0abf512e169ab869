//! A mail when a trigger fails for lack of data: the "and optionally the
//! notification" of [`MissingData::Fail`](pyscaler_core::MissingData::Fail).

use std::collections::BTreeSet;
use std::sync::Arc;

use pyscaler_core::{Decision, Event, Verdict};
use tokio::sync::broadcast;
use tracing::{info, warn};

use crate::{Mail, Mailer, NotifyError, SmtpConfig};

/// Mails the people of an [`SmtpConfig`] when a trigger whose policy is
/// [`MissingData::Fail`](pyscaler_core::MissingData::Fail) has no data:
/// one mail when it starts failing, one when its data is back; nothing in
/// between, however many ticks fail. A mail that cannot be sent is logged
/// and the watch goes on.
///
/// ```no_run
/// # async fn demo(scaler: &pyscaler_core::Scaler, config: &pyscaler_notify::SmtpConfig)
/// #     -> Result<(), pyscaler_notify::NotifyError> {
/// use std::sync::Arc;
/// use pyscaler_notify::{FailureAlerts, SmtpMailer};
///
/// let alerts = FailureAlerts::new(Arc::new(SmtpMailer::from_config(config)?)).addresses_from(config);
/// tokio::spawn(alerts.watch(scaler.subscribe()));
/// # Ok(()) }
/// ```
pub struct FailureAlerts {
    mailer: Arc<dyn Mailer>,
    from: Option<String>,
    to: Vec<String>,
}

impl std::fmt::Debug for FailureAlerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureAlerts")
            .field("mailer", &self.mailer.destination())
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl FailureAlerts {
    /// Alerts sent through `mailer`; give the addresses with
    /// [`addresses_from`](Self::addresses_from) or [`to`](Self::to).
    pub fn new(mailer: Arc<dyn Mailer>) -> Self {
        Self {
            mailer,
            from: None,
            to: Vec::new(),
        }
    }

    /// The sender and recipients of `config`.
    pub fn addresses_from(mut self, config: &SmtpConfig) -> Self {
        if let Some(from) = &config.from {
            self.from = Some(from.to_string());
        }
        self.to.extend(config.to.iter().map(ToString::to_string));
        self
    }

    /// The sender.
    pub fn from(mut self, address: impl Into<String>) -> Self {
        self.from = Some(address.into());
        self
    }

    /// One more recipient.
    pub fn to(mut self, address: impl Into<String>) -> Self {
        self.to.push(address.into());
        self
    }

    /// Watches `events` (a scaler's, [`Scaler::subscribe`](pyscaler_core::Scaler::subscribe))
    /// until their sender is gone, mailing as the type's docs say.
    pub async fn watch(self, mut events: broadcast::Receiver<Event>) {
        let mut failing = BTreeSet::new();
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Event::Decided(d) = event else { continue };
            let mail = match d.verdict {
                Verdict::Failed if failing.insert(d.trigger.clone()) => self.mail(&d, true),
                Verdict::Failed | Verdict::NoData => continue,
                _ if failing.remove(&d.trigger) => self.mail(&d, false),
                _ => continue,
            };
            match mail {
                Ok(mail) => match self.mailer.send(&mail).await {
                    Ok(receipt) => {
                        info!(trigger = %d.trigger, %receipt, "Sent the no-data alert.")
                    }
                    Err(e) => {
                        warn!(trigger = %d.trigger, error = %e, "Could not send the no-data alert.")
                    }
                },
                Err(e) => {
                    warn!(trigger = %d.trigger, error = %e, "Could not write the no-data alert.")
                }
            }
        }
    }

    fn mail(&self, d: &Decision, failing: bool) -> Result<Mail, NotifyError> {
        let (subject, body) = if failing {
            (
                format!("pyscaler: trigger {} has no data", d.trigger),
                format!(
                    "Trigger {} ({}) has no data: {}.\n\nIt makes no {} decision until its data \
                     is back; this is the only mail until then.\nCluster size: {} node(s).\n",
                    d.trigger, d.direction, d.reason, d.direction, d.nodes
                ),
            )
        } else {
            (
                format!("pyscaler: trigger {} has data again", d.trigger),
                format!(
                    "Trigger {} ({}) has data again{}.\n",
                    d.trigger,
                    d.direction,
                    d.value.map(|v| format!(": {v:.2}")).unwrap_or_default()
                ),
            )
        };
        let mut mail = Mail::builder().subject(subject).body(body);
        if let Some(from) = &self.from {
            mail = mail.from(from.clone());
        }
        for to in &self.to {
            mail = mail.to(to.clone());
        }
        mail.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyscaler_core::{Direction, Skip};

    use crate::FileMailer;

    fn decided(trigger: &str, verdict: Verdict) -> Event {
        Event::Decided(Box::new(Decision::new(
            trigger,
            Direction::In,
            verdict,
            3,
            "no data (connection refused)",
        )))
    }

    #[tokio::test]
    async fn one_mail_when_a_trigger_starts_failing_and_one_when_its_data_is_back() {
        let dir = tempfile::tempdir().expect("a folder");
        let alerts = FailureAlerts::new(Arc::new(FileMailer::new(dir.path())))
            .from("pyscaler@localhost")
            .to("ops@localhost");
        let (tx, rx) = broadcast::channel(16);
        for event in [
            decided("load-low", Verdict::Failed),
            decided("load-low", Verdict::Failed),
            decided("load-low", Verdict::Failed),
            decided("other", Verdict::NoData),
            decided("load-low", Verdict::Skipped(Skip::Cooldown)),
            decided("load-low", Verdict::Skipped(Skip::Cooldown)),
        ] {
            tx.send(event).expect("a receiver");
        }
        drop(tx);
        alerts.watch(rx).await;
        let mut mails: Vec<String> = std::fs::read_dir(dir.path())
            .expect("the folder")
            .map(|e| std::fs::read_to_string(e.expect("an entry").path()).expect("a mail"))
            .collect();
        mails.sort_by_key(|m| m.contains("has data again"));
        assert_eq!(mails.len(), 2, "{mails:?}");
        assert!(
            mails[0].contains("Subject: pyscaler: trigger load-low has no data")
                && mails[0].contains("no data (connection refused)"),
            "{}",
            mails[0]
        );
        assert!(
            mails[1].contains("Subject: pyscaler: trigger load-low has data again"),
            "{}",
            mails[1]
        );
    }
}
