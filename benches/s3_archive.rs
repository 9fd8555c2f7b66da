//! Messages per second archived by the `s3` action into a local S3-compatible server
//! (s3s-fs), against a baseline measured in the same run: the same messages through the
//! `file` action. Per-message mode puts up to `[router] max_in_flight` (256) objects at
//! once; batch mode syncs the lines of what arrived together into its spool with one fsync
//! (group commit) and puts one gzip object a 1000. The file action syncs the same way.
//!
//! `cargo bench --bench s3_archive` (needs mosquitto and s3s-fs, as the tests do). Each
//! mode queues `COUNT` messages at the broker for topicrule's persistent session while
//! topicrule is stopped, then times topicrule from its start until every message is in
//! its sink, so that only topicrule is measured, not the publisher.
//! Under `cargo test` it does nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use support::s3::{start_topicrule, S3Server};
use support::{publish, Mosquitto, TempDir, Topicrule};

const COUNT: usize = 5_000;

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
        r#"s3 = { bucket = "bench", key = "b/${topic(2)}.json" }"#,
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
    let payload = br#"{"device":"pump-7","temp":21.5,"rpm":1200,"status":"ok","seq":0}"#;
    let topics: Vec<String> = (0..COUNT).map(|n| format!("bench/{n}")).collect();
    let messages: Vec<(&str, &[u8])> = topics.iter().map(|t| (t.as_str(), &payload[..])).collect();
    publish(broker.port, &messages);
    let started = Instant::now();
    let _topicrule = start(&broker, &store, &dir);
    let deadline = started + Duration::from_secs(300);
    while done(dir.path(), &store) < COUNT {
        assert!(
            Instant::now() < deadline,
            "{name}: not every message arrived"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rate = COUNT as f64 / started.elapsed().as_secs_f64();
    eprintln!("{name}: {COUNT} messages in {:?}", started.elapsed());
    rate
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
