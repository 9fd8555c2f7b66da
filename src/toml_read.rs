//! Reading a TOML file into a typed value with every error of the file, not only the first.
//!
//! The toml crate stops at the first error. For an error of meaning (an unknown key, a value
//! of the wrong type, a missing key) the lines it points at are blanked out (replaced by
//! spaces, so every byte offset stays true) and the text is read again, until it reads or
//! 50 errors are found. An error about a table as a whole (a missing key) whose table lost
//! a line that way is dropped: the key it misses may be the one blanked out. A syntax error
//! stops the reading at once, since after it the parser cannot tell what is what.

use std::ops::Range;

use serde::de::DeserializeOwned;

use crate::sql::ErrorKind;

/// An error of a TOML text: its byte span and message, and whether the text is not TOML at
/// all (rather than TOML that does not fit the expected shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    pub span: Range<usize>,
    pub message: String,
    pub syntax: bool,
}

impl TomlError {
    /// The kind of the error: serde's messages are the only account of what did not fit.
    pub fn kind(&self) -> ErrorKind {
        if self.syntax {
            ErrorKind::Syntax
        } else if self.message.starts_with("unknown field") {
            ErrorKind::Unknown
        } else if self.message.starts_with("missing field") {
            ErrorKind::Missing
        } else {
            ErrorKind::Invalid
        }
    }
}

impl From<toml::de::Error> for TomlError {
    fn from(e: toml::de::Error) -> TomlError {
        TomlError {
            span: e.span().unwrap_or(0..0),
            message: e.message().trim_end().to_owned(),
            syntax: false,
        }
    }
}

const MAX_ERRORS: usize = 50;

/// Reads `text`. On errors, also returns the value read from the text less the parts in
/// error, when there is one, so that the caller can check the rest of the file too.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, (Vec<TomlError>, Option<T>)> {
    let mut next = match toml::from_str::<T>(text) {
        Ok(value) => return Ok(value),
        Err(e) => TomlError::from(e),
    };
    if let Err(syntax) = text.parse::<toml::Table>() {
        return Err((
            vec![TomlError {
                syntax: true,
                ..syntax.into()
            }],
            None,
        ));
    }
    let mut text = text.to_owned();
    let mut errors: Vec<TomlError> = Vec::new();
    // The tables (their byte ranges) a key of which was blanked out: an error about such a
    // table as a whole (a missing key) may be about that key, and is dropped.
    let mut broken: Vec<Range<usize>> = Vec::new();
    for _ in 0..4 * MAX_ERRORS {
        let table = table_of(&text, next.span.start);
        let about_table =
            is_header(&text, table.start) && next.span.start < line_end(&text, table.start);
        let about_blanked_key = about_table && broken.contains(&table);
        if !about_blanked_key && !errors.contains(&next) {
            errors.push(next.clone());
        }
        let before = text.clone();
        let blanked = if about_table {
            blank_table(&mut text, table.start);
            true
        } else {
            broken.push(table.clone());
            blank_key(&mut text, &next, table.end)
        };
        if !blanked || text == before || errors.len() >= MAX_ERRORS {
            break;
        }
        match toml::from_str::<T>(&text) {
            Ok(value) => return Err((errors, Some(value))),
            Err(e) => next = e.into(),
        }
    }
    Err((errors, None))
}

fn is_header(text: &str, line: usize) -> bool {
    text[line..]
        .trim_start_matches([' ', '\t'])
        .starts_with('[')
}

fn line_end(text: &str, offset: usize) -> usize {
    text[offset..].find('\n').map_or(text.len(), |i| offset + i)
}

fn line_start(text: &str, offset: usize) -> usize {
    text[..offset].rfind('\n').map_or(0, |i| i + 1)
}

