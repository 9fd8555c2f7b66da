//! AWS rule JSON, loaded unchanged: the output of `aws iot get-topic-rule`
//! (`{"ruleArn": ..., "rule": {...}}`), a `CreateTopicRule` request
//! (`{"ruleName": ..., "topicRulePayload": {...}}`), or a bare `TopicRulePayload` (as passed
//! to `--topic-rule-payload`, named after its file).
//!
//! As in AWS, a rule without `awsIotSqlVersion` is 2015-10-08; `ruleDisabled` is honoured;
//! `roleArn` is accepted and ignored.

use std::path::Path;

use serde_json::{Map, Value};

use super::draft::{
    ActionDraft, ActionKind, Draft, DraftError, HeadersDraft, Located, AWS_ONLY_ACTIONS,
};
use crate::sql::ast::Span;
use crate::sql::{ErrorKind, SqlVersion};

const RULE_KEYS: &[&str] = &[
    "ruleName",
    "sql",
    "description",
    "createdAt",
    "actions",
    "ruleDisabled",
    "awsIotSqlVersion",
    "errorAction",
    "ruleArn",
];

/// The JSON type a field of an AWS rule must have.
#[derive(Clone, Copy)]
enum Json {
    String,
    Integer,
    Boolean,
    Object,
    Array,
}

impl Json {
    fn admits(self, value: &Value) -> bool {
        match self {
            Json::String => value.is_string(),
            Json::Integer => value.is_i64() || value.is_u64(),
            Json::Boolean => value.is_boolean(),
            Json::Object => value.is_object(),
            Json::Array => value.is_array(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Json::String => "a string",
            Json::Integer => "an integer",
            Json::Boolean => "true or false",
            Json::Object => "an object",
            Json::Array => "an array",
        }
    }
}

fn json_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

const RULE_TYPES: &[(&str, Json)] = &[
    ("ruleName", Json::String),
    ("sql", Json::String),
    ("description", Json::String),
    ("actions", Json::Array),
    ("ruleDisabled", Json::Boolean),
    ("awsIotSqlVersion", Json::String),
    ("errorAction", Json::Object),
];

/// The fields of each action kind topicrule runs, with their types.
fn action_types(kind: &str) -> &'static [(&'static str, Json)] {
    match kind {
        "republish" => &[
            ("topic", Json::String),
            ("qos", Json::Integer),
            ("retain", Json::Boolean),
            ("headers", Json::Object),
            ("roleArn", Json::String),
        ],
        "file" => &[("path", Json::String)],
        "s3" => &[
            ("bucketName", Json::String),
            ("key", Json::String),
            ("cannedAcl", Json::String),
            ("roleArn", Json::String),
        ],
        _ => &[],
    }
}

/// The first field of `map` whose value is not of its type: its message, and where its key
/// is (searched from `from` on). AWS refuses such a rule; a default in its place would
/// change what the rule does (`"qos": "1"` would publish at QoS 0).
fn wrong_type(
    finder: &Finder,
    map: &Map<String, Value>,
    types: &[(&str, Json)],
    from: usize,
) -> Option<(String, Span)> {
    types.iter().find_map(|&(key, json)| {
        let value = map.get(key).filter(|v| !json.admits(v))?;
        let at = finder.key(key, from);
        let message = format!("`{key}` must be {}, not {}", json.name(), json_name(value));
        Some((message, Span::new(at, at + key.len() + 2)))
    })
}

/// Finds where a value's JSON text sits in the file, from a byte offset on.
struct Finder<'t> {
    text: &'t str,
}

impl Finder<'_> {
    fn string(&self, value: &str, from: usize) -> Located {
        let needle = serde_json::to_string(value).unwrap_or_default();
        match self.text.get(from..).and_then(|t| t.find(&needle)) {
            Some(at) => {
                let span = Span::new(from + at, from + at + needle.len());
                Located::new(value.to_owned(), span, &needle)
            }
            None => Located::at(value.to_owned(), Span::new(from, from)),
        }
    }

    /// The offset of `"key"` from `from` on (the start of the file when not found).
    fn key(&self, key: &str, from: usize) -> usize {
        let needle = format!("\"{key}\"");
        self.text
            .get(from..)
            .and_then(|t| t.find(&needle))
            .map_or(from, |at| from + at)
    }
}

