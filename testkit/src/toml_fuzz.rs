//! Malformed variants of a valid TOML configuration, for the fuzz-style
//! tests of every config loader: the sample cut at many byte positions,
//! each value replaced by one of a wrong type, an unknown key put in each
//! table (inline tables included), and huge values (long strings, integers
//! past `i64`, deep nesting).
//!
//! The generator reads the sample line by line and knows only what a
//! sample needs: `[table]` / `[[array]]` headers and one-line
//! `key = value` pairs (a value may be an inline table or an array).
//!
//! ```
//! use pyscaler_testkit::toml_fuzz::{variants, Kind};
//!
//! let all = variants("name = \"web\"\n[ssh]\nport = 22\n", 100);
//! let wrong = all.iter().find(|v| v.kind == Kind::WrongType).unwrap();
//! assert_eq!(wrong.key.as_deref(), Some("name"));
//! assert!(wrong.text.starts_with("name = 12345"));
//! assert!(all.iter().any(|v| v.kind == Kind::UnknownKey && v.text.contains("[ssh]\npyscaler_unknown_key")));
//! ```

/// The key an unknown-key variant inserts.
pub const UNKNOWN_KEY: &str = "pyscaler_unknown_key";

/// What was done to the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// Cut at a byte position (maybe inside a multi-byte character: the
    /// text is then cut at the character boundary before it).
    Truncated,
    /// One value replaced by a value of another type. Must be refused,
    /// naming the key.
    WrongType,
    /// [`UNKNOWN_KEY`] inserted in one table. Must be refused, naming it.
    UnknownKey,
    /// A value replaced by a huge one (a long string, an integer past
    /// `i64`, deeply nested arrays or tables). May be accepted or refused,
    /// never panic.
    Huge,
}

/// One malformed variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// What was done.
    pub kind: Kind,
    /// The key the error must name (for [`Kind::WrongType`] and
    /// [`Kind::UnknownKey`]): the last segment of the key, as a message says it.
    pub key: Option<String>,
    /// For [`Kind::UnknownKey`], the table it went into (`ec2.ssh`, or an
    /// inline table's key; `None`: the top): a test exempts the tables
    /// whose keys are free (tags).
    pub table: Option<String>,
    /// The text to load.
    pub text: String,
}

/// A `key = value` pair of the sample, on lines `line..=end` (an array
/// may run over several lines).
struct Pair<'a> {
    line: usize,
    end: usize,
    indent: &'a str,
    key: &'a str,
    value: &'a str,
}

/// How much deeper in brackets `text` ends than it starts (strings and
/// comments not looked into: a sample keeps brackets out of them).
fn depth(text: &str) -> i32 {
    text.chars()
        .map(|c| match c {
            '[' | '{' => 1,
            ']' | '}' => -1,
            _ => 0,
        })
        .sum()
}

fn pairs<'a>(lines: &[&'a str]) -> Vec<Pair<'a>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let text = lines[i];
        let trimmed = text.trim_start();
        let start = i;
        i += 1;
        if trimmed.starts_with('#') || trimmed.starts_with('[') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            continue;
        };
        let code = value.split(" #").next().unwrap_or(value);
        let mut open = depth(code);
        while open > 0 && i < lines.len() {
            open += depth(lines[i].split(" #").next().unwrap_or(lines[i]));
            i += 1;
        }
        out.push(Pair {
            line: start,
            end: i - 1,
            indent: &text[..text.len() - trimmed.len()],
            key: key.trim(),
            value: value.trim(),
        });
    }
    out
}

/// The last segment of a dotted key, without quotes (`ssh.port` → `port`).
fn last_segment(key: &str) -> String {
    key.rsplit('.')
        .next()
        .unwrap_or(key)
        .trim()
        .trim_matches('"')
        .to_owned()
}

/// A value of another type than `value`'s.
fn wrong_type(value: &str) -> &'static str {
    match value.as_bytes().first() {
        Some(b'"' | b'\'') => "12345",
        Some(b'[') => "{ pyscaler = 1 }",
        Some(b'{') => "\"not a table\"",
        Some(b't' | b'f') => "\"maybe\"",
        _ => "\"not a number\"",
    }
}

