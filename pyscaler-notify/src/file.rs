//! A mailer that writes `.eml` files: for local runs, with no server.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tracing::info;

use crate::{Mail, Mailer, NotifyError, Receipt};

/// Writes each mail as an RFC 5322 `.eml` file into a folder (created when
/// missing), named `<unix millis>-<pid>-<sequence>.eml` so files sort in the
/// order they were sent. Any mail client opens them.
///
/// ```
/// use pyscaler_notify::{FileMailer, Mailer};
///
/// let mailer = FileMailer::new("target/mail");
/// assert_eq!(mailer.destination(), "folder target/mail");
/// ```
#[derive(Debug, Clone)]
pub struct FileMailer {
    dir: PathBuf,
    sequence: Arc<AtomicU64>,
}

impl FileMailer {
    /// A mailer writing into `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            sequence: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The folder mail is written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> NotifyError + '_ {
        move |source| NotifyError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

#[async_trait]
impl Mailer for FileMailer {
    fn destination(&self) -> String {
        format!("folder {}", self.dir.display())
    }

    async fn send(&self, mail: &Mail) -> Result<Receipt, NotifyError> {
        let raw = mail.to_message()?.formatted();
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(Self::io_error(&self.dir))?;
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let name = format!("{millis}-{}-{n:04}", std::process::id());
        let path = self.dir.join(format!("{name}.eml"));
        // Written aside, then renamed: a reader never sees half a mail.
        let partial = self.dir.join(format!(".{name}.partial"));
        tokio::fs::write(&partial, &raw)
            .await
            .map_err(Self::io_error(&partial))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(Self::io_error(&path))?;
        info!(path = %path.display(), to = mail.to().len(), "Mail written.");
        Ok(Receipt::new(format!("written to {}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyscaler_core::{Classify, ErrorKind};

    #[tokio::test]
    async fn a_file_in_place_of_the_folder_is_a_typed_error() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let blocker = tmp.path().join("mail");
        std::fs::write(&blocker, "not a folder").expect("write");
        let mail = Mail::builder()
            .from("ops@example.com")
            .to("a@example.com")
            .build()
            .expect("valid");
        let e = FileMailer::new(&blocker)
            .send(&mail)
            .await
            .expect_err("cannot create a folder over a file");
        assert!(matches!(e, NotifyError::Io { .. }), "{e:?}");
        assert!(!e.is_retryable());
        assert_ne!(e.kind(), ErrorKind::Transient);
    }
}
