//! Shell quoting: a node name, a tag or a script argument is always one word.

use crate::SshError;

/// Quotes `word` for a POSIX shell so that it stays one word and nothing in it
/// is interpreted (no `$`, `;`, backquote or newline has any effect).
///
/// ```
/// assert_eq!(pyscaler_ssh::quote("web-01").unwrap(), "web-01");
/// assert_eq!(pyscaler_ssh::quote("a b; rm -rf /").unwrap(), "'a b; rm -rf /'");
/// ```
///
/// # Errors
/// [`SshError::InvalidInput`] when `word` holds a NUL byte, which no shell can
/// pass through.
pub fn quote(word: &str) -> Result<String, SshError> {
    shlex::try_quote(word)
        .map(|q| q.into_owned())
        .map_err(|_| SshError::InvalidInput(format!("{word:?} contains a NUL byte")))
}

/// A command line of a program and its arguments, each quoted.
///
/// # Errors
/// [`SshError::InvalidInput`] when a word holds a NUL byte.
pub fn command_line<I, S>(program: &str, args: I) -> Result<String, SshError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut line = quote(program)?;
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg.as_ref())?);
    }
    Ok(line)
}

/// `text` with every character but `[A-Za-z0-9._-]` replaced by `_`: usable in a file name.
pub(crate) fn file_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Checks that `name` is a valid environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub(crate) fn check_env_name(name: &str) -> Result<(), SshError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(SshError::InvalidInput(format!(
            "{name:?} is not a valid environment variable name"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_checked() {
        assert!(check_env_name("APP_HOME").is_ok());
        assert!(check_env_name("_x1").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_env_name("A;B").is_err());
        assert!(check_env_name("").is_err());
    }

    #[test]
    fn file_safe_keeps_names_plain() {
        assert_eq!(file_safe("i-0abc"), "i-0abc");
        assert_eq!(file_safe("../a b/$x"), ".._a_b__x");
    }

    #[test]
    fn nul_bytes_are_refused() {
        assert!(quote("a\0b").is_err());
    }

    #[test]
    fn command_lines_quote_every_word() {
        assert_eq!(
            command_line("deploy.sh", ["web 01", "$(id)", ""]).unwrap(),
            "deploy.sh 'web 01' '$(id)' ''"
        );
    }
}
