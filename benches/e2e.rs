//! End to end: what topicrule costs beside what relaying a message costs, through a real
//! mosquitto on loopback, with both measured in the same run.
//!
//! The baseline is a relay that parses nothing: this very binary, re-executed with
//! `TOPICRULE_E2E_RELAY` set, acts as a raw-TCP MQTT 3.1.1 client on one thread that
//! subscribes to `bench/in/#` and, for every message, writes its PUBACK and a PUBLISH of
//! the same payload to `bench/out/<rest of the topic>` (one write per read). No router can
//! do less work per message: its CPU is the floor. (Its throughput was meant as the ceiling,
//! but at QoS 1 topicrule, which sends acks and republishes on two connections, carries as
//! much or more through mosquitto.) The system under test is the real `topicrule run`, with
//! one rule (`SELECT * FROM 'bench/in/#'` republished to `bench/out/${topic(3)}` at the
//! run's QoS), on its default persistent session. mosquitto runs with Nagle off.
//!
//! The load comes from this process, over raw sockets too (cheap beside the SUT): a
//! publisher sends 200-byte JSON messages on `bench/in/d-0` .. `d-99` round-robin, each
//! carrying its phase, its sequence number and its send time; a subscriber on `bench/out/#`
//! acknowledges (QoS 1), counts first copies, duplicates and losses, and measures latency.
//! Each SUT is started fresh beside a fresh mosquitto, for QoS 0 and then 1, and runs:
//! - `rate`: `E2E_RATE` messages a second (5,000) for `E2E_RATE_SECS` seconds (5): latency
//!   p50 and p99, the SUT's CPU seconds (utime + stime) per 100k messages, its peak RSS
//!   (VmHWM);
//! - `max`: `E2E_MAX_COUNT` messages (50,000), closed loop with at most 1,000 sent but not
//!   yet received: messages per second and CPU seconds per 100k.
//!
//! Then topicrule with `E2E_RULES` rules (10,000), rule `i` on `bench/in/d-<i>` with a
//! WHERE, so that each of the 100 topics of the load fires exactly one rule: `max` at
//! QoS 1, idle RSS and the time from its start to its first message, against the one-rule
//! topicrule of the same run.
//!
//! Last, what archiving costs the message path (issue: at most 10%): the one rule with a
//! `file` action (a file a topic) added, then with an `s3` action in batch mode (gzip, into
//! s3s-fs) added, each `max` at QoS 1 against the republishing topicrule, in
//! `E2E_ARCHIVE_ROUNDS` (3) rounds of the three one after the other: medians, so that a
//! ratio compares runs seconds apart (one run each moved it by 10% from bench to bench).
//!
//! Every figure is printed beside its baseline with their ratio: absolute figures move from
//! run to run on a shared machine; the ratios much less. Needs mosquitto and s3s-fs, as the
//! tests do.
//! `cargo bench --bench e2e`; under `cargo test` it does nothing.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{self, BufWriter, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use support::s3::S3Server;
use support::{Mosquitto, TempDir, Topicrule};

/// Set (to `<broker port>:<qos>`) on the re-executed binary that acts as the relay.
const RELAY_ENV: &str = "TOPICRULE_E2E_RELAY";
const IN_FILTER: &str = "bench/in/#";
const IN_PREFIX: &[u8] = b"bench/in/";
const OUT_FILTER: &str = "bench/out/#";
const OUT_PREFIX: &[u8] = b"bench/out/";
const DEVICES: u64 = 100;
const PAYLOAD_SIZE: usize = 200;
/// `max`: at most this many messages sent and not yet received.
const WINDOW: u64 = 1_000;
/// Clock ticks a second of /proc/<pid>/stat (`sysconf(_SC_CLK_TCK)`: 100 on Linux).
const CLK_TCK: f64 = 100.0;
/// Without a delivery for this long, the messages still missing are counted as lost.
const IDLE: Duration = Duration::from_secs(5);
/// How long a fresh SUT has to answer its first message (topicrule takes seconds to
/// start with 10,000 rules).
const READY: Duration = Duration::from_secs(60);

fn main() {
    if let Ok(spec) = std::env::var(RELAY_ENV) {
        return relay(&spec);
    }
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let settings = Settings::from_env();
    let one_rule = Sut::Topicrule { rules: 1 };
    let q0 = (
        run(Sut::Relay, 0, &settings, true),
        run(one_rule, 0, &settings, true),
    );
    let q1 = (
        run(Sut::Relay, 1, &settings, true),
        run(one_rule, 1, &settings, true),
    );
    let many = run(
        Sut::Topicrule {
            rules: settings.rules,
        },
        1,
        &settings,
        false,
    );
    let archiving: Vec<[Run; 3]> = (0..settings.archive_rounds)
        .map(|_| {
            [
                one_rule,
                Sut::Archiving(Sink::File),
                Sut::Archiving(Sink::S3Batch),
            ]
            .map(|sut| run(sut, 1, &settings, false))
        })
        .collect();
    report(&settings, &q0, &q1, &many, &archiving);
}

// ---------------------------------------------------------------- settings

