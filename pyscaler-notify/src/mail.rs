//! Our own mail type: who sends, who receives, subject and body.

use std::fmt;
use std::str::FromStr;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::Message;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::NotifyError;

/// A checked mail address, with an optional display name: `ops@example.com`
/// or `Ops team <ops@example.com>`.
#[derive(Clone, PartialEq, Eq)]
pub struct MailAddress(Mailbox);

impl MailAddress {
    /// Parses an address.
    ///
    /// # Errors
    /// [`NotifyError::InvalidAddress`] when it is not a valid address, with the reason.
    pub fn parse(address: &str) -> Result<Self, NotifyError> {
        Mailbox::from_str(address.trim())
            .map(Self)
            .map_err(|e| NotifyError::InvalidAddress {
                address: address.to_owned(),
                reason: what_is_wrong(address.trim()).unwrap_or_else(|| e.to_string()),
            })
    }

    /// The bare address (`ops@example.com`), without the display name.
    pub fn email(&self) -> String {
        self.0.email.to_string()
    }

    pub(crate) fn mailbox(&self) -> &Mailbox {
        &self.0
    }
}

/// What is wrong with an address lettre refused, in words: lettre says only
/// "Invalid input" for most mistakes. `None` when none of the usual mistakes
/// is found (lettre's own message is used then).
fn what_is_wrong(address: &str) -> Option<String> {
    if address.is_empty() {
        return Some("it is empty".into());
    }
    // `Name <addr>`: look at the part in angle brackets.
    let spec = match (address.find('<'), address.rfind('>')) {
        (Some(open), Some(close)) if open < close => &address[open + 1..close],
        (Some(_), _) => return Some("its `<` has no matching `>`".into()),
        (None, Some(_)) => return Some("its `>` has no matching `<`".into()),
        (None, None) => address,
    };
    let spec = spec.trim();
    if spec.chars().any(char::is_whitespace) {
        return Some("it contains a space (a display name goes before `<address>`)".into());
    }
    let Some(at) = spec.rfind('@') else {
        return Some("it has no `@`".into());
    };
    let (local, domain) = (&spec[..at], &spec[at + 1..]);
    if local.is_empty() {
        return Some("nothing stands before the `@`".into());
    }
    if domain.is_empty() {
        return Some("nothing stands after the `@` (the domain is missing)".into());
    }
    if local.contains('@') && !local.starts_with('"') {
        return Some("it has more than one `@`".into());
    }
    if domain.split('.').any(str::is_empty) {
        return Some(format!(
            "the domain `{domain}` has an empty part (`..`, or a dot at an end)"
        ));
    }
    if let Some(c) = domain
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '.' | '[' | ']' | ':')))
    {
        return Some(format!("the domain `{domain}` contains `{c}`"));
    }
    None
}

impl fmt::Display for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for MailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailAddress({self})")
    }
}

impl FromStr for MailAddress {
    type Err = NotifyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for MailAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MailAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One plain-text mail: sender, recipients, subject and body.
///
/// ```
/// use pyscaler_notify::Mail;
///
/// let mail = Mail::builder()
///     .from("pyscaler <ops@example.com>")
///     .to("alice@example.com")
///     .cc("bob@example.com")
///     .subject("web: 1 node added")
///     .body("web-03 (i-0abc) at 10.0.0.3")
///     .build()?;
/// assert_eq!(mail.to().len(), 1);
/// # Ok::<(), pyscaler_notify::NotifyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    from: MailAddress,
    to: Vec<MailAddress>,
    cc: Vec<MailAddress>,
    subject: String,
    body: String,
}

impl Mail {
    /// Starts building a mail.
    pub fn builder() -> MailBuilder {
        MailBuilder::default()
    }

    /// A mail from addresses already checked.
    pub(crate) fn new_checked(
        from: MailAddress,
        to: Vec<MailAddress>,
        cc: Vec<MailAddress>,
        subject: impl AsRef<str>,
        body: String,
    ) -> Self {
        Self {
            from,
            to,
            cc,
            subject: one_line(subject.as_ref()),
            body,
        }
    }

    /// The sender.
    pub fn from(&self) -> &MailAddress {
        &self.from
    }

    /// The recipients.
    pub fn to(&self) -> &[MailAddress] {
        &self.to
    }

    /// The recipients in copy.
    pub fn cc(&self) -> &[MailAddress] {
        &self.cc
    }

    /// The subject, one line.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The plain-text body.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The mail in lettre's form, with its envelope (every `to` and `cc`).
    pub(crate) fn to_message(&self) -> Result<Message, NotifyError> {
        let mut b = Message::builder()
            .from(self.from.mailbox().clone())
            .subject(self.subject.clone())
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.mailbox().clone());
        }
        for cc in &self.cc {
            b = b.cc(cc.mailbox().clone());
        }
        b.body(self.body.clone())
            .map_err(|e| NotifyError::InvalidMail(e.to_string()))
    }
}

