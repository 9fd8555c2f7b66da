//! The router against a real mosquitto, one per test, with real clients.

mod support;

use std::time::Duration;

use support::{publish, Mosquitto, Subscriber, TempDir, Topicrule};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(700);

fn start(broker: &Mosquitto, rules: &str, name: &str) -> (Topicrule, TempDir) {
    let dir = TempDir::new(name);
    dir.write("rules/rules.toml", rules);
    let topicrule = Topicrule::start(
        &broker.url(),
        &dir.path().join("rules"),
        &dir.path().join("data"),
        name,
    );
    (topicrule, dir)
}

/// A rule that appends every message on `topic` to the file at `path`.
fn archive_rule(topic: &str, path: &str) -> String {
    format!(
        "[[rule]]\nname = \"archive\"\nsql = \"SELECT * FROM '{topic}'\"\n\
         [[rule.actions]]\nfile = {{ path = \"{path}\" }}\n"
    )
}

/// The text of the file at `path` once it has `lines` lines, or after `WAIT`.
fn wait_for_lines(path: &std::path::Path, lines: usize) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= lines || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The seed scenario: a device's Last Will becomes its shadow document.
#[test]
fn last_will_is_republished_to_the_shadow_topic() {
    let broker = Mosquitto::start();
    let (_topicrule, _dir) = start(&broker, support::LWT_RULE, "lwt");
    support::assert_last_will_reaches_the_shadow(broker.port, &[]);
}