struct Settings {
    /// `rate`: messages a second, for `seconds`.
    rate: u64,
    seconds: u64,
    /// `max`: messages.
    messages: u64,
    /// The rules of the many-rules topicrule.
    rules: usize,
    /// Rounds of the republishing rule and the two archiving ones.
    archive_rounds: usize,
}

impl Settings {
    fn from_env() -> Settings {
        let settings = Settings {
            rate: env_number("E2E_RATE", 5_000),
            seconds: env_number("E2E_RATE_SECS", 5),
            messages: env_number("E2E_MAX_COUNT", 50_000),
            rules: env_number("E2E_RULES", 10_000),
            archive_rounds: env_number("E2E_ARCHIVE_ROUNDS", 3),
        };
        assert!(settings.rules >= 2, "E2E_RULES must be 2 or more");
        assert!(
            settings.archive_rounds > 0,
            "E2E_ARCHIVE_ROUNDS must be more than 0"
        );
        assert!(
            settings.rate * settings.seconds > 0 && settings.messages > 0,
            "E2E_RATE, E2E_RATE_SECS and E2E_MAX_COUNT must be more than 0"
        );
        settings
    }

    fn rate_phase(&self) -> Phase {
        Phase::Rate {
            per_second: self.rate,
            count: self.rate * self.seconds,
        }
    }

    fn max_phase(&self) -> Phase {
        Phase::Max {
            count: self.messages,
        }
    }
}

fn env_number<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not `{text}`")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------- systems under test

#[derive(Clone, Copy)]
enum Sut {
    Relay,
    Topicrule {
        rules: usize,
    },
    /// One rule that republishes and also archives each message.
    Archiving(Sink),
}

/// Where `Sut::Archiving` archives.
#[derive(Clone, Copy)]
enum Sink {
    /// The `file` action: a file a topic.
    File,
    /// An `s3` action in batch mode (gzip), into s3s-fs.
    S3Batch,
}

impl Sink {
    fn action(self) -> &'static str {
        match self {
            Sink::File => r#"file = { path = "${topic(3)}.jsonl" }"#,
            Sink::S3Batch => {
                r#"s3 = { bucket = "bench", key = "b/${topic(3)}", batch = { max_records = 1000, max_age = 1 }, compression = "gzip" }"#
            }
        }
    }
}

/// A SUT process, with the directory its rules are in and the S3 server it writes to.
struct Running {
    process: Topicrule,
    _dir: Option<TempDir>,
    _store: Option<S3Server>,
}

impl Sut {
    fn name(self) -> String {
        match self {
            Sut::Relay => "relay".into(),
            Sut::Topicrule { rules: 1 } => "topicrule".into(),
            Sut::Topicrule { rules } => format!("topicrule, {rules} rules"),
            Sut::Archiving(Sink::File) => "topicrule, republish + file".into(),
            Sut::Archiving(Sink::S3Batch) => "topicrule, republish + S3 batch".into(),
        }
    }

    /// Starts the SUT beside `broker`. `Topicrule` (the test helper) runs any process: it
    /// collects its stderr and kills it when dropped (and shows it if the bench fails).
    fn start(self, broker: &Mosquitto, qos: u8) -> Running {
        let (rules, sink) = match self {
            Sut::Relay => {
                let mut command = Command::new(std::env::current_exe().unwrap());
                command.env(RELAY_ENV, format!("{}:{qos}", broker.port));
                return Running {
                    process: Topicrule::spawn(command),
                    _dir: None,
                    _store: None,
                };
            }
            Sut::Topicrule { rules } => (rules, None),
            Sut::Archiving(sink) => (1, Some(sink)),
        };
        let dir = topicrule_dir(broker.port, qos, rules, sink.map(Sink::action));
        let store = matches!(sink, Some(Sink::S3Batch)).then(|| {
            let store = S3Server::start();
            store.reader().create_bucket("bench");
            store
        });
        // The helper sets RUST_LOG=topicrule=debug, which logs every message; `env` sets it
        // back to the default level, and execs (the pid stays topicrule's).
        let mut command = Command::new("env");
        command.arg("RUST_LOG=topicrule=info");
        for (name, value) in store.iter().flat_map(S3Server::env) {
            command.arg(format!("{name}={value}"));
        }
        command
            .arg(env!("CARGO_BIN_EXE_topicrule"))
            .args(["run", "--config"])
            .arg(dir.path().join("topicrule.toml"));
        Running {
            process: Topicrule::spawn(command),
            _dir: Some(dir),
            _store: store,
        }
    }
}

impl Running {
    /// Checks that the SUT logged its subscription (it answered already), and that the
    /// broker refused none of it.
    fn check_subscribed(&mut self) {
        self.process.wait_for_log("subscribed to");
        let log = &self.process.log;
        if let Some(refused) = log.iter().find(|l| l.contains("refused")) {
            panic!("{refused}");
        }
        let subscribed = log.iter().find_map(|l| l.split_once("subscribed to"));
        eprintln!("e2e:   subscribed to{}", subscribed.unwrap().1);
    }
}

