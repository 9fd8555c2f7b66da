//! The examples' READMEs, run as written: each `sh` block of the README, with only the
//! broker's port made free (1883 may be taken on the machine that runs the tests) and
//! `cargo run --release --` standing for the binary under test, in a copy of the example
//! folder; what it prints must hold what the README says it prints. `archive-to-minio`
//! needs MinIO and its client, which CI does not install: its rule is checked by `check`.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{free_port, TempDir};

/// The `sh` blocks of `readme`, with the port and the binary replaced.
fn script(readme: &str, port: u16) -> String {
    let mut blocks = String::new();
    let mut inside = false;
    for line in readme.lines() {
        match (inside, line.trim_start().starts_with("```")) {
            (false, true) if line.trim() == "```sh" => inside = true,
            (true, true) => inside = false,
            (true, false) => {
                blocks.push_str(line);
                blocks.push('\n');
            }
            _ => {}
        }
    }
    let binary = env!("CARGO_BIN_EXE_topicrule");
    blocks
        .replace("cargo run --release --", binary)
        // A daemon would outlive the test: the broker runs as a job of the script instead.
        .replace("mosquitto -p 1883 -d;", "/usr/sbin/mosquitto -p 1883 &")
        .replace("mosquitto_pub ", "mosquitto_pub -p 1883 ")
        .replace("mosquitto_sub ", "mosquitto_sub -p 1883 ")
        .replace("1883", &port.to_string())
}

/// Runs `example`'s README in a copy of the example under `examples/`, then stops what it
/// left running; what it printed.
fn run(example: &str, extra_env: &[(&str, String)]) -> String {
    let dir = TempDir::new(example);
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(example);
    let copy = dir.path().join("examples").join(example);
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let port = free_port();
    let readme = std::fs::read_to_string(source.join("README.md")).unwrap();
    // The script's jobs are killed at its end: `wait` would never return for a broker.
    let script = format!(
        "set -m\n{}\nsleep 1\nkill $(jobs -p) 2>/dev/null\nwait 2>/dev/null\nexit 0\n",
        script(&readme, port)
    );
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(dir.path())
        .env(
            "TOPICRULE_BROKER_EMBEDDED_LISTEN",
            format!("127.0.0.1:{port}"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in extra_env {
        command.env(name, value);
    }
    let child = command.spawn().unwrap();
    let output = wait_with_timeout(child, Duration::from_secs(60));
    String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr)
}

fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn lwt_to_shadow_runs_as_written() {
    let out = run("lwt-to-shadow", &[]);
    assert!(
        out.contains(r#"$aws/things/RPI/shadow/update {"state":{"reported":{"connected":false}}}"#),
        "{out}"
    );
}

#[test]
fn archive_to_files_runs_as_written() {
    let out = run("archive-to-files", &[]);
    assert!(
        out.contains(r#"{"temp":21.5,"device":"dev1","received_at":"#),
        "{out}"
    );
}

#[test]
fn home_shadow_runs_as_written() {
    let out = run("home-shadow", &[]);
    assert!(
        out.contains(r#"{"state":{"power":"on"}"#),
        "the device heard no delta:\n{out}"
    );
    assert!(
        out.contains(r#"$aws/things/RPI/shadow/get/accepted {"state":{"desired":{"power":"on"},"reported":{"connected":false,"power":"off"},"delta":{"power":"on"}}"#),
        "{out}"
    );
    assert!(out.contains(r#""version":3"#), "{out}");
}
