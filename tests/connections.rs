//! Broker connection settings against a real mosquitto configured by each test: TLS and
//! mutual TLS, WebSockets (ws, wss), MQTT 3.1.1, shared subscriptions, passwords.
//!
//! Every broker keeps the plain anonymous listener the helpers (`publish`, `Subscriber`)
//! use; topicrule connects through the listener under test.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::certs::Pki;
use support::{free_port, publish, wait_for_port, Mosquitto, Subscriber, TempDir, Topicrule};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(700);

/// Spawns `topicrule run` on `url` with `rules`, its own data directory, the `env`
/// overrides and, when given, a settings file; it does not wait for the connection.
fn spawn(
    url: &str,
    rules: &str,
    name: &str,
    env: &[(&str, &str)],
    settings: Option<&str>,
) -> (Topicrule, TempDir) {
    let dir = TempDir::new(name);
    dir.write("rules/rules.toml", rules);
    let mut command = Command::new(env!("CARGO_BIN_EXE_topicrule"));
    command
        .args(["run", "--rules"])
        .arg(dir.path().join("rules"));
    if let Some(text) = settings {
        command
            .arg("--config")
            .arg(dir.write("topicrule.toml", text));
    }
    command
        .env("TOPICRULE_BROKER_URL", url)
        .env("TOPICRULE_BROKER_CLIENT_ID", name)
        .env("TOPICRULE_FILE_BASE_DIR", dir.path().join("data"))
        .envs(env.iter().copied());
    (Topicrule::spawn(command), dir)
}

/// Spawns topicrule and waits until it has subscribed.
fn start(url: &str, rules: &str, name: &str, env: &[(&str, &str)]) -> (Topicrule, TempDir) {
    let (mut topicrule, dir) = spawn(url, rules, name, env, None);
    topicrule.wait_for_log("subscribed");
    (topicrule, dir)
}