/// The rules and `topicrule.toml` of a topicrule with `rules` rules (as
/// `../shared/bench/peers/topicrule/start.sh` writes them for one), in a fresh directory;
/// the one rule also runs `archive` when given.
fn topicrule_dir(port: u16, qos: u8, rules: usize, archive: Option<&str>) -> TempDir {
    let dir = TempDir::new(&format!("e2e-q{qos}-{rules}"));
    if rules == 1 {
        let sql = format!("SELECT * FROM '{IN_FILTER}'");
        let mut text = rule("bench_republish", &sql, qos);
        if let Some(action) = archive {
            text.push_str(&format!("[[rule.actions]]\n{action}\n"));
        }
        dir.write("rules/bench.toml", &text);
    }
    // Several files of 1,000 rules, each rule on a topic of its own.
    for first in (0..rules).step_by(1_000).filter(|_| rules > 1) {
        let text: String = (first..rules.min(first + 1_000))
            .map(|i| {
                let sql = format!("SELECT * FROM 'bench/in/d-{i}' WHERE temperature > -1000");
                rule(&format!("device_{i}"), &sql, qos)
            })
            .collect();
        dir.write(&format!("rules/devices-{first}.toml"), &text);
    }
    dir.write(
        "topicrule.toml",
        &format!(
            "[broker]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"topicrule-bench-q{qos}\"\n\n\
             [rules]\npaths = [\"{}\"]\n\n[file]\nbase_dir = \"{}\"\n\n[s3]\nspool_dir = \"{}\"\n",
            dir.path().join("rules").display(),
            dir.path().join("data").display(),
            dir.path().join("spool").display(),
        ),
    );
    dir
}

fn rule(name: &str, sql: &str, qos: u8) -> String {
    format!(
        "[[rule]]\nname = \"{name}\"\nsql = \"{sql}\"\n[[rule.actions]]\n\
         republish = {{ topic = \"bench/out/${{topic(3)}}\", qos = {qos} }}\n\n"
    )
}

/// The baseline (`TOPICRULE_E2E_RELAY=<port>:<qos>`): every message on `bench/in/<rest>`
/// republished to `bench/out/<rest>`, unparsed. One thread, one write per read.
fn relay(spec: &str) {
    let (port, qos) = spec
        .split_once(':')
        .and_then(|(port, qos)| Some((port.parse().ok()?, qos.parse().ok()?)))
        .unwrap_or_else(|| panic!("{RELAY_ENV} must be <port>:<qos>, not `{spec}`"));
    let mut stream = mqtt::connect(port, "e2e-relay");
    mqtt::subscribe(&mut stream, IN_FILTER, qos);
    eprintln!("relay subscribed to {IN_FILTER} at QoS {qos}");
    let mut writer = stream.try_clone().unwrap();
    let mut reader = mqtt::Reader::new(stream);
    let mut ids = mqtt::PacketIds::default();
    let mut out = Vec::with_capacity(1 << 16);
    // Ends when the broker goes.
    while reader.fill().is_ok() {
        while let Some(packet) = reader.next() {
            // Anything else is a PUBACK of ours.
            let Some(message) = packet.publish() else {
                continue;
            };
            if let Some(id) = message.id {
                mqtt::puback(&mut out, id);
            }
            let rest = message
                .topic
                .strip_prefix(IN_PREFIX)
                .unwrap_or(message.topic);
            let id = ids.next_for(qos);
            mqtt::publish(&mut out, &[OUT_PREFIX, rest], qos, id, message.payload);
        }
        if writer.write_all(&out).is_err() {
            return;
        }
        out.clear();
    }
}

// ---------------------------------------------------------------- runs and phases

/// What one SUT did, started fresh beside a fresh broker.
struct Run {
    name: String,
    qos: u8,
    /// From its start until it republished a first message.
    start_seconds: f64,
    /// VmRSS once it had answered its first message.
    idle_rss_kb: u64,
    rate: Option<Outcome>,
    max: Outcome,
}

fn run(sut: Sut, qos: u8, settings: &Settings, with_rate: bool) -> Run {
    let name = sut.name();
    eprintln!("e2e: {name}, QoS {qos}");
    // Small packets leave at once (Nagle off), as in a tuned broker.
    let broker = Mosquitto::start_configured("set_tcp_nodelay true\n");
    let started = Instant::now();
    let mut running = sut.start(&broker, qos);
    let pid = running.process.pid();
    Load::open(broker.port, qos, 0).probe(pid).close();
    let start_seconds = started.elapsed().as_secs_f64();
    running.check_subscribed();
    thread::sleep(Duration::from_millis(500));
    let idle_rss_kb = status_kb(pid, "VmRSS:");
    eprintln!(
        "e2e:   republishing {start_seconds:.2} s after its start; idle RSS {:.1} MB",
        mb(idle_rss_kb)
    );
    let phase = |phase: Phase| {
        let outcome = measure(broker.port, qos, phase, pid);
        eprintln!("e2e:   {} {}", phase.name(), outcome.summary());
        outcome
    };
    let rate = with_rate.then(|| phase(settings.rate_phase()));
    let max = phase(settings.max_phase());
    Run {
        name,
        qos,
        start_seconds,
        idle_rss_kb,
        rate,
        max,
    }
}

#[derive(Clone, Copy)]
enum Phase {
    /// Open loop, paced.
    Rate { per_second: u64, count: u64 },
    /// Closed loop: at most `WINDOW` messages sent and not yet received.
    Max { count: u64 },
}