/// Builds a [`Mail`]; `build()` reports the first malformed address.
#[derive(Debug, Default, Clone)]
pub struct MailBuilder {
    from: Option<String>,
    to: Vec<String>,
    cc: Vec<String>,
    subject: String,
    body: String,
}

impl MailBuilder {
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

    /// Sets the subject; line breaks become spaces.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = subject.into();
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// Checks the addresses and builds the mail.
    ///
    /// # Errors
    /// [`NotifyError::InvalidAddress`] for a malformed address;
    /// [`NotifyError::InvalidMail`] when there is no sender or no recipient.
    pub fn build(self) -> Result<Mail, NotifyError> {
        let from = self
            .from
            .as_deref()
            .ok_or_else(|| NotifyError::InvalidMail("it has no sender (from)".into()))
            .and_then(MailAddress::parse)?;
        let to = parse_all(&self.to)?;
        if to.is_empty() {
            return Err(NotifyError::InvalidMail("it has no recipient (to)".into()));
        }
        Ok(Mail {
            from,
            to,
            cc: parse_all(&self.cc)?,
            subject: one_line(&self.subject),
            body: self.body,
        })
    }
}

pub(crate) fn parse_all(addresses: &[String]) -> Result<Vec<MailAddress>, NotifyError> {
    addresses.iter().map(|a| MailAddress::parse(a)).collect()
}

/// A subject is one line: header injection and folded subjects are not wanted.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::transport::stub::AsyncStubTransport;
    use lettre::AsyncTransport;

    fn mail() -> Mail {
        Mail::builder()
            .from("pyscaler <ops@example.com>")
            .to("alice@example.com")
            .to("bob@example.com")
            .cc("Carol <carol@example.com>")
            .subject("web:\n 2 nodes\r\nadded")
            .body("web-03\nweb-04\n")
            .build()
            .expect("a valid mail")
    }

    #[test]
    fn malformed_addresses_are_named_in_the_error() {
        let e = Mail::builder()
            .from("ops@example.com")
            .to("alice@example.com")
            .to("not an address")
            .build()
            .expect_err("a malformed recipient");
        assert!(
            matches!(&e, NotifyError::InvalidAddress { address, .. } if address == "not an address"),
            "{e:?}"
        );
        assert!(e.to_string().contains("`not an address`"), "{e}");
    }

    #[test]
    fn an_invalid_address_says_what_is_wrong_with_it() {
        for (address, says) in [
            ("", "empty"),
            ("ops.example.com", "no `@`"),
            ("ops@", "domain is missing"),
            ("@example.com", "before the `@`"),
            ("ops@@example.com", "more than one `@`"),
            ("ops@example..com", "empty part"),
            ("Ops <ops@example.com", "no matching `>`"),
            ("ops team@example.com", "contains a space"),
        ] {
            let e = MailAddress::parse(address).expect_err(address);
            let text = e.to_string();
            assert!(text.contains(says), "{address:?}: {text}");
            assert!(!text.contains("Invalid input"), "{address:?}: {text}");
        }
    }

    #[test]
    fn a_mail_needs_a_sender_and_a_recipient() {
        let no_to = Mail::builder().from("ops@example.com").build();
        assert!(matches!(no_to, Err(NotifyError::InvalidMail(m)) if m.contains("recipient")));
        let no_from = Mail::builder().to("ops@example.com").build();
        assert!(matches!(no_from, Err(NotifyError::InvalidMail(m)) if m.contains("sender")));
    }

    #[test]
    fn the_subject_is_kept_on_one_line() {
        assert_eq!(mail().subject(), "web: 2 nodes added");
    }

    #[tokio::test]
    async fn every_recipient_is_in_the_envelope_and_the_headers() {
        let stub = AsyncStubTransport::new_ok();
        stub.send(mail().to_message().expect("message"))
            .await
            .expect("stub accepts");
        let sent = stub.messages().await;
        assert_eq!(sent.len(), 1);
        let (envelope, raw) = &sent[0];
        let rcpts: Vec<String> = envelope.to().iter().map(|a| a.to_string()).collect();
        assert_eq!(
            rcpts,
            ["alice@example.com", "bob@example.com", "carol@example.com"]
        );
        assert_eq!(
            envelope.from().map(|a| a.to_string()).as_deref(),
            Some("ops@example.com")
        );
        assert!(
            raw.contains("From: pyscaler <ops@example.com>\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("To: alice@example.com, bob@example.com\r\n"),
            "{raw}"
        );
        assert!(raw.contains("Cc: Carol <carol@example.com>\r\n"), "{raw}");
        assert!(raw.contains("Subject: web: 2 nodes added\r\n"), "{raw}");
        assert!(raw.contains("Content-Type: text/plain"), "{raw}");
    }
}
