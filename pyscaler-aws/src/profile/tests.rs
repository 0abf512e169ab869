//! Ec2Profile's unit tests.

use super::*;
use crate::Instance;
use pyscaler_core::NodeAddress;

fn base() -> Ec2ProfileBuilder {
    Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
}

fn field_of(e: AwsError) -> String {
    match e {
        AwsError::InvalidSetting { field, message } => format!("{field}: {message}"),
        other => panic!("expected InvalidSetting, got {other}"),
    }
}

#[test]
fn bad_values_are_named_before_any_call() {
    let cases = [
        (base().build().map(|_| ()), None),
        (
            Ec2Profile::builder("us-east-1", "ami-", "t3.small")
                .build()
                .map(|_| ()),
            Some("image_id: `ami-`"),
        ),
        (
            Ec2Profile::builder("us-east-1", "ami-123", "large")
                .build()
                .map(|_| ()),
            Some("instance_type: `large`"),
        ),
        (
            base().security_group("default").build().map(|_| ()),
            Some("`default`"),
        ),
        (
            base().tag("Name", "x").build().map(|_| ()),
            Some("`Name` is reserved"),
        ),
        (
            base().tag("pyscaler:run", "x").build().map(|_| ()),
            Some("reserved"),
        ),
        (
            base().load_balancer("web_lb").build().map(|_| ()),
            Some("`web_lb`"),
        ),
        (base().ssh_user("").build().map(|_| ()), Some("ssh.user")),
        (
            base().user_data("x".repeat(13_000)).build().map(|_| ()),
            Some("base64"),
        ),
        (
            base().subnet_id("sub-1").build().map(|_| ()),
            Some("`sub-1`"),
        ),
    ];
    for (result, wanted) in cases {
        match (result, wanted) {
            (Ok(()), None) => {}
            (Err(e), Some(w)) => {
                let shown = field_of(e);
                assert!(shown.contains(w), "{shown} should contain {w}");
            }
            (Ok(()), Some(w)) => panic!("expected an error containing {w}"),
            (Err(e), None) => panic!("unexpected error {e}"),
        }
    }
}

#[test]
fn toml_profiles_are_validated_and_round_trip() {
    let p = Ec2Profile::from_toml(
        r#"
        region = "us-east-1"
        image_id = "ami-03cf127a"
        instance_type = "t3.small"
        load_balancer = "web-lb"
        [ssh]
        via = { fixed = { host = "127.0.0.1" } }
        user = "pyscaler"
        port = 2222
        "#,
    )
    .expect("valid profile");
    assert_eq!(p.load_balancer(), Some("web-lb"));
    let addr = p
        .ssh()
        .address_of(&Instance::default())
        .expect("fixed address");
    assert_eq!(addr, NodeAddress::new("127.0.0.1").with_port(2222));
    let again = Ec2Profile::from_toml(&toml::to_string(&p).expect("serialize")).expect("parse");
    assert_eq!(again, p);

    let e = Ec2Profile::from_toml(
        "region = \"us-east-1\"\nimage_id = \"ami-03cf127a\"\ninstance_type = \"t3.small\"\nimage = \"typo\"\n",
    )
    .expect_err("unknown field");
    assert!(e.to_string().contains("image"), "{e}");
    let e = Ec2Profile::from_toml(
        "region = \"us-east-1\"\nimage_id = \"ubuntu\"\ninstance_type = \"t3.small\"\n",
    )
    .expect_err("bad image");
    assert!(e.to_string().contains("`ubuntu`"), "{e}");
}

#[test]
fn user_data_stays_out_of_debug_output() {
    let p = base().user_data("TOKEN=hunter2").build().expect("profile");
    let shown = format!("{p:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<13 bytes>"), "{shown}");
    assert!(!format!("{:?}", base().user_data("TOKEN=hunter2")).contains("hunter2"));
}

#[test]
fn the_address_follows_the_profile() {
    let i = Instance {
        id: "i-1".into(),
        private_ip: Some("10.0.0.5".into()),
        public_dns: Some("ec2-1.example".into()),
        ..Instance::default()
    };
    let reach = |via| SshAccess {
        via,
        port: 2200,
        ..SshAccess::default()
    };
    assert_eq!(
        reach(SshVia::PrivateIp).address_of(&i).expect("private"),
        NodeAddress::new("10.0.0.5").with_port(2200)
    );
    assert_eq!(
        reach(SshVia::PublicDns).address_of(&i).expect("dns").host,
        "ec2-1.example"
    );
    let e = reach(SshVia::PublicIp)
        .address_of(&i)
        .expect_err("no public IP");
    assert_eq!(
        e.to_string(),
        "instance i-1 has no public IP (see the profile's `ssh.via`)"
    );
}

