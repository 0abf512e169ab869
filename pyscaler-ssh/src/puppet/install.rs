//! Installing Puppet on a node that lacks it: the OS families and their commands.

use serde::{Deserialize, Serialize};

/// An operating-system family, as `/etc/os-release` names it (`ID` and `ID_LIKE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum OsFamily {
    /// Debian, Ubuntu and their derivatives (`debian`).
    Debian,
    /// RHEL, CentOS, Rocky, Alma, Fedora, Amazon Linux (`rhel`, `fedora`).
    RedHat,
    /// SUSE and openSUSE (`suse`).
    Suse,
    /// Alpine (`alpine`).
    Alpine,
}

impl OsFamily {
    /// The `os-release` words that identify the family.
    fn ids(self) -> &'static [&'static str] {
        match self {
            Self::Debian => &["debian", "ubuntu"],
            Self::RedHat => &["rhel", "fedora", "centos", "amzn"],
            Self::Suse => &["suse", "opensuse", "sles"],
            Self::Alpine => &["alpine"],
        }
    }
}

/// The default install commands: the distribution's `puppet` package.
pub(super) fn default_install() -> Vec<(OsFamily, String)> {
    vec![
        (
            OsFamily::Debian,
            "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q puppet"
                .into(),
        ),
        (
            OsFamily::RedHat,
            "dnf install -y puppet || yum install -y puppet".into(),
        ),
        (
            OsFamily::Suse,
            "zypper --non-interactive install puppet".into(),
        ),
        (OsFamily::Alpine, "apk add --no-cache puppet".into()),
    ]
}

/// The script that installs Puppet when it is missing (exit 0 when present).
pub(super) fn install_script(install: &[(OsFamily, String)]) -> String {
    let mut script = String::from(
        "command -v puppet >/dev/null 2>&1 && exit 0\n\
         . /etc/os-release 2>/dev/null\n\
         case \" $ID $ID_LIKE \" in\n",
    );
    for (family, command) in install {
        let pattern: Vec<String> = family
            .ids()
            .iter()
            .map(|id| format!("*\" {id} \"*"))
            .collect();
        script.push_str(&format!("  {}) {command} ;;\n", pattern.join("|")));
    }
    script.push_str(
        "  *) echo \"no Puppet install command for this OS ($ID)\" >&2; exit 3 ;;\nesac\n",
    );
    script
}
