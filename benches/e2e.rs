//! The message path end to end, against a baseline measured in the same run: a real
//! mosquitto, a publisher of 200-byte JSON messages on `bench/in/d-0..99`, the system
//! under test republishing each to `bench/out/...`, and a counting subscriber.
//!
//! The baseline is `relay`: this program again, as a raw-TCP MQTT 3.1.1 republisher that
//! parses nothing (one thread, one write per read), the floor for CPU and the ceiling for
//! throughput. topicrule runs one rule (`SELECT * FROM 'bench/in/#'`), then 10,000 rules,
//! each with its own FROM filter and a WHERE. Every figure is printed with its ratio to the
//! baseline of the same run: the machines are noisy, absolute figures move by 10-30%.
//!
//! `cargo bench --bench e2e` (needs mosquitto, as the tests do). `E2E_RATE_SECS` (5) and
//! `E2E_MAX_COUNT` (50,000) size the phases. Under `cargo test` it does nothing.
//!
//! Phases, each SUT with a fresh broker: `rate`, 5,000 msg/s: latency and CPU per message at
//! a moderate load; `max`, closed loop with at most 1,000 messages in flight: throughput and
//! CPU per message. CPU is the SUT's utime + stime from `/proc`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Mosquitto, TempDir};

const RELAY_ENV: &str = "TOPICRULE_E2E_RELAY";
const DEVICES: usize = 100;
const PAYLOAD: usize = 200;
const RATE: u64 = 5_000;
const WINDOW: u64 = 1_000;
const MANY_RULES: usize = 10_000;

