//! Batch mode of the `s3` action against s3s-fs and mosquitto: batches closed by count, by
//! size and by age; gzip and zstd read back; a batch left by a crash uploaded at start.

mod support;

use std::io::Read;
use std::time::Duration;

use support::s3::{start_topicrule as start, S3Reader, S3Server};
use support::{publish, Mosquitto, TempDir};

const WAIT: Duration = Duration::from_secs(15);

/// The key of most tests: each batch's first message's topic level.
const KEY: &str = "b/${topic(2)}";

fn rule(key: &str, batch: &str) -> String {
    format!(
        r#"
[[rule]]
name = "batched"
sql = "SELECT * FROM 'seq/+'"
[[rule.actions]]
s3 = {{ bucket = "archive", key = "{key}", {batch} }}
"#
    )
}

/// Publishes `seq/<n>` with `{"n":<n>}` for each n.
fn publish_range(broker: &Mosquitto, range: std::ops::Range<usize>) {
    let topics: Vec<String> = range.clone().map(|n| format!("seq/{n}")).collect();
    let bodies: Vec<String> = range.map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let messages: Vec<(&str, &[u8])> = topics
        .iter()
        .zip(&bodies)
        .map(|(t, b)| (t.as_str(), b.as_bytes()))
        .collect();
    publish(broker.port, &messages);
}

/// Every record of every object of the bucket, decompressed, one string an object.
fn objects(reader: &S3Reader, keys: &[String]) -> Vec<String> {
    keys.iter()
        .map(|key| {
            let bytes = reader.get("archive", key);
            let mut text = String::new();
            if key.ends_with(".gz") {
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_string(&mut text)
                    .unwrap();
            } else if key.ends_with(".zst") {
                text = String::from_utf8(zstd::decode_all(&bytes[..]).unwrap()).unwrap();
            } else {
                text = String::from_utf8(bytes).unwrap();
            }
            text
        })
        .collect()
}

fn setup(name: &str, batch: &str) -> (Mosquitto, S3Server, S3Reader, TempDir) {
    setup_keyed(name, KEY, batch)
}

fn setup_keyed(name: &str, key: &str, batch: &str) -> (Mosquitto, S3Server, S3Reader, TempDir) {
    let broker = Mosquitto::start();
    let store = S3Server::start();
    let reader = store.reader();
    reader.create_bucket("archive");
    let dir = TempDir::new(name);
    dir.write("rules/batched.toml", &rule(key, batch));
    (broker, store, reader, dir)
}

#[test]
fn batches_close_by_count_with_the_first_message_key() {
    let (broker, store, reader, dir) =
        setup("batch-count", "batch = { max_records = 3, max_age = 3600 }");
    let _topicrule = start(&broker, &store, &dir, "batch-count", &[]);
    publish_range(&broker, 0..7);
    let keys = reader.wait_for_keys("archive", 2, WAIT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        reader.keys("archive"),
        keys,
        "the 7th message closed a batch"
    );
    assert_eq!(keys.len(), 2, "{keys:?}");
    let mut records: Vec<String> = Vec::new();
    for (key, text) in keys.iter().zip(objects(&reader, &keys)) {
        assert_eq!(text.lines().count(), 3, "{key}: {text}");
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert!(
            key.starts_with(&format!("b/{}-", first["n"])),
            "{key} vs {text}"
        );
        assert!(key.ends_with(".ndjson"), "{key}");
        records.extend(text.lines().map(str::to_owned));
    }
    assert_eq!(records.len(), 6);
}

#[test]
fn batches_close_by_size_gzip() {
    // Each line (`{"n":0}` and a newline) is 8 bytes: a batch closes at its 3rd line.
    let (broker, store, reader, dir) = setup(
        "batch-size",
        r#"batch = { max_bytes = 24, max_age = 3600 }, compression = "gzip""#,
    );
    let _topicrule = start(&broker, &store, &dir, "batch-size", &[]);
    publish_range(&broker, 0..6);
    let keys = reader.wait_for_keys("archive", 2, WAIT);
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.ends_with(".ndjson.gz")), "{keys:?}");
    let texts = objects(&reader, &keys);
    let mut numbers: Vec<u64> = texts
        .iter()
        .flat_map(|t| t.lines())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    numbers.sort();
    assert_eq!(numbers, [0, 1, 2, 3, 4, 5]);
}

