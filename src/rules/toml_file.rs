//! The TOML rule format: several `[[rule]]` tables a file, each with `[[rule.actions]]` and
//! an optional `[rule.error_action]`. Each action table has one key that names its kind,
//! so an AWS `CreateTopicRule` payload maps onto it one to one.

use serde::de::IgnoredAny;
use serde::Deserialize;
use toml::Spanned;

use super::draft::{
    ActionDraft, ActionKind, BatchDraft, Draft, DraftError, HeadersDraft, Located, TestDraft,
};
use crate::sql::ast::Span;
use crate::sql::SqlVersion;

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

/// One action: exactly one of the keys. The AWS-only kinds are listed so that they get a
/// clear "cannot run" error rather than "unknown field".
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    republish: Option<RawRepublish>,
    file: Option<RawFileAction>,
    s3: Option<RawS3>,
    lambda: Option<IgnoredAny>,
    #[serde(rename = "dynamoDB")]
    dynamo_db: Option<IgnoredAny>,
    #[serde(rename = "dynamoDBv2")]
    dynamo_db_v2: Option<IgnoredAny>,
    kinesis: Option<IgnoredAny>,
    firehose: Option<IgnoredAny>,
    sns: Option<IgnoredAny>,
    sqs: Option<IgnoredAny>,
    #[serde(rename = "cloudwatchMetric")]
    cloudwatch_metric: Option<IgnoredAny>,
    #[serde(rename = "cloudwatchAlarm")]
    cloudwatch_alarm: Option<IgnoredAny>,
    #[serde(rename = "cloudwatchLogs")]
    cloudwatch_logs: Option<IgnoredAny>,
    elasticsearch: Option<IgnoredAny>,
    #[serde(rename = "openSearch")]
    open_search: Option<IgnoredAny>,
    http: Option<IgnoredAny>,
    #[serde(rename = "iotAnalytics")]
    iot_analytics: Option<IgnoredAny>,
    #[serde(rename = "iotEvents")]
    iot_events: Option<IgnoredAny>,
    #[serde(rename = "iotSiteWise")]
    iot_site_wise: Option<IgnoredAny>,
    #[serde(rename = "stepFunctions")]
    step_functions: Option<IgnoredAny>,
    timestream: Option<IgnoredAny>,
    kafka: Option<IgnoredAny>,
    location: Option<IgnoredAny>,
    salesforce: Option<IgnoredAny>,
    #[serde(rename = "influxDB")]
    influx_db: Option<IgnoredAny>,
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
                .map(|e| DraftError::new(Span::new(e.span.start, e.span.end), e.message))
                .collect();
            match file {
                Some(file) => (file, errors),
                None => return (Vec::new(), Vec::new(), errors),
            }
        }
    };
    if file.rule.is_empty() && errors.is_empty() {
        let error = DraftError::new(Span::default(), "no rules in this file")
            .with_hint("add a `[[rule]]` table with a `name` and a `sql`");
        return (Vec::new(), Vec::new(), vec![error]);
    }
    let drafts = file.rule.iter().map(|rule| draft(text, rule)).collect();
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
                    span_of(text),
                    format!("`expect` is not JSON: {e}"),
                ));
                return None;
            }
        },
        (None, true) => None,
        _ => {
            errors.push(DraftError::new(
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

fn draft(text: &str, rule: &Spanned<RawRule>) -> Draft {
    let raw = rule.get_ref();
    Draft {
        name: located(text, &raw.name),
        sql: located(text, &raw.sql),
        sql_version: raw.sql_version.as_ref().map(|v| located(text, v)),
        default_version: SqlVersion::V2016_03_23,
        enabled: raw.enabled,
        actions: raw.actions.iter().map(|a| action(text, a)).collect(),
        error_action: raw.error_action.as_ref().map(|a| action(text, a)),
    }
}

fn action(text: &str, action: &Spanned<RawAction>) -> ActionDraft {
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
    let aws_only = [
        ("lambda", raw.lambda.is_some()),
        ("dynamoDB", raw.dynamo_db.is_some()),
        ("dynamoDBv2", raw.dynamo_db_v2.is_some()),
        ("kinesis", raw.kinesis.is_some()),
        ("firehose", raw.firehose.is_some()),
        ("sns", raw.sns.is_some()),
        ("sqs", raw.sqs.is_some()),
        ("cloudwatchMetric", raw.cloudwatch_metric.is_some()),
        ("cloudwatchAlarm", raw.cloudwatch_alarm.is_some()),
        ("cloudwatchLogs", raw.cloudwatch_logs.is_some()),
        ("elasticsearch", raw.elasticsearch.is_some()),
        ("openSearch", raw.open_search.is_some()),
        ("http", raw.http.is_some()),
        ("iotAnalytics", raw.iot_analytics.is_some()),
        ("iotEvents", raw.iot_events.is_some()),
        ("iotSiteWise", raw.iot_site_wise.is_some()),
        ("stepFunctions", raw.step_functions.is_some()),
        ("timestream", raw.timestream.is_some()),
        ("kafka", raw.kafka.is_some()),
        ("location", raw.location.is_some()),
        ("salesforce", raw.salesforce.is_some()),
        ("influxDB", raw.influx_db.is_some()),
    ];
    kinds.extend(
        aws_only
            .iter()
            .filter(|(_, set)| *set)
            .map(|(name, _)| ActionKind::Unsupported((*name).to_owned())),
    );
    let kind = match kinds.len() {
        1 => kinds.pop().unwrap_or(ActionKind::Malformed(String::new())),
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
        payload_format_indicator: opt(&h.payload_format_indicator),
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