impl Phase {
    fn count(self) -> u64 {
        match self {
            Phase::Rate { count, .. } | Phase::Max { count } => count,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Rate { .. } => "rate",
            Phase::Max { .. } => "max",
        }
    }
}

/// What a phase measured.
struct Outcome {
    sent: u64,
    received: u64,
    duplicates: u64,
    stray: u64,
    /// From the first message sent to the last received.
    seconds: f64,
    /// The SUT's, over the same time.
    cpu_seconds: f64,
    p50_us: f64,
    p99_us: f64,
    /// The SUT's VmHWM at the end of the phase.
    peak_rss_kb: u64,
}

impl Outcome {
    fn throughput(&self) -> f64 {
        self.received as f64 / self.seconds
    }

    fn cpu_per_100k(&self) -> f64 {
        self.cpu_seconds * 100_000.0 / self.received as f64
    }

    fn lost(&self) -> u64 {
        self.sent - self.received
    }

    fn summary(&self) -> String {
        format!(
            "{} sent, {} received, {} lost, {} duplicates; {:.0} msg/s, p50 {:.0} µs, p99 {:.0} µs, CPU {:.2} s",
            self.sent,
            self.received,
            self.lost(),
            self.duplicates,
            self.throughput(),
            self.p50_us,
            self.p99_us,
            self.cpu_seconds
        )
    }
}

/// One phase against the SUT `pid` beside the broker on `port`: a fresh publisher and
/// subscriber, a probe until the SUT answers, the load, the deliveries.
fn measure(port: u16, qos: u8, phase: Phase, pid: u32) -> Outcome {
    let mut load = Load::open(port, qos, phase.count()).probe(pid);
    load.wait_quiet();
    let cpu = cpu_ticks(pid);
    let first = now_ns();
    let sent = load.publish(phase);
    let last = load.wait_deliveries(sent);
    let cpu_seconds = cpu_ticks(pid).saturating_sub(cpu) as f64 / CLK_TCK;
    let mut tally = load.close();
    tally.latencies_us.sort_unstable();
    Outcome {
        sent,
        received: tally.received,
        duplicates: tally.duplicates,
        stray: tally.stray,
        seconds: last.saturating_sub(first) as f64 / 1e9,
        cpu_seconds,
        p50_us: percentile(&tally.latencies_us, 0.50),
        p99_us: percentile(&tally.latencies_us, 0.99),
        peak_rss_kb: status_kb(pid, "VmHWM:"),
    }
}

fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}

// ---------------------------------------------------------------- load

/// Nanoseconds since the first call: the send time in payloads, the arrival times.
fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A phase's number, in its payloads (0: probes); it also names its clients.
static PHASES: AtomicU64 = AtomicU64::new(1);

/// What the subscribing thread tells the publishing one.
struct Shared {
    /// The phase whose messages are counted.
    phase: u64,
    /// First copies of the phase's messages.
    received: AtomicU64,
    probes: AtomicU64,
    /// `now_ns` of the last read, and of the last that brought a message of the phase.
    last_any: AtomicU64,
    last_counted: AtomicU64,
    stop: AtomicBool,
}

/// The publisher (this thread) and the subscriber (a thread) of one phase.
struct Load {
    shared: Arc<Shared>,
    publisher: Publisher,
    subscriber: JoinHandle<Tally>,
    /// Reads (and drops) the broker's PUBACKs to the publisher.
    drain: JoinHandle<()>,
}

