//! The `s3` action against a real S3-compatible server (s3s-fs, signatures checked) and a
//! real mosquitto, one of each per test; a second S3 client reads back what was written.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::s3::{start_topicrule as start, S3Server, ACCESS_KEY};
use support::{publish, Mosquitto, TempDir};

const WAIT: Duration = Duration::from_secs(15);

/// The error documents written by a `file` error action, once there are `count`.
fn error_documents(path: &Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= count || Instant::now() > deadline {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const ARCHIVE_RULE: &str = r#"
[[rule]]
name = "archive"
sql = "SELECT *, topic(2) AS device FROM 'sensors/+/telemetry'"
[[rule.actions]]
s3 = { bucket = "archive", key = "${topic(2)}/${timestamp()}.json" }
[rule.error_action]
file = { path = "errors.jsonl" }
"#;

/// One object per message, under the key the template gives; AWS rule JSON too.
#[test]
fn each_message_becomes_an_object_under_its_templated_key() {
    let broker = Mosquitto::start();
    let store = S3Server::start();
    let reader = store.reader();
    reader.create_bucket("archive");
    let dir = TempDir::new("s3-keys");
    dir.write("rules/archive.toml", ARCHIVE_RULE);
    dir.write(
        "rules/Aws_Archive.json",
        r#"{"ruleName": "Aws_Archive", "topicRulePayload": {
            "sql": "SELECT VALUE n FROM 'sensors/+/telemetry'", "awsIotSqlVersion": "2016-03-23",
            "actions": [{"s3": {"bucketName": "archive", "key": "aws/${topic(2)}",
                "roleArn": "arn:aws:iam::123456789012:role/r"}}]}}"#,
    );
    let _topicrule = start(&broker, &store, &dir, "s3-keys", &[]);
    publish(
        broker.port,
        &[
            ("sensors/a/telemetry", br#"{"n":1}"#),
            ("sensors/b/telemetry", br#"{"n":2}"#),
        ],
    );
    let keys = reader.wait_for_keys("archive", 4, WAIT);
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert_eq!(reader.get("archive", "aws/a"), b"1");
    assert_eq!(reader.get("archive", "aws/b"), b"2");
    for (device, n) in [("a", 1), ("b", 2)] {
        let key = keys
            .iter()
            .find(|k| k.starts_with(&format!("{device}/")))
            .unwrap();
        let stamp = key[2..].strip_suffix(".json").unwrap();
        assert!(
            stamp.len() == 13 && stamp.bytes().all(|b| b.is_ascii_digit()),
            "{key}"
        );
        let body = String::from_utf8(reader.get("archive", key)).unwrap();
        assert_eq!(body, format!(r#"{{"n":{n},"device":"{device}"}}"#));
    }
}

/// Wrong keys: a clear error, the error action gets AWS's document (with the message),
/// nothing is written.
#[test]
fn wrong_credentials_run_the_error_action() {
    let broker = Mosquitto::start();
    let store = S3Server::start();
    let reader = store.reader();
    reader.create_bucket("archive");
    let dir = TempDir::new("s3-creds");
    dir.write("rules/archive.toml", ARCHIVE_RULE);
    let credentials = dir.write(
        "credentials",
        &format!("[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = wrong\n"),
    );
    let credentials = credentials.to_str().unwrap();
    let env = [("TOPICRULE_S3_CREDENTIALS_FILE", credentials)];
    let _topicrule = start(&broker, &store, &dir, "s3-creds", &env);
    publish(broker.port, &[("sensors/a/telemetry", br#"{"n":1}"#)]);
    let docs = error_documents(&dir.path().join("data/errors.jsonl"), 1);
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    assert_eq!(doc["ruleName"], "archive");
    assert_eq!(doc["base64OriginalPayload"], "eyJuIjoxfQ==");
    assert_eq!(doc["failures"][0]["failedAction"], "S3Action");
    assert_eq!(doc["failures"][0]["failedResource"], "archive");
    let message = doc["failures"][0]["errorMessage"].as_str().unwrap();
    assert!(
        message.starts_with("cannot put `s3://archive/a/"),
        "{message}"
    );
    assert!(
        message.ends_with(": the store answered 403 SignatureDoesNotMatch"),
        "{message}"
    );
    assert!(reader.keys("archive").is_empty());
}

/// Without an error action, a message whose put fails stays with the broker, and lands in
/// the store once topicrule restarts with the right keys.
#[test]
fn wrong_credentials_leave_the_message_for_redelivery() {
    let broker = Mosquitto::start();
    let store = S3Server::start();
    let reader = store.reader();
    reader.create_bucket("archive");
    let dir = TempDir::new("s3-redeliver");
    dir.write(
        "rules/keep.toml",
        r#"
[[rule]]
name = "keep"
sql = "SELECT * FROM 'keep/+'"
[[rule.actions]]
s3 = { bucket = "archive", key = "kept/${topic(2)}.json" }
"#,
    );
    let wrong = [("AWS_SECRET_ACCESS_KEY", "wrong")];
    let mut topicrule = start(&broker, &store, &dir, "s3-redeliver", &wrong);
    publish(broker.port, &[("keep/one", br#"{"v":1}"#)]);
    topicrule.wait_for_log("retrying a failed action");
    assert!(topicrule
        .log
        .iter()
        .any(|l| l.contains("SignatureDoesNotMatch")));
    topicrule.kill();
    assert!(reader.keys("archive").is_empty());

    let _topicrule = start(&broker, &store, &dir, "s3-redeliver", &[]);
    assert_eq!(reader.wait_for_keys("archive", 1, WAIT), ["kept/one.json"]);
    assert_eq!(reader.get("archive", "kept/one.json"), br#"{"v":1}"#);
}

/// A key with a `..` segment fails the action before anything is sent.
#[test]
fn a_key_with_dot_dot_runs_the_error_action_and_writes_nothing() {
    let broker = Mosquitto::start();
    let store = S3Server::start();
    let reader = store.reader();
    reader.create_bucket("archive");
    let dir = TempDir::new("s3-dotdot");
    dir.write(
        "rules/archive.toml",
        &ARCHIVE_RULE.replace("${topic(2)}/${timestamp()}.json", "${topic(2)}/x.json"),
    );
    let _topicrule = start(&broker, &store, &dir, "s3-dotdot", &[]);
    publish(
        broker.port,
        &[
            ("sensors/../telemetry", br#"{"n":1}"#),
            ("sensors/ok/telemetry", br#"{"n":2}"#),
        ],
    );
    let docs = error_documents(&dir.path().join("data/errors.jsonl"), 1);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["topic"], "sensors/../telemetry");
    let message = docs[0]["failures"][0]["errorMessage"].as_str().unwrap();
    assert_eq!(
        message,
        "the s3 key `../x.json` has an empty, `.` or `..` segment"
    );
    assert_eq!(reader.wait_for_keys("archive", 1, WAIT), ["ok/x.json"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(reader.keys("archive"), ["ok/x.json"]);
    // s3s-fs keeps its own metadata in hidden files; the objects are plain files.
    let visible = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    };
    let root = store.dir.path().join("root");
    assert_eq!(
        visible(&root),
        ["archive"],
        "something was written beside the bucket"
    );
    assert_eq!(visible(&root.join("archive")), ["ok"]);
}

/// The store goes away for 20 s mid-stream: the puts that fail are retried, holding their
/// messages unacknowledged, until the store is back; every message ends in the store,
/// without a restart.
#[test]
fn a_store_outage_loses_nothing() {
    const COUNT: usize = 60;
    let broker = Mosquitto::start();
    let mut store = S3Server::start();
    let reader = store.reader();
    reader.create_bucket("archive");
    let dir = TempDir::new("s3-outage");
    dir.write(
        "rules/seq.toml",
        r#"
[[rule]]
name = "seq"
sql = "SELECT * FROM 'seq/+'"
[[rule.actions]]
s3 = { bucket = "archive", key = "seq/${topic(2)}.json" }
"#,
    );
    let env = [
        ("TOPICRULE_S3_ATTEMPTS", "3"),
        ("TOPICRULE_S3_ATTEMPT_TIMEOUT", "2"),
    ];
    let topicrule = start(&broker, &store, &dir, "s3-outage", &env);
    let started = Instant::now();
    for n in 0..COUNT {
        if n == 10 {
            store.stop();
        }
        if n == 50 {
            store.start_again();
        }
        publish(
            broker.port,
            &[(&format!("seq/{n}"), format!(r#"{{"n":{n}}}"#).as_bytes())],
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(started.elapsed() >= Duration::from_secs(20));
    let keys = reader.wait_for_keys("archive", COUNT, Duration::from_secs(90));
    drop(topicrule);
    let mut expected: Vec<String> = (0..COUNT).map(|n| format!("seq/{n}.json")).collect();
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(reader.get("archive", "seq/17.json"), br#"{"n":17}"#);
}
