//! The TOML rule format: several `[[rule]]` tables a file, each with `[[rule.actions]]` and
//! an optional `[rule.error_action]`. Each action table has one key that names its kind,
//! so an AWS `CreateTopicRule` payload maps onto it one to one.

use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::Spanned;

use super::draft::{
    ActionDraft, ActionKind, BatchDraft, Draft, DraftError, HeadersDraft, Located, TestDraft,
    AWS_ONLY_ACTIONS,
};
use crate::sql::ast::Span;
use crate::sql::{ErrorKind, SqlVersion};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    /// The rules of the file.
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
    /// Examples that `topicrule test` checks: a message and what a rule must make of it.
    #[serde(default)]
    test: Vec<Spanned<RawTest>>,
}

/// `[[test]]`: one message, and the output a rule must produce (or that no rule fires).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    /// Shown in the report; defaults to the rule's name and the topic.
    name: Option<String>,
    /// The rule whose output is checked; may be left out when the file has one rule.
    rule: Option<Spanned<String>>,
    /// The topic the message arrives on.
    topic: String,
    /// The payload, as text (JSON or not).
    payload: String,
    /// What `clientid()` returns.
    clientid: Option<String>,
    /// What `timestamp()` returns, in milliseconds; defaults to the time of the run.
    timestamp: Option<i64>,
    /// The expected output message, as JSON text (numbers compared by their text).
    expect: Option<Spanned<String>>,
    /// `true`: the message must not fire the rule (or, without `rule`, any rule of the set).
    #[serde(default)]
    expect_none: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// Unique in the rule set: `[A-Za-z0-9_]+`.
    name: Spanned<String>,
    /// The AWS IoT SQL statement.
    sql: Spanned<String>,
    /// Free text, for people: read, never used.
    #[allow(dead_code)]
    description: Option<String>,
    /// "2016-03-23" (the default) or "2015-10-08".
    sql_version: Option<Spanned<String>>,
    /// A disabled rule is validated but not run.
    #[serde(default = "yes")]
    enabled: bool,
    /// What to do with the output message, in order.
    #[serde(default)]
    actions: Vec<Spanned<RawAction>>,
    /// What to do when an action fails.
    error_action: Option<Spanned<RawAction>>,
}

fn yes() -> bool {
    true
}

/// One action: exactly one of the keys. The AWS-only kinds (`AWS_ONLY_ACTIONS`) are
/// taken too, so that they get a clear "cannot run" error rather than "unknown field".
#[derive(Default)]
struct RawAction {
    republish: Option<RawRepublish>,
    file: Option<RawFileAction>,
    s3: Option<RawS3>,
    aws_only: Vec<&'static str>,
}

/// The kinds topicrule runs, as an unknown key's error lists them.
const RUNNABLE: &[&str] = &["republish", "file", "s3"];

/// An action's key. Unknown keys fail here, as the key is read: the error points at it.
enum Kind {
    Republish,
    File,
    S3,
    AwsOnly(&'static str),
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;
        impl serde::de::Visitor<'_> for Name {
            type Value = Kind;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an action kind")
            }
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Kind, E> {
                Ok(match name {
                    "republish" => Kind::Republish,
                    "file" => Kind::File,
                    "s3" => Kind::S3,
                    other => match AWS_ONLY_ACTIONS.iter().find(|known| **known == other) {
                        Some(known) => Kind::AwsOnly(known),
                        None => return Err(E::unknown_field(other, RUNNABLE)),
                    },
                })
            }
        }
        deserializer.deserialize_identifier(Name)
    }
}