/// The byte range of the table that holds `offset`: from its header line (or the file's
/// start) to the next header line.
pub fn table_of(text: &str, offset: usize) -> Range<usize> {
    let headers: Vec<usize> = line_starts(text).filter(|&s| is_header(text, s)).collect();
    let start = headers
        .iter()
        .rev()
        .find(|&&h| h <= offset)
        .copied()
        .unwrap_or(0);
    let end = headers
        .iter()
        .find(|&&h| h > offset)
        .copied()
        .unwrap_or(text.len());
    start..end
}

/// Blanks the table whose header line starts at `start`, with its sub-tables.
fn blank_table(text: &mut String, start: usize) {
    let sub = format!("{}.", header_name(&text[start..]));
    let end = line_starts(text)
        .filter(|&s| s > start && is_header(text, s))
        .find(|&s| !header_name(&text[s..]).starts_with(&sub))
        .unwrap_or(text.len());
    blank_range(text, start..end);
}

/// Blanks the key-value line(s) the error points at: its lines, then the next ones while
/// the text does not parse (a value over several lines), within the table. False when the
/// text still does not parse.
fn blank_key(text: &mut String, error: &TomlError, table_end: usize) -> bool {
    let start = line_start(text, error.span.start);
    let mut end = line_end(text, error.span.end.max(start));
    loop {
        blank_range(text, start..end);
        if text.parse::<toml::Table>().is_ok() {
            return true;
        }
        if end >= table_end.min(text.len()) || is_header(text, end + 1) {
            return false;
        }
        end = line_end(text, end + 1);
    }
}

/// Replaces each byte of `range` but newlines with a space: every offset stays true.
fn blank_range(text: &mut String, range: Range<usize>) {
    let blanked: String = text[range.clone()]
        .chars()
        .map(|c| match c {
            '\n' => "\n".to_owned(),
            c => " ".repeat(c.len_utf8()),
        })
        .collect();
    text.replace_range(range, &blanked);
}

/// `[a.b]` or `[[a.b]]` → `a.b`.
fn header_name(line: &str) -> String {
    let line = line.lines().next().unwrap_or("").trim();
    line.trim_start_matches('[')
        .split(']')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned()
}

fn line_starts(text: &str) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Doc {
        #[serde(default)]
        a: Section,
        #[serde(default)]
        item: Vec<Item>,
    }

    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        x: Option<u32>,
        y: Option<String>,
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Item {
        name: String,
        #[serde(default)]
        sub: Vec<Section>,
    }

    fn errors(text: &str) -> Vec<(usize, String)> {
        match from_str::<Doc>(text) {
            Ok(_) => Vec::new(),
            Err((errors, _)) => errors
                .into_iter()
                .map(|e| (crate::diagnostic::line_col(text, e.span.start).0, e.message))
                .collect(),
        }
    }

    #[test]
    fn every_error_of_meaning_is_found_once() {
        let text = "[a]\nxx = 1\ny = 2\nzz = [\n 1 ]\n\n[[item]]\nname = 'é'\nbad = 1\n\n[[item]]\nsub = [{ x = 'no' }]\n\n[[item]]\nname = 'ok'\n[[item.sub]]\nw = 1\n\n[nope]\nq = 1\n";
        let found = errors(text);
        let lines: Vec<usize> = found.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [2, 3, 4, 9, 12, 17, 19], "{found:?}");
        assert!(found[0].1.contains("unknown field `xx`"), "{found:?}");
        assert!(found[1].1.contains("invalid type"), "{found:?}");
    }

    #[test]
    fn a_syntax_error_is_reported_alone() {
        let found = errors("[a]\nxx = 1\ny = 'open\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, 3);
    }

    #[test]
    fn the_rest_of_the_file_is_read() {
        let Err((errors, Some(doc))) =
            from_str::<Doc>("[[item]]\nname = 'a'\nbad = 1\n[[item]]\nname = 'b'\n")
        else {
            panic!("the file less its bad key reads");
        };
        assert_eq!(errors.len(), 1);
        assert_eq!(doc.item.len(), 2);
    }
}
