//! A rule as read from a file, before validation: strings with their places in the file.
//!
//! Both formats (TOML and AWS JSON) produce drafts, so that validation and its messages
//! are written once.

use std::path::Path;
use std::sync::Arc;

use super::RuleError;
use crate::sql::ast::Span;

/// A string value and where its text sits in the file, so that an error at byte `i` of the
/// value can point at the right character of the file even when the file escapes it.
#[derive(Debug, Clone)]
pub struct Located {
    pub value: String,
    /// The span of the whole value in the file (quotes included).
    pub span: Span,
    /// For each byte offset of `value` (and one past the end), its offset in the file;
    /// empty when the value could not be mapped (then errors point at the whole value).
    map: Vec<usize>,
}

impl Located {
    /// A value whose file text is `raw` (the literal as written, quotes included) at `span`.
    pub fn new(value: String, span: Span, raw: &str) -> Located {
        let map = map_offsets(&value, raw, span.start);
        Located { value, span, map }
    }

    /// A value with no place of its own (a default, or a key whose text is elsewhere).
    pub fn at(value: String, span: Span) -> Located {
        Located {
            value,
            span,
            map: Vec::new(),
        }
    }

    /// The file span of a span inside the value.
    pub fn inner(&self, inner: Span) -> Span {
        match (self.map.get(inner.start), self.map.get(inner.end)) {
            (Some(&start), Some(&end)) => Span::new(start, end.max(start)),
            (Some(&start), None) => Span::new(start, start + 1),
            _ => self.span,
        }
    }
}

/// Maps value offsets to file offsets by walking the literal: plain characters map one to
/// one, an escape sequence maps to where it starts. Gives up (empty map) on anything it
/// does not understand.
fn map_offsets(value: &str, raw: &str, base: usize) -> Vec<usize> {
    let (open, close) = ["'''", "\"\"\"", "'", "\""]
        .iter()
        .find(|q| raw.starts_with(**q) && raw.len() >= 2 * q.len() && raw.ends_with(**q))
        .map_or((0, 0), |q| (q.len(), q.len()));
    if open == 0 {
        return Vec::new();
    }
    let literal = raw.starts_with('\'');
    let mut body_start = open;
    if open == 3 {
        body_start += usize::from(raw[open..].starts_with('\n'));
        body_start += if raw[open..].starts_with("\r\n") {
            2
        } else {
            0
        };
    }
    let body = &raw[body_start..raw.len() - close];
    let mut map = Vec::with_capacity(value.len() + 1);
    let mut chars = body.char_indices().peekable();
    let mut produced = String::with_capacity(value.len());
    while let Some((pos, c)) = chars.next() {
        let at = base + body_start + pos;
        if c == '\\' && !literal {
            let Some(&(_, e)) = chars.peek() else {
                return Vec::new();
            };
            chars.next();
            let decoded = match e {
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '"' | '\\' | '/' => e,
                'b' => '\u{8}',
                'f' => '\u{c}',
                'e' => '\u{1b}',
                'u' | 'U' => {
                    let n = if e == 'u' { 4 } else { 8 };
                    let hex: String = (0..n)
                        .filter_map(|_| chars.next().map(|(_, h)| h))
                        .collect();
                    match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        Some(c) => c,
                        None => return Vec::new(),
                    }
                }
                _ => return Vec::new(),
            };
            map.extend(std::iter::repeat_n(at, decoded.len_utf8()));
            produced.push(decoded);
        } else {
            map.extend(
                std::iter::repeat_n(at, c.len_utf8())
                    .enumerate()
                    .map(|(i, a)| a + i),
            );
            produced.push(c);
        }
    }
    if produced != value {
        return Vec::new();
    }
    map.push(base + body_start + body.len());
    map
}

/// One rule as read from a file.
#[derive(Debug, Clone)]
pub struct Draft {
    pub name: Located,
    pub sql: Located,
    /// None: the format's default (2016-03-23 in TOML, 2015-10-08 in AWS JSON, as AWS).
    pub sql_version: Option<Located>,
    pub default_version: crate::sql::SqlVersion,
    pub enabled: bool,
    pub actions: Vec<ActionDraft>,
    pub error_action: Option<ActionDraft>,
}

/// A `[[test]]` table as read from a file.
#[derive(Debug, Clone)]
pub struct TestDraft {
    pub name: Option<String>,
    /// The rule named, with its place.
    pub rule: Option<(String, Span)>,
    pub topic: String,
    pub payload: Vec<u8>,
    pub clientid: Option<String>,
    pub timestamp: Option<i64>,
    /// The expected output; None: the rule must not fire.
    pub expect: Option<serde_json::Value>,
    /// The whole table.
    pub span: Span,
}

/// One action as read from a file.
#[derive(Debug, Clone)]
pub struct ActionDraft {
    pub kind: ActionKind,
    pub span: Span,
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // Drafts live only while a file loads.
pub enum ActionKind {
    Republish {
        topic: Located,
        qos: Option<(i64, Span)>,
        retain: bool,
        headers: HeadersDraft,
    },
    File {
        path: Located,
    },
    S3 {
        bucket: Located,
        key: Located,
        canned_acl: Option<Located>,
        endpoint: Option<Located>,
        region: Option<Located>,
        /// `max_records`, `max_bytes`, `max_age` (seconds), each with its place.
        batch: Option<BatchDraft>,
        compression: Option<Located>,
    },
    /// An AWS action that topicrule cannot run (lambda, dynamoDB, ...), by its AWS key.
    Unsupported(String),
    /// Zero or several kinds in one action table.
    Malformed(String),
    /// A key of the action could not be read: its error is reported already, and the file
    /// refused with it.
    Unreadable,
}

/// A `batch = { ... }` table as written.
#[derive(Debug, Clone)]
pub struct BatchDraft {
    pub max_records: Option<(i64, Span)>,
    pub max_bytes: Option<(i64, Span)>,
    pub max_age: Option<(i64, Span)>,
}

/// A republish's `headers` as written: each a text and its place.
pub type HeadersDraft = crate::actions::republish::Headers<Located, Located>;

/// An error found while reading or validating a file, before it knows its file: the same
/// type as the language's errors, which it often carries (moved to the place in the file).
pub type DraftError = crate::sql::SqlError;

impl DraftError {
    pub fn into_rule_error(self, path: &Path, source: &Arc<str>) -> RuleError {
        RuleError {
            path: path.to_owned(),
            source: source.clone(),
            error: self,
        }
    }
}

/// The AWS actions that need an AWS service, as named in `TopicRulePayload.actions`.
pub const AWS_ONLY_ACTIONS: &[&str] = &[
    "lambda",
    "dynamoDB",
    "dynamoDBv2",
    "kinesis",
    "firehose",
    "sns",
    "sqs",
    "cloudwatchMetric",
    "cloudwatchAlarm",
    "cloudwatchLogs",
    "elasticsearch",
    "openSearch",
    "http",
    "iotAnalytics",
    "iotEvents",
    "iotSiteWise",
    "stepFunctions",
    "timestream",
    "kafka",
    "location",
    "salesforce",
    "influxDB",
];
