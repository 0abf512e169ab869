//! Where in a configuration file a parser's error is, in words: the line,
//! the column and the key, without quoting the file's text (a line of it
//! may hold a password).

use std::ops::Range;

/// `message` (a TOML parser's own account, as `toml::de::Error::message`
/// gives it) with where it happened in `text`, for a loader's error:
/// ``line 5, column 12, key `smtp.port`: invalid type: string "x", expected u16``.
///
/// `span` is the parser's byte range (`toml::de::Error::span`); the key is
/// the one assigned on that line (or on the line a multi-line value starts
/// on), inside the table whose header comes before it. The text itself is
/// never quoted: a TOML parser's full `Display` shows the line, which may
/// be a password cut short.
///
/// ```
/// let text = "[smtp]\nhost = \"mx\"\nport = \"x\"\n";
/// let at = text.find("\"x\"").unwrap();
/// assert_eq!(
///     pyscaler_core::config_error_at(text, Some(at..at + 3), "expected u16"),
///     "line 3, column 8, key `smtp.port`: expected u16"
/// );
/// ```
pub fn config_error_at(text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let Some(span) = span else {
        return message.to_owned();
    };
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let line = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let column = text[line_start..start].chars().count() + 1;
    // A span over several lines that starts at the beginning of a line is
    // a whole table's (a check across its keys): name no key of it.
    let end = span.end.clamp(start, text.len());
    let whole_table = text[line_start..start].trim().is_empty()
        && text
            .get(start..end)
            .is_some_and(|s| s.trim_end().contains('\n'));
    if whole_table {
        return match table_at(text, line) {
            Some(table) => format!("table `{table}` (line {line}): {message}"),
            None => message.to_owned(),
        };
    }
    match key_at(text, line) {
        Some(key) => format!("line {line}, column {column}, key `{key}`: {message}"),
        None => format!("line {line}, column {column}: {message}"),
    }
}

/// The table line `wanted` (1-based) is in: its own name on a header line.
fn table_at(text: &str, wanted: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(wanted).collect();
    let header = lines
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with('['))?;
    let name = header.trim_start().trim_start_matches('[');
    Some(name.split(']').next().unwrap_or(name).trim().to_owned())
}

/// The dotted key assigned on line `wanted` (1-based), or on the line its
/// multi-line value starts; a table header's own name on a header line.
fn key_at(text: &str, wanted: usize) -> Option<String> {
    let mut table: Option<String> = None;
    let mut key: Option<String> = None;
    let mut depth = 0i32;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if depth <= 0 {
            depth = 0;
            key = None;
            if trimmed.starts_with('[') {
                let name = trimmed.trim_start_matches('[');
                let name = name.split(']').next().unwrap_or(name).trim();
                table = Some(name.to_owned());
                if i + 1 == wanted {
                    return table;
                }
                continue;
            }
            key = trimmed
                .split_once('=')
                .map(|(k, _)| k.trim())
                .filter(|k| !k.is_empty() && k.chars().all(is_key_char))
                .map(|k| match &table {
                    Some(t) => format!("{t}.{k}"),
                    None => k.to_owned(),
                });
        }
        if i + 1 == wanted {
            return key;
        }
        depth += brackets(line);
    }
    None
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"' | '\'' | ' ')
}

/// How many more brackets `line` opens than it closes, outside strings and
/// comments.
fn brackets(line: &str) -> i32 {
    let (mut depth, mut quote) = (0, None);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') => break,
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, _) => {}
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str, what: &str) -> String {
        let i = text.find(what).expect("in the text");
        config_error_at(text, Some(i..i + what.len()), "bad")
    }

    #[test]
    fn the_key_is_named_with_its_table_and_the_text_is_not_quoted() {
        let text = "user = \"a\"\n[smtp]\npassword = \"hunter2\n[ec2]\nregion = 3\n";
        assert_eq!(at(text, "3"), "line 5, column 10, key `ec2.region`: bad");
        let cut = at(text, "hunter2");
        assert_eq!(cut, "line 3, column 13, key `smtp.password`: bad");
        assert_eq!(at(text, "user"), "line 1, column 1, key `user`: bad");
        assert_eq!(at(text, "[ec2]"), "line 4, column 1, key `ec2`: bad");
    }

    #[test]
    fn a_value_over_several_lines_is_its_keys() {
        let text = "to = [\n  \"a@x\", # [not a bracket\n  \"b@\",\n]\nport = 1\n";
        assert_eq!(at(text, "\"b@\""), "line 3, column 3, key `to`: bad");
        assert_eq!(at(text, "1"), "line 5, column 8, key `port`: bad");
    }

    #[test]
    fn a_check_across_a_whole_table_names_the_table_not_one_of_its_keys() {
        let text = "region = \"r\"\nimage = \"i\"\n[ssh]\nuser = \"a\"\nport = 0\n";
        assert_eq!(config_error_at(text, Some(0..text.len()), "bad"), "bad");
        let ssh = text.find("user").expect("in the text");
        assert_eq!(
            config_error_at(text, Some(ssh..text.len()), "bad"),
            "table `ssh` (line 4): bad"
        );
    }

    #[test]
    fn without_a_span_or_a_key_it_says_what_it_knows() {
        assert_eq!(config_error_at("", None, "bad"), "bad");
        assert_eq!(
            config_error_at("é", Some(1..2), "bad"),
            "line 1, column 1: bad"
        );
        assert_eq!(
            config_error_at("passw", Some(5..5), "bad"),
            "line 1, column 6: bad"
        );
    }
}