/// A message on `in/<tag>` comes back on `out/<tag>` through `support::FORWARD_RULE`.
fn assert_echoes(broker: &Mosquitto, tag: &str) {
    let out = Subscriber::new(broker.port, "out/#");
    let payload = format!(r#"{{"via":"{tag}"}}"#);
    publish(broker.port, &[(&format!("in/{tag}"), payload.as_bytes())]);
    let (topic, got) = out.next(WAIT).expect("nothing was republished");
    assert_eq!(topic, format!("out/{tag}"));
    assert_eq!(String::from_utf8(got).unwrap(), payload);
}

/// A TLS listener of `pki`'s server certificate; `extra` adds its own settings.
fn tls_listener(port: u16, pki: &Pki, extra: &str) -> String {
    format!(
        "listener {port} 127.0.0.1\nallow_anonymous true\ncafile {}\ncertfile {}\nkeyfile {}\n{extra}",
        pki.ca.display(),
        pki.server_cert.display(),
        pki.server_key.display()
    )
}

#[test]
fn mqtts_verifies_the_broker_with_the_ca_file() {
    let pki_dir = TempDir::new("pki");
    let pki = Pki::create(pki_dir.path());
    let port = free_port();
    let broker = Mosquitto::start_with(&tls_listener(port, &pki, ""));
    wait_for_port(port);
    let settings = format!("[broker]\nca_file = {:?}\n", pki.ca.display().to_string());
    let url = format!("mqtts://127.0.0.1:{port}");
    let (mut topicrule, _dir) = spawn(&url, support::FORWARD_RULE, "tls", &[], Some(&settings));
    topicrule.wait_for_log("subscribed");
    assert_echoes(&broker, "tls");

    // Without the CA, the system's CAs do not trust the broker: a mistake in the settings,
    // said at once with status 2, not retried.
    let (mut untrusted, _d) = spawn(&url, support::FORWARD_RULE, "tls-no-ca", &[], None);
    let status = untrusted.wait_for_exit(WAIT);
    let log = untrusted.log.join("\n");
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(
        log.contains("TLS handshake with 127.0.0.1") && log.contains("check [broker] ca_file"),
        "{log}"
    );
}

/// A host name that does not resolve is a mistake in the URL: status 2 within seconds,
/// with the reason.
#[test]
fn an_unknown_broker_host_stops_topicrule() {
    let url = "mqtt://no-such-broker.invalid:1883";
    let (mut topicrule, _dir) = spawn(url, support::FORWARD_RULE, "unknown-host", &[], None);
    let status = topicrule.wait_for_exit(WAIT);
    let log = topicrule.log.join("\n");
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{log}");
    assert!(
        log.contains("cannot resolve `no-such-broker.invalid`")
            && log.contains("check [broker] url"),
        "{log}"
    );
}

/// `require_certificate true`: without a client certificate the broker refuses topicrule;
/// with `cert_file` and `key_file` (set through the environment) it routes.
#[test]
fn mutual_tls_presents_the_client_certificate() {
    let pki_dir = TempDir::new("pki");
    let pki = Pki::create(pki_dir.path());
    let port = free_port();
    let broker = Mosquitto::start_with(&tls_listener(port, &pki, "require_certificate true\n"));
    wait_for_port(port);
    let url = format!("mqtts://127.0.0.1:{port}");
    let ca = pki.ca.display().to_string();
    let (mut refused, _d) = spawn(
        &url,
        support::FORWARD_RULE,
        "mtls-none",
        &[("TOPICRULE_BROKER_CA_FILE", &ca)],
        None,
    );
    refused.wait_for_log("cannot connect to the broker");
    assert!(!refused.log.iter().any(|l| l.contains("subscribed")));
    refused.kill();

    let cert = pki.client_cert.display().to_string();
    let key = pki.client_key.display().to_string();
    let env = [
        ("TOPICRULE_BROKER_CA_FILE", ca.as_str()),
        ("TOPICRULE_BROKER_CERT_FILE", cert.as_str()),
        ("TOPICRULE_BROKER_KEY_FILE", key.as_str()),
    ];
    let (_topicrule, _dir) = start(&url, support::FORWARD_RULE, "mtls", &env);
    assert_echoes(&broker, "mtls");
}

/// A WebSockets listener; `socket_domain ipv4` keeps mosquitto 2.0's libwebsockets on the
/// loopback address (it would listen on every interface otherwise).
fn websockets_listener(port: u16, extra: &str) -> String {
    format!("listener {port} 127.0.0.1\nsocket_domain ipv4\nprotocol websockets\nallow_anonymous true\n{extra}")
}

#[test]
fn ws_url_connects_over_websockets() {
    let port = free_port();
    let broker = Mosquitto::start_with(&websockets_listener(port, ""));
    wait_for_port(port);
    let url = format!("ws://127.0.0.1:{port}/mqtt");
    let (_topicrule, _dir) = start(&url, support::FORWARD_RULE, "ws", &[]);
    assert_echoes(&broker, "ws");
}

#[test]
fn wss_url_connects_over_websockets_with_tls() {
    let pki_dir = TempDir::new("pki");
    let pki = Pki::create(pki_dir.path());
    let port = free_port();
    let tls = format!(
        "certfile {}\nkeyfile {}\n",
        pki.server_cert.display(),
        pki.server_key.display()
    );
    let broker = Mosquitto::start_with(&websockets_listener(port, &tls));
    wait_for_port(port);
    let url = format!("wss://127.0.0.1:{port}/mqtt");
    let ca = pki.ca.display().to_string();
    let (_topicrule, _dir) = start(
        &url,
        support::FORWARD_RULE,
        "wss",
        &[("TOPICRULE_BROKER_CA_FILE", &ca)],
    );
    assert_echoes(&broker, "wss");
}

/// The seed scenario over MQTT 3.1.1; a rule with MQTT 5 headers still republishes, without
/// them, and topicrule warns about it at start.
#[test]
fn mqtt_3_1_1_carries_the_last_will_to_the_shadow() {
    let broker = Mosquitto::start();
    let tagged = r#"
[[rule]]
name = "tagged"
sql = "SELECT * FROM 'tag/in'"
[[rule.actions]]
republish = { topic = "tag/out", qos = 1, headers = { user_properties = [{ key = "k", value = "v" }] } }
"#;
    let rules = format!("{}{tagged}", support::LWT_RULE);
    let env = [("TOPICRULE_BROKER_PROTOCOL", "3.1.1")];
    let (topicrule, _dir) = start(&broker.url(), &rules, "v311", &env);
    assert!(topicrule
        .log
        .iter()
        .any(|l| l.contains("rule `tagged`: republish headers are MQTT 5 only")));
    support::assert_last_will_reaches_the_shadow(broker.port, &["-V", "mqttv311"]);

    let tagged = Subscriber::new(broker.port, "tag/out");
    publish(broker.port, &[("tag/in", br#"{"t":1}"#)]);
    let (_, payload, properties) = tagged.next_with_properties(WAIT).expect("not republished");
    assert_eq!(payload, br#"{"t":1}"#);
    assert!(properties.is_none_or(|p| p.user_properties.is_empty()));
}

/// Two instances in one shared group split 200 messages: each is processed exactly once in
/// all, and both instances get some. Basic Ingest topics are not shared (mosquitto 2.0
/// delivers no `$` topic to a shared subscription): each instance processes all 20.
#[test]
fn shared_group_splits_the_stream_between_instances() {
    let broker = Mosquitto::start();
    let rules = r#"
[[rule]]
name = "jobs"
sql = "SELECT n FROM 'jobs/+'"
[[rule.actions]]
file = { path = "jobs.jsonl" }

[[rule]]
name = "ingest"
sql = "SELECT n"
[[rule.actions]]
file = { path = "ingest.jsonl" }
"#;
    let env = [("TOPICRULE_BROKER_SHARED_GROUP", "workers")];
    let (mut a, dir_a) = spawn(&broker.url(), rules, "shared-a", &env, None);
    let (mut b, dir_b) = spawn(&broker.url(), rules, "shared-b", &env, None);
    a.wait_for_log("subscribed");
    b.wait_for_log("subscribed");

    let jobs: Vec<(String, String)> = (0..200)
        .map(|n| (format!("jobs/{}", n % 7), format!(r#"{{"n":{n}}}"#)))
        .chain((1000..1020).map(|n| ("$aws/rules/ingest/x".to_owned(), format!(r#"{{"n":{n}}}"#))))
        .collect();
    let refs: Vec<(&str, &[u8])> = jobs
        .iter()
        .map(|(t, p)| (t.as_str(), p.as_bytes()))
        .collect();
    publish(broker.port, &refs);

    let lines = |dir: &TempDir, file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(dir.path().join("data").join(file)).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    };
    let count = |file: &str| lines(&dir_a, file).len() + lines(&dir_b, file).len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (count("jobs.jsonl") < 200 || count("ingest.jsonl") < 40) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(QUIET);
    let mut jobs = [lines(&dir_a, "jobs.jsonl"), lines(&dir_b, "jobs.jsonl")].concat();
    assert_eq!(jobs.len(), 200, "each message once in all");
    jobs.sort();
    jobs.dedup();
    assert_eq!(jobs.len(), 200, "a message was processed twice");
    for (name, dir) in [("a", &dir_a), ("b", &dir_b)] {
        assert!(
            !lines(dir, "jobs.jsonl").is_empty(),
            "instance {name} got no message"
        );
        assert_eq!(
            lines(dir, "ingest.jsonl").len(),
            20,
            "instance {name}: Basic Ingest"
        );
    }
}

/// `allow_anonymous false` with a mosquitto password file: a wrong password is refused at
/// once (topicrule exits with status 2 and says why, rather than retrying forever), the
/// right one (from `password_file`) connects.
#[test]
fn username_and_password_file_authenticate() {
    let secrets = TempDir::new("secrets");
    let passwd = secrets.path().join("passwd");
    let status = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(&passwd)
        .args(["topicrule", "s3cret"])
        .status()
        .expect("mosquitto_passwd must be installed (mosquitto)");
    assert!(status.success());
    let port = free_port();
    let listener = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
        passwd.display()
    );
    let broker = Mosquitto::start_with(&listener);
    wait_for_port(port);
    let url = format!("mqtt://127.0.0.1:{port}");
    let wrong = [
        ("TOPICRULE_BROKER_USERNAME", "topicrule"),
        ("TOPICRULE_BROKER_PASSWORD", "wrong"),
    ];
    let (mut refused, _d) = spawn(&url, support::FORWARD_RULE, "auth-wrong", &wrong, None);
    refused.wait_for_log("refused topicrule's connection as `auth-wrong`");
    assert!(!refused.log.iter().any(|l| l.contains("subscribed")));
    assert!(
        refused
            .log
            .iter()
            .any(|l| l.contains("check [broker] username")),
        "{:?}",
        refused.log
    );
    assert_eq!(refused.stop().code(), Some(2));

    let file = secrets.write("mqtt-password", "s3cret\n");
    let file = file.display().to_string();
    let right = [
        ("TOPICRULE_BROKER_USERNAME", "topicrule"),
        ("TOPICRULE_BROKER_PASSWORD_FILE", file.as_str()),
    ];
    let (_topicrule, _dir) = start(&url, support::FORWARD_RULE, "auth", &right);
    assert_echoes(&broker, "auth");
}
