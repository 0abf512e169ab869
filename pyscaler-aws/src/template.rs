//! EC2 launch templates: which one a profile names, and which version.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::AwsError;

/// A launch template a profile launches from: by id or by name, at a version.
///
/// In TOML, `launch_template = { id = "lt-0abc...", version = "$Latest" }` or
/// `{ name = "web", version = "3" }`; `version` is `$Default` when left out.
/// The profile's own fields (`image_id`, `instance_types`, `key_name`,
/// `security_group_ids`, `subnet_ids`, `user_data`, `iam_instance_profile`,
/// `tags`) override the template's: what the profile leaves out comes from
/// the template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTemplate", into = "RawTemplate")]
pub struct LaunchTemplate {
    /// Which template.
    pub template: TemplateRef,
    /// Which of its versions.
    pub version: TemplateVersion,
}

/// How a launch template is named.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TemplateRef {
    /// By its id (`lt-0abc...`).
    Id(String),
    /// By its name.
    Name(String),
}

/// Which version of a launch template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TemplateVersion {
    /// The template's default version (`$Default`).
    #[default]
    Default,
    /// Its latest version (`$Latest`).
    Latest,
    /// A version by number (1 and up).
    Number(u64),
}

impl TemplateVersion {
    /// As EC2 writes it: `$Default`, `$Latest`, `3`.
    pub fn as_api(&self) -> String {
        match self {
            Self::Default => "$Default".to_owned(),
            Self::Latest => "$Latest".to_owned(),
            Self::Number(n) => n.to_string(),
        }
    }
}

impl fmt::Display for LaunchTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.template {
            TemplateRef::Id(id) => write!(f, "{id}")?,
            TemplateRef::Name(name) => write!(f, "`{name}`")?,
        }
        write!(f, " version {}", self.version.as_api())
    }
}

impl LaunchTemplate {
    /// The template with this id, at its default version.
    pub fn by_id(id: impl Into<String>) -> Self {
        Self {
            template: TemplateRef::Id(id.into()),
            version: TemplateVersion::Default,
        }
    }

    /// The template with this name, at its default version.
    pub fn by_name(name: impl Into<String>) -> Self {
        Self {
            template: TemplateRef::Name(name.into()),
            version: TemplateVersion::Default,
        }
    }

    /// At this version.
    pub fn version(mut self, version: TemplateVersion) -> Self {
        self.version = version;
        self
    }

    /// Checks the id or name and the version, before any call.
    pub(crate) fn validate(&self) -> Result<(), AwsError> {
        let bad = |message: String| AwsError::invalid("launch_template", message);
        match &self.template {
            TemplateRef::Id(id) => {
                let ok = id
                    .strip_prefix("lt-")
                    .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()));
                if !ok {
                    return Err(bad(format!(
                        "`{id}` is not a launch template id like lt-0abc123"
                    )));
                }
            }
            // EC2: 3-128 characters, letters, digits and ( ) . / _ -
            TemplateRef::Name(name) => {
                let ok = (3..=128).contains(&name.len())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "()./_-".contains(c));
                if !ok {
                    return Err(bad(format!(
                        "`{name}` is not a launch template name (3-128 letters, digits, ( ) . / _ -)"
                    )));
                }
            }
        }
        if self.version == TemplateVersion::Number(0) {
            return Err(bad("version 0: versions count from 1".to_owned()));
        }
        Ok(())
    }
}

/// What EC2 says of a launch template (DescribeLaunchTemplates).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TemplateInfo {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its default version.
    pub default_version: u64,
    /// Its latest version.
    pub latest_version: u64,
}

/// The template as written in a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

impl TryFrom<RawTemplate> for LaunchTemplate {
    type Error = AwsError;
    fn try_from(raw: RawTemplate) -> Result<Self, AwsError> {
        let bad = |message: &str| AwsError::invalid("launch_template", message);
        let template = match (raw.id, raw.name) {
            (Some(id), None) => TemplateRef::Id(id),
            (None, Some(name)) => TemplateRef::Name(name),
            (Some(_), Some(_)) => {
                return Err(bad("names both an `id` and a `name`: one of the two"))
            }
            (None, None) => return Err(bad("needs an `id` (lt-...) or a `name`")),
        };
        let version = match raw.version.as_deref() {
            None | Some("$Default") => TemplateVersion::Default,
            Some("$Latest") => TemplateVersion::Latest,
            Some(n) => TemplateVersion::Number(n.parse().map_err(|_| {
                AwsError::invalid(
                    "launch_template",
                    format!("version `{n}` is not `$Default`, `$Latest` or a number"),
                )
            })?),
        };
        let t = Self { template, version };
        t.validate()?;
        Ok(t)
    }
}

impl From<LaunchTemplate> for RawTemplate {
    fn from(t: LaunchTemplate) -> Self {
        let (id, name) = match t.template {
            TemplateRef::Id(id) => (Some(id), None),
            TemplateRef::Name(name) => (None, Some(name)),
        };
        Self {
            id,
            name,
            version: (t.version != TemplateVersion::Default).then(|| t.version.as_api()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LaunchTemplate, String> {
        #[derive(Deserialize)]
        struct Doc {
            launch_template: LaunchTemplate,
        }
        toml::from_str::<Doc>(text)
            .map(|d| d.launch_template)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn a_template_is_named_by_id_or_name_at_a_version() {
        assert_eq!(
            parse(r#"launch_template = { id = "lt-0abc123" }"#),
            Ok(LaunchTemplate::by_id("lt-0abc123"))
        );
        assert_eq!(
            parse(r#"launch_template = { name = "web", version = "$Latest" }"#),
            Ok(LaunchTemplate::by_name("web").version(TemplateVersion::Latest))
        );
        assert_eq!(
            parse(r#"launch_template = { name = "web", version = "3" }"#),
            Ok(LaunchTemplate::by_name("web").version(TemplateVersion::Number(3)))
        );
        let t = LaunchTemplate::by_name("web").version(TemplateVersion::Number(3));
        assert_eq!(t.to_string(), "`web` version 3");
    }

    #[test]
    fn a_bad_template_is_refused_naming_what_is_wrong() {
        for (text, wanted) in [
            (
                r#"launch_template = { id = "lt-1", name = "web" }"#,
                "one of the two",
            ),
            (r#"launch_template = { version = "3" }"#, "needs an `id`"),
            (
                r#"launch_template = { id = "web" }"#,
                "`web` is not a launch template id",
            ),
            (
                r#"launch_template = { name = "w" }"#,
                "`w` is not a launch template name",
            ),
            (
                r#"launch_template = { name = "web", version = "latest" }"#,
                "version `latest`",
            ),
            (
                r#"launch_template = { name = "web", version = "0" }"#,
                "version 0",
            ),
            (
                r#"launch_template = { name = "web", ver = "1" }"#,
                "unknown field",
            ),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }
}
