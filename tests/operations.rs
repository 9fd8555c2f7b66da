//! Running it for real, against a real mosquitto: hot reload (rules added, broken and
//! removed while topicrule runs, by editing the rule folder and by SIGHUP) and JSON logs.

mod support;

use std::process::Command;
use std::time::Duration;

use support::{publish, Mosquitto, Subscriber, TempDir, Topicrule};

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
