//! Malformed SSH configurations ([`pyscaler_testkit::toml_fuzz`]), loaded
//! as an application does (parsed, then validated): never a panic; a
//! wrong type or an unknown key (in the `auth` table too) is refused,
//! naming the key.

use pyscaler_testkit::toml_fuzz::{check_loader, Expect};

use crate::SshConfig;

const SAMPLE: &str = r#"user = "admin"
port = 2222
auth = { method = "agent" }
host_keys = "accept-new"
known_hosts = "/home/ops/.ssh/known_hosts"
known_hosts_name = "node-id"
connect_timeout = "5s"
auth_timeout = "5s"
command_timeout = "10m"
unreachable_timeout = "3s"
output_cap = 65536
proxy_command = "ssh -W %h:%p ops@bastion.example.com"
"#;

fn load(text: &str) -> Result<SshConfig, Box<dyn std::error::Error>> {
    let config: SshConfig = toml::from_str(text)?;
    config.validate()?;
    Ok(config)
}

#[test]
fn a_malformed_ssh_config_is_a_typed_error_naming_the_key() {
    let problems = check_loader(SAMPLE, 120, Expect::default(), load);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The key-file form of `auth` too.
    let key_file = SAMPLE.replace(
        r#"auth = { method = "agent" }"#,
        r#"auth = { method = "key-file", path = "/nonexistent/id_ed25519" }"#,
    );
    let problems = check_loader(&key_file, 40, Expect::default(), |text| {
        toml::from_str::<SshConfig>(text)
    });
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
