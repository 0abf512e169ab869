//! Malformed SMTP configurations ([`pyscaler_testkit::toml_fuzz`]): never
//! a panic; a wrong type or an unknown key is refused, naming the key; and
//! no error shows the password, not even a file cut inside it.

use pyscaler_testkit::toml_fuzz::{check_loader, Expect};

use crate::{NotifyError, SmtpConfig};

const PASSWORD: &str = "s3cr3t-hunter2";

fn sample() -> String {
    format!(
        r#"host = "smtp.example.com"
port = 587
tls = "starttls"
username = "pyscaler"
password = "{PASSWORD}"
ca_file = "/etc/ssl/relay-ca.pem"
connect_timeout = "5s"
send_timeout = "30s"
from = "pyscaler <ops@example.com>"
to = ["oncall@example.com", "Öps <ops@example.com>"]
cc = ["lead@example.com"]
"#
    )
}

#[test]
fn a_malformed_smtp_config_is_a_typed_error_naming_the_key_never_the_password() {
    let problems = check_loader(
        &sample(),
        200,
        Expect {
            secrets: &[PASSWORD],
            ..Expect::default()
        },
        |text| {
            let e = SmtpConfig::from_toml(text);
            if let Err(e) = &e {
                assert!(matches!(e, NotifyError::InvalidConfig(_)), "{e:?}");
            }
            e
        },
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