fn main() {
    if let Ok(target) = std::env::var(RELAY_ENV) {
        return relay(&target);
    }
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let secs = env_number("E2E_RATE_SECS", 5);
    let max_count = env_number("E2E_MAX_COUNT", 50_000);
    println!("| SUT | QoS | phase | msg/s | p50 µs | p99 µs | CPU s/100k | RSS MB | CPU ratio | msg/s ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for qos in [0u8, 1] {
        let relay = measure(&Sut::Relay, qos, secs, max_count);
        let one = measure(&Sut::Topicrule(1), qos, secs, max_count);
        report("relay", qos, &relay, &relay);
        report("topicrule, 1 rule", qos, &one, &relay);
        if qos == 1 {
            let many = measure(&Sut::Topicrule(MANY_RULES), qos, secs, max_count);
            report("topicrule, 10,000 rules", qos, &many, &relay);
            println!(
                "\n10,000 rules against 1 rule, QoS 1: {:.2}x the throughput; {:.2}x the CPU per message at 5,000 msg/s; memory at rest {:.1} MB against {:.1} MB ({:.2} KB a rule)",
                many.max.rate / one.max.rate,
                many.steady.cpu_per_100k / one.steady.cpu_per_100k,
                many.idle_rss_mb,
                one.idle_rss_mb,
                (many.idle_rss_mb - one.idle_rss_mb) * 1024.0 / (MANY_RULES - 1) as f64,
            );
        }
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one phase measured.
struct Phase {
    rate: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_per_100k: f64,
    lost: u64,
}

/// A SUT's figures: the `rate` phase, the `max` phase, its memory.
struct Figures {
    steady: Phase,
    max: Phase,
    idle_rss_mb: f64,
    peak_rss_mb: f64,
}

fn report(name: &str, qos: u8, f: &Figures, base: &Figures) {
    for (label, phase, base_phase) in [
        ("5,000 msg/s", &f.steady, &base.steady),
        ("max", &f.max, &base.max),
    ] {
        println!(
            "| {name} | {qos} | {label} | {:.0} | {:.0} | {:.0} | {:.2} | {:.1} | {:.2}x | {:.2}x |",
            phase.rate,
            phase.p50_us,
            phase.p99_us,
            phase.cpu_per_100k,
            f.peak_rss_mb,
            phase.cpu_per_100k / base_phase.cpu_per_100k,
            phase.rate / base_phase.rate,
        );
        if phase.lost > 0 {
            println!(
                "  ({name}, QoS {qos}, {label}: {} messages lost)",
                phase.lost
            );
        }
    }
}

enum Sut {
    Relay,
    /// topicrule with this many rules.
    Topicrule(usize),
}

/// Starts a broker and the SUT, runs both phases.
fn measure(sut: &Sut, qos: u8, secs: u64, max_count: u64) -> Figures {
    // Small packets leave at once (Nagle off), as a tuned broker sends them.
    let broker = Mosquitto::start_configured("set_tcp_nodelay true\n");
    let dir = TempDir::new("e2e");
    let mut child = start(sut, qos, &broker, &dir);
    let pid = child.id();
    wait_until_ready(broker.port, qos);
    let idle_rss_mb = status_kb(pid, "VmRSS:") / 1024.0;
    let steady = run_phase(broker.port, qos, pid, RATE * secs, Some(RATE));
    let max = run_phase(broker.port, qos, pid, max_count, None);
    let peak_rss_mb = status_kb(pid, "VmHWM:") / 1024.0;
    let _ = child.kill();
    let _ = child.wait();
    Figures {
        steady,
        max,
        idle_rss_mb,
        peak_rss_mb,
    }
}

fn start(sut: &Sut, qos: u8, broker: &Mosquitto, dir: &TempDir) -> Child {
    let mut command = match sut {
        Sut::Relay => {
            let mut command = Command::new(std::env::current_exe().expect("own path"));
            command.env(RELAY_ENV, format!("{}:{qos}", broker.port));
            command
        }
        Sut::Topicrule(rules) => {
            write_rules(&dir.path().join("rules"), *rules, qos);
            let mut command = Command::new(env!("CARGO_BIN_EXE_topicrule"));
            command
                .args(["run", "--rules"])
                .arg(dir.path().join("rules"))
                .args(["--broker", &broker.url()])
                .current_dir(dir.path())
                .env("TOPICRULE_BROKER_CLIENT_ID", format!("e2e-{rules}"))
                .env("RUST_LOG", "topicrule=warn");
            command
        }
    };
    command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start the SUT")
}

/// One rule on `bench/in/#`, or `count` rules each on its own device topic with a WHERE.
fn write_rules(dir: &Path, count: usize, qos: u8) {
    std::fs::create_dir_all(dir).unwrap();
    let action = format!(
        "[[rule.actions]]\nrepublish = {{ topic = \"bench/out/${{topic(3)}}\", qos = {qos} }}\n"
    );
    if count == 1 {
        let rule =
            format!("[[rule]]\nname = \"bench\"\nsql = \"SELECT * FROM 'bench/in/#'\"\n{action}");
        std::fs::write(dir.join("bench.toml"), rule).unwrap();
        return;
    }
    for file in 0..count.div_ceil(1000) {
        let text: String = (file * 1000..((file + 1) * 1000).min(count))
            .map(|i| {
                format!(
                    "[[rule]]\nname = \"d{i}\"\nsql = \"SELECT * FROM 'bench/in/d-{i}' WHERE temperature > -1000\"\n{action}\n"
                )
            })
            .collect();
        std::fs::write(dir.join(format!("rules-{file:02}.toml")), text).unwrap();
    }
}

/// Publishes probes until one comes back republished (the SUT is subscribed), within 90 s.
fn wait_until_ready(port: u16, qos: u8) {
    let out = Subscriber::start(port, qos, 1, Instant::now());
    let mut publisher = Client::connect(port, "e2e-probe");
    publisher.drain_incoming();
    let deadline = Instant::now() + Duration::from_secs(90);
    while out.received.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the SUT never republished a probe"
        );
        publisher.publish("bench/in/d-0", qos, 1, &message(0, 0));
        std::thread::sleep(Duration::from_millis(100));
    }
    out.stop();
}

