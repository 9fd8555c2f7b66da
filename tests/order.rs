//! Order: the messages of one topic are acted on in the order they arrived, on mosquitto and
//! on the embedded broker; a topic whose action is being retried holds its later messages
//! while the other topics flow.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::stream::{seqs_in, Collector, Publisher, Tally};
use support::{free_port, Mosquitto, TempDir, Topicrule};

const TOPICS: usize = 8;
const PER_TOPIC: usize = 5000;
const WAIT: Duration = Duration::from_secs(60);

const RULE: &str = r#"
[[rule]]
name = "ordered"
sql = "SELECT * FROM 'in/+'"
[[rule.actions]]
republish = { topic = "out/${topic(2)}", qos = 1 }
[[rule.actions]]
file = { path = "${topic(2)}.jsonl" }
"#;

/// The pairs of neighbours out of order within each topic (message `seq` is on topic
/// `seq % TOPICS`).
fn inversions(seqs: &[usize]) -> usize {
    let mut last: BTreeMap<usize, usize> = BTreeMap::new();
    let mut inversions = 0;
    for &seq in seqs {
        if let Some(previous) = last.insert(seq % TOPICS, seq) {
            if previous > seq {
                inversions += 1;
            }
        }
    }
    inversions
}

/// Publishes the interleaved stream to `port` and checks both sinks of topicrule.
fn assert_in_order(port: u16, collector: &Collector, data: &std::path::Path) {
    let count = TOPICS * PER_TOPIC;
    Publisher::start(port, count, TOPICS, 20_000).finish();
    let file_seqs = || -> Vec<Vec<usize>> {
        (0..TOPICS)
            .map(|t| {
                seqs_in(
                    &std::fs::read_to_string(data.join(format!("{t}.jsonl"))).unwrap_or_default(),
                )
            })
            .collect()
    };
    let deadline = Instant::now() + WAIT;
    while Tally::of(&collector.seqs(), count).lost > 0
        || Tally::of(&file_seqs().concat(), count).lost > 0
    {
        assert!(
            Instant::now() < deadline,
            "the sinks never held every message"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let republished = collector.seqs();
    assert_eq!(Tally::of(&republished, count).duplicates, 0);
    assert_eq!(
        inversions(&republished),
        0,
        "the republished stream is out of order"
    );
    for (topic, seqs) in file_seqs().iter().enumerate() {
        assert_eq!(seqs.len(), PER_TOPIC, "in/{topic}.jsonl");
        assert_eq!(inversions(seqs), 0, "in/{topic}.jsonl is out of order");
    }
}

#[test]
fn each_topic_keeps_its_order_on_mosquitto() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("order-mosquitto");
    dir.write("rules/ordered.toml", RULE);
    let collector = Collector::start(broker.port, "out/#");
    let _topicrule = Topicrule::start(
        &broker.url(),
        &dir.path().join("rules"),
        &dir.path().join("data"),
        "ordered",
    );
    assert_in_order(broker.port, &collector, &dir.path().join("data"));
}

#[test]
fn each_topic_keeps_its_order_on_the_embedded_broker() {
    let dir = TempDir::new("order-embedded");
    dir.write("rules/ordered.toml", RULE);
    let port = free_port();
    let mut topicrule = Topicrule::spawn(support::embedded_command(&dir, port));
    topicrule.wait_for_log("subscribed");
    let collector = Collector::start(port, "out/#");
    assert_in_order(port, &collector, &dir.path().join("data"));
}

/// Topic `in/0`'s file is on a full disk: its first message is republished, then its file
/// action fails and is retried, holding `in/0`'s later messages; the other topics flow.
/// When space returns, `in/0` resumes in order.
#[test]
fn a_retried_action_holds_its_topic_and_not_the_others() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("order-retry");
    dir.write("rules/ordered.toml", RULE);
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let full = dir.path().join("data/0.jsonl");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let collector = Collector::start(broker.port, "out/#");
    let mut topicrule = Topicrule::start(
        &broker.url(),
        &dir.path().join("rules"),
        &dir.path().join("data"),
        "retried",
    );
    // 10 messages a topic: well within the 256 messages topicrule holds.
    let count = TOPICS * 10;
    Publisher::start(broker.port, count, TOPICS, 1000).finish();
    topicrule.wait_for_log("No space left on device");
    let others: Vec<usize> = (0..count).filter(|seq| seq % TOPICS != 0).collect();
    let deadline = Instant::now() + WAIT;
    while !others.iter().all(|seq| collector.seqs().contains(seq)) {
        assert!(Instant::now() < deadline, "the other topics did not flow");
        std::thread::sleep(Duration::from_millis(50));
    }
    let held: Vec<usize> = collector
        .seqs()
        .into_iter()
        .filter(|seq| seq % TOPICS == 0)
        .collect();
    assert_eq!(held, vec![0], "in/0's later messages overtook its first");

    std::fs::remove_file(&full).unwrap();
    let deadline = Instant::now() + WAIT;
    while Tally::of(&collector.seqs(), count).lost > 0 {
        assert!(Instant::now() < deadline, "in/0 did not resume");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(inversions(&collector.seqs()), 0);
    // A message is republished before its line is written: the last line may come later.
    let expected: Vec<usize> = (0..10).map(|n| n * TOPICS).collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let written = seqs_in(&std::fs::read_to_string(&full).unwrap());
        if written.len() >= expected.len() || Instant::now() >= deadline {
            assert_eq!(written, expected);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