/// Reads the rule of an AWS JSON file.
pub fn parse(path: &Path, text: &str) -> Result<Vec<Draft>, Vec<DraftError>> {
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        let offset = offset_of(text, e.line(), e.column());
        vec![DraftError::new(
            ErrorKind::Syntax,
            Span::new(offset, offset + 1),
            format!("invalid JSON: {e}"),
        )]
    })?;
    let finder = Finder { text };
    let Value::Object(top) = &doc else {
        return Err(vec![DraftError::new(
            ErrorKind::Invalid,
            Span::new(0, 1),
            "an AWS rule file holds a JSON object",
        )]);
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (rule, name) = if let Some(Value::Object(rule)) = top.get("rule") {
        (
            rule,
            rule.get("ruleName")
                .and_then(Value::as_str)
                .unwrap_or(&stem),
        )
    } else if let Some(Value::Object(payload)) = top.get("topicRulePayload") {
        (
            payload,
            top.get("ruleName").and_then(Value::as_str).unwrap_or(&stem),
        )
    } else {
        (
            top,
            top.get("ruleName").and_then(Value::as_str).unwrap_or(&stem),
        )
    };
    let mut errors = Vec::new();
    for key in rule.keys().filter(|k| !RULE_KEYS.contains(&k.as_str())) {
        let at = finder.key(key, 0);
        errors.push(
            DraftError::new(
                ErrorKind::Unknown,
                Span::new(at, at + key.len() + 2),
                format!("unknown key `{key}` in an AWS rule"),
            )
            .with_hint(format!("expected one of {}", RULE_KEYS.join(", "))),
        );
    }
    if let Some((message, span)) = wrong_type(&finder, rule, RULE_TYPES, 0) {
        errors.push(DraftError::new(ErrorKind::Invalid, span, message));
        return Err(errors);
    }
    let Some(sql) = rule.get("sql").and_then(Value::as_str) else {
        errors.push(DraftError::new(
            ErrorKind::Missing,
            Span::new(0, 1),
            "the rule has no `sql`",
        ));
        return Err(errors);
    };
    let sql_at = finder.key("sql", 0);
    let name_located = match text.find("\"ruleName\"") {
        Some(at) => finder.string(name, at),
        None => Located::at(name.to_owned(), Span::new(0, 0)),
    };
    let draft = Draft {
        name: name_located,
        sql: finder.string(sql, sql_at),
        sql_version: rule
            .get("awsIotSqlVersion")
            .and_then(Value::as_str)
            .map(|v| finder.string(v, finder.key("awsIotSqlVersion", 0))),
        default_version: SqlVersion::V2015_10_08,
        enabled: !rule
            .get("ruleDisabled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        actions: match rule.get("actions") {
            Some(Value::Array(actions)) => {
                let mut from = finder.key("actions", 0);
                actions
                    .iter()
                    .map(|a| action(&finder, a, &mut from))
                    .collect()
            }
            _ => Vec::new(),
        },
        error_action: rule
            .get("errorAction")
            .map(|a| action(&finder, a, &mut finder.key("errorAction", 0))),
    };
    if errors.is_empty() {
        Ok(vec![draft])
    } else {
        Err(errors)
    }
}

fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

fn action(finder: &Finder, action: &Value, from: &mut usize) -> ActionDraft {
    let start = *from;
    let Value::Object(map) = action else {
        return ActionDraft {
            kind: ActionKind::Malformed("an action is a JSON object".into()),
            span: Span::new(start, start + 1),
        };
    };
    let Some((kind, body)) = map.iter().next().filter(|_| map.len() == 1) else {
        let message = "an action has exactly one kind, such as `republish`".to_owned();
        return ActionDraft {
            kind: ActionKind::Malformed(message),
            span: Span::new(start, start + 1),
        };
    };
    let at = finder.key(kind, start);
    *from = at + kind.len() + 2;
    let span = Span::new(at, at + kind.len() + 2);
    let empty = Map::new();
    let body = body.as_object().unwrap_or(&empty);
    if let Some((message, span)) = wrong_type(finder, body, action_types(kind), at) {
        return ActionDraft {
            kind: ActionKind::Malformed(message),
            span,
        };
    }
    let string = |key: &str| {
        body.get(key)
            .and_then(Value::as_str)
            .map(|v| finder.string(v, finder.key(key, at)))
    };
    let kind = match kind.as_str() {
        "republish" => ActionKind::Republish {
            topic: string("topic").unwrap_or_else(|| Located::at(String::new(), span)),
            qos: body.get("qos").and_then(Value::as_i64).map(|q| (q, span)),
            retain: body.get("retain").and_then(Value::as_bool).unwrap_or(false),
            headers: body
                .get("headers")
                .and_then(Value::as_object)
                .map(|h| headers(finder, h, at))
                .unwrap_or_default(),
        },
        "file" => ActionKind::File {
            path: string("path").unwrap_or_else(|| Located::at(String::new(), span)),
        },
        "s3" => ActionKind::S3 {
            bucket: string("bucketName").unwrap_or_else(|| Located::at(String::new(), span)),
            key: string("key").unwrap_or_else(|| Located::at(String::new(), span)),
            canned_acl: string("cannedAcl"),
            endpoint: None,
            region: None,
            batch: None,
            compression: None,
        },
        other if AWS_ONLY_ACTIONS.contains(&other) => ActionKind::Unsupported(other.to_owned()),
        other => ActionKind::Malformed(format!("unknown action kind `{other}`")),
    };
    ActionDraft { kind, span }
}

fn headers(finder: &Finder, h: &Map<String, Value>, from: usize) -> HeadersDraft {
    let string = |key: &str| {
        h.get(key)
            .and_then(Value::as_str)
            .map(|v| finder.string(v, finder.key(key, from)))
    };
    let user_properties = h
        .get("userProperties")
        .and_then(Value::as_array)
        .map(|props| {
            props
                .iter()
                .filter_map(|p| {
                    let key = p.get("key")?.as_str()?;
                    let value = p.get("value")?.as_str()?;
                    Some((
                        key.to_owned(),
                        finder.string(value, finder.key("userProperties", from)),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    HeadersDraft {
        content_type: string("contentType"),
        payload_format: string("payloadFormatIndicator"),
        response_topic: string("responseTopic"),
        correlation_data: string("correlationData"),
        message_expiry: string("messageExpiry"),
        user_properties,
    }
}