/// Sends `count` messages (at `rate` a second, or closed loop with `WINDOW` in flight) and
/// counts what comes out; the SUT's CPU over the phase.
fn run_phase(port: u16, qos: u8, pid: u32, count: u64, rate: Option<u64>) -> Phase {
    let base = Instant::now();
    let out = Subscriber::start(port, qos, count, base);
    let mut publisher = Client::connect(port, "e2e-pub");
    publisher.drain_incoming();
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    'send: for seq in 0..count {
        match rate {
            Some(rate) => {
                let due = started + Duration::from_nanos(seq * 1_000_000_000 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            None => {
                // Messages lost (QoS 0) would keep the window full: 10 s without progress ends
                // the phase, and the loss is reported.
                let since = Instant::now();
                while seq - out.received.load(Ordering::Relaxed) >= WINDOW {
                    if since.elapsed() > Duration::from_secs(10) {
                        break 'send;
                    }
                    // Not a spin: on a small machine it would take a core from the SUT.
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
        }
        let device = seq % DEVICES as u64;
        let sent_ns = base.elapsed().as_nanos() as u64;
        let topic = format!("bench/in/d-{device}");
        publisher.publish(
            &topic,
            qos,
            (seq % 60_000 + 1) as u16,
            &message(seq, sent_ns),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.received.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid) - cpu_before;
    let received = out.received.load(Ordering::Relaxed);
    let mut latencies = out.stop();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |ns| *ns as f64 / 1000.0)
    };
    Phase {
        rate: received as f64 / elapsed,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        cpu_per_100k: cpu * 100_000.0 / count as f64,
        lost: count.saturating_sub(received),
    }
}

/// A JSON message of `PAYLOAD` bytes carrying its sequence number and send time.
fn message(seq: u64, sent_ns: u64) -> Vec<u8> {
    let mut text = format!(
        "{{\"device\":\"d-{}\",\"seq\":{seq},\"sent\":{sent_ns},\"temperature\":21.5,\"humidity\":40,\"pad\":\"",
        seq % DEVICES as u64
    );
    while text.len() < PAYLOAD - 2 {
        text.push('x');
    }
    text.push_str("\"}");
    text.into_bytes()
}

/// The `sent` field of a message, found without parsing the JSON.
fn sent_ns(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let start = text.find("\"sent\":")? + 7;
    let end = start + text[start..].find(',')?;
    text[start..end].parse().ok()
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses: utime and stime are the
    // 12th and 13th of them, in clock ticks (100 a second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn status_kb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0)
}

/// A raw MQTT 3.1.1 client: what a load generator needs and nothing more.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(port: u16, id: &str) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("cannot reach mosquitto");
        stream.set_nodelay(true).unwrap();
        let mut client = Client {
            stream,
            buf: Vec::new(),
        };
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
        put_str(&mut body, id);
        client.send(0x10, &body);
        let (kind, _) = client.read_packet().expect("no CONNACK");
        assert_eq!(kind >> 4, 2, "expected a CONNACK");
        client
    }

    fn subscribe(&mut self, filter: &str, qos: u8) {
        let mut body = vec![0, 1];
        put_str(&mut body, filter);
        body.push(qos);
        self.send(0x82, &body);
    }

    fn publish(&mut self, topic: &str, qos: u8, pkid: u16, payload: &[u8]) {
        let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
        put_str(&mut body, topic);
        if qos > 0 {
            body.extend_from_slice(&pkid.to_be_bytes());
        }
        body.extend_from_slice(payload);
        self.send(0x30 | (qos << 1), &body);
    }

    fn send(&mut self, header: u8, body: &[u8]) {
        let mut packet = Vec::with_capacity(body.len() + 5);
        encode(&mut packet, header, body);
        self.stream
            .write_all(&packet)
            .expect("the broker closed the connection");
    }

    /// Reads and drops what the broker sends (a publisher's PUBACKs), so that it never
    /// waits on a full socket.
    fn drain_incoming(&self) {
        let mut stream = self.stream.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut sink = [0u8; 65536];
            while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        });
    }

    /// The next packet: its first byte and its body; `None` when the connection ends.
    fn read_packet(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((header, len, used)) = parse_header(&self.buf) {
                if self.buf.len() >= used + len {
                    let body = self.buf[used..used + len].to_vec();
                    self.buf.drain(..used + len);
                    return Some((header, body));
                }
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// A packet's first byte, its body length and the header's length, once all are read.
fn parse_header(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let (&header, rest) = buf.split_first()?;
    let mut len = 0usize;
    for (i, &byte) in rest.iter().take(4).enumerate() {
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((header, len, i + 2));
        }
    }
    None
}

/// A PUBLISH body's topic, packet id (QoS 1) and payload.
fn split_publish(header: u8, body: &[u8]) -> (&[u8], Option<[u8; 2]>, &[u8]) {
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = &body[2..2 + topic_len];
    let mut at = 2 + topic_len;
    let pkid = (header & 0x06 != 0).then(|| {
        at += 2;
        [body[at - 2], body[at - 1]]
    });
    (topic, pkid, &body[at..])
}

/// Counts what arrives on `bench/out/#` (each sequence number once) and keeps latencies.
struct Subscriber {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    latencies: Arc<Mutex<Vec<u64>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Subscriber {
    fn start(port: u16, qos: u8, expected: u64, base: Instant) -> Subscriber {
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let latencies = Arc::new(Mutex::new(Vec::with_capacity(expected as usize)));
        let mut client = Client::connect(port, "e2e-sub");
        client.subscribe("bench/out/#", qos);
        let (count, done, kept) = (received.clone(), stop.clone(), latencies.clone());
        client
            .stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let thread = std::thread::spawn(move || {
            let mut seen = vec![false; expected as usize + 1];
            while !done.load(Ordering::Relaxed) {
                let Some((header, body)) = client.read_packet() else {
                    continue;
                };
                if header >> 4 != 3 {
                    continue;
                }
                let (_, pkid, payload) = split_publish(header, &body);
                if let Some(pkid) = pkid {
                    client.send(0x40, &pkid);
                }
                let seq = seq_of(payload).unwrap_or(0) as usize;
                if seq < seen.len() && !std::mem::replace(&mut seen[seq], true) {
                    if let Some(sent) = sent_ns(payload) {
                        let now = base.elapsed().as_nanos() as u64;
                        kept.lock().unwrap().push(now.saturating_sub(sent));
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Subscriber {
            received,
            stop,
            latencies,
            thread,
        }
    }

    /// Stops and returns the latencies, in nanoseconds.
    fn stop(self) -> Vec<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        std::mem::take(&mut *self.latencies.lock().unwrap())
    }
}

fn seq_of(payload: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(payload).ok()?;
    let start = text.find("\"seq\":")? + 6;
    let end = start + text[start..].find(',')?;
    text[start..end].parse().ok()
}

/// The baseline: subscribes to `bench/in/#` and republishes each message to `bench/out/...`
/// with the same payload; at QoS 1, acknowledges it in the same write. `target` is
/// `port:qos`.
fn relay(target: &str) {
    let (port, qos) = target.split_once(':').expect("port:qos");
    let (port, qos): (u16, u8) = (port.parse().unwrap(), qos.parse().unwrap());
    let mut client = Client::connect(port, &format!("e2e-relay-{}", std::process::id()));
    client.subscribe("bench/in/#", qos);
    let mut out = Vec::new();
    let mut pkid: u16 = 0;
    loop {
        // What one read brought, answered with one write.
        let Some(first) = client.read_packet() else {
            return;
        };
        let mut packet = Some(first);
        while let Some((header, body)) = packet.take() {
            if header >> 4 == 3 {
                let (topic, ack, payload) = split_publish(header, &body);
                if let Some(ack) = ack {
                    out.extend_from_slice(&[0x40, 0x02, ack[0], ack[1]]);
                }
                let rest = &topic[b"bench/in/".len().min(topic.len())..];
                let topic = format!("bench/out/{}", String::from_utf8_lossy(rest));
                let mut body = Vec::with_capacity(topic.len() + payload.len() + 4);
                put_str(&mut body, &topic);
                if qos > 0 {
                    pkid = pkid.checked_add(1).unwrap_or(1);
                    body.extend_from_slice(&pkid.to_be_bytes());
                }
                body.extend_from_slice(payload);
                encode(&mut out, 0x30 | (qos << 1), &body);
            }
            if let Some((_, len, used)) = parse_header(&client.buf) {
                if client.buf.len() >= used + len {
                    packet = client.read_packet();
                }
            }
        }
        if client.stream.write_all(&out).is_err() {
            return;
        }
        out.clear();
    }
}

fn encode(out: &mut Vec<u8>, header: u8, body: &[u8]) {
    out.push(header);
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        out.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
}