impl Load {
    fn open(port: u16, qos: u8, count: u64) -> Load {
        let phase = PHASES.fetch_add(1, Relaxed);
        let id = format!("{}-{phase}", std::process::id());
        let mut stream = mqtt::connect(port, &format!("e2e-sub-{id}"));
        mqtt::subscribe(&mut stream, OUT_FILTER, qos);
        let shared = Arc::new(Shared {
            phase,
            received: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            last_any: AtomicU64::new(0),
            last_counted: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let subscriber = {
            let shared = shared.clone();
            thread::spawn(move || receive(stream, &shared, count))
        };
        let stream = mqtt::connect(port, &format!("e2e-pub-{id}"));
        let drain = {
            let (stream, shared) = (stream.try_clone().unwrap(), shared.clone());
            thread::spawn(move || drain(stream, &shared))
        };
        Load {
            publisher: Publisher::new(stream, qos),
            shared,
            subscriber,
            drain,
        }
    }

    /// Sends a probe (phase 0) every 100 ms until one comes back, while the SUT `pid` lives.
    fn probe(mut self, pid: u32) -> Load {
        let deadline = Instant::now() + READY;
        while Instant::now() < deadline {
            cpu_ticks(pid);
            self.publisher.send(0, 0);
            self.publisher.flush();
            if poll(Duration::from_millis(100), || {
                self.shared.probes.load(Relaxed) > 0
            }) {
                return self;
            }
        }
        panic!(
            "nothing came back on {OUT_FILTER} within {READY:?} of publishing on bench/in/d-0: \
             the system under test does not republish"
        );
    }

    /// Until nothing has arrived for 300 ms (probes still on their way), at most 10 s.
    fn wait_quiet(&self) {
        poll(Duration::from_secs(10), || {
            now_ns().saturating_sub(self.shared.last_any.load(Relaxed)) > 300_000_000
        });
    }

    fn publish(&mut self, phase: Phase) -> u64 {
        match phase {
            Phase::Rate { per_second, count } => self.paced(per_second, count),
            Phase::Max { count } => self.closed_loop(count),
        }
    }

    fn paced(&mut self, per_second: u64, count: u64) -> u64 {
        let started = Instant::now();
        let mut sent = 0;
        while sent < count {
            let due = (started.elapsed().as_secs_f64() * per_second as f64) as u64 + 1;
            while sent < due.min(count) {
                self.publisher.send(self.shared.phase, sent);
                sent += 1;
            }
            self.publisher.flush();
            thread::sleep(Duration::from_millis(1));
        }
        sent
    }

    fn closed_loop(&mut self, count: u64) -> u64 {
        let mut sent = 0;
        while sent < count {
            let until = (self.shared.received.load(Relaxed) + WINDOW).min(count);
            if sent < until {
                while sent < until {
                    self.publisher.send(self.shared.phase, sent);
                    sent += 1;
                }
                self.publisher.flush();
            } else if !poll(IDLE, || {
                self.shared.received.load(Relaxed) + WINDOW / 2 >= sent
            }) {
                eprintln!("e2e: no delivery for {IDLE:?} with {WINDOW} in flight: stopping at {sent} sent");
                break;
            }
        }
        sent
    }

    /// Until every message sent has arrived, or none has for `IDLE`; the time of the last.
    fn wait_deliveries(&self, sent: u64) -> u64 {
        let sent_all = now_ns();
        poll(Duration::from_secs(600), || {
            let last = self.shared.last_counted.load(Relaxed).max(sent_all);
            self.shared.received.load(Relaxed) >= sent
                || now_ns().saturating_sub(last) > IDLE.as_nanos() as u64
        });
        self.shared.last_counted.load(Relaxed)
    }

    fn close(mut self) -> Tally {
        self.shared.stop.store(true, Relaxed);
        self.publisher.disconnect();
        self.drain.join().unwrap();
        let tally = self.subscriber.join().expect("the subscriber failed");
        if let Some(e) = &tally.lost {
            panic!("the subscriber lost its connection to mosquitto: {e}");
        }
        tally
    }
}

/// Polls `done` every 2 ms; false if it still fails after `timeout`.
fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

struct Publisher {
    out: BufWriter<TcpStream>,
    qos: u8,
    ids: mqtt::PacketIds,
    devices: Vec<String>,
    payload: Vec<u8>,
    packet: Vec<u8>,
}

impl Publisher {
    fn new(stream: TcpStream, qos: u8) -> Publisher {
        Publisher {
            out: BufWriter::with_capacity(1 << 16, stream),
            qos,
            ids: mqtt::PacketIds::default(),
            devices: (0..DEVICES).map(|d| format!("d-{d}")).collect(),
            payload: Vec::with_capacity(PAYLOAD_SIZE),
            packet: Vec::with_capacity(PAYLOAD_SIZE + 64),
        }
    }

    /// Message `seq` of `phase` on `bench/in/d-<seq % 100>`, stamped with the time.
    fn send(&mut self, phase: u64, seq: u64) {
        let device = &self.devices[(seq % DEVICES) as usize];
        write_payload(&mut self.payload, device, phase, seq);
        self.packet.clear();
        let id = self.ids.next_for(self.qos);
        let topic = [IN_PREFIX, device.as_bytes()];
        mqtt::publish(&mut self.packet, &topic, self.qos, id, &self.payload);
        self.out
            .write_all(&self.packet)
            .unwrap_or_else(|e| panic!("publishing to mosquitto failed: {e}"));
    }

    fn flush(&mut self) {
        self.out
            .flush()
            .unwrap_or_else(|e| panic!("publishing to mosquitto failed: {e}"));
    }

    fn disconnect(&mut self) {
        let _ = self.out.write_all(&mqtt::DISCONNECT);
        let _ = self.out.flush();
    }
}

/// `{"device":"d-7","phase":3,"seq":123,"sent_ns":…,"temperature":21.5,"pad":"xx…"}`, 200 bytes.
fn write_payload(buf: &mut Vec<u8>, device: &str, phase: u64, seq: u64) {
    buf.clear();
    write!(
        buf,
        r#"{{"device":"{device}","phase":{phase},"seq":{seq},"sent_ns":{},"temperature":{}.{},"pad":""#,
        now_ns(),
        15 + seq % 20,
        seq % 10
    )
    .unwrap();
    let pad = PAYLOAD_SIZE.saturating_sub(buf.len() + 2);
    buf.resize(buf.len() + pad, b'x');
    buf.extend_from_slice(b"\"}");
}

/// The unsigned integer after `"key":` in a JSON payload, whatever the SUT did to spacing.
fn field(payload: &[u8], quoted_key: &[u8]) -> Option<u64> {
    let at = payload
        .windows(quoted_key.len())
        .position(|w| w == quoted_key)?;
    let value = payload[at + quoted_key.len()..]
        .trim_ascii_start()
        .strip_prefix(b":")?
        .trim_ascii_start();
    let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&value[..digits]).ok()?.parse().ok()
}

/// What the subscriber counted.
struct Tally {
    /// By sequence number: arrived already.
    seen: Vec<bool>,
    received: u64,
    duplicates: u64,
    /// Messages of no phase of ours, or with a sequence number out of range.
    stray: u64,
    probes: u64,
    latencies_us: Vec<u32>,
    /// Why the connection ended before the phase did.
    lost: Option<io::Error>,
}

impl Tally {
    /// Counts a message arrived at `now`; true if it is a first copy of the phase's.
    fn count(&mut self, payload: &[u8], phase: u64, now: u64) -> bool {
        let fields = (
            field(payload, b"\"phase\""),
            field(payload, b"\"seq\""),
            field(payload, b"\"sent_ns\""),
        );
        let (Some(of), Some(seq), Some(sent)) = fields else {
            self.stray += 1;
            return false;
        };
        match self.seen.get_mut(seq as usize) {
            _ if of == 0 => self.probes += 1,
            Some(seen) if of == phase && !*seen => {
                *seen = true;
                self.received += 1;
                let micros = now.saturating_sub(sent) / 1_000;
                self.latencies_us.push(micros.min(u32::MAX as u64) as u32);
                return true;
            }
            Some(_) if of == phase => self.duplicates += 1,
            _ => self.stray += 1,
        }
        false
    }
}

/// The subscriber: counts what arrives on `bench/out/#`, acknowledging it (QoS 1).
fn receive(stream: TcpStream, shared: &Shared, count: u64) -> Tally {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = mqtt::Reader::new(stream);
    let mut tally = Tally {
        seen: vec![false; count as usize],
        received: 0,
        duplicates: 0,
        stray: 0,
        probes: 0,
        latencies_us: Vec::with_capacity(count as usize),
        lost: None,
    };
    let mut acks = Vec::new();
    while !shared.stop.load(Relaxed) {
        match reader.fill() {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tally.lost = Some(e);
                return tally;
            }
        }
        let now = now_ns();
        let mut counted = false;
        while let Some(packet) = reader.next() {
            let Some(message) = packet.publish() else {
                continue;
            };
            if let Some(id) = message.id {
                mqtt::puback(&mut acks, id);
            }
            counted |= tally.count(message.payload, shared.phase, now);
        }
        if let Err(e) = writer.write_all(&acks) {
            tally.lost = Some(e);
            return tally;
        }
        acks.clear();
        shared.received.store(tally.received, Relaxed);
        shared.probes.store(tally.probes, Relaxed);
        shared.last_any.store(now, Relaxed);
        if counted {
            shared.last_counted.store(now, Relaxed);
        }
    }
    let _ = writer.write_all(&mqtt::DISCONNECT);
    tally
}

