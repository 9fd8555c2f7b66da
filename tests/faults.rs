//! The fault suite: nothing lost, nothing stuck. The real binary, a real mosquitto with
//! persistence, a real S3 server (s3s-fs); a publisher that re-sends what the broker did not
//! acknowledge; every sink counted by sequence number. Each test prints a line a sink:
//! sent / acked by the broker / received unique / lost / duplicates / time to drain.
//!
//! CI runs a short stream; the full size (20,000 messages at 1,000 msg/s) is
//! `FAULT_MESSAGES=20000 FAULT_RATE=1000 cargo test --release --test faults -- --test-threads 1 --nocapture`.

mod support;

use std::time::{Duration, Instant};

use support::proxy::HoldingProxy;
use support::s3::{S3Reader, S3Server};
use support::stream::{payload, seqs_in, Collector, Publisher, Tally};
use support::{Mosquitto, TempDir, Topicrule};

/// Topics the stream is spread over.
const TOPICS: usize = 10;
/// How long a sink may take to hold every message after the last fault.
const DRAIN: Duration = Duration::from_secs(60);
/// `[router] max_in_flight`'s default: what a single fault may duplicate at most.
const MAX_IN_FLIGHT: usize = 256;

fn stream_size() -> (usize, u32) {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        var("FAULT_MESSAGES", 2000) as usize,
        var("FAULT_RATE", 500) as u32,
    )
}

fn rules(with_s3: bool) -> String {
    let mut text = String::from(
        r#"
[[rule]]
name = "archive"
sql = "SELECT * FROM 'in/+'"
[[rule.actions]]
republish = { topic = "out/${topic(2)}", qos = 1 }
[[rule.actions]]
file = { path = "seq.jsonl" }
"#,
    );
    if with_s3 {
        text.push_str(
            r#"[[rule.actions]]
s3 = { bucket = "archive", key = "batch/b", batch = { max_records = 500, max_age = 1 } }
"#,
        );
    }
    text
}

/// A broker, topicrule, its sinks, and a collector of the republished stream.
struct Rig {
    name: &'static str,
    broker: Option<Mosquitto>,
    store: Option<S3Server>,
    reader: Option<S3Reader>,
    topicrule: Option<Topicrule>,
    collector: Collector,
    dir: TempDir,
    count: usize,
    faults: usize,
}

impl Rig {
    fn new(name: &'static str, with_s3: bool) -> Rig {
        let broker = Mosquitto::start();
        let dir = TempDir::new(name);
        dir.write("rules/archive.toml", &rules(with_s3));
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let (store, reader) = if with_s3 {
            let store = S3Server::start();
            let reader = store.reader();
            reader.create_bucket("archive");
            (Some(store), Some(reader))
        } else {
            (None, None)
        };
        let collector = Collector::start(broker.port, "out/#");
        let mut rig = Rig {
            name,
            broker: Some(broker),
            store,
            reader,
            topicrule: None,
            collector,
            dir,
            count: stream_size().0,
            faults: 0,
        };
        rig.start_topicrule();
        rig
    }

    fn port(&self) -> u16 {
        self.broker.as_ref().unwrap().port
    }

    fn start_topicrule(&mut self) {
        let url = self.broker.as_ref().unwrap().url();
        let mut command = support::run_command(self.dir.path(), &url);
        command.env(
            "TOPICRULE_BROKER_CLIENT_ID",
            format!("faults-{}", self.name),
        );
        if let Some(store) = &self.store {
            for (name, value) in store.env() {
                command.env(name, value);
            }
        }
        let mut topicrule = Topicrule::spawn(command);
        topicrule.wait_for_log("subscribed");
        self.topicrule = Some(topicrule);
    }

    fn publish(&self) -> Publisher {
        let (count, rate) = stream_size();
        Publisher::start(self.port(), count, TOPICS, rate)
    }

    /// Stops the broker (SIGTERM: it saves its sessions), and starts it again after `down`.
    fn restart_broker(&mut self, down: Duration) {
        let (dir, port) = self.broker.take().unwrap().stop();
        std::thread::sleep(down);
        self.broker = Some(Mosquitto::start_in(dir, port));
        self.faults += 1;
    }

    /// Kills the broker (SIGKILL: it keeps only what it last saved), and starts it again.
    fn crash_broker(&mut self, down: Duration) {
        let (dir, port) = self.broker.take().unwrap().crash();
        std::thread::sleep(down);
        self.broker = Some(Mosquitto::start_in(dir, port));
        self.faults += 1;
    }

