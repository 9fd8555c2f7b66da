//! Running it for real, against a real mosquitto: hot reload (rules added, broken and
//! removed while topicrule runs, by editing the rule folder and by SIGHUP), JSON logs,
//! metrics and health scraped over HTTP, status lines.

mod support;

use std::process::Command;
use std::time::Duration;

use support::s3::S3Server;
use support::stream::{Collector, Publisher, Tally};
use support::{eventually, publish, Mosquitto, Subscriber, TempDir, Topicrule};

const WAIT: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(700);

fn rule(name: &str) -> String {
    format!(
        "[[rule]]\nname = \"{name}\"\nsql = \"SELECT * FROM 'in/{name}'\"\n[[rule.actions]]\nrepublish = {{ topic = \"out/{name}\" }}\n"
    )
}

/// Publishes on `in/<name>` and returns what came out on `out/#`.
fn forwarded(broker: &Mosquitto, out: &Subscriber, name: &str) -> Option<String> {
    publish(broker.port, &[(&format!("in/{name}"), b"{\"n\":1}")]);
    out.next(QUIET).map(|(topic, _)| topic)
}

#[test]
fn rules_reload_when_their_files_change_and_on_sighup() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("reload");
    dir.write("rules/a.toml", &rule("a"));
    let mut topicrule = Topicrule::start(
        &broker.url(),
        &dir.path().join("rules"),
        &dir.path().join("data"),
        "reload",
    );
    let out = Subscriber::new(broker.port, "out/#");
    assert_eq!(forwarded(&broker, &out, "a").as_deref(), Some("out/a"));
    assert_eq!(forwarded(&broker, &out, "b"), None);

    // A new file: its rule runs, its filters (`in/b`, Basic Ingest's `$aws/rules/b`) are
    // subscribed.
    dir.write("rules/b.toml", &rule("b"));
    topicrule
        .wait_for_log("rules reloaded: 2 rule(s) (were 1); 2 filter(s) subscribed, 0 unsubscribed");
    let deadline = std::time::Instant::now() + WAIT;
    while forwarded(&broker, &out, "b").as_deref() != Some("out/b") {
        assert!(std::time::Instant::now() < deadline, "rule b never ran");
    }

    // A broken file: every error with its place, and the rules loaded before stay.
    dir.write(
        "rules/c.toml",
        "[[rule]]\nname = \"c\"\nsql = \"SELECT uper(x) FROM 'in/c'\"\n[[rule.actions]]\nrepublish = { topic = \"out/c\" }\n",
    );
    topicrule.wait_for_log("error(s) in the rule files: the rules loaded before stay");
    let log = topicrule.log.join("\n");
    assert!(
        log.contains("unknown function `uper`") && log.contains("c.toml:3:15"),
        "{log}"
    );
    out.drain(QUIET);
    assert_eq!(forwarded(&broker, &out, "a").as_deref(), Some("out/a"));
    assert_eq!(forwarded(&broker, &out, "b").as_deref(), Some("out/b"));

    // SIGHUP reloads (and no longer ends topicrule): b is gone, its filter unsubscribed.
    std::fs::remove_file(dir.path().join("rules/c.toml")).unwrap();
    std::fs::remove_file(dir.path().join("rules/b.toml")).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &topicrule.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    topicrule.wait_for_log("SIGHUP: reloading the rules");
    topicrule
        .wait_for_log("rules reloaded: 1 rule(s) (were 2); 0 filter(s) subscribed, 2 unsubscribed");
    out.drain(QUIET);
    assert_eq!(forwarded(&broker, &out, "b"), None);
    assert_eq!(forwarded(&broker, &out, "a").as_deref(), Some("out/a"));
    assert!(topicrule.stop().success());
}