/// Reads the publisher's connection (the broker's PUBACKs) until the phase ends.
fn drain(mut stream: TcpStream, shared: &Shared) {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut sink = vec![0; 1 << 16];
    while !shared.stop.load(Relaxed) {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

// ---------------------------------------------------------------- /proc

/// utime + stime of `pid`, in clock ticks; fails loudly when the process has exited.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name: state (field 3), ..., utime (14), stime (15).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    assert!(
        fields.len() > 12 && fields[0] != "Z",
        "the system under test (pid {pid}) has exited"
    );
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A `kB` line of /proc/<pid>/status (`VmRSS:`, `VmHWM:`).
fn status_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} for the system under test (pid {pid})"))
}

// ---------------------------------------------------------------- report

struct Row {
    metric: &'static str,
    base: f64,
    sut: f64,
    decimals: usize,
}

fn row(metric: &'static str, base: f64, sut: f64, decimals: usize) -> Row {
    Row {
        metric,
        base,
        sut,
        decimals,
    }
}

fn report(
    settings: &Settings,
    q0: &(Run, Run),
    q1: &(Run, Run),
    many: &Run,
    archiving: &[[Run; 3]],
) {
    println!(
        "\ntopicrule end to end, beside a raw relay in the same run: mosquitto on loopback, \
         {PAYLOAD_SIZE}-byte JSON on {DEVICES} topics;\n\
         rate: {} msg/s for {} s; max: {} messages, at most {WINDOW} in flight. \
         CPU is the SUT's (utime + stime).",
        settings.rate, settings.seconds, settings.messages
    );
    for (relay, topicrule) in [q0, q1] {
        let title = format!("QoS {}", relay.qos);
        table(
            &title,
            ["relay", "topicrule", "topicrule/relay"],
            &versus(relay, topicrule),
        );
    }
    let one = &q1.1;
    let title = format!("QoS 1, {} rules", settings.rules);
    let rules = format!("{} rules", settings.rules);
    table(
        &title,
        ["1 rule", &rules, &format!("{rules}/1 rule")],
        &max_rows(&[&one.max], &[&many.max])
            .into_iter()
            .chain([
                row(
                    "idle RSS (MB)",
                    mb(one.idle_rss_kb),
                    mb(many.idle_rss_kb),
                    1,
                ),
                row(
                    "start to first message (s)",
                    one.start_seconds,
                    many.start_seconds,
                    2,
                ),
            ])
            .collect::<Vec<_>>(),
    );
    let per_rule =
        many.idle_rss_kb.saturating_sub(one.idle_rss_kb) as f64 / (settings.rules - 1) as f64;
    println!("memory per rule: {per_rule:.2} KB (idle RSS, {rules} vs 1)");
    let rounds = archiving.len();
    for sink in [1, 2] {
        let base: Vec<&Outcome> = archiving.iter().map(|round| &round[0].max).collect();
        let sut: Vec<&Outcome> = archiving.iter().map(|round| &round[sink].max).collect();
        let title = format!("QoS 1, {}", archiving[0][sink].name);
        table(
            &title,
            ["republish", "+ archive", "archiving/republish"],
            &max_rows(&base, &sut),
        );
        let each: Vec<String> = base
            .iter()
            .zip(&sut)
            .map(|(b, s)| format!("{:.2}", s.throughput() / b.throughput()))
            .collect();
        println!(
            "msg/s medians of {rounds} round(s); archiving/republish in each: {}",
            each.join(" ")
        );
    }
    let mut runs = vec![&q0.0, &q0.1, &q1.0, &q1.1, many];
    runs.extend(archiving.iter().flatten());
    deliveries(&runs);
}