/// `lines` with `lines[from..=to]` replaced by `replacement`.
fn replaced(lines: &[&str], from: usize, to: usize, replacement: &str) -> String {
    let mut out: Vec<&str> = lines[..from].to_vec();
    out.push(replacement);
    out.extend_from_slice(&lines[to + 1..]);
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Up to `cap` variants of each kind of the valid `sample`, spread over it
/// (every byte position when the sample is shorter than `cap`).
pub fn variants(sample: &str, cap: usize) -> Vec<Variant> {
    let mut out = Vec::new();
    let lines: Vec<&str> = sample.lines().collect();
    let pairs = pairs(&lines);

    // Truncated: `cap` positions spread over the text.
    let len = sample.len();
    let step = (len / cap.max(1)).max(1);
    for at in (0..len).step_by(step).take(cap) {
        let mut cut = at;
        while !sample.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(Variant {
            kind: Kind::Truncated,
            key: None,
            table: None,
            text: sample[..cut].to_owned(),
        });
    }

    // A wrong type for each value.
    for p in pairs.iter().take(cap) {
        let line = format!("{}{} = {}", p.indent, p.key, wrong_type(p.value));
        out.push(Variant {
            kind: Kind::WrongType,
            key: Some(last_segment(p.key)),
            table: None,
            text: replaced(&lines, p.line, p.end, &line),
        });
    }

    // An unknown key at the top, after each table header, in each inline table.
    let unknown = |text: String| Variant {
        kind: Kind::UnknownKey,
        key: Some(UNKNOWN_KEY.to_owned()),
        table: None,
        text,
    };
    let header_at = |i: usize, header: &str| replaced(&lines, i, i, header);
    out.push(unknown(format!("{UNKNOWN_KEY} = \"x\"\n{sample}")));
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with('[') {
            let header = format!("{line}\n{UNKNOWN_KEY} = \"x\"");
            let table = line.trim().trim_matches(['[', ']']).to_owned();
            out.push(Variant {
                table: Some(table),
                ..unknown(header_at(i, &header))
            });
        }
    }
    for p in pairs.iter().filter(|p| p.value.starts_with('{')) {
        let inner = p.value[1..].trim_start();
        let sep = if inner.starts_with('}') { "" } else { ", " };
        let line = format!(
            "{}{} = {{ {UNKNOWN_KEY} = \"x\"{sep}{inner}",
            p.indent, p.key
        );
        out.push(Variant {
            table: Some(last_segment(p.key)),
            ..unknown(replaced(&lines, p.line, p.line, &line))
        });
    }

    // Huge values in place of each value, and deep nesting at the top.
    let long = "x".repeat(1 << 20);
    for p in pairs.iter().take(cap) {
        for huge in [
            format!("\"{long}\""),
            "99999999999999999999999999999999".to_owned(),
            "-9223372036854775808".to_owned(),
            format!("{}1{}", "[".repeat(2_000), "]".repeat(2_000)),
        ] {
            let line = format!("{}{} = {huge}", p.indent, p.key);
            out.push(Variant {
                kind: Kind::Huge,
                key: Some(last_segment(p.key)),
                table: None,
                text: replaced(&lines, p.line, p.end, &line),
            });
        }
    }
    let deep_table = (0..2_000)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(".");
    out.push(Variant {
        kind: Kind::Huge,
        key: None,
        table: None,
        text: format!("{sample}\n[{deep_table}]\nk = 1\n"),
    });
    out.push(Variant {
        kind: Kind::Huge,
        key: None,
        table: None,
        text: format!("{sample}\n{} = \"{long}\"\n", "k".repeat(1 << 16)),
    });
    out
}

/// Every error message of `error` and its sources, joined: what a user
/// sees, and what a test searches for a key's name or a leaked secret.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error} / {error:?}");
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(&format!(" / {e} / {e:?}"));
        source = e.source();
    }
    text
}

