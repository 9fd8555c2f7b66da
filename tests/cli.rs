//! The command line as users run it: the real binary, exit codes, stdout and stderr.

use std::process::{Command, Output};

fn topicrule(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_topicrule"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const SQL: &str = "SELECT device, temp * 1.8 + 32 AS f FROM 'sensors/+/telemetry' WHERE temp > 30";

#[test]
fn eval_prints_the_output_and_exits_0() {
    let out = topicrule(&[
        "eval",
        SQL,
        "--topic",
        "sensors/a/telemetry",
        "--payload",
        r#"{"device":"a","temp":31.5}"#,
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "{\"device\":\"a\",\"f\":88.70}\n");
}

#[test]
fn eval_exits_1_when_the_rule_does_not_fire() {
    for (topic, payload) in [
        ("sensors/a/telemetry", r#"{"temp":20}"#),
        ("other/a/telemetry", r#"{"temp":40}"#),
    ] {
        let out = topicrule(&["eval", SQL, "--topic", topic, "--payload", payload]);
        assert_eq!(out.status.code(), Some(1), "{topic} {payload}");
        assert_eq!(stdout(&out), "");
    }
}

#[test]
fn eval_expands_a_template_and_keeps_binary_payloads() {
    let out = topicrule(&[
        "eval",
        "SELECT * FROM 'my/things/+/update'",
        "--topic",
        "my/things/RPI/update",
        "--payload",
        "{}",
        "--template",
        "$$aws/things/${topic(3)}/shadow/update",
    ]);
    assert_eq!(stdout(&out), "$aws/things/RPI/shadow/update\n");
    let out = topicrule(&[
        "eval",
        "SELECT * FROM 'b'",
        "--topic",
        "b",
        "--payload-file",
        "tests/check/binary.bin",
    ]);
    assert_eq!(out.stdout, b"\x00\xff\x01binary\n");
}

#[test]
fn eval_diagnostics() {
    let out = topicrule(&[
        "eval",
        "SELECT uper(c), topic(1, 2) FROM 'a/#/b' WHERE",
        "--topic",
        "a",
        "--payload",
        "{}",
    ]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!("eval_parse_error", stderr(&out));
    let out = topicrule(&[
        "eval",
        "SELECT uper(c), topic(1, 2), aws_lambda('f', *) FROM 'a/#/b'",
        "--topic",
        "a",
        "--payload",
        "{}",
    ]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!("eval_compile_errors", stderr(&out));
    let out = topicrule(&[
        "eval",
        "SELECT * FROM 'a'",
        "--topic",
        "a",
        "--payload",
        "{}",
        "--template",
        "$aws/${nope(}",
    ]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!("eval_template_errors", stderr(&out));
}

#[test]
fn check_reports_every_error_with_its_place() {
    let out = topicrule(&["check", "tests/check"]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!("check_broken_folder", stderr(&out));
}

#[test]
fn check_accepts_the_default_rules_and_examples() {
    let out = topicrule(&[
        "check",
        "rules",
        "examples/lwt-to-shadow",
        "examples/archive-to-files",
        "examples/archive-to-minio",
        "examples/home-shadow",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

#[test]
fn check_warns_of_s3_keys_that_repeat() {
    let dir = std::env::temp_dir().join(format!("topicrule-cli-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("keys.toml");
    std::fs::write(
        &file,
        r#"[[rule]]
name = "location"
sql = "SELECT * FROM 'iphone/+'"
[[rule.actions]]
s3 = { bucket = "b", key = "iphone6-location-${timestamp()}" }
[[rule.actions]]
s3 = { bucket = "b", key = "location/${topic(2)}/${newuuid()}.json" }
[[rule.actions]]
s3 = { bucket = "b", key = "seq/${seq}.json" }
[[rule.actions]]
s3 = { bucket = "b", key = "batch/${topic(2)}", batch = { max_records = 10 } }
"#,
    )
    .unwrap();
    let out = topicrule(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
    assert!(
        err.contains("warning: this key can be the same for two messages: the later object overwrites the earlier one")
            && err.contains("keys.toml:5:28")
            && err.contains("add `${newuuid()}` to the key, or use batch mode"),
        "{err}"
    );
    assert_eq!(stdout(&out), "1 rule(s) valid\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn test_prints_what_each_action_would_do() {
    let out = topicrule(&[
        "test",
        "rules",
        "--topic",
        "my/things/RPI/update",
        "--payload",
        r#"{"state":{"reported":{"connected":false}}}"#,
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "{\"rule\":\"rpi_connected\",\"actions\":[{\"action\":\"republish\",\"topic\":\"$aws/things/RPI/shadow/update\",\"qos\":1,\"payload\":\"{\\\"state\\\":{\\\"reported\\\":{\\\"connected\\\":false}}}\"}]}\n"
    );
    let out = topicrule(&[
        "test",
        "rules",
        "--topic",
        "nobody/listens",
        "--payload",
        "{}",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// A long allowlist (`id = 1 OR id = 2 OR ...`) is a flat chain, not a deep tree: it is
/// accepted, and decides like the same operators taken two at a time.
#[test]
fn long_or_chains_are_flat() {
    let terms: Vec<String> = (0..5000).map(|n| format!("id = {n}")).collect();
    let sql = format!("SELECT id FROM 't' WHERE {}", terms.join(" OR "));
    let out = topicrule(&["eval", &sql, "--topic", "t", "--payload", r#"{"id":4999}"#]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "{\"id\":4999}\n");
    let out = topicrule(&["eval", &sql, "--topic", "t", "--payload", r#"{"id":5000}"#]);
    assert_eq!(out.status.code(), Some(1));
    // Undefined in a chain: `x OR true` is true, `x OR false` is Undefined (no match).
    let out = topicrule(&[
        "eval",
        "SELECT 1 AS r FROM 't' WHERE missing OR false OR true",
        "--topic",
        "t",
        "--payload",
        "{}",
    ]);
    assert_eq!(stdout(&out), "{\"r\":1}\n");
    let out = topicrule(&[
        "eval",
        "SELECT 1 AS r FROM 't' WHERE missing OR false OR false",
        "--topic",
        "t",
        "--payload",
        "{}",
    ]);
    assert_eq!(out.status.code(), Some(1));
}

/// `topicrule test` without a message runs the `[[test]]` tables of the rule files.
#[test]
fn rule_file_tests_run_and_report_failures() {
    let out = topicrule(&["test", "rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).ends_with("4 of 4 rule test(s) passed\n"),
        "{}",
        stdout(&out)
    );

    let dir = std::env::temp_dir().join(format!("topicrule-cli-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("r.toml");
    std::fs::write(
        &file,
        r#"
[[rule]]
name = "hot"
sql = "SELECT temp FROM 'dev/+' WHERE temp > 30"

[[test]]
topic = "dev/a"
payload = '{"temp": 31}'
expect = '{"temp": 31.0}'

[[test]]
topic = "dev/a"
payload = '{"temp": 20}'
expect_none = true
"#,
    )
    .unwrap();
    let out = topicrule(&["test", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let report = stdout(&out);
    assert!(
        report.contains("FAIL ") && report.contains(r#"expected {"temp":31.0}"#),
        "{report}"
    );
    assert!(report.contains("     got {\"temp\":31}"), "{report}");
    assert!(report.ends_with("1 of 2 rule test(s) passed\n"), "{report}");

    std::fs::write(&file, "[[rule]]\nname = \"a\"\nsql = \"SELECT * FROM 'a'\"\n\n[[test]]\nrule = \"b\"\ntopic = \"a\"\npayload = \"{}\"\nexpect_none = true\n").unwrap();
    let out = topicrule(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no rule named `b`") && stderr(&out).contains("r.toml:6:8"),
        "{}",
        stderr(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_and_test_read_the_settings() {
    let dir = std::env::temp_dir().join(format!("topicrule-cli-settings-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("myrules")).unwrap();
    std::fs::write(
        dir.join("myrules/r.toml"),
        "[[rule]]\nname = \"r\"\nsql = \"SELECT * FROM 'a'\"\n\n[[test]]\ntopic = \"a\"\npayload = '{\"x\":1}'\nexpect = '{\"x\":1}'\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("topicrule.toml"),
        "[rules]\npaths = [\"myrules\"]\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_topicrule"))
            .args(args)
            .current_dir(&dir)
            .env_remove("TOPICRULE_RULES_PATHS")
            .output()
            .unwrap()
    };
    let out = run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1 rule(s) valid\n");
    let out = run(&["test"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("1 of 1 rule test(s) passed\n"),
        "{}",
        stdout(&out)
    );

    std::fs::create_dir_all(dir.join("empty")).unwrap();
    let out = run(&["check", "empty"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no enabled rule in empty"),
        "{}",
        stderr(&out)
    );

    // Every error of the settings, once each, with its place.
    std::fs::write(
        dir.join("other.toml"),
        "[rules]\npathz = [\"myrules\"]\n[router]\nmax_in_flightt = 3\nshutdown_grace = \"10\"\n",
    )
    .unwrap();
    let out = run(&["check", "--config", "other.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: 3 error(s) in the settings `other.toml`"),
        "{err}"
    );
    for (what, place) in [
        ("unknown field `pathz`", "other.toml:2:1"),
        ("unknown field `max_in_flightt`", "other.toml:4:1"),
        ("invalid type: string \"10\"", "other.toml:5:18"),
    ] {
        assert_eq!(err.matches(what).count(), 1, "{what} once:\n{err}");
        assert!(err.contains(place), "{place}:\n{err}");
    }
    let out = run(&["check", "--config", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: cannot read `missing.toml`: No such file or directory (os error 2)\n"
    );

    // A bad key does not hide the errors of the file's other rules.
    std::fs::write(
        dir.join("myrules/r.toml"),
        "[[rule]]\nname = \"a\"\nsql = \"SELECT * FROM 'a'\"\nbogus = 1\n\n[[rule]]\nname = \"b\"\nsql = \"SELECT uper(x) FROM 'b'\"\n",
    )
    .unwrap();
    let out = run(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let bogus = err.find("unknown field `bogus`").expect(&err);
    let uper = err.find("unknown function `uper`").expect(&err);
    assert!(bogus < uper, "in the order of the file:\n{err}");
    assert!(
        err.contains("r.toml:4:1") && err.contains("r.toml:8:15"),
        "{err}"
    );
    assert!(err.ends_with("2 error(s) in the rule files\n"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An AWS rule JSON field of the wrong type is an error with its place, not a default:
/// `"qos": "1"` would otherwise publish at QoS 0.
#[test]
fn aws_json_fields_of_the_wrong_type_are_errors() {
    let dir = std::env::temp_dir().join(format!("topicrule-cli-json-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("rule.json");
    std::fs::write(
        &file,
        "{\n  \"ruleName\": \"typed\",\n  \"topicRulePayload\": {\n    \"sql\": \"SELECT * FROM 'a/b'\",\n    \"actions\": [\n      { \"republish\": { \"topic\": \"out\", \"qos\": \"1\" } }\n    ]\n  }\n}\n",
    )
    .unwrap();
    let out = topicrule(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("`qos` must be an integer, not a string") && err.contains("rule.json:6:40"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reader that goes away (`topicrule test ... | head -1`) ends topicrule quietly, with
/// status 0, as other command-line tools.
#[test]
fn a_closed_stdout_is_a_normal_end() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_topicrule"))
        .args([
            "test",
            "rules",
            "--topic",
            "sensors/d1/telemetry",
            "--payload",
            "{\"temp\":99}",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}