fn versus(relay: &Run, topicrule: &Run) -> Vec<Row> {
    let (base, sut) = (
        relay.rate.as_ref().unwrap(),
        topicrule.rate.as_ref().unwrap(),
    );
    vec![
        row("rate: latency p50 (µs)", base.p50_us, sut.p50_us, 0),
        row("rate: latency p99 (µs)", base.p99_us, sut.p99_us, 0),
        row(
            "rate: CPU s per 100k msgs",
            base.cpu_per_100k(),
            sut.cpu_per_100k(),
            2,
        ),
        row(
            "rate: peak RSS (MB)",
            mb(base.peak_rss_kb),
            mb(sut.peak_rss_kb),
            1,
        ),
    ]
    .into_iter()
    .chain(max_rows(&[&relay.max], &[&topicrule.max]))
    .collect()
}

/// The closed-loop figures of `sut` beside `base`'s: their medians over the runs given.
fn max_rows(base: &[&Outcome], sut: &[&Outcome]) -> [Row; 2] {
    [
        row(
            "max: msg/s",
            median(base, Outcome::throughput),
            median(sut, Outcome::throughput),
            0,
        ),
        row(
            "max: CPU s per 100k msgs",
            median(base, Outcome::cpu_per_100k),
            median(sut, Outcome::cpu_per_100k),
            2,
        ),
    ]
}

