//! Test support: a real mosquitto per test, the real topicrule binary, real MQTT clients.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

pub mod certs;
pub mod proxy;
pub mod s3;
pub mod stream;

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh directory under the target directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "topicrule-test-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A mosquitto of the test's own, on a free loopback port, with its own config.
pub struct Mosquitto {
    pub port: u16,
    child: Child,
    pub dir: TempDir,
}

impl Mosquitto {
    pub fn start() -> Mosquitto {
        Mosquitto::start_in(TempDir::new("mosquitto"), free_port())
    }

    /// Starts mosquitto with persistence in `dir` (kept across a restart on the same port).
    pub fn start_in(dir: TempDir, port: u16) -> Mosquitto {
        Mosquitto::launch(dir, port, "", "")
    }

    /// Starts mosquitto with more settings (`prelude`, lines of mosquitto.conf).
    #[allow(dead_code)] // Used by the benchmarks.
    pub fn start_configured(prelude: &str) -> Mosquitto {
        Mosquitto::launch(TempDir::new("mosquitto"), free_port(), prelude, "")
    }

    /// Starts mosquitto with more listeners (TLS, WebSockets, passwords: `listener` blocks
    /// written by the test) after the plain anonymous one that the helpers use. Each
    /// listener keeps its own `allow_anonymous` and `password_file` (`per_listener_settings`).
    /// Only the plain listener is waited for: `wait_for_port` the others.
    pub fn start_with(listeners: &str) -> Mosquitto {
        Mosquitto::launch(
            TempDir::new("mosquitto"),
            free_port(),
            "per_listener_settings true\n",
            listeners,
        )
    }

    fn launch(dir: TempDir, port: u16, prelude: &str, listeners: &str) -> Mosquitto {
        let config = dir.write(
            "mosquitto.conf",
            &format!(
                "{prelude}listener {port} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\n\
                 max_queued_messages 200000\nmax_inflight_messages 100\nlog_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n{listeners}",
                dir.path().display(),
                dir.path().display()
            ),
        );
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto must be installed (see .ci/run)");
        let broker = Mosquitto { port, child, dir };
        wait_for_port(port);
        broker
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGTERM, so that it saves its persistence file) and returns its
    /// directory for a restart.
    pub fn stop(mut self) -> (TempDir, u16) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, TempDir(PathBuf::new()));
        (dir, self.port)
    }
}

impl Mosquitto {
    /// Kills the broker with SIGKILL (a crash: it keeps only what it last saved) and
    /// returns its directory for a restart.
    pub fn crash(mut self) -> (TempDir, u16) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let dir = std::mem::replace(&mut self.dir, TempDir(PathBuf::new()));
        (dir, self.port)
    }

    /// Sends `signal` (`STOP`, `CONT`) to the broker: a frozen broker keeps its
    /// connections open and answers nothing.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// mosquitto lives in /usr/sbin on Debian, which is not on every PATH.
fn mosquitto_binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/mosquitto");
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from("mosquitto")
    }
}

