//! The Device Shadow service over MQTT, against a real mosquitto with real clients: AWS's
//! CLI session replayed as MQTT requests, a rule reading a shadow with `get_thing_shadow()`,
//! persistence across a restart, named shadows, and a device's Last Will reaching its
//! shadow through a rule.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{eventually, publish, Mosquitto, Subscriber, TempDir, Topicrule};

const QUIET: Duration = Duration::from_millis(700);

/// `examples/home-shadow`'s rule: every device's updates into its shadow.
const HOME_RULES: &str = include_str!("../examples/home-shadow/rules.toml");

fn start(broker: &Mosquitto, dir: &TempDir) -> Topicrule {
    let mut command = support::run_command(dir.path(), &broker.url());
    command
        .env("TOPICRULE_SHADOW_ENABLED", "true")
        .env("TOPICRULE_SHADOW_DIR", dir.path().join("shadows"))
        .env("TOPICRULE_BROKER_CLIENT_ID", "shadow-test");
    let mut topicrule = Topicrule::spawn(command);
    topicrule.wait_for_log("subscribed to");
    topicrule
}

/// topicrule with its embedded broker on a free port, the shadow service on, and `rules`.
fn start_embedded(name: &str, rules: &str) -> (Topicrule, TempDir, u16) {
    let dir = TempDir::new(name);
    dir.write("rules/rules.toml", rules);
    let port = support::free_port();
    let mut command = support::embedded_command(&dir, port);
    command
        .env("TOPICRULE_SHADOW_ENABLED", "true")
        .env("TOPICRULE_SHADOW_DIR", dir.path().join("shadows"));
    let mut topicrule = Topicrule::spawn(command);
    topicrule.wait_for_log("subscribed to");
    (topicrule, dir, port)
}

/// Publishes a request on `topic` and returns its answers: each topic's suffix
/// (`accepted`, `rejected`, `delta`, `documents`) and document.
fn request(port: u16, answers: &Subscriber, topic: &str, body: Value) -> Vec<(String, Value)> {
    publish(port, &[(topic, body.to_string().as_bytes())]);
    let first = answers.next(Duration::from_secs(10)).expect("no answer");
    std::iter::once(first)
        .chain(std::iter::from_fn(|| answers.next(QUIET)))
        .filter_map(|(t, payload)| {
            let suffix = t.strip_prefix(topic)?.strip_prefix('/')?.to_owned();
            Some((suffix, serde_json::from_slice(&payload).unwrap()))
        })
        .collect()
}

/// The one answer with `suffix`.
fn answer<'a>(answers: &'a [(String, Value)], suffix: &str) -> &'a Value {
    let found: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| s == suffix)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(found.len(), 1, "one `{suffix}` in {answers:?}");
    found[0]
}

fn suffixes(answers: &[(String, Value)]) -> Vec<&str> {
    answers.iter().map(|(s, _)| s.as_str()).collect()
}

/// AWS's CLI shadow session, as MQTT requests on the thing `lamp`: reported off, desired on
/// (a delta), reported on (the delta cleared), a stale version (409), get.
fn cli_session(port: u16, answers: &Subscriber) {
    let update = "$aws/things/lamp/shadow/update";

    let got = request(
        port,
        answers,
        update,
        json!({"state": {"reported": {"power": "off"}}}),
    );
    assert_eq!(suffixes(&got), ["accepted", "documents"]);
    assert_eq!(answer(&got, "accepted")["version"], 1);
    assert_eq!(
        answer(&got, "accepted")["state"],
        json!({"reported": {"power": "off"}})
    );

    let got = request(
        port,
        answers,
        update,
        json!({"state": {"desired": {"power": "on"}}, "clientToken": "t-2"}),
    );
    assert_eq!(suffixes(&got), ["accepted", "delta", "documents"]);
    let delta = answer(&got, "delta");
    assert_eq!(delta["state"], json!({"power": "on"}));
    assert_eq!(delta["version"], 2);
    assert_eq!(delta["clientToken"], "t-2");

    let got = request(
        port,
        answers,
        update,
        json!({"state": {"reported": {"power": "on"}}}),
    );
    assert_eq!(
        suffixes(&got),
        ["accepted", "documents"],
        "the delta is cleared"
    );

    let got = request(
        port,
        answers,
        update,
        json!({"state": {"desired": {"power": "off"}}, "version": 1}),
    );
    let rejected = answer(&got, "rejected");
    assert_eq!(
        (&rejected["code"], &rejected["message"]),
        (&json!(409), &json!("Version conflict"))
    );

    let get = "$aws/things/lamp/shadow/get";
    let got = request(port, answers, get, json!({}));
    let doc = answer(&got, "accepted");
    assert_eq!(
        doc["state"],
        json!({"desired": {"power": "on"}, "reported": {"power": "on"}})
    );
    assert_eq!(doc["version"], 3);
    assert!(
        doc["metadata"]["reported"]["power"]["timestamp"].is_i64(),
        "{doc}"
    );
}