#[test]
fn batches_close_by_age_zstd() {
    let (broker, store, reader, dir) = setup(
        "batch-age",
        r#"batch = { max_records = 1000, max_age = 1 }, compression = "zstd""#,
    );
    let _topicrule = start(&broker, &store, &dir, "batch-age", &[]);
    publish_range(&broker, 0..4);
    let keys = reader.wait_for_keys("archive", 1, WAIT);
    assert!(
        !keys.is_empty() && keys[0].ends_with(".ndjson.zst"),
        "{keys:?}"
    );
    let keys = reader.wait_for_keys("archive", 4, Duration::from_secs(3));
    let lines: usize = objects(&reader, &keys)
        .iter()
        .map(|t| t.lines().count())
        .sum();
    assert_eq!(lines, 4, "{keys:?}");
}

/// A batch left open by a crash is uploaded when topicrule starts again.
#[test]
fn a_batch_left_by_a_crash_is_uploaded_at_start() {
    let (broker, store, reader, dir) = setup(
        "batch-crash",
        "batch = { max_records = 100, max_age = 3600 }",
    );
    let mut topicrule = start(&broker, &store, &dir, "batch-crash", &[]);
    publish_range(&broker, 0..5);
    std::thread::sleep(Duration::from_millis(500));
    assert!(reader.keys("archive").is_empty());
    topicrule.wait_for_log("message on `seq/4`");
    topicrule.kill();
    let _topicrule = start(&broker, &store, &dir, "batch-crash", &[]);
    let keys = reader.wait_for_keys("archive", 1, WAIT);
    // The key of the batch's first message (messages run concurrently: any of them), the
    // instance (its client id) and the batch's number.
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        keys[0].starts_with("b/") && keys[0].ends_with("-batch-crash-000000.ndjson"),
        "{keys:?}"
    );
    assert_eq!(objects(&reader, &keys)[0].lines().count(), 5);
}

/// A batch number is never given twice, across restarts: with one key for every message,
/// no batch overwrites an earlier one.
#[test]
fn batch_numbers_are_not_reused_after_a_restart() {
    let (broker, store, reader, dir) = setup_keyed(
        "batch-renumber",
        "b/all",
        "batch = { max_records = 2, max_age = 3600 }",
    );
    for round in 0..3 {
        let topicrule = start(&broker, &store, &dir, "batch-renumber", &[]);
        publish_range(&broker, round * 2..round * 2 + 2);
        reader.wait_for_keys("archive", round + 1, WAIT);
        topicrule.kill();
    }
    let keys = reader.keys("archive");
    assert_eq!(keys.len(), 3, "{keys:?}");
    let mut records: Vec<String> = objects(&reader, &keys)
        .iter()
        .flat_map(|text| text.lines().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    records.sort();
    let mut expected: Vec<String> = (0..6).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    expected.sort();
    assert_eq!(records, expected, "every message once");
}

/// A spool left by a version without instance folders (`spool/<rule>-<action>`) is taken
/// over and uploaded under the key it was given.
#[test]
fn a_spool_of_an_earlier_layout_is_uploaded() {
    let (broker, store, reader, dir) = setup(
        "batch-legacy",
        "batch = { max_records = 100, max_age = 3600 }",
    );
    dir.write("spool/batched-0/next", "1");
    dir.write("spool/batched-0/000000000000.key", "old/key-000000.ndjson");
    dir.write(
        "spool/batched-0/000000000000.open",
        "{\"seq\":1}\n{\"seq\":2}\n",
    );
    let _topicrule = start(&broker, &store, &dir, "batch-legacy", &[]);
    let keys = reader.wait_for_keys("archive", 1, WAIT);
    assert_eq!(keys, ["old/key-000000.ndjson"]);
    assert_eq!(objects(&reader, &keys)[0].lines().count(), 2);
    assert!(dir
        .path()
        .join("spool/batch-legacy/batched-0/next")
        .is_file());
    assert!(!dir.path().join("spool/batched-0").exists());
}

/// A batch bigger than a part (8 MiB) goes up as a multipart upload, a part at a time, and
/// reads back whole, in order.
#[test]
fn a_big_batch_is_uploaded_in_parts() {
    let (broker, store, reader, dir) = setup(
        "batch-multipart",
        "batch = { max_records = 5, max_bytes = 104857600, max_age = 3600 }",
    );
    let mut topicrule = start(&broker, &store, &dir, "batch-multipart", &[]);
    // 5 records of 2.5 MB: a batch of 12.5 MB, 2 parts.
    let bodies: Vec<String> = (0..5)
        .map(|n| format!(r#"{{"n":{n},"pad":"{}"}}"#, "x".repeat(2_500_000)))
        .collect();
    let messages: Vec<(&str, &[u8])> = bodies.iter().map(|b| ("seq/big", b.as_bytes())).collect();
    publish(broker.port, &messages);
    let keys = reader.wait_for_keys("archive", 1, WAIT);
    topicrule.wait_for_log("(2 part(s))");
    let text = &objects(&reader, &keys)[0];
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, bodies, "the object is the batch, whole and in order");
}
