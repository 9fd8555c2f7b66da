//! Messages per second archived by the `s3` action into a local S3-compatible server
//! (s3s-fs), against a baseline measured in the same run: the same messages through the
//! `file` action. Per-message mode puts up to `[router] max_in_flight` (256) objects at
//! once; batch mode syncs the lines of what arrived together into its spool with one fsync
//! (group commit) and puts one gzip object a 1000. The file action syncs the same way.
//!
//! `cargo bench --bench s3_archive` (needs mosquitto and s3s-fs, as the tests do). Each
//! mode queues `S3_ARCHIVE_COUNT` (50,000) 200-byte JSON messages on `S3_ARCHIVE_TOPICS`
//! (100) topics at the broker for topicrule's persistent session while topicrule is
//! stopped, then times topicrule from its connection (the time in its log line; the broker
//! sends the queue at once) until every message is in its sink, so that only topicrule
//! is measured, not the publisher nor its start. Under `cargo test` it does nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use support::s3::{start_topicrule, S3Server};
use support::{publish, Mosquitto, TempDir, Topicrule};

/// `S3_ARCHIVE_<name>`, or `default`.
fn setting(name: &str, default: usize) -> usize {
    std::env::var(format!("S3_ARCHIVE_{name}"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let file = measure("file", r#"file = { path = "bench.jsonl" }"#, |dir, _| {
        let text = std::fs::read_to_string(dir.join("data/bench.jsonl")).unwrap_or_default();
        text.lines().count()
    });
    let s3 = measure(
        "s3",
        r#"s3 = { bucket = "bench", key = "b/${newuuid()}.json" }"#,
        |_, store| count_objects(&store.dir.path().join("root/bench/b")),
    );
    let batch = measure(
        "s3-batch",
        r#"s3 = { bucket = "bench", key = "batch/${topic(2)}", batch = { max_records = 1000, max_age = 1 }, compression = "gzip" }"#,
        |_, store| count_records(&store.dir.path().join("root/bench/batch")),
    );
    println!("file (baseline): {file:.0} messages/s");
    println!(
        "s3, one object a message, up to 256 puts at once: {s3:.0} messages/s ({:.2} x the baseline)",
        s3 / file
    );
    println!(
        "s3 batch mode, 1000 records a gzip object, lines synced to the spool in groups: {batch:.0} messages/s ({:.2} x the baseline)",
        batch / file
    );
}

/// Messages per second through one action: `done` counts the messages in the sink.
fn measure(name: &str, action: &str, done: impl Fn(&Path, &S3Server) -> usize) -> f64 {
    let (count, topics) = (setting("COUNT", 50_000), setting("TOPICS", 100));
    let broker = Mosquitto::start();
    let store = S3Server::start();
    store.reader().create_bucket("bench");
    let dir = TempDir::new(&format!("bench-{name}"));
    dir.write(
        "rules/bench.toml",
        &format!(
            "[[rule]]\nname = \"bench\"\nsql = \"SELECT *, topic(2) AS n FROM 'bench/+'\"\n\
             [[rule.actions]]\n{action}\n"
        ),
    );
    // A first run creates the persistent session; the messages then queue for it.
    start(&broker, &store, &dir).stop();
    let topic_names: Vec<String> = (0..topics).map(|n| format!("bench/d-{n}")).collect();
    let payloads: Vec<Vec<u8>> = (0..count).map(payload).collect();
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