/// What [`check_loader`] expects of a loader beyond "no panic".
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect<'a> {
    /// Texts that must appear in no error (a password in the sample), nor
    /// their first 6 characters (a truncated file cuts a secret short).
    pub secrets: &'a [&'a str],
    /// Tables whose keys are free (`tags`): an unknown key there is data.
    pub free_tables: &'a [&'a str],
}

/// Loads every variant of `sample` (up to `cap` of each kind) with `load`
/// and returns what went wrong, one line each: a panic, an accepted wrong
/// type or unknown key, an error that does not name the key, an error that
/// shows a secret. The sample itself must load.
pub fn check_loader<T, E>(
    sample: &str,
    cap: usize,
    expect: Expect<'_>,
    load: impl Fn(&str) -> Result<T, E>,
) -> Vec<String>
where
    E: Into<Box<dyn std::error::Error>>,
{
    let text_of = |e: E| {
        let e: Box<dyn std::error::Error> = e.into();
        error_text(&*e)
    };
    let mut problems = Vec::new();
    if let Err(e) = load(sample) {
        problems.push(format!("the sample does not load: {}", text_of(e)));
    }
    for v in variants(sample, cap) {
        let what = format!(
            "{:?} {} (in {})",
            v.kind,
            v.key.as_deref().unwrap_or(""),
            v.table.as_deref().unwrap_or("the top")
        );
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(&v.text)));
        let error = match result {
            Err(_) => {
                problems.push(format!("{what}: panicked on {:?}", shorten(&v.text)));
                continue;
            }
            Ok(Ok(_)) => {
                let free = v
                    .table
                    .as_deref()
                    .is_some_and(|t| expect.free_tables.contains(&t));
                if matches!(v.kind, Kind::WrongType | Kind::UnknownKey) && !free {
                    problems.push(format!("{what}: accepted {:?}", shorten(&v.text)));
                }
                continue;
            }
            Ok(Err(e)) => text_of(e),
        };
        if matches!(v.kind, Kind::WrongType | Kind::UnknownKey) {
            if let Some(key) = &v.key {
                if !error.contains(key.as_str()) {
                    problems.push(format!(
                        "{what}: the error does not name `{key}`: {}",
                        shorten(&error)
                    ));
                }
            }
        }
        for secret in expect.secrets {
            let head: String = secret.chars().take(6).collect();
            if error.contains(head.as_str()) {
                problems.push(format!(
                    "{what}: the error shows a secret: {}",
                    shorten(&error)
                ));
            }
        }
    }
    problems
}

/// The first 300 characters of `text`, for a readable failure.
fn shorten(text: &str) -> String {
    let short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "name = \"wéb\"\ncount = 2\n[ssh]\nauth = { method = \"agent\" }\nports = [\n  22, # the usual\n]\n";

    #[test]
    fn each_kind_is_made_and_names_its_key() {
        let all = variants(SAMPLE, 1_000);
        let of = |k| all.iter().filter(move |v| v.kind == k);
        // Every byte position, cut back to a character boundary.
        assert_eq!(of(Kind::Truncated).count(), SAMPLE.len());
        let keys: Vec<_> = of(Kind::WrongType).filter_map(|v| v.key.clone()).collect();
        assert_eq!(keys, ["name", "count", "auth", "ports"]);
        assert!(of(Kind::WrongType).any(|v| v.text.contains("count = \"not a number\"")));
        // A value over several lines is replaced whole.
        assert!(of(Kind::WrongType).any(|v| v.text.ends_with("ports = { pyscaler = 1 }\n")));
        // The top, [ssh], and the inline table.
        assert_eq!(of(Kind::UnknownKey).count(), 3);
        assert!(of(Kind::UnknownKey).any(|v| v
            .text
            .contains("auth = { pyscaler_unknown_key = \"x\", method = \"agent\" }")));
        assert!(of(Kind::Huge).count() >= 4 * 4 + 2);
    }

    #[test]
    fn the_cap_bounds_each_kind() {
        let all = variants(SAMPLE, 3);
        assert_eq!(all.iter().filter(|v| v.kind == Kind::Truncated).count(), 3);
        assert_eq!(all.iter().filter(|v| v.kind == Kind::WrongType).count(), 3);
    }
}