#[test]
fn the_aws_cli_session_over_mqtt() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("shadow");
    // A rule written for AWS that reads a shadow: the role is accepted and not used.
    dir.write(
        "rules/ask.toml",
        r#"[[rule]]
name = "ask"
sql = "SELECT get_thing_shadow(topic(2), 'arn:aws:iam::123456789012:role/shadow').state.reported.power AS power FROM 'ask/+' WHERE get_thing_shadow(topic(2), 'arn:aws:iam::123456789012:role/shadow').state.desired.power = 'on'"
[[rule.actions]]
republish = { topic = "told/${topic(2)}" }
"#,
    );
    let topicrule = start(&broker, &dir);
    let answers = Subscriber::new(broker.port, "$aws/things/lamp/shadow/#");
    cli_session(broker.port, &answers);
    let get = "$aws/things/lamp/shadow/get";

    // Rules read it.
    let told = Subscriber::new(broker.port, "told/#");
    publish(broker.port, &[("ask/lamp", b"{}")]);
    let (_, said) = told
        .next(Duration::from_secs(10))
        .expect("the rule did not fire");
    assert_eq!(
        serde_json::from_slice::<Value>(&said).unwrap(),
        json!({"power": "on"})
    );
    publish(broker.port, &[("ask/nobody", b"{}")]);
    assert!(
        told.next(QUIET).is_none(),
        "no shadow: the WHERE is not true"
    );

    // The shadow outlives topicrule.
    assert!(topicrule.stop().success());
    let _topicrule = start(&broker, &dir);
    answers.drain(QUIET);
    let got = request(broker.port, &answers, get, json!({}));
    assert_eq!(answer(&got, "accepted")["version"], 3);

    // A burst of 1,000 updates on one shadow: each one applied, in order.
    let bodies: Vec<String> = (0..1000)
        .map(|n| json!({"state": {"reported": {"n": n}}}).to_string())
        .collect();
    let burst: Vec<(&str, &[u8])> = bodies
        .iter()
        .map(|b| ("$aws/things/counter/shadow/update", b.as_bytes()))
        .collect();
    publish(broker.port, &burst);
    let counter = Subscriber::new(broker.port, "$aws/things/counter/shadow/get/#");
    let doc = eventually(Duration::from_secs(30), || {
        let got = request(
            broker.port,
            &counter,
            "$aws/things/counter/shadow/get",
            json!({}),
        );
        let doc = answer(&got, "accepted").clone();
        match doc["version"] == 1000 {
            true => Ok(doc),
            false => Err(format!("the burst stopped at {doc}")),
        }
    });
    assert_eq!(
        doc["state"]["reported"],
        json!({"n": 999}),
        "the last state wins"
    );

    let got = request(
        broker.port,
        &answers,
        "$aws/things/lamp/shadow/delete",
        json!({}),
    );
    assert_eq!(answer(&got, "accepted")["version"], 3);
    let got = request(broker.port, &answers, get, json!({}));
    let rejected = answer(&got, "rejected");
    assert_eq!(rejected["code"], 404);
    assert_eq!(rejected["message"], "No shadow exists with name: 'lamp'");

    // A named shadow is a shadow of its own.
    let named = "$aws/things/lamp/shadow/name/schedule/update";
    let got = request(
        broker.port,
        &answers,
        named,
        json!({"state": {"desired": {"at": "07:00"}}}),
    );
    assert_eq!(answer(&got, "accepted")["version"], 1);
    assert!(dir.path().join("shadows/lamp/name-schedule.json").is_file());
}

/// The seed scenario, whole: a device's Last Will, republished by a rule into its shadow
/// topic, becomes the shadow's reported state.
#[test]
fn a_last_will_becomes_the_reported_state() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("shadow-lwt");
    dir.write("rules/lwt.toml", support::LWT_RULE);
    let _topicrule = start(&broker, &dir);
    let answers = Subscriber::new(broker.port, "$aws/things/RPI/shadow/#");
    support::assert_last_will_reaches_the_shadow(broker.port, &[]);
    answers.drain(QUIET);
    let got = request(
        broker.port,
        &answers,
        "$aws/things/RPI/shadow/get",
        json!({}),
    );
    let doc = answer(&got, "accepted");
    assert_eq!(doc["version"], 1, "one update: the will");
    assert_eq!(
        doc["state"]["reported"],
        json!({"connected": false}),
        "{doc}"
    );
}

