//! Malformed Tomcat cluster files ([`pyscaler_testkit::toml_fuzz`]), from
//! the shipped `tomcat/aws.toml`: never a panic, always a [`ConfigError`]
//! naming the file; a wrong type or an unknown key (in any table) is
//! refused, naming the key; no error shows the SMTP password.

use std::path::Path;

use pyscaler_testkit::toml_fuzz::{check_loader, Expect};

use super::*;

const PASSWORD: &str = "s3cr3t-hunter2";

/// The shipped sample, with the agent for SSH (its key file is a
/// placeholder) and the SMTP password inline.
fn sample() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tomcat/aws.toml");
    let text = std::fs::read_to_string(path).expect("the shipped sample");
    text.replace(
        r#"auth = { method = "key-file", path = "/home/ops/.ssh/id_ed25519" }"#,
        r#"auth = { method = "agent" }"#,
    )
    .replace(
        r#"password_env = "PYSCALER_SMTP_PASSWORD""#,
        &format!(r#"password = "{PASSWORD}""#),
    )
}

#[test]
fn a_malformed_cluster_file_is_a_config_error_naming_the_key_never_the_password() {
    let dir = tempfile::tempdir().expect("a folder");
    let path = dir.path().join("cluster.toml");
    let sample = sample();
    assert!(sample.contains(PASSWORD) && sample.contains(r#"method = "agent""#));
    let problems = check_loader(
        &sample,
        60,
        Expect {
            secrets: &[PASSWORD],
            free_tables: &["tags"],
        },
        |text| {
            std::fs::write(&path, text).expect("write the variant");
            let e = TomcatClusterConfig::load(&path);
            if let Err(e) = &e {
                assert_eq!(e.path(), path, "{e:?}");
                assert!(!matches!(e, ConfigError::Unreadable { .. }), "{e:?}");
            }
            e
        },
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
