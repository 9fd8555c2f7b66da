//! Test support for the `s3` action: a real S3-compatible server (s3s-fs) per test, and a
//! second S3 client to read back what topicrule wrote.
//!
//! Nothing here reaches for the cloud: every client is given a region, credentials and a
//! loopback endpoint, and topicrule runs with `AWS_EC2_METADATA_DISABLED=true`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::Client;

use super::{free_port, wait_for_port, Mosquitto, TempDir, Topicrule};

/// Starts `topicrule run` on the rules of `dir/rules`, with the server's endpoint and keys
/// and the `extra` environment (which wins), and waits until it has subscribed.
pub fn start_topicrule(
    broker: &Mosquitto,
    store: &S3Server,
    dir: &TempDir,
    id: &str,
    extra: &[(&str, &str)],
) -> Topicrule {
    let mut command = Command::new(env!("CARGO_BIN_EXE_topicrule"));
    command
        .current_dir(dir.path())
        .args(["run", "--rules"])
        .arg(dir.path().join("rules"))
        .env("TOPICRULE_BROKER_URL", broker.url())
        .env("TOPICRULE_BROKER_CLIENT_ID", id)
        .env("TOPICRULE_FILE_BASE_DIR", dir.path().join("data"));
    for (name, value) in store.env() {
        command.env(name, value);
    }
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut topicrule = Topicrule::spawn(command);
    topicrule.wait_for_log("subscribed");
    topicrule
}

/// The keys s3s-fs checks every request's signature against.
pub const ACCESS_KEY: &str = "topicrule-test";
pub const SECRET_KEY: &str = "topicrule-test-secret";
pub const REGION: &str = "us-east-1";

/// s3s-fs on a free loopback port, serving a directory of its own; signatures checked.
pub struct S3Server {
    pub port: u16,
    child: Option<Child>,
    pub dir: TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = TempDir::new("s3");
        std::fs::create_dir_all(dir.path().join("root")).unwrap();
        let mut server = S3Server {
            port: free_port(),
            child: None,
            dir,
        };
        server.start_again();
        server
    }

    /// Starts the server (again) on the same port and directory.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "s3s-fs is already running");
        let log = std::fs::File::create(self.dir.path().join("s3s-fs.log")).unwrap();
        let child = Command::new(s3s_fs_binary())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.dir.path().join("root"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("s3s-fs must be installed (see .ci/run)");
        self.child = Some(child);
        wait_for_port(self.port);
    }

    /// Stops the server, as an outage of the store.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What topicrule needs to reach this server with the right keys.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("TOPICRULE_S3_ENDPOINT", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ]
    }

    /// A second client, to create buckets and read back objects.
    pub fn reader(&self) -> S3Reader {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        S3Reader {
            runtime: tokio::runtime::Runtime::new().unwrap(),
            client: Client::from_conf(config),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// s3s-fs from PATH, or where `cargo install` puts it.
fn s3s_fs_binary() -> PathBuf {
    let installed = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin/s3s-fs"));
    let on_path = Command::new("s3s-fs")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    match installed {
        Some(path) if !on_path && path.exists() => path,
        _ => PathBuf::from("s3s-fs"),
    }
}

/// A plain S3 client with a runtime of its own, for synchronous tests.
pub struct S3Reader {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl S3Reader {
    pub fn create_bucket(&self, bucket: &str) {
        self.runtime
            .block_on(self.client.create_bucket().bucket(bucket).send())
            .unwrap();
    }

    /// Every key of the bucket, sorted.
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .runtime
                .block_on(
                    self.client
                        .list_objects_v2()
                        .bucket(bucket)
                        .set_continuation_token(token)
                        .send(),
                )
                .unwrap();
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                keys.sort();
                return keys;
            }
        }
    }

    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.runtime.block_on(async {
            let object = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap();
            object.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    /// The keys of the bucket once there are at least `count`, or when `timeout` ran out.
    pub fn wait_for_keys(&self, bucket: &str, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let keys = self.keys(bucket);
            if keys.len() >= count || Instant::now() > deadline {
                return keys;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