/// The home network, all in one process: the embedded broker, a rule putting a device's
/// updates into its shadow, an app setting the desired state and the device told the delta.
#[test]
fn shadows_on_the_embedded_broker() {
    let (_topicrule, _dir, port) = start_embedded("shadow-embedded", HOME_RULES);
    let answers = Subscriber::new(port, "$aws/things/RPI/shadow/get/#");
    let device = Subscriber::new(port, "$aws/things/RPI/shadow/update/delta");

    publish(
        port,
        &[(
            "my/things/RPI/update",
            br#"{"state":{"reported":{"power":"off"}}}"#,
        )],
    );
    std::thread::sleep(QUIET);
    publish(
        port,
        &[(
            "$aws/things/RPI/shadow/update",
            br#"{"state":{"desired":{"power":"on"}}}"#,
        )],
    );
    let (_, delta) = device
        .next(Duration::from_secs(10))
        .expect("the device heard no delta");
    let delta: Value = serde_json::from_slice(&delta).unwrap();
    assert_eq!(delta["state"], json!({"power": "on"}));

    let got = request(port, &answers, "$aws/things/RPI/shadow/get", json!({}));
    let doc = answer(&got, "accepted");
    assert_eq!(
        doc["state"],
        json!({"desired": {"power": "on"}, "reported": {"power": "off"}, "delta": {"power": "on"}})
    );
    assert_eq!(doc["version"], 2);
}

/// AWS's lifecycle events on the embedded broker: a device connects and dies; its events
/// arrive as AWS publishes them, and a rule keeps `connected` in its shadow, no Last Will
/// needed.
#[test]
fn presence_events_keep_a_shadow_connected() {
    let (_topicrule, _dir, port) = start_embedded(
        "shadow-presence",
        r#"[[rule]]
name = "presence"
sql = "SELECT VALUE {'state': {'reported': {'connected': eventType = 'connected'}}} FROM '$aws/events/presence/+/+'"
[[rule.actions]]
republish = { topic = "$$aws/things/${topic(5)}/shadow/update", qos = 1 }
"#,
    );
    let events = Subscriber::new(port, "$aws/events/presence/+/dev1");
    let answers = Subscriber::new(port, "$aws/things/dev1/shadow/get/#");

    let mut device = std::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-i",
            "dev1",
            "-t",
            "dev1/cmd",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (topic, connected) = events
        .next(Duration::from_secs(10))
        .expect("no connected event");
    assert_eq!(topic, "$aws/events/presence/connected/dev1");
    let connected: Value = serde_json::from_slice(&connected).unwrap();
    device.kill().unwrap();
    let _ = device.wait();
    let (topic, gone) = events
        .next(Duration::from_secs(10))
        .expect("no disconnected event");
    assert_eq!(topic, "$aws/events/presence/disconnected/dev1");
    let gone: Value = serde_json::from_slice(&gone).unwrap();
    assert_eq!(
        (&connected["clientId"], &connected["eventType"]),
        (&json!("dev1"), &json!("connected"))
    );
    assert_eq!(gone["eventType"], "disconnected");
    assert_eq!(gone["disconnectReason"], "CONNECTION_LOST");
    assert_eq!(gone["clientInitiatedDisconnect"], false);
    assert_eq!(gone["sessionIdentifier"], connected["sessionIdentifier"]);
    assert!(gone["timestamp"].as_i64() >= connected["timestamp"].as_i64());

    std::thread::sleep(QUIET);
    let got = request(port, &answers, "$aws/things/dev1/shadow/get", json!({}));
    let doc = answer(&got, "accepted");
    assert_eq!(
        doc["state"]["reported"],
        json!({"connected": false}),
        "{doc}"
    );
    assert_eq!(doc["version"], 2, "connected, then disconnected: {doc}");
}

/// AWS's CLI session on the embedded broker, through to delete and 404.
#[test]
fn the_aws_cli_session_on_the_embedded_broker() {
    let (_topicrule, _dir, port) = start_embedded("shadow-cli-embedded", HOME_RULES);
    let answers = Subscriber::new(port, "$aws/things/lamp/shadow/#");
    cli_session(port, &answers);
    let got = request(port, &answers, "$aws/things/lamp/shadow/delete", json!({}));
    assert_eq!(answer(&got, "accepted")["version"], 3);
    let got = request(port, &answers, "$aws/things/lamp/shadow/get", json!({}));
    assert_eq!(answer(&got, "rejected")["code"], 404);
}