/// The median of a figure over outcomes (the upper one of an even count).
fn median(outcomes: &[&Outcome], figure: fn(&Outcome) -> f64) -> f64 {
    let mut values: Vec<f64> = outcomes.iter().map(|o| figure(o)).collect();
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

fn table(title: &str, [base, sut, ratio]: [&str; 3], rows: &[Row]) {
    println!("\n{title:<28} {base:>12} {sut:>14} {ratio:>20}");
    for Row {
        metric,
        base,
        sut,
        decimals,
    } in rows
    {
        let ratio = if *base > 0.0 {
            format!("{:.2}", sut / base)
        } else {
            "-".into()
        };
        println!("{metric:<28} {base:>12.decimals$} {sut:>14.decimals$} {ratio:>20}");
    }
}

/// One line for all phases when nothing was lost, else one a phase that lost or duplicated.
fn deliveries(runs: &[&Run]) {
    let outcomes: Vec<(&Run, &Outcome)> = runs
        .iter()
        .flat_map(|run| run.rate.iter().chain([&run.max]).map(move |o| (*run, o)))
        .collect();
    let faulty: Vec<_> = outcomes
        .iter()
        .filter(|(_, o)| o.lost() > 0 || o.duplicates > 0 || o.stray > 0)
        .collect();
    println!();
    if faulty.is_empty() {
        let sent: u64 = outcomes.iter().map(|(_, o)| o.sent).sum();
        println!("deliveries: all {sent} messages arrived, once each");
    }
    for (run, outcome) in faulty {
        println!(
            "deliveries: {} QoS {}: {} sent, {} LOST, {} duplicates, {} stray",
            run.name,
            run.qos,
            outcome.sent,
            outcome.lost(),
            outcome.duplicates,
            outcome.stray
        );
    }
}

// ---------------------------------------------------------------- MQTT 3.1.1, the little needed

mod mqtt {
    use std::io::{self, Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

    /// Connects to the broker on the loopback `port`: a clean session, no keep-alive.
    pub fn connect(port: u16, client_id: &str) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("cannot connect to mosquitto on 127.0.0.1:{port}: {e}"));
        stream.set_nodelay(true).unwrap();
        let mut body = b"\x00\x04MQTT\x04\x02\x00\x00".to_vec();
        string(&mut body, client_id.as_bytes());
        stream.write_all(&packet(0x10, &body)).unwrap();
        let ack = read_ack::<4>(&mut stream, "CONNACK");
        assert!(ack[0] == 0x20 && ack[3] == 0, "CONNECT refused: {ack:?}");
        stream
    }

    /// Subscribes to one filter and waits for the SUBACK granting `qos`.
    pub fn subscribe(stream: &mut TcpStream, filter: &str, qos: u8) {
        let mut body = vec![0, 1];
        string(&mut body, filter.as_bytes());
        body.push(qos);
        stream.write_all(&packet(0x82, &body)).unwrap();
        let ack = read_ack::<5>(stream, "SUBACK");
        assert!(
            ack[0] == 0x90 && ack[4] == qos,
            "SUBSCRIBE {filter} refused: {ack:?}"
        );
    }

    /// Appends a PUBLISH of `payload` to the topic made of `topic`'s parts.
    pub fn publish(out: &mut Vec<u8>, topic: &[&[u8]], qos: u8, id: [u8; 2], payload: &[u8]) {
        let topic_len: usize = topic.iter().map(|part| part.len()).sum();
        let id_len = if qos > 0 { 2 } else { 0 };
        out.push(0x30 | qos << 1);
        remaining_length(out, 2 + topic_len + id_len + payload.len());
        out.extend_from_slice(&(topic_len as u16).to_be_bytes());
        topic.iter().for_each(|part| out.extend_from_slice(part));
        out.extend_from_slice(&id[..id_len]);
        out.extend_from_slice(payload);
    }

    pub fn puback(out: &mut Vec<u8>, id: [u8; 2]) {
        out.extend_from_slice(&[0x40, 0x02, id[0], id[1]]);
    }

    /// Packet identifiers, 1 to 65535 and around.
    #[derive(Default)]
    pub struct PacketIds(u16);

    impl PacketIds {
        /// The next identifier at QoS 1 (unused at QoS 0).
        pub fn next_for(&mut self, qos: u8) -> [u8; 2] {
            if qos > 0 {
                self.0 = self.0 % u16::MAX + 1;
            }
            self.0.to_be_bytes()
        }
    }

    pub struct Packet<'a> {
        header: u8,
        body: &'a [u8],
    }

    pub struct Publish<'a> {
        pub topic: &'a [u8],
        /// The packet identifier, at QoS 1.
        pub id: Option<[u8; 2]>,
        pub payload: &'a [u8],
    }

    impl<'a> Packet<'a> {
        pub fn publish(&self) -> Option<Publish<'a>> {
            if self.header >> 4 != 3 {
                return None;
            }
            let body = self.body;
            let topic_end = 2 + u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
            let topic = body.get(2..topic_end)?;
            let (id, payload_start) = match (self.header >> 1) & 3 {
                0 => (None, topic_end),
                _ => (
                    Some([*body.get(topic_end)?, *body.get(topic_end + 1)?]),
                    topic_end + 2,
                ),
            };
            Some(Publish {
                topic,
                id,
                payload: body.get(payload_start..)?,
            })
        }
    }

    /// Packets from a socket: what one read brought, parsed at once.
    pub struct Reader {
        stream: TcpStream,
        buf: Vec<u8>,
        start: usize,
        end: usize,
    }

    impl Reader {
        pub fn new(stream: TcpStream) -> Reader {
            Reader {
                stream,
                buf: vec![0; 1 << 18],
                start: 0,
                end: 0,
            }
        }

        /// One read; false when it timed out, an error when the connection is gone.
        pub fn fill(&mut self) -> io::Result<bool> {
            if self.start == self.end {
                (self.start, self.end) = (0, 0);
            } else if self.buf.len() - self.end < 1 << 14 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            }
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    self.end += n;
                    Ok(true)
                }
                Err(e) if is_timeout(&e) => Ok(false),
                Err(e) => Err(e),
            }
        }

        /// The next whole packet read.
        pub fn next(&mut self) -> Option<Packet<'_>> {
            let bytes = &self.buf[self.start..self.end];
            let (header_len, len) = parse_remaining_length(bytes)?;
            let at = self.start;
            if bytes.len() < header_len + len {
                return None;
            }
            self.start += header_len + len;
            Some(Packet {
                header: self.buf[at],
                body: &self.buf[at + header_len..self.start],
            })
        }
    }

    fn is_timeout(e: &io::Error) -> bool {
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
        )
    }

    fn read_ack<const N: usize>(stream: &mut TcpStream, name: &str) -> [u8; N] {
        let mut ack = [0; N];
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .read_exact(&mut ack)
            .unwrap_or_else(|e| panic!("no {name} from mosquitto: {e}"));
        stream.set_read_timeout(None).unwrap();
        ack
    }

    fn packet(header: u8, body: &[u8]) -> Vec<u8> {
        let mut packet = vec![header];
        remaining_length(&mut packet, body.len());
        packet.extend_from_slice(body);
        packet
    }

    fn string(out: &mut Vec<u8>, text: &[u8]) {
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text);
    }

    fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
        loop {
            let byte = (len % 128) as u8;
            len /= 128;
            out.push(if len > 0 { byte | 0x80 } else { byte });
            if len == 0 {
                return;
            }
        }
    }

    /// The fixed header's length and the remaining length, once both are read.
    fn parse_remaining_length(bytes: &[u8]) -> Option<(usize, usize)> {
        let mut len = 0;
        for i in 1..5 {
            let byte = *bytes.get(i)?;
            len |= ((byte & 0x7f) as usize) << (7 * (i - 1));
            if byte & 0x80 == 0 {
                return Some((i + 1, len));
            }
        }
        None
    }
}
