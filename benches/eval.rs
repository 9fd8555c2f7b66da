//! The cost of one rule evaluation, next to the cost of parsing the same payload with
//! serde_json (the baseline a hand-written consumer would pay anyway).
//!
//! "A whole evaluation" is the engine's work per message: decode the payload bytes
//! (`Value::from_payload`), route the topic (`Query::route`), evaluate, and write the output
//! payload bytes (`write_payload`). Compilation happens once, outside the timed loop, as it
//! does when a rule is loaded.
//!
//! Run: `cargo bench --bench eval -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use bytes::Bytes;
use topicrule::sql::value::Payload;
use topicrule::sql::{self, Message, Query, SqlVersion, Value};
use topicrule::template::Template;

/// A realistic telemetry message, about 200 bytes.
const PAYLOAD: &[u8] = br#"{"device":"sensor-0042","temp":36.75,"humidity":48.2,"location":{"lat":47.6097,"lon":-122.3331,"site":"plant-7"},"readings":[36.5,36.75,36.9],"ts":"2024-05-14T09:21:37.512Z","battery":87,"fw":"1.4.2"}"#;
/// The same message on a cool day: the WHERE of the rule is false.
const PAYLOAD_COOL: &[u8] = br#"{"device":"sensor-0042","temp":21.75,"humidity":48.2,"location":{"lat":47.6097,"lon":-122.3331,"site":"plant-7"},"readings":[21.5,21.75,21.9],"ts":"2024-05-14T09:21:37.512Z","battery":87,"fw":"1.4.2"}"#;

const TOPIC: &str = "sensors/sensor-0042/telemetry";
const RULE: &str = "bench";
const VERSION: SqlVersion = SqlVersion::V2016_03_23;

const SQL: &str = "SELECT device, temp * 1.8 + 32 AS f FROM 'sensors/+/telemetry' WHERE temp > 30";
const SQL_STAR: &str = "SELECT * FROM 'sensors/+/telemetry'";
const TEMPLATE: &str = "archive/${topic(2)}/${timestamp()}.json";
/// Used only while `timestamp()` is not implemented, so that the template bench still runs.
const TEMPLATE_FALLBACK: &str = "archive/${topic(2)}/${topic(3)}.json";

fn compile(sql: &str) -> Query {
    sql::compile(sql, VERSION).unwrap_or_else(|e| panic!("{sql}: {e:?}"))
}

/// One message through the engine: decode, route, evaluate, write. Returns the output
/// length (0 when the rule does not fire) so that nothing is optimised away.
fn whole_evaluation(query: &Query, topic: &str, bytes: &'static [u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    // As the router hands it over: a share of the packet's bytes, not a copy.
    let payload = Payload::new(Bytes::from_static(bytes));
    let Some(topic) = query.route(topic, RULE) else {
        return 0;
    };
    let msg = Message {
        topic,
        payload: &payload,
        clientid: Some("sensor-0042"),
        timestamp_ms: 1_715_678_497_512,
        properties: None,
        rule_name: RULE,
        shadows: None,
    };
    let Some(evaluation) = query.evaluate(&msg) else {
        return 0;
    };
    evaluation.output.write_payload(out, VERSION);
    out.len()
}

fn bench(c: &mut Criterion) {
    let query = compile(SQL);
    let star = compile(SQL_STAR);
    let template = Template::parse(TEMPLATE, VERSION, &[]).unwrap_or_else(|errors| {
        eprintln!(
            "note: `{TEMPLATE}` does not compile yet ({}); benchmarking `{TEMPLATE_FALLBACK}`",
            errors[0].message
        );
        Template::parse(TEMPLATE_FALLBACK, VERSION, &[]).expect("fallback template")
    });

    // Sanity checks: the benchmarks measure what they claim to.
    let mut out = Vec::with_capacity(256);
    assert!(whole_evaluation(&query, TOPIC, PAYLOAD, &mut out) > 0);
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(
        text.starts_with(r#"{"device":"sensor-0042","f":98.15"#),
        "{text}"
    );
    assert_eq!(whole_evaluation(&query, TOPIC, PAYLOAD_COOL, &mut out), 0);
    assert!(whole_evaluation(&star, TOPIC, PAYLOAD, &mut out) > 0);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out).unwrap(),
        serde_json::from_slice::<serde_json::Value>(PAYLOAD).unwrap()
    );

    let mut group = c.benchmark_group("eval");
    group.throughput(Throughput::Bytes(PAYLOAD.len() as u64));
    group.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(PAYLOAD)).unwrap())
    });
    group.bench_function("decode_only_from_payload", |b| {
        b.iter(|| Value::from_payload(black_box(PAYLOAD)))
    });
    group.bench_function("rule_fires", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| whole_evaluation(&query, black_box(TOPIC), black_box(PAYLOAD), &mut out))
    });
    group.bench_function("rule_where_false", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| whole_evaluation(&query, black_box(TOPIC), black_box(PAYLOAD_COOL), &mut out))
    });
    group.bench_function("select_star", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| whole_evaluation(&star, black_box(TOPIC), black_box(PAYLOAD), &mut out))
    });
    group.finish();

    // The template alone, on an already decoded message (as an action expands it after the
    // rule fired).
    let payload = Payload::new(Bytes::from_static(PAYLOAD));
    payload.value();
    let msg = Message {
        topic: TOPIC,
        payload: &payload,
        clientid: Some("sensor-0042"),
        timestamp_ms: 1_715_678_497_512,
        properties: None,
        rule_name: RULE,
        shadows: None,
    };
    let mut group = c.benchmark_group("template");
    group.bench_function("expand", |b| {
        b.iter(|| template.expand(black_box(&msg), &[]))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