/// Rule files added, changed, broken and deleted while 10,000 QoS 1 messages flow: each
/// change takes effect, the broken set is refused and the running one kept, and no message
/// is lost: every one comes out of the rule as it stood when it arrived.
#[test]
fn reloads_under_a_stream_lose_nothing() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("reload-stream");
    let forward = |to: &str| {
        format!(
            "[[rule]]\nname = \"forward\"\nsql = \"SELECT * FROM 'in/+'\"\n[[rule.actions]]\nrepublish = {{ topic = \"{to}/${{topic(2)}}\", qos = 1 }}\n"
        )
    };
    dir.write("rules/forward.toml", &forward("out"));
    let mut topicrule = Topicrule::start(
        &broker.url(),
        &dir.path().join("rules"),
        &dir.path().join("data"),
        "reload-stream",
    );
    let out = Collector::start(broker.port, "out/#");
    let changed = Collector::start(broker.port, "changed/#");
    let count = 10_000;
    let publisher = Publisher::start(broker.port, count, 100, 2_000);

    publisher.wait_for_acked(count / 5, WAIT);
    dir.write("rules/copy.toml", &rule("copy"));
    topicrule.wait_for_log("rules reloaded: 2 rule(s) (were 1)");
    publisher.wait_for_acked(2 * count / 5, WAIT);
    dir.write(
        "rules/broken.toml",
        "[[rule]]\nname = \"broken\"\nsql = \"SELECT FROM\"\n",
    );
    topicrule.wait_for_log("error(s) in the rule files: the rules loaded before stay");
    publisher.wait_for_acked(3 * count / 5, WAIT);
    std::fs::remove_file(dir.path().join("rules/broken.toml")).unwrap();
    dir.write("rules/forward.toml", &forward("changed"));
    topicrule.wait_for_log("rules reloaded: 2 rule(s) (were 2)");
    publisher.wait_for_acked(4 * count / 5, WAIT);
    std::fs::remove_file(dir.path().join("rules/copy.toml")).unwrap();
    topicrule.wait_for_log("rules reloaded: 1 rule(s) (were 2)");
    publisher.finish();

    let tally = eventually(Duration::from_secs(60), || {
        let seqs: Vec<usize> = out.seqs().into_iter().chain(changed.seqs()).collect();
        let tally = Tally::of(&seqs, count);
        match tally.lost {
            0 => Ok(tally),
            _ => Err(format!("lost across reloads: {tally:?}")),
        }
    });
    println!("after 4 reloads: {tally:?}");
    assert!(!out.seqs().is_empty(), "nothing came out before the change");
    // The stream may have ended before the change was applied (a loaded machine): a message
    // sent after it must come out of the changed rule.
    let after = support::stream::payload(count);
    publish(broker.port, &[("in/0", after.as_bytes())]);
    eventually(Duration::from_secs(10), || {
        if changed.seqs().contains(&count) {
            Ok(())
        } else {
            Err("a message after the change did not come out of the changed rule".to_owned())
        }
    });
    assert!(topicrule.stop().success());
}

#[test]
fn json_logs_are_one_object_a_line() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("jsonlogs");
    dir.write("rules/a.toml", &rule("a"));
    let mut command = support::run_command(dir.path(), &broker.url());
    command.env("TOPICRULE_LOG_FORMAT", "json");
    let mut topicrule = Topicrule::spawn(command);
    topicrule.wait_for_log("subscribed to 2 filter(s)");
    assert!(topicrule_log_is_json(&topicrule.log), "{:?}", topicrule.log);
    assert!(topicrule.stop().success());
}

#[test]
fn a_password_appears_in_no_log_line() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("secret");
    dir.write("rules/a.toml", &rule("a"));
    dir.write(
        "topicrule.toml",
        "[broker]\nusername = \"device\"\npassword = \"hunter2-secret\"\n",
    );
    let mut command = support::run_command(dir.path(), &broker.url());
    command.env("RUST_LOG", "trace");
    let mut topicrule = Topicrule::spawn(command);
    topicrule.wait_for_log("subscribed to 2 filter(s)");
    let out = Subscriber::new(broker.port, "out/#");
    assert_eq!(forwarded(&broker, &out, "a").as_deref(), Some("out/a"));
    topicrule.wait_for_log("message on `in/a`");
    let log = topicrule.log.join("\n");
    assert!(log.contains("TRACE"), "not every level was logged:\n{log}");
    assert!(!log.contains("hunter2"), "the password was logged:\n{log}");
    assert!(topicrule.stop().success());
}

/// Every line an object with a level, a target and a message.
fn topicrule_log_is_json(log: &[String]) -> bool {
    !log.is_empty()
        && log.iter().all(|line| {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
                return false;
            };
            ["level", "target", "message", "timestamp"]
                .iter()
                .all(|k| value.get(k).is_some())
        })
}

const METRIC_RULES: &str = r#"
[[rule]]
name = "ok"
sql = "SELECT * FROM 'in/ok' WHERE n > 0"
[[rule.actions]]
republish = { topic = "out/ok" }
[[rule.actions]]
s3 = { bucket = "archive", key = "ok/${newuuid()}", batch = { max_records = 5, max_age = 3600 } }

[[rule]]
name = "files"
sql = "SELECT * FROM 'in/files'"
[[rule.actions]]
file = { path = "${place}/log.jsonl" }
"#;

/// An HTTP GET with a real client: the status and the body.
fn get(port: u16, path: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://127.0.0.1:{port}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let body = response.body_mut().read_to_string().unwrap();
    (response.status().as_u16(), body)
}

/// The value of one series (name and labels, as written) in a scrape; None when absent.
fn series(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}

/// Polls `path` until its status is `want`.
fn wait_for_status(port: u16, path: &str, want: u16) -> String {
    eventually(Duration::from_secs(20), || match get(port, path) {
        (status, body) if status == want => Ok(body),
        (status, body) => Err(format!("{path} stayed {status} ({body:?}), not {want}")),
    })
}

