//! Messages per second archived by the `file` action and the `s3` action (one object a
//! message, and batch mode) into a local S3-compatible server (s3s-fs), each measured two
//! ways in the same run:
//!
//! - **the sink alone**, in process: `S3_ARCHIVE_COUNT` (50,000) 200-byte JSON messages on
//!   `S3_ARCHIVE_TOPICS` (100) topics are made first (queued), then drained through the
//!   engine and the action as topicrule runs them: on one thread, the topics in parallel and
//!   each topic's messages one after the other, a message acknowledged when its line is
//!   synced (`file`, batch mode's spool) or its object stored. Batch mode also reports
//!   until every batch was uploaded.
//! - **through mosquitto**: the same messages queued at the broker for topicrule's
//!   persistent session while topicrule is stopped, then timed from topicrule's connection
//!   (the time in its log line; the broker sends the queue at once) until every message is
//!   in its sink, so that only topicrule is measured, not the publisher nor its start. The
//!   broker's window (`max_inflight_messages 100` in the tests' mosquitto) bounds the
//!   messages that wait for one sync together.
//!
//! `cargo bench --bench s3_archive` (needs mosquitto and s3s-fs, as the tests do);
//! `cargo bench --bench s3_archive -- s3-batch` measures one sink (`file`, `s3`,
//! `s3-batch`). Under `cargo test` it does nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use support::s3::{start_topicrule, S3Server, ACCESS_KEY, REGION, SECRET_KEY};
use support::{publish, Mosquitto, TempDir, Topicrule};
use topicrule::actions::file::Files;
use topicrule::actions::s3::{self, store::Stores};
use topicrule::actions::Effect;
use topicrule::config::S3Settings;
use topicrule::engine::Engine;

