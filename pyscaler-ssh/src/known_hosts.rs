//! `known_hosts`: which key types are stored for a host, checking and recording keys.
//!
//! Entries are looked up by their exact `known_hosts` name: `host` for port
//! 22 and `[host]:port` otherwise, so an entry for port 22 never vouches for
//! another port (libssh2's own port lookup falls back to the bare host name).

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use base64::Engine;
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, Session};

use crate::SshError;

/// Serializes read-check-append of `known_hosts` files within this process
/// (a hundred first connections at once must not write a hundred lines).
pub(crate) static FILE_LOCK: Mutex<()> = Mutex::new(());

/// The `known_hosts` name of a server.
pub(crate) fn host_spec(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The lines of the file, or none when it does not exist.
fn read_lines(path: &Path) -> Result<Vec<String>, SshError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(SshError::KnownHosts {
            path: path.to_path_buf(),
            message: format!("cannot read it: {e}"),
        }),
    }
}

/// The key algorithms stored for `spec` in plain (not hashed) entries, in file order.
pub(crate) fn stored_key_types(path: &Path, spec: &str) -> Result<Vec<String>, SshError> {
    let mut types: Vec<String> = Vec::new();
    for line in read_lines(path)? {
        let mut fields = line.split_whitespace();
        let Some(hosts) = fields.next() else { continue };
        if hosts.starts_with('#') || hosts.starts_with('@') || hosts.starts_with('|') {
            continue;
        }
        let Some(alg) = fields.next() else { continue };
        if hosts.split(',').any(|h| h == spec) && !types.iter().any(|t| t == alg) {
            types.push(alg.to_owned());
        }
    }
    Ok(types)
}

/// The host-key algorithm preference that makes the server offer a stored key type.
pub(crate) fn algorithm_prefs(stored: &[String]) -> Option<String> {
    let prefs: Vec<&str> = stored
        .iter()
        .flat_map(|t| match t.as_str() {
            "ssh-rsa" => vec!["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"],
            "ssh-ed25519"
            | "ecdsa-sha2-nistp256"
            | "ecdsa-sha2-nistp384"
            | "ecdsa-sha2-nistp521"
            | "ssh-dss" => vec![t.as_str()],
            // Certificates and security-key types: let libssh2 choose.
            _ => vec![],
        })
        .collect();
    (!prefs.is_empty()).then(|| prefs.join(","))
}

/// The `known_hosts` algorithm name of a key type.
pub(crate) fn type_name(t: HostKeyType) -> Option<&'static str> {
    Some(match t {
        HostKeyType::Rsa => "ssh-rsa",
        HostKeyType::Dss => "ssh-dss",
        HostKeyType::Ecdsa256 => "ecdsa-sha2-nistp256",
        HostKeyType::Ecdsa384 => "ecdsa-sha2-nistp384",
        HostKeyType::Ecdsa521 => "ecdsa-sha2-nistp521",
        HostKeyType::Ed25519 => "ssh-ed25519",
        HostKeyType::Unknown => return None,
    })
}

/// `SHA256:...` as OpenSSH prints it.
pub(crate) fn fingerprint(session: &Session) -> String {
    match session.host_key_hash(HashType::Sha256) {
        Some(hash) => format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)
        ),
        None => "an unknown key".to_owned(),
    }
}

/// What the file says of the key the server offered.
pub(crate) enum Verdict {
    Known,
    Changed,
    Unknown,
}

/// Checks the server's key against the entries for exactly `spec`.
pub(crate) fn check(
    session: &Session,
    path: &Path,
    spec: &str,
    key: &[u8],
) -> Result<Verdict, SshError> {
    let mut known = session.known_hosts().map_err(|e| SshError::KnownHosts {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    for line in read_lines(path)? {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('@') {
            continue;
        }
        // A line libssh2 cannot parse (a newer key type) is skipped, as OpenSSH does.
        let _ = known.read_str(trimmed, KnownHostFileKind::OpenSSH);
    }
    // Port -1: `spec` is matched as written, `[host]:port` included (hashed entries too).
    Ok(match known.check(spec, key) {
        CheckResult::Match => Verdict::Known,
        CheckResult::Mismatch => Verdict::Changed,
        CheckResult::NotFound => Verdict::Unknown,
        CheckResult::Failure => {
            return Err(SshError::KnownHosts {
                path: path.to_path_buf(),
                message: "libssh2 could not check the host key".into(),
            })
        }
    })
}

/// Appends an entry for `spec` with the offered key.
pub(crate) fn record(
    path: &Path,
    spec: &str,
    key: &[u8],
    key_type: HostKeyType,
) -> Result<(), SshError> {
    let err = |message: String| SshError::KnownHosts {
        path: path.to_path_buf(),
        message,
    };
    let alg = type_name(key_type).ok_or_else(|| err("the server's key type is unknown".into()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create its folder: {e}")))?;
    }
    let line = format!(
        "{spec} {alg} {}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| err(format!("cannot open it for writing: {e}")))?;
    file.write_all(line.as_bytes())
        .map_err(|e| err(format!("cannot write it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_22_entries_are_distinct_from_other_ports() {
        assert_eq!(host_spec("10.0.0.5", 22), "10.0.0.5");
        assert_eq!(host_spec("10.0.0.5", 2222), "[10.0.0.5]:2222");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(
            &path,
            "# comment\n10.0.0.5 ssh-ed25519 AAAA\n[10.0.0.5]:2222,other ecdsa-sha2-nistp256 BBBB\n\
             |1|hashed= ssh-rsa CCCC\n[10.0.0.5]:2222 ssh-rsa DDDD\n",
        )
        .unwrap();
        assert_eq!(
            stored_key_types(&path, "[10.0.0.5]:2222").unwrap(),
            ["ecdsa-sha2-nistp256", "ssh-rsa"]
        );
        assert_eq!(
            stored_key_types(&path, "10.0.0.5").unwrap(),
            ["ssh-ed25519"]
        );
        assert!(stored_key_types(&dir.path().join("none"), "x")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn rsa_entries_prefer_sha2_signatures() {
        assert_eq!(
            algorithm_prefs(&["ssh-rsa".into(), "ssh-ed25519".into()]).as_deref(),
            Some("rsa-sha2-512,rsa-sha2-256,ssh-rsa,ssh-ed25519")
        );
        assert_eq!(
            algorithm_prefs(&["sk-ssh-ed25519@openssh.com".into()]),
            None
        );
    }
}
