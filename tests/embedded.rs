//! The embedded broker: the real topicrule binary with no broker configured, on a free
//! port, with real clients (mosquitto's for MQTT 3.1.1, rumqttc for MQTT 5).

mod support;

use std::collections::HashSet;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{free_port, publish, Subscriber, TempDir, Topicrule};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(700);

fn start_in(dir: &TempDir, port: u16) -> Topicrule {
    let mut topicrule = Topicrule::spawn(support::embedded_command(dir, port));
    topicrule.wait_for_log("subscribed");
    topicrule
}

fn start(rules: &str, name: &str) -> (Topicrule, TempDir, u16) {
    let dir = TempDir::new(name);
    dir.write("rules/rules.toml", rules);
    let port = free_port();
    (start_in(&dir, port), dir, port)
}

/// A mosquitto client (`mosquitto_pub` or `mosquitto_sub`) speaking MQTT 3.1.1 to `port`.
fn mosquitto(tool: &str, port: u16) -> Command {
    let mut command = Command::new(tool);
    command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv311"]);
    command
}

fn run(mut command: Command) -> Output {
    let output = command.stderr(Stdio::piped()).output().unwrap();
    assert!(output.status.success(), "{command:?} failed: {output:?}");
    output
}

/// Publishes one message at QoS 1 as an MQTT 5 client and waits for its PUBACK.
fn publish5(port: u16, topic: &str, payload: &[u8]) {
    use rumqttc::v5::mqttbytes::{v5::Packet, QoS};
    use rumqttc::v5::{Client, Event, MqttOptions};
    let options = MqttOptions::new(format!("pub5-{}", free_port()), "127.0.0.1", port);
    let (client, mut connection) = Client::new(options, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
        .unwrap();
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("publish failed: {e}"),
        }
    }
    let _ = client.disconnect();
}