/// `S3_ARCHIVE_<name>`, or `default`.
fn setting(name: &str, default: usize) -> usize {
    std::env::var(format!("S3_ARCHIVE_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The actions measured: a name (to choose with an argument), the action, and how many
/// messages its sink holds.
type Sink = (&'static str, &'static str, fn(&Path, &S3Server) -> usize);

const SINKS: [Sink; 3] = [
    ("file", r#"file = { path = "bench.jsonl" }"#, |dir, _| {
        let text = std::fs::read_to_string(dir.join("data/bench.jsonl")).unwrap_or_default();
        text.lines().count()
    }),
    // One object a message: a put for each message in flight (one a topic, at most 100).
    (
        "s3",
        r#"s3 = { bucket = "bench", key = "b/${newuuid()}.json" }"#,
        |_, store| count_objects(&store.dir.path().join("root/bench/b")),
    ),
    // 1000 records a gzip object, lines synced to the spool in groups.
    (
        "s3-batch",
        r#"s3 = { bucket = "bench", key = "batch/${topic(2)}", batch = { max_records = 1000, max_age = 1 }, compression = "gzip" }"#,
        |_, store| count_records(&store.dir.path().join("root/bench/batch")),
    ),
];

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    // `cargo bench --bench s3_archive -- s3-batch` measures that sink only.
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mut table = Vec::new();
    for (name, action, held) in SINKS {
        if chosen.is_empty() || chosen.iter().any(|c| c == name) {
            let (acknowledged, stored) = alone(name, action, held);
            table.push((name, acknowledged, stored, through(name, action, held)));
        }
    }
    println!("messages/s: the sink alone (acknowledged, and until all stored) | through mosquitto");
    for (name, acknowledged, stored, through) in table {
        println!("  {name:<8} {acknowledged:>9.0} {stored:>9.0} | {through:>9.0}");
    }
}

/// The bench's rule, with `action`.
fn rule(action: &str) -> String {
    format!(
        "[[rule]]\nname = \"bench\"\nsql = \"SELECT *, topic(2) AS n FROM 'bench/+'\"\n\
         [[rule.actions]]\n{action}\n"
    )
}

/// The bench's messages: `S3_ARCHIVE_COUNT` payloads spread over `S3_ARCHIVE_TOPICS`
/// topics in turn.
fn messages() -> (Vec<String>, Vec<Vec<u8>>) {
    let (count, topics) = (setting("COUNT", 50_000), setting("TOPICS", 100));
    let topic_names = (0..topics).map(|n| format!("bench/d-{n}")).collect();
    (topic_names, (0..count).map(payload).collect())
}

/// Messages per second through one action alone, in process, run as topicrule runs it
/// (one thread): the engine plans each message and its effect is executed, the topics in
/// parallel and each topic's messages one after the other (as the router's lanes). The
/// messages are made first; the time runs until the last is acknowledged (its line
/// synced, its object put), and until `stored` counts every message in the sink (a batch
/// is uploaded after its messages were acknowledged).
fn alone(name: &str, action: &str, stored: impl Fn(&Path, &S3Server) -> usize) -> (f64, f64) {
    let (topic_names, payloads) = messages();
    let (count, topics) = (payloads.len(), topic_names.len());
    let payloads: Vec<Bytes> = payloads.into_iter().map(Bytes::from).collect();
    let store = S3Server::start();
    store.reader().create_bucket("bench");
    let dir = TempDir::new(&format!("bench-alone-{name}"));
    dir.write("rules/bench.toml", &rule(action));
    let credentials = dir.write(
        "credentials",
        &format!(
            "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
        ),
    );
    let rules = topicrule::rules::load(&[dir.path().join("rules")]).expect("the bench's rule");
    let engine = Engine::new(rules);
    let settings = S3Settings {
        endpoint: Some(store.endpoint()),
        region: Some(REGION.into()),
        credentials_file: Some(credentials),
        spool_dir: dir.path().join("spool"),
        ..S3Settings::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (acknowledged, all_stored) = runtime.block_on(async {
        let files = Files::start(dir.path().join("data"), "bench").expect("the file writer");
        let stores = Stores::for_actions(&settings, "bench", engine.actions())
            .await
            .expect("the S3 client");
        let now = chrono::Utc::now().timestamp_millis();
        let start = Instant::now();
        let lanes = topic_names.iter().enumerate().map(|(lane, topic)| {
            let (engine, files, stores, payloads) = (&engine, &files, &stores, &payloads);
            async move {
                for payload in payloads.iter().skip(lane).step_by(topics) {
                    for plan in engine.plan(topic, payload, None, now, None, None) {
                        for (_, effect) in &plan.effects {
                            let result = match effect {
                                Effect::Append(request) => files.append(request).await,
                                Effect::Put(request) => s3::execute(stores, request).await,
                                Effect::Publish(_) => {
                                    unreachable!("the bench's rule publishes nothing")
                                }
                            };
                            result.unwrap_or_else(|e| panic!("{name}: {}", e.message));
                        }
                    }
                }
            }
        });
        futures_util::future::join_all(lanes).await;
        let acknowledged = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(300);
        while stored(dir.path(), &store) < count {
            assert!(
                Instant::now() < deadline,
                "{name}: not every message was stored"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all_stored = start.elapsed();
        stores.spool().close(Duration::from_secs(5)).await;
        (acknowledged, all_stored)
    });
    eprintln!(
        "{name} alone: {count} messages acknowledged in {acknowledged:?}, stored in {all_stored:?}"
    );
    (
        count as f64 / acknowledged.as_secs_f64(),
        count as f64 / all_stored.as_secs_f64(),
    )
}

/// Messages per second through one action through mosquitto: `done` counts the messages
/// in the sink.
fn through(name: &str, action: &str, done: impl Fn(&Path, &S3Server) -> usize) -> f64 {
    let (topic_names, payloads) = messages();
    let (count, topics) = (payloads.len(), topic_names.len());
    let broker = Mosquitto::start();
    let store = S3Server::start();
    store.reader().create_bucket("bench");
    let dir = TempDir::new(&format!("bench-{name}"));
    dir.write("rules/bench.toml", &rule(action));
    // A first run creates the persistent session; the messages then queue for it.
    start(&broker, &store, &dir).stop();
    let messages: Vec<(&str, &[u8])> = payloads
        .iter()
        .enumerate()
        .map(|(n, p)| (topic_names[n % topics].as_str(), &p[..]))
        .collect();
    publish(broker.port, &messages);
    let topicrule = start(&broker, &store, &dir);
    let connected = connected_at(&topicrule);
    let deadline = Instant::now() + Duration::from_secs(300);
    while done(dir.path(), &store) < count {
        assert!(
            Instant::now() < deadline,
            "{name}: not every message arrived"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = SystemTime::now().duration_since(connected).unwrap();
    eprintln!("{name}: {count} messages in {took:?}");
    count as f64 / took.as_secs_f64()
}

/// A 200-byte JSON message.
fn payload(seq: usize) -> Vec<u8> {
    let mut text =
        format!(r#"{{"device":"pump-7","temp":21.5,"rpm":1200,"status":"ok","seq":{seq},"pad":""#);
    text.push_str(&"x".repeat(198usize.saturating_sub(text.len())));
    text.push_str(r#""}"#);
    text.into_bytes()
}

/// When topicrule connected, from its log line's time stamp.
fn connected_at(topicrule: &Topicrule) -> SystemTime {
    let line = topicrule
        .log
        .iter()
        .find(|l| l.contains("connected to the broker"))
        .expect("topicrule logs its connection");
    // Without the terminal's colour codes (ESC [ ... m), if any.
    let mut plain = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    let stamp = plain.split_whitespace().next().expect("a time stamp");
    chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("the time stamp of `{line}`: {e}"))
        .into()
}

fn start(broker: &Mosquitto, store: &S3Server, dir: &TempDir) -> Topicrule {
    start_topicrule(broker, store, dir, "bench", &[])
}

/// The records of the gzip objects s3s-fs holds under a directory.
fn count_records(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".gz"))
        .map(|e| {
            let mut text = String::new();
            let file = std::fs::File::open(e.path()).unwrap();
            let _ = flate2::read::GzDecoder::new(file).read_to_string(&mut text);
            text.lines().count()
        })
        .sum()
}

/// The objects s3s-fs holds under a directory (each object is a file).
fn count_objects(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
        .unwrap_or(0)
}