#[test]
fn wildcards_where_and_overlapping_rules_each_run_once() {
    let broker = Mosquitto::start();
    let (_topicrule, _dir) = start(
        &broker,
        r#"
[[rule]]
name = "hot"
sql = "SELECT topic(2) AS device, temp FROM 'sensors/+/telemetry' WHERE temp > 30"
[[rule.actions]]
republish = { topic = "alerts/${topic(2)}", qos = 1 }

[[rule]]
name = "everything"
sql = "SELECT VALUE topic() FROM 'sensors/#'"
[[rule.actions]]
republish = { topic = "seen/all", qos = 1 }
"#,
        "wildcards",
    );
    let alerts = Subscriber::new(broker.port, "alerts/#");
    let seen = Subscriber::new(broker.port, "seen/all");
    publish(
        broker.port,
        &[
            ("sensors/a/telemetry", br#"{"temp":31}"#),
            ("sensors/b/telemetry", br#"{"temp":20}"#),
            ("sensors/c/other", br#"{"temp":99}"#),
        ],
    );
    let alerts = alerts.drain(QUIET * 2);
    assert_eq!(
        alerts,
        vec![(
            "alerts/a".to_owned(),
            br#"{"device":"a","temp":31}"#.to_vec()
        )]
    );
    let mut seen: Vec<String> = seen
        .drain(QUIET)
        .into_iter()
        .map(|(_, p)| String::from_utf8(p).unwrap())
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            r#""sensors/a/telemetry""#,
            r#""sensors/b/telemetry""#,
            r#""sensors/c/other""#
        ]
    );
}

/// Messages that come fast are read several at once (`[router] batch_reads`, on by default):
/// every message of a burst arrives, in order, and so does a lone one after it, which comes
/// while the batching mark may still be raised.
#[test]
fn a_burst_read_in_batches_arrives_whole_and_a_lone_message_after_it_too() {
    const BURST: usize = 3000;
    let broker = Mosquitto::start();
    let (_topicrule, _dir) = start(
        &broker,
        r#"
[[rule]]
name = "relay"
sql = "SELECT n FROM 'burst/in'"
[[rule.actions]]
republish = { topic = "burst/out", qos = 1 }
"#,
        "burst",
    );
    let out = Subscriber::new(broker.port, "burst/out");
    let payloads: Vec<String> = (0..=BURST).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    let burst: Vec<(&str, &[u8])> = payloads[..BURST]
        .iter()
        .map(|p| ("burst/in", p.as_bytes()))
        .collect();
    publish(broker.port, &burst);
    publish(broker.port, &[("burst/in", payloads[BURST].as_bytes())]);
    let received: Vec<String> = out
        .drain(QUIET * 2)
        .into_iter()
        .map(|(_, p)| String::from_utf8(p).unwrap())
        .collect();
    assert_eq!(received.len(), BURST + 1, "messages were lost or held back");
    assert_eq!(received, payloads, "the burst is out of order");
}

#[test]
fn binary_payloads_pass_through_and_headers_are_published() {
    let broker = Mosquitto::start();
    let (_topicrule, _dir) = start(
        &broker,
        r#"
[[rule]]
name = "raw"
sql = "SELECT * FROM 'raw/in'"
[[rule.actions]]
republish = { topic = "raw/out", qos = 1, headers = { content_type = "application/octet-stream", user_properties = [{ key = "source", value = "${topic()}" }] } }
"#,
        "binary",
    );
    let out = Subscriber::new(broker.port, "raw/out");
    let bytes: &[u8] = &[0, 159, 146, 150, 255, b'\n', 1];
    publish(broker.port, &[("raw/in", bytes)]);
    let (_, payload, properties) = out.next_with_properties(WAIT).expect("nothing republished");
    assert_eq!(payload, bytes);
    let properties = properties.expect("no MQTT 5 properties");
    assert_eq!(
        properties.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        properties.user_properties,
        vec![("source".to_owned(), "raw/in".to_owned())]
    );
}

#[test]
fn file_action_appends_lines_and_stays_in_its_directory() {
    let broker = Mosquitto::start();
    let (topicrule, dir) = start(
        &broker,
        r#"
[[rule]]
name = "archive"
sql = "SELECT n FROM 'log/+'"
[[rule.actions]]
file = { path = "${topic(2)}/log.jsonl" }
[rule.error_action]
file = { path = "errors.jsonl" }
"#,
        "file",
    );
    publish(
        broker.port,
        &[
            ("log/a", br#"{"n":1}"#),
            ("log/a", br#"{"n":2}"#),
            ("log/..", br#"{"n":3}"#),
        ],
    );
    let data = dir.path().join("data");
    let log = wait_for_lines(&data.join("a/log.jsonl"), 2);
    let mut lines: Vec<&str> = log.lines().collect();
    lines.sort();
    assert_eq!(lines, [r#"{"n":1}"#, r#"{"n":2}"#]);
    let errors = wait_for_lines(&data.join("errors.jsonl"), 1);
    let doc: serde_json::Value =
        serde_json::from_str(errors.lines().next().expect("no error document")).unwrap();
    assert_eq!(doc["ruleName"], "archive");
    assert_eq!(doc["topic"], "log/..");
    assert_eq!(doc["base64OriginalPayload"], "eyJuIjozfQ==");
    assert_eq!(doc["failures"][0]["failedAction"], "FileAction");
    assert!(doc["failures"][0]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("leaves the base directory"));
    assert!(
        !dir.path().join("log.jsonl").exists(),
        "a line escaped the base directory"
    );
    // The journal that made the lines durable is gone after a clean stop.
    let journal = data.join(".topicrule-file.journal");
    let deadline = std::time::Instant::now() + WAIT;
    while !journal.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(journal.exists(), "no journal at {}", journal.display());
    assert!(topicrule.stop().success());
    assert!(!journal.exists(), "a journal left after a clean stop");
    assert_eq!(wait_for_lines(&data.join("a/log.jsonl"), 2), log);
}

#[test]
fn file_action_writes_every_payload_as_one_json_line() {
    let broker = Mosquitto::start();
    let (_topicrule, dir) = start(&broker, &archive_rule("raw/in", "raw.jsonl"), "jsonlines");
    let payloads: [&[u8]; 7] = [
        b"temperature=21;state=on",
        br#"{"temp": 31.5"#,
        b"",
        b"\0\0",
        &[0xff, 0xfe, b'\n', 0x00],
        b"first line\nsecond line",
        b"{\n  \"pretty\": true\n}",
    ];
    let messages: Vec<(&str, &[u8])> = payloads.iter().map(|p| ("raw/in", *p)).collect();
    publish(broker.port, &messages);
    let text = wait_for_lines(&dir.path().join("data/raw.jsonl"), payloads.len());
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    assert_eq!(
        lines,
        [
            serde_json::json!("temperature=21;state=on"),
            serde_json::json!(r#"{"temp": 31.5"#),
            serde_json::json!(""),
            serde_json::json!("\0\0"),
            serde_json::json!({"base64": "//4KAA=="}),
            serde_json::json!("first line\nsecond line"),
            serde_json::json!({"pretty": true}),
        ]
    );
}

#[test]
fn aws_rule_json_runs_unchanged() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("awsjson");
    dir.write(
        "rules/Republish_Temp.json",
        r#"{
    "ruleArn": "arn:aws:iot:us-east-1:123456789012:rule/Republish_Temp",
    "rule": {
        "ruleName": "Republish_Temp",
        "sql": "SELECT * FROM 'device/+/data' WHERE temperature > 30",
        "description": "",
        "createdAt": 1594254255.0,
        "actions": [
            { "republish": { "topic": "device/data/temp", "roleArn": "arn:aws:iam::123456789012:role/r", "qos": 1 } }
        ],
        "ruleDisabled": false,
        "awsIotSqlVersion": "2016-03-23"
    }
}"#,
    );
    let _topicrule = Topicrule::start(
        &broker.url(),
        &dir.path().join("rules"),
        &dir.path().join("data"),
        "awsjson",
    );
    let out = Subscriber::new(broker.port, "device/data/temp");
    publish(
        broker.port,
        &[
            ("device/22/data", br#"{"temperature":28}"#),
            ("device/22/data", br#"{"temperature":31}"#),
        ],
    );
    assert_eq!(
        out.drain(QUIET * 2),
        vec![(
            "device/data/temp".to_owned(),
            br#"{"temperature":31}"#.to_vec()
        )]
    );
}

/// A message whose file action cannot write is not acknowledged; once topicrule restarts
/// with a writable directory, the broker redelivers it and it lands in the file.
#[test]
fn unacknowledged_message_is_redelivered_after_restart() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("acks");
    dir.write("rules/r.toml", &archive_rule("keep/me", "kept.jsonl"));
    // The base directory is a file: nothing can be created under it.
    let blocked = dir.write("blocked", "not a directory");
    let rules = dir.path().join("rules");
    let topicrule = Topicrule::start(&broker.url(), &rules, &blocked, "acks");
    publish(broker.port, &[("keep/me", br#"{"v":1}"#)]);
    let mut topicrule = topicrule;
    topicrule.wait_for_log("retrying a failed action");
    topicrule.kill();

    let data = dir.path().join("data");
    let _topicrule = Topicrule::start(&broker.url(), &rules, &data, "acks");
    let deadline = std::time::Instant::now() + WAIT;
    let kept = loop {
        let text = std::fs::read_to_string(data.join("kept.jsonl")).unwrap_or_default();
        if !text.is_empty() || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(kept, "{\"v\":1}\n");
}

/// A crash, then a disk that lost the last lines of a file (a power cut: they were in the
/// page cache, not on the disk): at its next start topicrule writes them again from its
/// journal, where they were, before it takes a message.
#[test]
fn lines_a_file_lost_in_a_crash_come_back_from_the_journal() {
    let broker = Mosquitto::start();
    let (topicrule, dir) = start(&broker, &archive_rule("log/in", "log.jsonl"), "journal");
    let data = dir.path().join("data");
    let (file, journal) = (
        data.join("log.jsonl"),
        data.join(".topicrule-journal.journal"),
    );
    // Messages until the kill: the journal then holds the lines of its last second.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = std::thread::spawn({
        let (stop, port) = (stop.clone(), broker.port);
        move || {
            for n in 0.. {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let payloads: Vec<String> = (0..20)
                    .map(|i| format!(r#"{{"n":{}}}"#, n * 20 + i))
                    .collect();
                let messages: Vec<(&str, &[u8])> =
                    payloads.iter().map(|p| ("log/in", p.as_bytes())).collect();
                publish(port, &messages);
            }
        }
    });
    wait_for_lines(&file, 200);
    topicrule.kill();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publisher.join().unwrap();

    let before = std::fs::read(&file).unwrap();
    let held = journaled(&std::fs::read(&journal).unwrap());
    let first = held
        .iter()
        .map(|(offset, _)| *offset)
        .min()
        .expect("a journaled group");
    let end = held.iter().map(|(offset, len)| offset + len).max().unwrap();
    assert!(
        end <= before.len(),
        "the journal says {end} bytes, the file has {}",
        before.len()
    );
    // The disk lost every line the journal holds.
    let lost = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
    lost.set_len(first as u64).unwrap();
    drop(lost);

    let mut again = Topicrule::start(&broker.url(), &dir.path().join("rules"), &data, "journal");
    again.wait_for_log("written again into their files from the journal");
    let after = std::fs::read(&file).unwrap();
    assert!(
        after.len() >= end,
        "{} bytes after the start, {end} journaled",
        after.len()
    );
    assert!(
        after[..end] == before[..end],
        "the lines came back where they were"
    );
}

/// A journal that cannot be replayed (its file is a directory now) stops the start, with
/// the error and what to do: its lines were acknowledged.
#[test]
fn a_journal_that_cannot_be_replayed_stops_the_start() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("stuck");
    dir.write("rules/r.toml", &archive_rule("log/in", "x.jsonl"));
    std::fs::create_dir_all(dir.path().join("data/x.jsonl")).unwrap();
    dir.write(
        "data/.topicrule-stuck.journal",
        "{\"path\":\"x.jsonl\",\"dev\":0,\"ino\":0,\"offset\":0,\"len\":8}\n{\"a\":1}\n",
    );
    let mut command = support::run_command(dir.path(), &broker.url());
    command.env("TOPICRULE_BROKER_CLIENT_ID", "stuck");
    let mut topicrule = Topicrule::spawn(command);
    let status = topicrule.wait_for_exit(WAIT).expect("topicrule exits");
    assert!(!status.success());
    topicrule.wait_for_log("move the journal away to start without it");
    topicrule.wait_for_log("x.jsonl");
}

/// The (offset, length) of each group of lines a journal holds for `log.jsonl`.
fn journaled(mut journal: &[u8]) -> Vec<(usize, usize)> {
    let mut groups = Vec::new();
    while let Some(newline) = journal.iter().position(|&b| b == b'\n') {
        let Ok(entry) = serde_json::from_slice::<serde_json::Value>(&journal[..newline]) else {
            break;
        };
        assert_eq!(entry["path"], "log.jsonl");
        let (offset, len) = (
            entry["offset"].as_u64().unwrap(),
            entry["len"].as_u64().unwrap(),
        );
        groups.push((offset as usize, len as usize));
        journal = &journal[newline + 1 + len as usize..];
    }
    groups
}

/// Hostile payloads never stop the engine: good messages still go through.
#[test]
fn random_payloads_do_not_stop_routing() {
    let broker = Mosquitto::start();
    let (_topicrule, _dir) = start(
        &broker,
        r#"
[[rule]]
name = "fuzzed"
sql = "SELECT a.b[0] + 1 AS x, upper(s) AS s, encode(*, 'base64') AS raw FROM 'fuzz/+' WHERE x <> 1"
[[rule.actions]]
republish = { topic = "fuzz-out/${topic(2)}", qos = 0 }

[[rule]]
name = "good"
sql = "SELECT ok FROM 'good/in'"
[[rule.actions]]
republish = { topic = "good/out", qos = 1 }
"#,
        "random",
    );
    let good = Subscriber::new(broker.port, "good/out");
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut payloads: Vec<Vec<u8>> = Vec::new();
    for i in 0..10_000u32 {
        let payload: Vec<u8> = match i % 5 {
            0 => (0..next() % 300).map(|_| next() as u8).collect(),
            1 => format!("{}{}", "[".repeat(200 + (next() % 5000) as usize), "1").into_bytes(),
            2 => vec![0xff, 0xfe, b'{', 0xc3],
            3 => format!(
                r#"{{"a":{{"b":[{}]}},"s":"{}"}}"#,
                next() % 1000,
                "é".repeat((next() % 50) as usize)
            )
            .into_bytes(),
            // A huge payload now and then: a number of up to 256,000 digits.
            _ if i % 50 == 4 => vec![b'7'; (next() % 256_000) as usize],
            _ => (0..next() % 2000)
                .map(|_| b"{}[]\",:01ae"[(next() % 11) as usize])
                .collect(),
        };
        payloads.push(payload);
    }
    for chunk in payloads.chunks(500) {
        let messages: Vec<(String, &[u8])> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("fuzz/{i}"), p.as_slice()))
            .collect();
        let refs: Vec<(&str, &[u8])> = messages.iter().map(|(t, p)| (t.as_str(), *p)).collect();
        publish(broker.port, &refs);
    }
    publish(broker.port, &[("good/in", br#"{"ok":true}"#)]);
    let (_, payload) = good.next(Duration::from_secs(60)).expect("routing stopped");
    assert_eq!(payload, br#"{"ok":true}"#);
}
