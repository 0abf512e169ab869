//! The checks every profile passes before anything reaches AWS.

use base64::Engine;

use super::{Fields, SshVia};
use crate::AwsError;

/// The largest user data EC2 accepts, once base64-encoded.
const MAX_USER_DATA_ENCODED: usize = 16 * 1024;

pub(super) fn validate(f: &Fields) -> Result<(), AwsError> {
    let bad = |field: &str, message: String| AwsError::invalid(field, message);
    let is_id = |s: &str, prefix: &str| {
        s.strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric()))
    };
    if f.region.is_empty()
        || !f
            .region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(bad(
            "region",
            format!("`{}` is not a region name like us-east-1", f.region),
        ));
    }
    if let Some(url) = &f.endpoint_url {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(
                "endpoint_url",
                format!("`{url}` is not an http(s) URL"),
            ));
        }
    }
    match (&f.image_id, &f.launch_template) {
        (Some(image), _) if !is_id(image, "ami-") => {
            return Err(bad(
                "image_id",
                format!("`{image}` is not an AMI id like ami-0abc123"),
            ));
        }
        (None, None) => {
            return Err(bad(
                "image_id",
                "is missing: set `image_id`, or a `launch_template` that names the image"
                    .to_owned(),
            ));
        }
        _ => {}
    }
    if let Some(template) = &f.launch_template {
        template.validate()?;
    }
    // A list of one is named as the profile most likely spelled it.
    let types_field = if f.instance_types.len() > 1 {
        "instance_types"
    } else {
        "instance_type"
    };
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    for instance_type in &f.instance_types {
        let (family, size) = instance_type.split_once('.').unwrap_or(("", ""));
        if !word(family) || !word(size) {
            return Err(bad(
                types_field,
                format!("`{instance_type}` is not an instance type like t3.small"),
            ));
        }
    }
    if let Some(twice) = first_repeated(&f.instance_types) {
        return Err(bad(types_field, format!("names `{twice}` twice")));
    }
    if f.key_name.as_deref().is_some_and(|k| k.trim().is_empty()) {
        return Err(bad("key_name", "is empty".to_owned()));
    }
    if let Some(sg) = f.security_group_ids.iter().find(|g| !is_id(g, "sg-")) {
        return Err(bad(
            "security_group_ids",
            format!("`{sg}` is not a security group id like sg-0abc123"),
        ));
    }
    let subnets_field = if f.subnet_ids.len() > 1 {
        "subnet_ids"
    } else {
        "subnet_id"
    };
    if let Some(subnet) = f.subnet_ids.iter().find(|s| !is_id(s, "subnet-")) {
        return Err(bad(
            subnets_field,
            format!("`{subnet}` is not a subnet id like subnet-0abc123"),
        ));
    }
    if let Some(twice) = first_repeated(&f.subnet_ids) {
        return Err(bad(subnets_field, format!("names `{twice}` twice")));
    }
    if let Some(data) = &f.user_data {
        let encoded = base64::engine::general_purpose::STANDARD.encode(data).len();
        if encoded > MAX_USER_DATA_ENCODED {
            return Err(bad(
                "user_data",
                format!("is {encoded} bytes once base64-encoded; EC2 takes at most {MAX_USER_DATA_ENCODED}"),
            ));
        }
    }
    if f.iam_instance_profile
        .as_deref()
        .is_some_and(|p| p.trim().is_empty())
    {
        return Err(bad("iam_instance_profile", "is empty".to_owned()));
    }
    for (k, v) in &f.tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 {
            return Err(bad(
                "tags",
                format!("`{k}`: keys are 1-128 characters, values at most 256"),
            ));
        }
        if k.starts_with("aws:") || k == "Name" || k.starts_with("pyscaler:") {
            return Err(bad(
                "tags",
                format!(
                    "`{k}` is reserved (aws:*, Name and pyscaler:* are set by pyscaler or AWS)"
                ),
            ));
        }
    }
    // 50 tags per resource; pyscaler adds 4 (Name, pyscaler:cluster, :run, :step).
    if f.tags.len() > 46 {
        return Err(bad(
            "tags",
            format!("{} tags; at most 46 (pyscaler adds 4)", f.tags.len()),
        ));
    }
    for balancer in &f.load_balancers {
        balancer.validate()?;
    }
    if let Some(twice) = f
        .load_balancers
        .iter()
        .enumerate()
        .find(|(i, b)| f.load_balancers[..*i].iter().any(|a| a.name() == b.name()))
        .map(|(_, b)| b.name())
    {
        return Err(bad("load_balancers", format!("names `{twice}` twice")));
    }
    if f.spot_fallback != crate::SpotFallback::None && f.market != crate::Market::Spot {
        return Err(bad(
            "spot_fallback",
            "is set without `market = \"spot\"`".to_owned(),
        ));
    }
    if f.ssh.user.is_empty() || f.ssh.user.chars().any(char::is_whitespace) {
        return Err(bad(
            "ssh.user",
            format!("`{}` is not a user name", f.ssh.user),
        ));
    }
    if f.ssh.port == 0 {
        return Err(bad("ssh.port", "is 0".to_owned()));
    }
    if let SshVia::Fixed { host } = &f.ssh.via {
        if host.trim().is_empty() {
            return Err(bad("ssh.via.fixed.host", "is empty".to_owned()));
        }
    }
    Ok(())
}

/// The first value that appears twice.
fn first_repeated(values: &[String]) -> Option<&str> {
    values
        .iter()
        .enumerate()
        .find(|(i, v)| values[..*i].contains(v))
        .map(|(_, v)| v.as_str())
}