impl<'de> Deserialize<'de> for RawAction {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Kinds;
        impl<'de> serde::de::Visitor<'de> for Kinds {
            type Value = RawAction;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an action table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawAction, A::Error> {
                let mut action = RawAction::default();
                while let Some(kind) = map.next_key::<Kind>()? {
                    match kind {
                        Kind::Republish => action.republish = Some(map.next_value()?),
                        Kind::File => action.file = Some(map.next_value()?),
                        Kind::S3 => action.s3 = Some(map.next_value()?),
                        Kind::AwsOnly(name) => {
                            map.next_value::<IgnoredAny>()?;
                            action.aws_only.push(name);
                        }
                    }
                }
                Ok(action)
            }
        }
        deserializer.deserialize_map(Kinds)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepublish {
    /// A topic template; `$$` for a literal `$`.
    topic: Spanned<String>,
    /// 0 (the default, as AWS) or 1.
    qos: Option<Spanned<i64>>,
    /// Publish with the retain flag.
    #[serde(default)]
    retain: bool,
    /// MQTT 5 publish properties.
    headers: Option<RawHeaders>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    content_type: Option<Spanned<String>>,
    /// "UNSPECIFIED_BYTES" or "UTF8_DATA".
    payload_format_indicator: Option<Spanned<String>>,
    response_topic: Option<Spanned<String>>,
    /// Base64, after substitution.
    correlation_data: Option<Spanned<String>>,
    /// Seconds, as a string template.
    message_expiry: Option<Spanned<String>>,
    #[serde(default)]
    user_properties: Vec<RawUserProperty>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUserProperty {
    key: String,
    value: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileAction {
    /// A path template, relative to the base directory.
    path: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawS3 {
    /// The bucket (not a template, as in AWS).
    bucket: Spanned<String>,
    /// The object key, a template.
    key: Spanned<String>,
    /// An S3 canned ACL, such as `bucket-owner-full-control`.
    canned_acl: Option<Spanned<String>>,
    /// The store's URL, instead of `[s3] endpoint`.
    endpoint: Option<Spanned<String>>,
    /// The region, instead of `[s3] region`.
    region: Option<Spanned<String>>,
    /// Batch mode: many messages an object.
    batch: Option<Spanned<RawBatch>>,
    /// "none" (the default), "gzip" or "zstd"; batch mode only.
    compression: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    /// Messages a batch.
    max_records: Option<Spanned<i64>>,
    /// Bytes a batch (uncompressed).
    max_bytes: Option<Spanned<i64>>,
    /// Seconds a batch stays open.
    max_age: Option<Spanned<i64>>,
}

fn located(text: &str, s: &Spanned<String>) -> Located {
    let range = s.span();
    Located::new(
        s.get_ref().clone(),
        Span::new(range.start, range.end),
        &text[range],
    )
}

fn span_of<T>(s: &Spanned<T>) -> Span {
    Span::new(s.span().start, s.span().end)
}

/// Reads the rules of a TOML file: the rules and tests it could read, and every error.
/// Errors of meaning (an unknown key, a value of the wrong type) leave the rest of the file
/// read, so that its other rules are checked too; a syntax error stops the reading.
pub fn parse(text: &str) -> (Vec<Draft>, Vec<TestDraft>, Vec<DraftError>) {
    let (file, mut errors) = match crate::toml_read::from_str::<RawDocument>(text) {
        Ok(file) => (file, Vec::new()),
        Err((toml_errors, file)) => {
            let errors = toml_errors
                .into_iter()
                .map(|e| DraftError::new(e.kind(), Span::new(e.span.start, e.span.end), e.message))
                .collect();
            match file {
                Some(file) => (file, errors),
                None => return (Vec::new(), Vec::new(), errors),
            }
        }
    };
    if file.rule.is_empty() && errors.is_empty() {
        let error = DraftError::new(ErrorKind::Missing, Span::default(), "no rules in this file")
            .with_hint("add a `[[rule]]` table with a `name` and a `sql`");
        return (Vec::new(), Vec::new(), vec![error]);
    }
    let drafts = file
        .rule
        .iter()
        .map(|rule| draft(text, rule, &errors))
        .collect();
    let tests = file
        .test
        .iter()
        .filter_map(|t| test(t, &mut errors))
        .collect();
    (drafts, tests, errors)
}

/// Checks a `[[test]]` table on its own; the rule it names is checked once all are loaded.
fn test(raw: &Spanned<RawTest>, errors: &mut Vec<DraftError>) -> Option<TestDraft> {
    let t = raw.get_ref();
    let expect = match (&t.expect, t.expect_none) {
        (Some(text), false) => match serde_json::from_str::<serde_json::Value>(text.get_ref()) {
            Ok(json) => Some(json),
            Err(e) => {
                errors.push(DraftError::new(
                    ErrorKind::Syntax,
                    span_of(text),
                    format!("`expect` is not JSON: {e}"),
                ));
                return None;
            }
        },
        (None, true) => None,
        _ => {
            errors.push(DraftError::new(
                ErrorKind::Invalid,
                span_of(raw),
                "a test needs exactly one of `expect` and `expect_none = true`",
            ));
            return None;
        }
    };
    Some(TestDraft {
        name: t.name.clone(),
        rule: t.rule.as_ref().map(|r| (r.get_ref().clone(), span_of(r))),
        topic: t.topic.clone(),
        payload: t.payload.clone().into_bytes(),
        clientid: t.clientid.clone(),
        timestamp: t.timestamp,
        expect,
        span: span_of(raw),
    })
}

/// `errors`: those found while reading, so that an action that lost its key to one is not
/// reported again as empty.
fn draft(text: &str, rule: &Spanned<RawRule>, errors: &[DraftError]) -> Draft {
    let raw = rule.get_ref();
    Draft {
        name: located(text, &raw.name),
        sql: located(text, &raw.sql),
        sql_version: raw.sql_version.as_ref().map(|v| located(text, v)),
        default_version: SqlVersion::V2016_03_23,
        enabled: raw.enabled,
        actions: raw
            .actions
            .iter()
            .map(|a| action(text, a, errors))
            .collect(),
        error_action: raw.error_action.as_ref().map(|a| action(text, a, errors)),
    }
}

fn action(text: &str, action: &Spanned<RawAction>, errors: &[DraftError]) -> ActionDraft {
    let raw = action.get_ref();
    let mut kinds = Vec::new();
    if let Some(r) = &raw.republish {
        kinds.push(ActionKind::Republish {
            topic: located(text, &r.topic),
            qos: r.qos.as_ref().map(|q| (*q.get_ref(), span_of(q))),
            retain: r.retain,
            headers: r
                .headers
                .as_ref()
                .map(|h| headers(text, h))
                .unwrap_or_default(),
        });
    }
    if let Some(f) = &raw.file {
        kinds.push(ActionKind::File {
            path: located(text, &f.path),
        });
    }
    if let Some(s3) = &raw.s3 {
        let opt = |s: &Option<Spanned<String>>| s.as_ref().map(|s| located(text, s));
        kinds.push(ActionKind::S3 {
            bucket: located(text, &s3.bucket),
            key: located(text, &s3.key),
            canned_acl: opt(&s3.canned_acl),
            endpoint: opt(&s3.endpoint),
            region: opt(&s3.region),
            batch: s3.batch.as_ref().map(|b| {
                let limit =
                    |v: &Option<Spanned<i64>>| v.as_ref().map(|v| (*v.get_ref(), span_of(v)));
                BatchDraft {
                    max_records: limit(&b.get_ref().max_records),
                    max_bytes: limit(&b.get_ref().max_bytes),
                    max_age: limit(&b.get_ref().max_age),
                }
            }),
            compression: opt(&s3.compression),
        });
    }
    kinds.extend(
        raw.aws_only
            .iter()
            .map(|name| ActionKind::Unsupported((*name).to_owned())),
    );
    let kind = match kinds.len() {
        1 => kinds.pop().unwrap_or(ActionKind::Malformed(String::new())),
        // Its table (`[[rule.actions]]`) or inline table holds an error found on reading.
        0 if errors.iter().any(|e| {
            action.span().contains(&e.span.start)
                || crate::toml_read::table_of(text, e.span.start).start == action.span().start
        }) =>
        {
            ActionKind::Unreadable
        }
        0 => ActionKind::Malformed("an action needs one kind: `republish`, `s3` or `file`".into()),
        _ => ActionKind::Malformed(
            "an action has exactly one kind; split it into several `[[rule.actions]]`".into(),
        ),
    };
    ActionDraft {
        kind,
        span: span_of(action),
    }
}

fn headers(text: &str, h: &RawHeaders) -> HeadersDraft {
    let opt = |s: &Option<Spanned<String>>| s.as_ref().map(|s| located(text, s));
    HeadersDraft {
        content_type: opt(&h.content_type),
        payload_format: opt(&h.payload_format_indicator),
        response_topic: opt(&h.response_topic),
        correlation_data: opt(&h.correlation_data),
        message_expiry: opt(&h.message_expiry),
        user_properties: h
            .user_properties
            .iter()
            .map(|p| (p.key.clone(), located(text, &p.value)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(action: &str) -> (Vec<ActionKind>, Vec<DraftError>) {
        let text = format!(
            "[[rule]]\nname = \"r\"\nsql = \"SELECT * FROM 'a'\"\n[[rule.actions]]\n{action}\n"
        );
        let (drafts, _, errors) = parse(&text);
        let kinds = drafts
            .into_iter()
            .flat_map(|d| d.actions)
            .map(|a| a.kind)
            .collect();
        (kinds, errors)
    }

    #[test]
    fn errors_say_their_kind() {
        let kinds =
            |text: &str| -> Vec<ErrorKind> { parse(text).2.iter().map(|e| e.kind).collect() };
        assert_eq!(kinds("[[rule]\nname = 1"), [ErrorKind::Syntax]);
        assert_eq!(
            kinds("[[rule]]\nname = \"r\"\nsql = \"SELECT * FROM 'a'\"\nsqll = 1\n"),
            [ErrorKind::Unknown]
        );
        assert_eq!(kinds("[[rule]]\nname = \"r\"\n"), [ErrorKind::Missing]);
        assert_eq!(kinds("# nothing\n"), [ErrorKind::Missing]);
    }

    #[test]
    fn an_aws_only_action_is_read_as_such() {
        for name in AWS_ONLY_ACTIONS {
            let (kinds, errors) = kinds(&format!("{name} = {{ any = 1 }}"));
            assert!(errors.is_empty(), "{name}: {errors:?}");
            assert!(
                matches!(kinds.as_slice(), [ActionKind::Unsupported(n)] if n == name),
                "{name}: {kinds:?}"
            );
        }
    }

    #[test]
    fn an_unknown_action_names_the_kinds_that_run_at_its_place() {
        let (kinds, errors) = kinds(r#"republsh = { topic = "b" }"#);
        assert_eq!(errors.len(), 1, "{errors:?}");
        // Not reported again as an action without a kind.
        assert!(
            matches!(kinds.as_slice(), [ActionKind::Unreadable]),
            "{kinds:?}"
        );
        let error = &errors[0];
        assert_eq!(error.kind, ErrorKind::Unknown);
        assert!(
            error.message.contains("unknown field `republsh`")
                && error.message.contains("`republish`, `file`, `s3`"),
            "{}",
            error.message
        );
        // Line 5, where the key is.
        assert_eq!(
            error.span.start,
            "[[rule]]\nname = \"r\"\nsql = \"SELECT * FROM 'a'\"\n[[rule.actions]]\n".len()
        );
    }
}