    /// SIGKILLs topicrule, and starts it again after `down`.
    fn kill_topicrule(&mut self, down: Duration) {
        self.topicrule.take().unwrap().kill();
        std::thread::sleep(down);
        self.start_topicrule();
        self.faults += 1;
    }

    fn store_down(&mut self, down: Duration) {
        let store = self.store.as_mut().unwrap();
        store.stop();
        std::thread::sleep(down);
        store.start_again();
        self.faults += 1;
    }

    fn file_seqs(&self) -> Vec<usize> {
        let text =
            std::fs::read_to_string(self.dir.path().join("data/seq.jsonl")).unwrap_or_default();
        seqs_in(&text)
    }

    fn s3_seqs(&self) -> Vec<usize> {
        let Some(reader) = &self.reader else {
            return Vec::new();
        };
        reader
            .keys("archive")
            .iter()
            .flat_map(|key| seqs_in(&String::from_utf8_lossy(&reader.get("archive", key))))
            .collect()
    }

    /// The tally of each sink once every sink holds every message, or when `DRAIN` ran out;
    /// with the time it took.
    fn drain(&self) -> (Vec<(&'static str, Tally)>, Duration) {
        let start = Instant::now();
        loop {
            let mut tallies = vec![
                ("republish", Tally::of(&self.collector.seqs(), self.count)),
                ("file", Tally::of(&self.file_seqs(), self.count)),
            ];
            if self.store.is_some() {
                tallies.push(("s3 batch", Tally::of(&self.s3_seqs(), self.count)));
            }
            let complete = tallies.iter().all(|(_, t)| t.lost == 0);
            if complete || start.elapsed() > DRAIN {
                return (tallies, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the sinks, prints the table, and asserts: nothing lost, nothing stuck,
    /// duplicates within what the faults had in flight.
    fn assert_complete(self, publisher: Publisher) {
        let resent = publisher.resent.load(std::sync::atomic::Ordering::Relaxed);
        publisher.finish();
        let (tallies, took) = self.drain();
        let bound = self.faults.max(1) * MAX_IN_FLIGHT + resent;
        for (sink, t) in &tallies {
            println!(
                "{:<16} {:<10} sent {} | acked by broker {} | received unique {} | lost {} | duplicates {} | drained in {:.1} s",
                self.name, sink, self.count, self.count, t.unique, t.lost, t.duplicates, took.as_secs_f64()
            );
        }
        for (sink, t) in &tallies {
            assert_eq!(
                t.lost, 0,
                "{}: the {sink} sink lost {} message(s)",
                self.name, t.lost
            );
            assert!(
                t.duplicates <= bound,
                "{}: the {sink} sink has {} duplicates, more than the {bound} in flight",
                self.name,
                t.duplicates
            );
        }
    }
}

/// (a) The broker restarts twice mid-stream, 3 s down each time.
#[test]
fn broker_restarted_twice() {
    let mut rig = Rig::new("broker-restart", false);
    let publisher = rig.publish();
    publisher.wait_for_acked(rig.count / 3, DRAIN);
    rig.restart_broker(Duration::from_secs(3));
    publisher.wait_for_acked(2 * rig.count / 3, DRAIN);
    rig.restart_broker(Duration::from_secs(3));
    rig.assert_complete(publisher);
}

/// (b) topicrule is SIGKILLed twice mid-stream, back 2 s later.
#[test]
fn topicrule_killed_twice() {
    let mut rig = Rig::new("topicrule-kill", false);
    let publisher = rig.publish();
    publisher.wait_for_acked(rig.count / 3, DRAIN);
    rig.kill_topicrule(Duration::from_secs(2));
    publisher.wait_for_acked(2 * rig.count / 3, DRAIN);
    rig.kill_topicrule(Duration::from_secs(2));
    rig.assert_complete(publisher);
}

/// (c) The S3 store is down 30 s mid-stream (per-message republish and file keep going;
/// the batch action holds its messages until the store is back).
#[test]
fn s3_store_down_30_s() {
    let mut rig = Rig::new("store-down", true);
    let publisher = rig.publish();
    publisher.wait_for_acked(rig.count / 3, DRAIN);
    rig.store_down(Duration::from_secs(30));
    rig.assert_complete(publisher);
}

/// (d) All three: the broker restarts, topicrule is killed, the store goes down.
#[test]
fn all_three_faults() {
    let mut rig = Rig::new("all-three", true);
    let publisher = rig.publish();
    publisher.wait_for_acked(rig.count / 4, DRAIN);
    rig.restart_broker(Duration::from_secs(3));
    publisher.wait_for_acked(rig.count / 2, DRAIN);
    rig.kill_topicrule(Duration::from_secs(2));
    publisher.wait_for_acked(3 * rig.count / 4, DRAIN);
    rig.store_down(Duration::from_secs(10));
    rig.assert_complete(publisher);
}

/// (e) The broker crashes (SIGKILL). It loses what it had not saved, messages it had
/// acknowledged to the publisher among them: those are the broker's loss, which topicrule
/// cannot see (README, Guarantees). What topicrule must do: come back by itself, and carry
/// every message the broker still has or receives after the crash.
#[test]
fn broker_crash() {
    let mut rig = Rig::new("broker-crash", false);
    let publisher = rig.publish();
    publisher.wait_for_acked(rig.count / 2, DRAIN);
    rig.crash_broker(Duration::from_secs(2));
    // Both subscribers lost their sessions: what the broker receives before they subscribe
    // again goes nowhere. From then on, nothing may be missing.
    rig.topicrule
        .as_mut()
        .unwrap()
        .wait_for_logs("subscribed to", 2);
    let deadline = Instant::now() + DRAIN;
    while rig
        .collector
        .subscribed
        .load(std::sync::atomic::Ordering::Relaxed)
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the collector never subscribed again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let resubscribed = publisher.acked();
    publisher.finish();
    // The publisher has at most 100 messages in flight: later ones were sent after.
    let missing = |seqs: Vec<usize>| -> Vec<usize> {
        (resubscribed + 100..rig.count)
            .filter(|seq| !seqs.contains(seq))
            .collect()
    };
    let start = Instant::now();
    let (republished, written) = loop {
        let (republished, written) = (missing(rig.collector.seqs()), missing(rig.file_seqs()));
        if (republished.is_empty() && written.is_empty()) || start.elapsed() > DRAIN {
            break (republished, written);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (sink, seqs) in [
        ("republish", rig.collector.seqs()),
        ("file", rig.file_seqs()),
    ] {
        let t = Tally::of(&seqs, rig.count);
        println!(
            "broker-crash     {sink:<10} sent {} | received unique {} | lost in the broker's crash {} | duplicates {} | drained in {:.1} s",
            rig.count, t.unique, t.lost, t.duplicates, start.elapsed().as_secs_f64()
        );
    }
    for (sink, missing) in [("republish", republished), ("file", written)] {
        assert!(
            missing.is_empty(),
            "the {sink} sink misses {} message(s) published after the crash, from {:?}",
            missing.len(),
            missing.first()
        );
    }
    let topicrule = rig.topicrule.as_ref().unwrap();
    assert!(
        topicrule
            .log
            .iter()
            .any(|l| l.contains("the broker lost topicrule's session")),
        "topicrule did not say that the broker lost its session"
    );
}

/// (f) The file sink's disk is full (writes fail with ENOSPC): no message is dropped, and
/// the flow resumes when space returns.
#[test]
fn disk_full() {
    let mut rig = Rig::new("disk-full", false);
    let file = rig.dir.path().join("data/seq.jsonl");
    std::os::unix::fs::symlink("/dev/full", &file).unwrap();
    let publisher = rig.publish();
    publisher.wait_for_acked(rig.count / 3, DRAIN);
    rig.topicrule
        .as_mut()
        .unwrap()
        .wait_for_log("No space left on device");
    std::thread::sleep(Duration::from_secs(5));
    std::fs::remove_file(&file).unwrap(); // Space returns: the next write creates a file.
    rig.faults += 1;
    rig.assert_complete(publisher);
}

/// The broker restarts while 256 republishes wait for their PUBACK (a proxy holds the
/// PUBACKs back): each wait fails with its connection, the republishes are sent again on
/// the next one, and every message arrives.
#[test]
fn republishes_waiting_for_their_puback_survive_a_broker_restart() {
    let broker = Mosquitto::start();
    let proxy = HoldingProxy::start(broker.port, b"-pub");
    let dir = TempDir::new("waiting-pubacks");
    dir.write("rules/forward.toml", support::FORWARD_RULE);
    let collector = Collector::start(broker.port, "out/#");
    let mut topicrule = Topicrule::start(
        &format!("mqtt://127.0.0.1:{}", proxy.port),
        &dir.path().join("rules"),
        &dir.path().join("data"),
        "waiting",
    );
    proxy.hold_current();
    // A topic each: a topic's messages are processed one at a time (in order), so 256
    // publishes wait at once only when they are on 256 topics.
    let count = MAX_IN_FLIGHT;
    let topics: Vec<String> = (0..count).map(|seq| format!("in/{seq}")).collect();
    let bodies: Vec<String> = (0..count).map(payload).collect();
    let messages: Vec<(&str, &[u8])> = topics
        .iter()
        .zip(&bodies)
        .map(|(t, b)| (t.as_str(), b.as_bytes()))
        .collect();
    support::publish(broker.port, &messages);
    topicrule.wait_for_logs("message on `in/", count);

    let (broker_dir, port) = broker.stop();
    std::thread::sleep(Duration::from_secs(1));
    let _broker = Mosquitto::start_in(broker_dir, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let tally = loop {
        let tally = Tally::of(&collector.seqs(), count);
        if tally.lost == 0 || Instant::now() > deadline {
            break tally;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!("waiting-pubacks  republish  {tally:?}");
    assert_eq!(tally.lost, 0, "{} republish(es) never arrived", tally.lost);
    // Each of the 256 at most twice, and what the broker redelivers to the collector itself
    // after the restart (its own window: 100 messages in flight).
    assert!(
        tally.duplicates <= count + 100,
        "{} duplicates",
        tally.duplicates
    );
    topicrule.wait_for_log("publishing connection lost");
}

/// SIGTERM ends topicrule within the shutdown grace plus 5 s even when everything is
/// stuck: its file sink's disk is full (the messages wait in retries) and the broker is
/// frozen (no PUBACK, no DISCONNECT answered).
#[test]
fn sigterm_ends_a_stalled_topicrule() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("sigterm-stall");
    dir.write("rules/archive.toml", &rules(false));
    dir.write("topicrule.toml", "[router]\nshutdown_grace = 2\n");
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("data/seq.jsonl")).unwrap();
    let mut topicrule = Topicrule::spawn(support::run_command(dir.path(), &broker.url()));
    topicrule.wait_for_log("subscribed");
    let publisher = Publisher::start(broker.port, 50, TOPICS, 1000);
    publisher.wait_for_acked(50, DRAIN);
    topicrule.wait_for_log("No space left on device");
    broker.signal("STOP");
    let stopping = Instant::now();
    let status = topicrule.stop();
    let took = stopping.elapsed();
    broker.signal("CONT");
    assert!(status.success(), "{status}");
    assert!(
        took <= Duration::from_secs(2 + 5),
        "topicrule took {took:?} to stop"
    );
}

/// A republish whose PUBACK never comes (a proxy holds it back) and a long
/// `publish_timeout`: the watchdog notices that nothing progresses, says what is stuck,
/// and reconnects; the republish is sent again on the new connection and arrives.
#[test]
fn the_watchdog_recovers_a_stalled_republish() {
    let broker = Mosquitto::start();
    let proxy = HoldingProxy::start(broker.port, b"-pub");
    let dir = TempDir::new("watchdog");
    dir.write("rules/forward.toml", support::FORWARD_RULE);
    dir.write(
        "topicrule.toml",
        "[router]\npublish_timeout = 600\nstall_timeout = 2\n",
    );
    let collector = Collector::start(broker.port, "out/#");
    let url = format!("mqtt://127.0.0.1:{}", proxy.port);
    let mut topicrule = Topicrule::spawn(support::run_command(dir.path(), &url));
    topicrule.wait_for_log("subscribed");
    proxy.hold_current();
    support::publish(broker.port, &[("in/stuck", payload(7).as_bytes())]);
    topicrule.wait_for_log("stalled: no message finished");
    let stalled = topicrule
        .log
        .iter()
        .find(|l| l.contains("stalled"))
        .unwrap()
        .clone();
    assert!(
        stalled.contains("on `in/stuck`") && stalled.contains("rule `forward`"),
        "{stalled}"
    );
    topicrule.wait_for_log("reconnecting to the broker to recover from the stall");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !collector.seqs().contains(&7) {
        assert!(Instant::now() < deadline, "the republish never arrived");
        std::thread::sleep(Duration::from_millis(50));
    }
}
