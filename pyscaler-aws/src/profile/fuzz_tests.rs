//! Malformed EC2 profiles ([`pyscaler_testkit::toml_fuzz`]): never a
//! panic; a wrong type or an unknown key is refused, naming the key.

use pyscaler_testkit::toml_fuzz::{check_loader, Expect};

use crate::{AwsError, Ec2Profile};

/// The `[ec2]` table of the shipped `examples/tomcat/aws.toml`, as a file of its own.
const SAMPLE: &str = r#"region = "eu-west-1"
image_id = "ami-0123456789abcdef0"          # a Debian 12 AMI
instance_types = ["t3.small", "t3a.small"]
key_name = "ops"
security_group_ids = ["sg-0123456789abcdef0"]
subnet_ids = ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
load_balancers = [
    { target_group = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef", port = 8080 },
]
tags = { team = "wéb" }

[ssh]
via = "private_ip"
user = "admin"
host_keys = "console-output"
"#;

#[test]
fn a_malformed_profile_is_a_typed_error_naming_the_key() {
    let problems = check_loader(
        SAMPLE,
        120,
        Expect {
            free_tables: &["tags"],
            ..Expect::default()
        },
        |text| {
            let e = Ec2Profile::from_toml(text);
            if let Err(e) = &e {
                assert!(matches!(e, AwsError::InvalidSetting { .. }), "{e:?}");
            }
            e
        },
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