#[test]
fn metrics_count_a_known_traffic_and_health_follows_the_broker() {
    let broker = Mosquitto::start();
    let mut store = S3Server::start();
    let reader = store.reader();
    reader.create_bucket("archive");
    let dir = TempDir::new("metrics");
    dir.write("rules/rules.toml", METRIC_RULES);
    let http = support::free_port();
    let mut command = support::run_command(dir.path(), &broker.url());
    command
        .envs(store.env())
        .env("TOPICRULE_METRICS_LISTEN", format!("127.0.0.1:{http}"))
        .env("TOPICRULE_METRICS_STATUS_INTERVAL", "1");
    let mut topicrule = Topicrule::spawn(command);
    topicrule.wait_for_log("subscribed to");
    assert_eq!(get(http, "/readyz").0, 200);
    assert_eq!(get(http, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(http, "/nothing").0, 404);

    // 20 messages fire `ok` (4 S3 batches), 3 match it and do not fire; of 10 for `files`,
    // 4 expand to a path out of the base directory: their action fails, the others are
    // written.
    let mut messages: Vec<(&str, &[u8])> = Vec::new();
    messages.extend([("in/ok", &b"{\"n\":1}"[..]); 20]);
    messages.extend([("in/ok", &b"{\"n\":0}"[..]); 3]);
    messages.extend([("in/files", &b"{\"place\":\"..\"}"[..]); 4]);
    messages.extend([("in/files", &b"{\"place\":\"here\"}"[..]); 6]);
    publish(broker.port, &messages);

    let scrape = eventually(WAIT, || {
        let (status, scrape) = get(http, "/metrics");
        assert_eq!(status, 200);
        match series(&scrape, "topicrule_messages_acknowledged_total") {
            Some(33.0) => Ok(scrape),
            _ => Err(format!("not all acknowledged:\n{scrape}")),
        }
    });
    let want = [
        ("topicrule_messages_received_total", 33.0),
        ("topicrule_messages_pending", 0.0),
        ("topicrule_rules", 2.0),
        ("topicrule_broker_connected", 1.0),
        ("topicrule_rule_matched_total{rule=\"ok\"}", 23.0),
        ("topicrule_rule_fired_total{rule=\"ok\"}", 20.0),
        ("topicrule_rule_errors_total{rule=\"ok\"}", 0.0),
        (
            "topicrule_action_succeeded_total{rule=\"ok\",action=\"RepublishAction\"}",
            20.0,
        ),
        (
            "topicrule_action_failed_total{rule=\"ok\",action=\"RepublishAction\"}",
            0.0,
        ),
        ("topicrule_rule_matched_total{rule=\"files\"}", 10.0),
        ("topicrule_rule_fired_total{rule=\"files\"}", 10.0),
        ("topicrule_rule_errors_total{rule=\"files\"}", 4.0),
        (
            "topicrule_action_succeeded_total{rule=\"files\",action=\"FileAction\"}",
            6.0,
        ),
        (
            "topicrule_action_failed_total{rule=\"files\",action=\"FileAction\"}",
            4.0,
        ),
        (
            "topicrule_action_duration_seconds_count{action=\"FileAction\"}",
            6.0,
        ),
    ];
    for (name, value) in want {
        assert_eq!(series(&scrape, name), Some(value), "{name} in\n{scrape}");
    }
    // The example dashboard reads only metrics that exist.
    let dashboard = include_str!("../examples/grafana/topicrule-dashboard.json");
    let words = dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
    for name in words.filter(|w| w.starts_with("topicrule_")) {
        assert!(
            scrape.contains(name),
            "the dashboard reads {name}:\n{scrape}"
        );
    }
    let lines = std::fs::read_to_string(dir.path().join("data/here/log.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 6);
    topicrule.wait_for_log("status: ");
    assert!(
        topicrule
            .log
            .iter()
            .any(|l| l.contains("status: ") && l.contains(" acknowledged")),
        "{:?}",
        topicrule.log
    );

    // The spool: the 4 batches stored, none waiting; while the store is down, a batch
    // waits with its 5 lines' bytes.
    reader.wait_for_keys("archive", 4, WAIT);
    let spool = "topicrule_s3_spool_batches{spool=\"ok-1\"}";
    let waiting = |want: f64| {
        eventually(WAIT, || {
            let scrape = get(http, "/metrics").1;
            match series(&scrape, spool) {
                Some(got) if got == want => Ok(scrape),
                _ => Err(format!("{spool} not {want}:\n{scrape}")),
            }
        })
    };
    waiting(0.0);
    store.stop();
    publish(broker.port, &[("in/ok", &b"{\"n\":1}"[..]); 5]);
    let scrape = waiting(1.0);
    let bytes = series(&scrape, "topicrule_s3_spool_bytes{spool=\"ok-1\"}");
    assert_eq!(bytes, Some(5.0 * b"{\"n\":1}\n".len() as f64), "{scrape}");
    store.start_again();
    waiting(0.0);

    // The broker stops: unhealthy, with the reason; back: healthy again.
    let (broker_dir, port) = broker.stop();
    let why = wait_for_status(http, "/healthz", 503);
    assert!(why.contains("not connected"), "{why}");
    let _broker = Mosquitto::start_in(broker_dir, port);
    wait_for_status(http, "/healthz", 200);
    let (_, scrape) = get(http, "/metrics");
    assert!(series(&scrape, "topicrule_broker_reconnects_total").unwrap() >= 1.0);
    assert!(topicrule.stop().success());
}
