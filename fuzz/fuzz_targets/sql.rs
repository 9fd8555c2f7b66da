//! The whole SQL path on arbitrary input: parse, compile (both SQL versions), route,
//! evaluate, write the output payload, and parse and expand a substitution template.
//! None of it may panic, overflow the stack, or hang, whatever the input.
//!
//! The input is split at its first two 0xFF bytes (a byte that never occurs in UTF-8):
//! `SQL 0xFF PAYLOAD 0xFF TEMPLATE`. Missing parts are empty. The SQL and the template are
//! read as UTF-8 (invalid sequences become U+FFFD); the payload stays bytes, JSON or not.
#![no_main]

use libfuzzer_sys::fuzz_target;

use topicrule::sql::eval::MqttProperties;
use topicrule::sql::{self, Message, SqlVersion, Value};
use topicrule::template::Template;

const RULE: &str = "fuzz";

/// Whether the input has a number with an exponent of 5 digits or more (`1e99999`).
/// With `TOPICRULE_FUZZ_SKIP_HUGE_EXPONENTS=1` such inputs are skipped, so that a run is not
/// stuck on the known slowness of huge Decimals (see README.md) and explores other paths.
fn huge_exponent(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, b)| {
        if !matches!(b, b'e' | b'E') {
            return false;
        }
        let mut rest = &bytes[i + 1..];
        if let [b'+' | b'-', tail @ ..] = rest {
            rest = tail;
        }
        rest.iter().take_while(|b| b.is_ascii_digit()).count() >= 5
    })
}

fn skip_huge_exponents() -> bool {
    static SKIP: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SKIP.get_or_init(|| std::env::var_os("TOPICRULE_FUZZ_SKIP_HUGE_EXPONENTS").is_some_and(|v| v == "1"))
}

fn split(data: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0xFF);
    let sql = parts.next().unwrap_or_default();
    let payload = parts.next().unwrap_or_default();
    let template = parts.next().unwrap_or_default();
    (sql, payload, template)
}

fuzz_target!(|data: &[u8]| {
    if skip_huge_exponents() && huge_exponent(data) {
        return;
    }
    let (sql_bytes, payload_bytes, template_bytes) = split(data);
    let sql_text = String::from_utf8_lossy(sql_bytes);
    let template_text = String::from_utf8_lossy(template_bytes);

    // The parser alone, statement and lone expression (a template's inside).
    let _ = sql::parse::parse_statement(&sql_text);
    let _ = sql::parse::parse_expression(&sql_text);

    let payload = Value::from_payload(payload_bytes);
    let properties = MqttProperties {
        content_type: Some("application/json".into()),
        payload_format_indicator: Some(1),
        response_topic: Some("reply/to".into()),
        correlation_data: Some(payload_bytes.iter().copied().take(16).collect()),
        message_expiry_interval: Some(60),
        user_properties: vec![("k".into(), "v".into()), ("k".into(), "w".into())],
    };

    for version in [SqlVersion::V2015_10_08, SqlVersion::V2016_03_23] {
        let query = sql::compile(&sql_text, version).ok();
        let vars: Vec<String> = query
            .iter()
            .flat_map(|q| q.set.iter().map(|(name, _)| name.clone()))
            .collect();
        let template = Template::parse(&template_text, version, &vars).ok();

        let Some(query) = query else {
            // The template still runs, on the raw message.
            if let Some(template) = &template {
                let msg = message("a/b/c", &payload, &properties);
                let _ = template.expand(&msg, &[]);
            }
            continue;
        };

        // A topic that matches most filters' shape, a Basic Ingest topic (it always reaches
        // the rule it names), and the FROM filter itself (which matches itself when it has no
        // wildcard).
        let from = query.from.clone().unwrap_or_default();
        let topics = [
            "sensors/dev-1/telemetry".to_owned(),
            format!("$aws/rules/{RULE}/a/b/c"),
            from,
        ];
        for topic in &topics {
            let Some(routed) = query.route(topic, RULE) else {
                continue;
            };
            let msg = message(routed, &payload, &properties);
            let Some(evaluation) = query.evaluate(&msg) else {
                continue;
            };
            let mut out = Vec::new();
            evaluation.output.write_payload(&mut out, version);
            let _ = evaluation.output.to_json(version);
            if let Some(template) = &template {
                let _ = template.expand(&msg, &evaluation.vars);
            }
        }
    }
});

fn message<'a>(topic: &'a str, payload: &'a Value, properties: &'a MqttProperties) -> Message<'a> {
    Message {
        topic,
        payload,
        clientid: Some("fuzz-client"),
        timestamp_ms: 1_481_825_251_155,
        properties: Some(properties),
        rule_name: RULE,
        shadows: None,
    }
}