/// Calls `attempt` every 100 ms until it gives a value; after `timeout`, fails with what the
/// last attempt said.
#[allow(dead_code)] // Not every test binary uses it.
pub fn eventually<T>(timeout: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `topicrule run` in `dir` on the rules of `dir/rules`, beside the broker at `url`, its
/// files under `dir/data` and its spool under `dir/spool` (a `topicrule.toml` in `dir` is
/// read).
pub fn run_command(dir: &Path, url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_topicrule"));
    command
        .current_dir(dir)
        .args(["run", "--rules", "rules"])
        .env("TOPICRULE_BROKER_URL", url)
        .env("TOPICRULE_FILE_BASE_DIR", dir.join("data"))
        .env("TOPICRULE_S3_SPOOL_DIR", dir.join("spool"));
    command
}

/// A topicrule hosting its embedded broker on `port`, with its state in `dir`.
pub fn embedded_command(dir: &TempDir, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_topicrule"));
    command
        .args(["run", "--rules"])
        .arg(dir.path().join("rules"))
        .current_dir(dir.path())
        .env_remove("TOPICRULE_BROKER_URL")
        .env(
            "TOPICRULE_BROKER_EMBEDDED_LISTEN",
            format!("127.0.0.1:{port}"),
        )
        .env(
            "TOPICRULE_BROKER_EMBEDDED_DATA_DIR",
            dir.path().join("broker"),
        )
        .env("TOPICRULE_FILE_BASE_DIR", dir.path().join("data"));
    command
}

/// The topicrule binary, running; its stderr is collected.
pub struct Topicrule {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

impl Topicrule {
    /// Starts `topicrule run` against `broker_url` with the rules in `rules`, and waits
    /// until it has subscribed.
    pub fn start(broker_url: &str, rules: &Path, base_dir: &Path, client_id: &str) -> Topicrule {
        let mut command = Command::new(env!("CARGO_BIN_EXE_topicrule"));
        command
            .args(["run", "--rules"])
            .arg(rules)
            .env("TOPICRULE_BROKER_URL", broker_url)
            .env("TOPICRULE_BROKER_CLIENT_ID", client_id)
            .env("TOPICRULE_FILE_BASE_DIR", base_dir);
        let mut topicrule = Topicrule::spawn(command);
        topicrule.wait_for_log("subscribed");
        topicrule
    }

    /// Spawns `command` (a `topicrule run` the caller prepared: settings, environment,
    /// working directory), collecting its stderr (at debug level, unless the command sets
    /// `RUST_LOG`); does not wait for anything.
    pub fn spawn(mut command: Command) -> Topicrule {
        if !command.get_envs().any(|(name, _)| name == "RUST_LOG") {
            command.env("RUST_LOG", "topicrule=debug");
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Topicrule {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The process id, to read its /proc entries.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a log line containing `text`.
    pub fn wait_for_log(&mut self, text: &str) {
        self.wait_for_logs(text, 1);
    }

    /// Waits until `count` log lines contain `text`.
    pub fn wait_for_logs(&mut self, text: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.log.iter().filter(|l| l.contains(text)).count() >= count {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(_) => panic!(
                    "topicrule never logged `{text}`; log:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.log.push(line);
        }
        status
    }

    /// Waits (at most `timeout`) for topicrule to exit on its own; its exit status, with
    /// the whole log collected.
    #[allow(dead_code)] // Not every test binary uses it.
    pub fn wait_for_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                    self.log.push(line);
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            self.log.extend(self.lines.try_iter());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Topicrule {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // `DUMP_TOPICRULE_LOG=<file>`: the whole log, to read after a test (debugging aid).
        if let Some(path) = std::env::var_os("DUMP_TOPICRULE_LOG") {
            self.log.extend(self.lines.try_iter());
            let _ = std::fs::write(path, self.log.join("\n"));
        }
        if std::thread::panicking() {
            self.log.extend(self.lines.try_iter());
            let tail = self.log.len().saturating_sub(60);
            eprintln!(
                "topicrule's log (last lines):\n{}",
                self.log[tail..].join("\n")
            );
        }
    }
}

/// A subscriber on a real MQTT connection that collects what arrives.
pub struct Subscriber {
    messages: mpsc::Receiver<(
        String,
        Vec<u8>,
        Option<rumqttc::v5::mqttbytes::v5::PublishProperties>,
    )>,
}

impl Subscriber {
    /// Subscribes (MQTT 5, QoS 1) and returns once the broker acknowledged the subscription.
    pub fn new(port: u16, filter: &str) -> Subscriber {
        use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
        use rumqttc::v5::{Client as Client5, Event as Event5, MqttOptions as Options5};
        let id = format!("sub-{}", free_port());
        let (client, mut connection) = Client5::new(Options5::new(id, "127.0.0.1", port), 100);
        client
            .subscribe(filter, rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
            .unwrap();
        let (tx, messages) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            let _client = client;
            for event in connection.iter() {
                match event {
                    Ok(Event5::Incoming(Packet5::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event5::Incoming(Packet5::Publish(p))) => {
                        let topic = String::from_utf8_lossy(&p.topic).into_owned();
                        if tx.send((topic, p.payload.to_vec(), p.properties)).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        ready
            .recv_timeout(Duration::from_secs(10))
            .expect("no SUBACK");
        Subscriber { messages }
    }

    /// The next message within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<(String, Vec<u8>)> {
        self.messages
            .recv_timeout(timeout)
            .ok()
            .map(|(t, p, _)| (t, p))
    }

    /// The next message with its MQTT 5 properties.
    pub fn next_with_properties(
        &self,
        timeout: Duration,
    ) -> Option<(
        String,
        Vec<u8>,
        Option<rumqttc::v5::mqttbytes::v5::PublishProperties>,
    )> {
        self.messages.recv_timeout(timeout).ok()
    }

    /// Everything that arrives until nothing has for `quiet`.
    pub fn drain(&self, quiet: Duration) -> Vec<(String, Vec<u8>)> {
        std::iter::from_fn(|| self.next(quiet)).collect()
    }
}

/// Publishes messages at QoS 1 with a real client and waits for every PUBACK.
pub fn publish(port: u16, messages: &[(&str, &[u8])]) {
    let id = format!("pub-{}", free_port());
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_max_packet_size(64 * 1024 * 1024, 64 * 1024 * 1024);
    let (client, mut connection) = Client::new(options, messages.len() + 10);
    for (topic, payload) in messages {
        client
            .publish(*topic, QoS::AtLeastOnce, false, payload.to_vec())
            .unwrap();
    }
    let mut acked = 0;
    for event in connection.iter() {
        match event {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                if acked == messages.len() {
                    break;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("publish failed: {e}"),
        }
    }
    let _ = client.disconnect();
}

/// A rule that forwards every message on `in/<tag>` to `out/<tag>`.
pub const FORWARD_RULE: &str = r#"
[[rule]]
name = "forward"
sql = "SELECT * FROM 'in/+'"
[[rule.actions]]
republish = { topic = "out/${topic(2)}", qos = 1 }
"#;

/// The seed rule: a device's update topic (its Last Will) republished into its shadow.
pub const LWT_RULE: &str = r#"
[[rule]]
name = "rpi_connected"
sql = "SELECT * FROM 'my/things/RPI/update'"
[[rule.actions]]
republish = { topic = "$$aws/things/RPI/shadow/update", qos = 1 }
"#;

/// The seed scenario, from the broker's side: a device ("RPI", connecting with
/// `mosquitto_sub` and `extra_args`) sets a Last Will on `my/things/RPI/update` and dies
/// without a DISCONNECT. Asserts that the shadow topic receives exactly the will document,
/// once, as a rule republishing to `$$aws/things/RPI/shadow/update` must deliver it.
pub fn assert_last_will_reaches_the_shadow(port: u16, extra_args: &[&str]) {
    let shadow = Subscriber::new(port, "$aws/things/RPI/shadow/update");
    let will = r#"{"state":{"reported":{"connected":false}}}"#;
    let mut device = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(extra_args)
        .args(["-i", "RPI", "-t", "my/things/RPI/cmd"])
        .args([
            "--will-topic",
            "my/things/RPI/update",
            "--will-qos",
            "1",
            "--will-payload",
            will,
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    device.kill().unwrap();
    let _ = device.wait();
    let (topic, payload) = shadow
        .next(Duration::from_secs(10))
        .expect("the shadow update never arrived");
    assert_eq!(topic, "$aws/things/RPI/shadow/update");
    assert_eq!(String::from_utf8(payload).unwrap(), will);
    assert!(
        shadow.next(Duration::from_millis(700)).is_none(),
        "the will was republished more than once"
    );
}