#[test]
fn mqtt_311_and_5_clients_exchange_messages_through_a_rule() {
    let (_topicrule, _dir, port) = start(support::FORWARD_RULE, "clients");
    let v5 = Subscriber::new(port, "out/#");
    let mut v311 = mosquitto("mosquitto_sub", port);
    let v311 = v311
        .args([
            "-q", "1", "-t", "out/#", "-t", "direct/#", "-C", "2", "-W", "10", "-v",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(QUIET);
    let mut pub311 = mosquitto("mosquitto_pub", port);
    pub311.args(["-q", "1", "-t", "in/a", "-m", "from 3.1.1"]);
    run(pub311);
    assert_eq!(
        v5.next(WAIT),
        Some(("out/a".to_owned(), b"from 3.1.1".to_vec()))
    );
    publish5(port, "direct/b", b"from 5");
    let output = v311.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "out/a from 3.1.1\ndirect/b from 5\n"
    );
}

#[test]
fn retained_messages_and_shared_subscriptions() {
    let (_topicrule, _dir, port) = start(support::FORWARD_RULE, "retained");
    let mut retain = mosquitto("mosquitto_pub", port);
    retain.args(["-q", "1", "-r", "-t", "status/pi", "-m", "online"]);
    run(retain);
    let mut late = mosquitto("mosquitto_sub", port);
    late.args(["-t", "status/pi", "-C", "1", "-W", "5"]);
    assert_eq!(String::from_utf8_lossy(&run(late).stdout), "online\n");

    let workers = [
        Subscriber::new(port, "$share/workers/jobs"),
        Subscriber::new(port, "$share/workers/jobs"),
    ];
    let jobs: Vec<String> = (0..20).map(|n| n.to_string()).collect();
    let messages: Vec<(&str, &[u8])> = jobs.iter().map(|j| ("jobs", j.as_bytes())).collect();
    publish(port, &messages);
    let mut got: Vec<String> = workers
        .iter()
        .flat_map(|w| w.drain(QUIET))
        .map(|(_, p)| String::from_utf8(p).unwrap())
        .collect();
    got.sort_by_key(|n| n.parse::<u32>().unwrap());
    assert_eq!(
        got, jobs,
        "each job goes to exactly one worker of the group"
    );
}

/// The seed scenario of tests/router.rs, on the embedded broker.
#[test]
fn last_will_is_republished_to_the_shadow_topic() {
    let (_topicrule, _dir, port) = start(support::LWT_RULE, "lwt");
    support::assert_last_will_reaches_the_shadow(port, &[]);
}

/// A subscriber with a persistent session gets, when it comes back, what the rule
/// republished while it was away, even across a restart of topicrule and its broker.
#[test]
fn offline_persistent_subscriber_gets_its_queued_messages() {
    let (topicrule, dir, port) = start(support::FORWARD_RULE, "offline");
    let keeper = |extra: &[&str]| {
        let mut sub = mosquitto("mosquitto_sub", port);
        sub.args(["-c", "-i", "keeper", "-q", "1", "-t", "out/#", "-v"])
            .args(extra);
        run(sub)
    };
    keeper(&["-E"]);
    let payloads: Vec<String> = (0..5).map(|n| format!("{{\"n\":{n}}}")).collect();
    let messages: Vec<(&str, &[u8])> = payloads.iter().map(|p| ("in/x", p.as_bytes())).collect();
    publish(port, &messages);
    std::thread::sleep(QUIET);
    assert!(topicrule.stop().success());
    let _topicrule = start_in(&dir, port);
    let output = keeper(&["-C", "5", "-W", "10"]);
    // topicrule runs messages concurrently: the order of its republishes is not the input's.
    let mut got: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    got.sort();
    let expected: Vec<String> = payloads.iter().map(|p| format!("out/x {p}")).collect();
    assert_eq!(got, expected);
}

/// The peak resident set of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Publishes `count` QoS 1 messages on one connection; the client's bounded request queue
/// paces the publisher by the PUBACKs (batches of at most `window`).
fn flood(port: u16, topic: &'static str, count: usize, window: usize) {
    use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
    let (client, mut connection) = Client::new(
        MqttOptions::new(format!("flood-{}", free_port()), "127.0.0.1", port),
        window,
    );
    let publisher = std::thread::spawn(move || {
        for n in 0..count {
            let payload = format!("{{\"n\":{n}}}");
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publish failed after {acked} acks: {e}"),
        }
        if acked == count {
            break;
        }
    }
    let _ = publisher.join().unwrap().disconnect();
}

#[test]
fn a_flood_of_qos1_messages_arrives_complete() {
    const COUNT: usize = 100_000;
    let (topicrule, _dir, port) = start(
        r#"
[[rule]]
name = "flood"
sql = "SELECT * FROM 'flood/in'"
[[rule.actions]]
republish = { topic = "flood/out", qos = 1 }
"#,
        "flood",
    );
    std::thread::sleep(Duration::from_secs(1));
    let idle = peak_rss_kib(topicrule.pid());
    let out = Subscriber::new(port, "flood/out");
    let started = Instant::now();
    flood(port, "flood/in", COUNT, 1000);
    let published = started.elapsed();
    let mut seen = HashSet::new();
    while seen.len() < COUNT {
        match out.next(Duration::from_secs(30)) {
            Some((_, payload)) => seen.insert(payload),
            None => panic!("only {} of {COUNT} messages arrived", seen.len()),
        };
    }
    eprintln!(
        "flood: {COUNT} messages published in {published:?}, all republished in {:?}; \
         topicrule peak RSS {idle} KiB idle, {} KiB after the flood",
        started.elapsed(),
        peak_rss_kib(topicrule.pid())
    );
}

#[test]
fn a_second_topicrule_on_the_same_port_fails_at_start() {
    let (_first, dir, port) = start(support::FORWARD_RULE, "in-use");
    let output = support::embedded_command(&dir, port)
        .env(
            "TOPICRULE_BROKER_EMBEDDED_DATA_DIR",
            dir.path().join("broker2"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}"))
            && stderr.contains("already in use")
            && stderr.contains("[broker] url"),
        "unclear error: {stderr}"
    );
}

/// `--broker embedded` wins over a URL from the settings or the environment.
#[test]
fn broker_flag_forces_the_embedded_broker() {
    let dir = TempDir::new("flag");
    dir.write("rules/rules.toml", support::FORWARD_RULE);
    let port = free_port();
    let mut command = support::embedded_command(&dir, port);
    command
        .env("TOPICRULE_BROKER_URL", "mqtt://127.0.0.1:1")
        .args(["--broker", "embedded"]);
    let mut topicrule = Topicrule::spawn(command);
    topicrule.wait_for_log("subscribed");
    let out = Subscriber::new(port, "out/#");
    publish(port, &[("in/flag", b"on")]);
    assert_eq!(
        out.next(WAIT),
        Some(("out/flag".to_owned(), b"on".to_vec()))
    );
    assert!(topicrule.stop().success());
}

/// On the embedded broker, `clientid()` is the publisher's client id, as on AWS: the broker
/// tells it (mosquitto does not, so there it is "n/a").
#[test]
fn clientid_is_the_publishers_on_the_embedded_broker() {
    let rules = r#"
[[rule]]
name = "who"
sql = "SELECT clientid() AS c FROM 'who/+'"
[[rule.actions]]
republish = { topic = "who-out/${topic(2)}", qos = 1 }
"#;
    let (_topicrule, _dir, port) = start(rules, "clientid");
    let out = Subscriber::new(port, "who-out/#");
    let mut pub311 = mosquitto("mosquitto_pub", port);
    pub311.args(["-q", "1", "-i", "sensor-42", "-t", "who/a", "-m", "{}"]);
    run(pub311);
    assert_eq!(
        out.next(WAIT),
        Some(("who-out/a".to_owned(), br#"{"c":"sensor-42"}"#.to_vec()))
    );
}