#[test]
fn a_fixed_address_takes_the_profiles_one_port_and_names_no_port_of_its_own() {
    let toml = |via: &str| {
        format!(
            "region = \"us-east-1\"\nimage_id = \"ami-03cf127a\"\ninstance_type = \"t3.small\"\n\
             [ssh]\nvia = {via}\nport = 2200\n"
        )
    };
    let p = Ec2Profile::from_toml(&toml(r#"{ fixed = { host = "127.0.0.1" } }"#))
        .expect("valid profile");
    assert_eq!(
        p.ssh().address_of(&Instance::default()).expect("fixed"),
        NodeAddress::new("127.0.0.1").with_port(2200)
    );
    // A second port beside `ssh.port` is refused, naming it.
    let e = Ec2Profile::from_toml(&toml(r#"{ fixed = { host = "127.0.0.1", port = 2222 } }"#))
        .expect_err("two ports");
    assert!(e.to_string().contains("port"), "{e}");
}

#[test]
fn a_target_group_is_named_by_its_arn_and_its_port_set_on_it() {
    let arn =
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
    let base = || Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small");
    let p = base()
        .target_group(arn)
        .target_port(8080)
        .build()
        .expect("valid profile");
    assert_eq!(p.target_group(), Some(arn));
    assert_eq!(p.target_port(), Some(8080));
    assert_eq!(
        p.load_balancers(),
        [crate::Balancer::target_group_on_port(arn, 8080)]
    );
    assert_eq!(p.load_balancer(), None);
    let again = Ec2Profile::from_toml(&toml::to_string(&p).expect("serialize")).expect("parse");
    assert_eq!(again, p);

    let err = |b: crate::Ec2ProfileBuilder| b.build().map(|_| ()).expect_err("refused").to_string();
    assert!(err(base().target_group("web-tg")).contains("not a target group ARN"));
    assert!(err(base().target_group(arn).target_group(arn)).contains("twice"));
    assert!(err(base().target_port(8080)).contains("without a `target_group`"));
    assert!(err(base().target_group(arn).target_port(0)).contains("target_port"));
}

#[test]
fn subnets_and_instance_types_load_in_either_spelling_and_not_both() {
    let head = "region = \"us-east-1\"\nimage_id = \"ami-03cf127a\"\n";
    let load = |rest: &str| Ec2Profile::from_toml(&format!("{head}{rest}"));

    // The single keys are lists of one.
    let one = load("instance_type = \"t3.small\"\nsubnet_id = \"subnet-a1\"\n").expect("old keys");
    assert_eq!(one.instance_types(), ["t3.small"]);
    assert_eq!(one.subnet_ids(), ["subnet-a1"]);
    let none = load("instance_type = \"t3.small\"\n").expect("no subnet");
    assert!(none.subnet_ids().is_empty());

    let many = load(
        "instance_types = [\"t3.small\", \"t3a.small\"]\nsubnet_ids = [\"subnet-a1\", \"subnet-b2\"]\n",
    )
    .expect("lists");
    assert_eq!(many.instance_type(), Some("t3.small"));
    assert_eq!(many.instance_types(), ["t3.small", "t3a.small"]);
    assert_eq!(many.subnet_ids(), ["subnet-a1", "subnet-b2"]);
    // Written back, each reads the same; a list of one keeps its old key.
    for p in [&one, &many] {
        let text = toml::to_string(p).expect("serialize");
        assert_eq!(&Ec2Profile::from_toml(&text).expect("parse"), p, "{text}");
    }
    let text = toml::to_string(&one).expect("serialize");
    assert!(text.contains("subnet_id = \"subnet-a1\""), "{text}");
    assert!(text.contains("instance_type = \"t3.small\""), "{text}");

    // The builder says the same.
    let built = base()
        .fallback_instance_type("t3a.small")
        .subnet_ids(["subnet-a1", "subnet-b2"])
        .build()
        .expect("built");
    assert_eq!(built, many);

    let refused = |rest: &str| field_of(load(rest).map(|_| ()).expect_err(rest));
    assert!(refused(
        "instance_type = \"t3.small\"\nsubnet_id = \"subnet-a1\"\nsubnet_ids = [\"subnet-b2\"]\n"
    )
    .contains("invalid subnet_ids: is set beside `subnet_id`"));
    assert!(
        refused("instance_type = \"t3.small\"\ninstance_types = [\"t3a.small\"]\n")
            .contains("invalid instance_types: is set beside `instance_type`")
    );
    assert!(refused("subnet_id = \"subnet-a1\"\n").contains("invalid instance_type: is missing"));
    assert!(refused("instance_types = [\"t3.small\", \"large\"]\n")
        .contains("instance_types: `large` is not an instance type"));
    assert!(refused("instance_types = [\"t3.small\", \"t3.small\"]\n")
        .contains("names `t3.small` twice"));
    assert!(
        refused("instance_type = \"t3.small\"\nsubnet_ids = [\"subnet-a1\", \"sub-2\"]\n")
            .contains("subnet_ids: `sub-2` is not a subnet id")
    );
    assert!(
        refused("instance_type = \"t3.small\"\nsubnet_ids = [\"subnet-a1\", \"subnet-a1\"]\n")
            .contains("names `subnet-a1` twice")
    );
}

#[test]
fn a_launch_template_stands_in_for_the_image_and_the_type() {
    let p = Ec2Profile::from_toml(
        "region = \"us-east-1\"\nlaunch_template = { name = \"web\", version = \"$Latest\" }\n",
    )
    .expect("a template alone");
    assert_eq!(
        p.launch_template(),
        Some(&crate::LaunchTemplate::by_name("web").version(crate::TemplateVersion::Latest))
    );
    assert_eq!(p.image_id(), None);
    assert!(p.instance_types().is_empty());
    let again = Ec2Profile::from_toml(&toml::to_string(&p).expect("serialize")).expect("parse");
    assert_eq!(again, p);
    // With overrides.
    let p = Ec2Profile::from_toml(
        "region = \"us-east-1\"\nimage_id = \"ami-03cf127a\"\ninstance_type = \"t3.small\"\n\
         launch_template = { id = \"lt-0abc123\" }\n",
    )
    .expect("a template with overrides");
    assert_eq!(p.image_id(), Some("ami-03cf127a"));
    assert_eq!(p.instance_type(), Some("t3.small"));

    let e = Ec2Profile::from_toml("region = \"us-east-1\"\ninstance_type = \"t3.small\"\n")
        .expect_err("no image");
    assert!(
        e.to_string().contains("invalid image_id: is missing"),
        "{e}"
    );
    let e = Ec2Profile::from_toml(
        "region = \"us-east-1\"\nlaunch_template = { id = \"lt-0abc123\", name = \"web\" }\n",
    )
    .expect_err("both");
    assert!(e.to_string().contains("one of the two"), "{e}");
}

#[test]
fn spot_is_a_market_and_its_fallback_needs_it() {
    let head =
        "region = \"us-east-1\"\nimage_id = \"ami-03cf127a\"\ninstance_type = \"t3.small\"\n";
    let p = Ec2Profile::from_toml(&format!(
        "{head}market = \"spot\"\nspot_fallback = \"on-demand\"\n"
    ))
    .expect("spot");
    assert_eq!(p.market(), crate::Market::Spot);
    assert_eq!(p.spot_fallback(), crate::SpotFallback::OnDemand);
    let again = Ec2Profile::from_toml(&toml::to_string(&p).expect("serialize")).expect("parse");
    assert_eq!(again, p);
    let plain = Ec2Profile::from_toml(head).expect("on-demand");
    assert_eq!(plain.market(), crate::Market::OnDemand);
    assert!(!toml::to_string(&plain)
        .expect("serialize")
        .contains("market"));

    let e = Ec2Profile::from_toml(&format!("{head}spot_fallback = \"on-demand\"\n"))
        .expect_err("fallback without spot");
    assert!(
        e.to_string()
            .contains("spot_fallback: is set without `market = \"spot\"`"),
        "{e}"
    );
    let e = Ec2Profile::from_toml(&format!("{head}market = \"reserved\"\n")).expect_err("market");
    assert!(e.to_string().contains("reserved"), "{e}");
}

#[test]
fn a_node_joins_several_load_balancers_listed_or_spelled_the_old_way() {
    use crate::Balancer;
    let arn =
        "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
    let head =
        "region = \"us-east-1\"\nimage_id = \"ami-03cf127a\"\ninstance_type = \"t3.small\"\n";
    let load = |rest: &str| Ec2Profile::from_toml(&format!("{head}{rest}"));

    // The list: a target group on a port, and a classic ELB, in this order.
    let both = load(&format!(
        "load_balancers = [{{ target_group = \"{arn}\", port = 8080 }}, {{ classic = \"web-lb\" }}]\n"
    ))
    .expect("list");
    assert_eq!(
        both.load_balancers(),
        [
            Balancer::target_group_on_port(arn, 8080),
            Balancer::classic("web-lb")
        ]
    );
    assert_eq!(both.load_balancer(), Some("web-lb"));
    assert_eq!(both.target_group(), Some(arn));
    assert_eq!(both.target_port(), Some(8080));
    // Written and read again, the same; built in code, the same.
    let again = Ec2Profile::from_toml(&toml::to_string(&both).expect("serialize")).expect("parse");
    assert_eq!(again, both);
    let built = Ec2Profile::builder("us-east-1", "ami-03cf127a", "t3.small")
        .target_group(arn)
        .target_port(8080)
        .load_balancer("web-lb")
        .build()
        .expect("built");
    assert_eq!(built, both);

    // The old key still loads, means a classic ELB, and is written back so.
    let old = load("load_balancer = \"web-lb\"\n").expect("old key");
    assert_eq!(old.load_balancers(), [Balancer::classic("web-lb")]);
    let text = toml::to_string(&old).expect("serialize");
    assert!(text.contains("load_balancer = \"web-lb\""), "{text}");
    assert!(!text.contains("load_balancers"), "{text}");
    // And the old single target group keys.
    let tg = load(&format!("target_group = \"{arn}\"\ntarget_port = 8080\n")).expect("tg keys");
    assert_eq!(
        tg.load_balancers(),
        [Balancer::target_group_on_port(arn, 8080)]
    );

    // Refusals name what is wrong.
    let err = |rest: &str| load(rest).map(|_| ()).expect_err("refused").to_string();
    assert!(
        err("load_balancer = \"a\"\nload_balancers = [{ classic = \"b\" }]\n")
            .contains("beside `load_balancer`")
    );
    assert!(err("load_balancers = [{ classic = \"a\", port = 80 }]\n")
        .contains("a port is for a target group"));
    assert!(err(&format!(
        "load_balancers = [{{ classic = \"a\", target_group = \"{arn}\" }}]\n"
    ))
    .contains("one each entry"));
    assert!(err("load_balancers = [{ port = 80 }]\n").contains("names neither"));
    assert!(
        err("load_balancers = [{ classic = \"a\" }, { classic = \"a\" }]\n")
            .contains("names `a` twice")
    );
    assert!(err("load_balancers = [{ classic = \"no_underscores\" }]\n")
        .contains("not a classic load balancer name"));
    assert!(err("load_balancers = [{ clasic = \"a\" }]\n").contains("clasic"));
}

#[test]
fn host_keys_are_read_from_the_console_output_when_the_profile_says_so() {
    let head =
        "region = \"us-east-1\"\nimage_id = \"ami-03cf127a\"\ninstance_type = \"t3.small\"\n";
    let load = |ssh: &str| Ec2Profile::from_toml(&format!("{head}[ssh]\n{ssh}"));
    let p = load("host_keys = \"console-output\"\n").expect("console-output");
    assert_eq!(p.ssh().host_keys, crate::HostKeySource::ConsoleOutput);
    let again = Ec2Profile::from_toml(&toml::to_string(&p).expect("serialize")).expect("parse");
    assert_eq!(again, p);
    // The default is written as nothing.
    let plain = load("").expect("default");
    assert_eq!(plain.ssh().host_keys, crate::HostKeySource::None);
    assert!(!toml::to_string(&plain)
        .expect("serialize")
        .contains("host_keys"));
    let e = load("host_keys = \"console\"\n").expect_err("unknown source");
    assert!(e.to_string().contains("console-output"), "{e}");
}
