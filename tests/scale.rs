//! Several instances in one shared group on a real mosquitto, with s3s-fs: the stream is
//! split between them, each message processed once while all live, and nothing lost when
//! one is killed mid-stream; their S3 batches, spools and files never collide.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::s3::{start_topicrule, S3Reader, S3Server};
use support::stream::{seqs_in, Collector, Publisher, Tally};
use support::{eventually, Mosquitto, TempDir, Topicrule};

const TOPICS: usize = 100;
const INSTANCES: [&str; 3] = ["scale-a", "scale-b", "scale-c"];
const SETTLE: Duration = Duration::from_secs(120);

const RULES: &str = r#"
[[rule]]
name = "fanout"
sql = "SELECT * FROM 'in/+'"
[[rule.actions]]
republish = { topic = "out/${topic(2)}", qos = 1 }
[[rule.actions]]
file = { path = "all.jsonl" }
[[rule.actions]]
s3 = { bucket = "archive", key = "scale/batch", batch = { max_records = 1000, max_age = 1 } }
"#;

/// The broker, the store, the rules, and the folders the instances share: one file action
/// path, one spool directory.
struct Group {
    broker: Mosquitto,
    store: S3Server,
    reader: S3Reader,
    dir: TempDir,
}

impl Group {
    fn new(name: &str) -> Group {
        let broker = Mosquitto::start();
        let store = S3Server::start();
        let reader = store.reader();
        reader.create_bucket("archive");
        let dir = TempDir::new(name);
        dir.write("rules/rules.toml", RULES);
        Group {
            broker,
            store,
            reader,
            dir,
        }
    }

    fn start(&self, id: &str) -> Topicrule {
        let spool = self.dir.path().join("spool").display().to_string();
        let env = [
            ("TOPICRULE_BROKER_SHARED_GROUP", "scale"),
            ("TOPICRULE_S3_SPOOL_DIR", spool.as_str()),
        ];
        start_topicrule(&self.broker, &self.store, &self.dir, id, &env)
    }

    /// The sequence numbers in the shared file.
    fn file_seqs(&self) -> Vec<usize> {
        let text = std::fs::read_to_string(self.dir.path().join("data/all.jsonl"));
        seqs_in(&text.unwrap_or_default())
    }

    /// The sequence numbers in the bucket, by the instance named in each object's key.
    fn stored(&self) -> HashMap<String, Vec<usize>> {
        let mut by_instance: HashMap<String, Vec<usize>> = HashMap::new();
        for key in self.reader.keys("archive") {
            let instance = INSTANCES
                .iter()
                .find(|id| key.contains(&format!("-{id}-")))
                .unwrap_or_else(|| panic!("`{key}` names no instance"));
            let text = String::from_utf8(self.reader.get("archive", &key)).unwrap();
            by_instance
                .entry(instance.to_string())
                .or_default()
                .extend(seqs_in(&text));
        }
        by_instance
    }

    /// Waits until every sink holds each of `count` messages at least once; their tallies
    /// (republished, file, S3).
    fn settle(&self, out: &Collector, count: usize) -> [Tally; 3] {
        eventually(SETTLE, || {
            let s3: Vec<usize> = self.stored().into_values().flatten().collect();
            let tallies = [out.seqs(), self.file_seqs(), s3].map(|seqs| Tally::of(&seqs, count));
            match tallies.iter().all(|t| t.lost == 0) {
                true => Ok(tallies),
                false => Err(format!(
                    "not everything arrived (republished, file, S3): {tallies:?}"
                )),
            }
        })
    }
}

#[test]
fn three_instances_split_a_stream_without_collisions() {
    let group = Group::new("scale-split");
    let _instances: Vec<Topicrule> = INSTANCES.iter().map(|id| group.start(id)).collect();
    let out = Collector::start(group.broker.port, "out/#");
    let count = 30_000;
    Publisher::start(group.broker.port, count, TOPICS, 6_000).finish();

    let tallies = group.settle(&out, count);
    for (sink, tally) in ["republished", "file", "S3"].iter().zip(tallies) {
        assert_eq!(tally.duplicates, 0, "{sink}: {tally:?}");
    }
    // Every line of the shared file is whole: as many lines as messages.
    let text = std::fs::read_to_string(group.dir.path().join("data/all.jsonl")).unwrap();
    assert_eq!(text.lines().count(), count, "a line of the file was torn");
    // Each instance wrote its own objects (no key written twice: no record lost) and
    // carried its share of the stream.
    let stored = group.stored();
    let shares: Vec<usize> = INSTANCES
        .iter()
        .map(|id| stored.get(*id).map_or(0, Vec::len))
        .collect();
    println!("S3 records by instance: {shares:?}");
    let even = count / INSTANCES.len();
    for (id, share) in INSTANCES.iter().zip(&shares) {
        assert!(
            share.abs_diff(even) * 5 <= even,
            "{id} carried {share} of {count}, not within 20% of {even}: {shares:?}"
        );
    }
    // Each instance has its own spool folder under the shared spool directory.
    for id in INSTANCES {
        assert!(
            group.dir.path().join("spool").join(id).is_dir(),
            "{id}'s spool"
        );
    }
}

#[test]
fn an_instance_killed_mid_stream_loses_nothing() {
    let group = Group::new("scale-kill");
    let mut instances: Vec<Option<Topicrule>> =
        INSTANCES.iter().map(|id| Some(group.start(id))).collect();
    let out = Collector::start(group.broker.port, "out/#");
    let count = 15_000;
    let publisher = Publisher::start(group.broker.port, count, TOPICS, 3_000);
    publisher.wait_for_acked(count / 2, Duration::from_secs(60));
    instances[1].take().unwrap().kill();
    std::thread::sleep(Duration::from_secs(5));
    instances[1] = Some(group.start(INSTANCES[1]));
    publisher.finish();

    let tallies = group.settle(&out, count);
    // What the killed instance had in flight is processed again: duplicates are allowed,
    // bounded by its window ([router] max_in_flight, 256, and its lanes), and reported.
    println!("duplicates (republished, file, S3): {tallies:?}");
    for tally in tallies {
        assert!(tally.duplicates <= 6 * 256, "{tallies:?}");
    }
}
