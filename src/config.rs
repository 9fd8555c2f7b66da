//! The engine's own settings: `topicrule.toml`, overridden by `TOPICRULE_*` variables.

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU64};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// All settings; every key is optional.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub broker: Broker,
    pub rules: Rules,
    pub file: FileSettings,
    pub router: RouterSettings,
    pub s3: S3Settings,
    pub metrics: MetricsSettings,
    pub shadow: ShadowSettings,
}

/// `[shadow]`: the Device Shadow service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowSettings {
    /// Serve AWS IoT's Device Shadow MQTT API (`$aws/things/<thing>/shadow/...`).
    pub enabled: bool,
    /// Where each shadow is kept, a file a shadow.
    pub dir: PathBuf,
}

impl Default for ShadowSettings {
    fn default() -> ShadowSettings {
        ShadowSettings {
            enabled: false,
            dir: PathBuf::from("data/shadows"),
        }
    }
}

/// `[metrics]`: what an operator watches.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Where to serve `/metrics` (Prometheus), `/healthz` and `/readyz` over HTTP, such as
    /// `127.0.0.1:9464`; unset (the default), nothing is served.
    pub listen: Option<SocketAddr>,
    /// Seconds between status lines in the log (messages, rate, acks, failures), written
    /// when messages arrived; 0: none.
    pub status_interval: u64,
}

impl Default for MetricsSettings {
    fn default() -> MetricsSettings {
        MetricsSettings {
            listen: None,
            status_interval: 60,
        }
    }
}

impl MetricsSettings {
    pub fn status_interval(&self) -> Option<std::time::Duration> {
        (self.status_interval > 0).then(|| std::time::Duration::from_secs(self.status_interval))
    }
}

/// The broker topicrule sits beside.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Broker {
    /// `mqtt://host:port`; `mqtts://host:port` (TLS, port 8883 by default);
    /// `ws://host:port/path` or `wss://host:port/path` (MQTT over WebSockets).
    /// Empty (the default) or `embedded`: topicrule hosts the embedded broker of
    /// `[broker.embedded]` and connects to it. `TOPICRULE_BROKER_URL` overrides it.
    pub url: String,
    /// The client id of the subscribing session; the publishing one adds `-pub`. It must be
    /// stable across restarts: the persistent session, and the messages the broker keeps
    /// for it while topicrule is down, are attached to it.
    pub client_id: String,
    /// MQTT user name, sent with `password` (or the first line of `password_file`).
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the password (its first line), so that it stays out of the settings.
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) the broker's certificate must chain to (`mqtts://`, `wss://`);
    /// unset, the system's CA certificates are used.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) for mutual TLS, as AWS IoT and brokers with
    /// `require_certificate` ask; goes with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The MQTT version spoken: "5" (the default) or "3.1.1", for brokers without MQTT 5.
    pub protocol: Protocol,
    /// Subscribe through `$share/<group>/...`: instances (each with its own `client_id`) in
    /// one group split the messages between them, each message going to one of them.
    pub shared_group: Option<String>,
    /// Seconds between keep-alive pings.
    pub keep_alive: u64,
    /// How long the broker keeps topicrule's session (and its queued messages) while
    /// topicrule is disconnected, in seconds.
    pub session_expiry: u32,
    /// The broker topicrule hosts itself when `url` is unset.
    pub embedded: EmbeddedSettings,
}

impl Default for Broker {
    fn default() -> Broker {
        Broker {
            url: String::new(),
            client_id: "topicrule".into(),
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            protocol: Protocol::V5,
            shared_group: None,
            keep_alive: 30,
            session_expiry: 7 * 24 * 3600,
            embedded: EmbeddedSettings::default(),
        }
    }
}

impl Broker {
    /// The URL of the external broker to connect to; None when topicrule hosts its own.
    pub fn external_url(&self) -> Option<&str> {
        let url = self.url.trim();
        (!url.is_empty() && url != EMBEDDED).then_some(url)
    }
}

/// The value of `[broker] url` (or `--broker`) that asks for the embedded broker.
pub const EMBEDDED: &str = "embedded";

/// `[broker.embedded]`: the broker topicrule hosts when no `[broker] url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedSettings {
    /// Loopback by default: a broker open to the network is a choice made in the settings.
    pub listen: SocketAddr,
    /// Where the broker persists sessions and their queued messages, so that a subscriber
    /// (topicrule's own session included) gets what arrived while it was away.
    pub data_dir: PathBuf,
    /// The largest MQTT packet accepted and announced to clients, in bytes.
    pub max_packet_size: u32,
    /// Messages queued for one session (offline, or behind under a flood) before the oldest
    /// are dropped; high, so that a flood is absorbed rather than lost.
    pub max_queued_messages: usize,
}

impl Default for EmbeddedSettings {
    fn default() -> EmbeddedSettings {
        EmbeddedSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            data_dir: PathBuf::from("data/broker"),
            max_packet_size: 268_435_455,
            max_queued_messages: 1_000_000,
        }
    }
}

/// The MQTT version of both connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    /// MQTT 5: receive maximum, session expiry and republish headers.
    #[serde(rename = "5")]
    V5,
    /// MQTT 3.1.1: a persistent session (clean session off); MQTT 5 headers are dropped.
    #[serde(rename = "3.1.1")]
    V311,
}

/// An MQTT version topicrule does not speak.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an MQTT version topicrule speaks: \"5\" or \"3.1.1\"")]
pub struct UnknownProtocol(String);

impl std::str::FromStr for Protocol {
    type Err = UnknownProtocol;

    fn from_str(s: &str) -> Result<Protocol, UnknownProtocol> {
        match s {
            "5" | "5.0" => Ok(Protocol::V5),
            "3.1.1" => Ok(Protocol::V311),
            _ => Err(UnknownProtocol(s.to_owned())),
        }
    }
}

/// Where the rules are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    pub paths: Vec<PathBuf>,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            paths: vec![PathBuf::from("rules")],
        }
    }
}

/// The `file` action.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileSettings {
    /// The directory every `file` action path is relative to, and confined to.
    pub base_dir: PathBuf,
}

impl Default for FileSettings {
    fn default() -> FileSettings {
        FileSettings {
            base_dir: PathBuf::from("data"),
        }
    }
}

/// Limits of the router.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterSettings {
    /// Messages being processed at once; also the MQTT 5 receive maximum announced to the
    /// broker, so that it never sends more unacknowledged messages than this. At least 1.
    pub max_in_flight: NonZeroU16,
    /// Attempts of an action that fails on its sink before the error action runs.
    pub action_attempts: u32,
    /// Seconds to finish in-flight messages after SIGINT/SIGTERM.
    pub shutdown_grace: u64,
    /// Seconds a republish waits for the broker's PUBACK before the attempt fails (and is
    /// retried under the retry policy): no wait on the broker is unbounded.
    pub publish_timeout: NonZeroU64,
    /// Seconds without progress, while messages are in flight, after which the watchdog
    /// logs what is stuck and reconnects to the broker.
    pub stall_timeout: NonZeroU64,
}

impl Default for RouterSettings {
    fn default() -> RouterSettings {
        RouterSettings {
            max_in_flight: NonZeroU16::new(256).expect("not zero"),
            action_attempts: 3,
            shutdown_grace: 10,
            publish_timeout: NonZeroU64::new(30).expect("not zero"),
            stall_timeout: NonZeroU64::new(60).expect("not zero"),
        }
    }
}

/// The `s3` action's store: AWS S3, or an S3-compatible one (MinIO, Ceph, Garage).
/// An action's `endpoint` and `region` override these.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// The store's URL, such as `http://127.0.0.1:9000`; unset: AWS S3 in `region`.
    pub endpoint: Option<String>,
    /// The region requests are signed for; unset: the AWS chain's (`AWS_REGION`, the
    /// profile), else `us-east-1`.
    pub region: Option<String>,
    /// `endpoint/bucket/key` addressing instead of `bucket.endpoint/key`; unset: path style
    /// exactly when an endpoint is set, since self-hosted stores rarely have a DNS name per
    /// bucket.
    pub force_path_style: Option<bool>,
    /// An AWS credentials file (`[default]`, `aws_access_key_id`, `aws_secret_access_key`)
    /// that replaces the standard AWS chain (environment, profile, web identity), so that
    /// the keys of a local store stay out of the environment.
    pub credentials_file: Option<PathBuf>,
    /// The profile of the credentials file or of the AWS chain; unset: `AWS_PROFILE`, else
    /// `default`.
    pub profile: Option<String>,
    /// Seconds one attempt may take (connecting included) before it is abandoned and
    /// retried: a hung store never hangs a message.
    pub attempt_timeout: u64,
    /// Seconds a whole put may take, its attempts and pauses included.
    pub operation_timeout: u64,
    /// Attempts of one put (with exponential backoff, at most 5 s apart) within an
    /// attempt of the action; `[router] action_attempts` repeats the whole.
    pub attempts: u32,
    /// Where batch-mode actions build their batches (a folder per instance and action); a
    /// message is acknowledged once it is there, synced, and batches left by a crash are
    /// uploaded at start.
    pub spool_dir: PathBuf,
    /// This instance's name in batch object keys and spool folders, so that instances of
    /// one shared group never write the same object; unset: `[broker] client_id` (which
    /// each instance has its own of). Characters other than letters, digits, `-`, `_` and
    /// `.` become `_`.
    pub instance_id: Option<String>,
}

impl Default for S3Settings {
    fn default() -> S3Settings {
        S3Settings {
            endpoint: None,
            region: None,
            force_path_style: None,
            credentials_file: None,
            profile: None,
            attempt_timeout: 10,
            operation_timeout: 60,
            attempts: 5,
            spool_dir: PathBuf::from("spool"),
            instance_id: None,
        }
    }
}

impl S3Settings {
    /// Applies the `TOPICRULE_S3_*` variables.
    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), SettingsError> {
        let var = |name: &str| get(name).map(|v| (name.to_owned(), v));
        if let Some((_, v)) = var("TOPICRULE_S3_ENDPOINT") {
            self.endpoint = Some(v).filter(|v| !v.is_empty());
        }
        if let Some((_, v)) = var("TOPICRULE_S3_REGION") {
            self.region = Some(v).filter(|v| !v.is_empty());
        }
        if let Some((n, v)) = var("TOPICRULE_S3_FORCE_PATH_STYLE") {
            self.force_path_style = Some(env_value(&n, &v, "true or false")?);
        }
        if let Some((_, v)) = var("TOPICRULE_S3_CREDENTIALS_FILE") {
            self.credentials_file = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty());
        }
        if let Some((_, v)) = var("TOPICRULE_S3_PROFILE") {
            self.profile = Some(v).filter(|v| !v.is_empty());
        }
        if let Some((n, v)) = var("TOPICRULE_S3_ATTEMPT_TIMEOUT") {
            self.attempt_timeout = env_value(&n, &v, "a number")?;
        }
        if let Some((n, v)) = var("TOPICRULE_S3_OPERATION_TIMEOUT") {
            self.operation_timeout = env_value(&n, &v, "a number")?;
        }
        if let Some((n, v)) = var("TOPICRULE_S3_ATTEMPTS") {
            self.attempts = env_value(&n, &v, "a number")?;
        }
        if let Some((_, v)) = var("TOPICRULE_S3_SPOOL_DIR") {
            self.spool_dir = PathBuf::from(v);
        }
        if let Some((_, v)) = var("TOPICRULE_S3_INSTANCE_ID") {
            self.instance_id = Some(v).filter(|v| !v.is_empty());
        }
        Ok(())
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    // `error` is no `source`: the message holds it already, and printing the chain would
    // say it twice.
    #[error("cannot read `{path}`: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Every error of the file, rendered with its place.
    #[error("{count} error(s) in the settings `{path}`:\n{rendered}", path = path.display())]
    Parse {
        path: PathBuf,
        count: usize,
        rendered: String,
    },
    #[error("invalid value of `{name}`: {message}")]
    Env { name: String, message: String },
}

/// The value of the environment variable `name`, or an error saying what it should be.
fn env_value<T: std::str::FromStr>(
    name: &str,
    text: &str,
    expected: &str,
) -> Result<T, SettingsError> {
    text.parse().map_err(|_| SettingsError::Env {
        name: name.into(),
        message: format!("`{text}` is not {expected}"),
    })
}

impl SettingsError {
    fn parse(path: &Path, text: &str, errors: &[crate::toml_read::TomlError]) -> SettingsError {
        let origin = path.display().to_string();
        let rendered = errors.iter().map(|e| {
            crate::diagnostic::Diagnostic {
                origin: &origin,
                source: text,
                span: crate::sql::ast::Span::new(e.span.start, e.span.end),
                message: &e.message,
                hint: None,
                warning: false,
            }
            .render()
        });
        SettingsError::Parse {
            path: path.to_owned(),
            count: errors.len(),
            rendered: rendered.collect::<String>().trim_end().to_owned(),
        }
    }
}

impl Settings {
    /// Reads `path` (when given, or `topicrule.toml` when it exists), then applies the
    /// `TOPICRULE_*` environment variables.
    pub fn load(path: Option<&Path>) -> Result<Settings, SettingsError> {
        let default_path = Path::new("topicrule.toml");
        let path = path.or_else(|| default_path.exists().then_some(default_path));
        let mut settings = match path {
            None => Settings::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| SettingsError::Read {
                    path: path.to_owned(),
                    error,
                })?;
                crate::toml_read::from_str(&text)
                    .map_err(|(errors, _)| SettingsError::parse(path, &text, &errors))?
            }
        };
        settings.apply_env(|name| std::env::var(name).ok())?;
        Ok(settings)
    }

    /// Applies overrides from the environment (`get` looks a variable up).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), SettingsError> {
        if let Some(url) = get("TOPICRULE_BROKER_URL") {
            self.broker.url = url;
        }
        if let Some(id) = get("TOPICRULE_BROKER_CLIENT_ID") {
            self.broker.client_id = id;
        }
        if let Some(user) = get("TOPICRULE_BROKER_USERNAME") {
            self.broker.username = Some(user);
        }
        if let Some(password) = get("TOPICRULE_BROKER_PASSWORD") {
            self.broker.password = Some(password);
        }
        if let Some(k) = get("TOPICRULE_BROKER_KEEP_ALIVE") {
            self.broker.keep_alive = env_value("TOPICRULE_BROKER_KEEP_ALIVE", &k, "a number")?;
        }
        self.apply_broker_env(&get)?;
        if let Some(listen) = get("TOPICRULE_BROKER_EMBEDDED_LISTEN") {
            let expected = "an address such as 127.0.0.1:1883";
            self.broker.embedded.listen =
                env_value("TOPICRULE_BROKER_EMBEDDED_LISTEN", &listen, expected)?;
        }
        if let Some(dir) = get("TOPICRULE_BROKER_EMBEDDED_DATA_DIR") {
            self.broker.embedded.data_dir = PathBuf::from(dir);
        }
        if let Some(paths) = get("TOPICRULE_RULES_PATHS") {
            self.rules.paths = std::env::split_paths(&paths).collect();
        }
        if let Some(dir) = get("TOPICRULE_FILE_BASE_DIR") {
            self.file.base_dir = PathBuf::from(dir);
        }
        if let Some(listen) = get("TOPICRULE_METRICS_LISTEN") {
            let expected = "an address such as 127.0.0.1:9464";
            self.metrics.listen = match listen.as_str() {
                "" => None,
                _ => Some(env_value("TOPICRULE_METRICS_LISTEN", &listen, expected)?),
            };
        }
        if let Some(enabled) = get("TOPICRULE_SHADOW_ENABLED") {
            self.shadow.enabled = env_value("TOPICRULE_SHADOW_ENABLED", &enabled, "true or false")?;
        }
        if let Some(dir) = get("TOPICRULE_SHADOW_DIR") {
            self.shadow.dir = PathBuf::from(dir);
        }
        if let Some(secs) = get("TOPICRULE_METRICS_STATUS_INTERVAL") {
            self.metrics.status_interval =
                env_value("TOPICRULE_METRICS_STATUS_INTERVAL", &secs, "a number")?;
        }
        self.s3.apply_env(&get)?;
        Ok(())
    }

    /// The overrides of the connection settings: files, protocol, shared group.
    fn apply_broker_env(
        &mut self,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), SettingsError> {
        let b = &mut self.broker;
        for (name, slot) in [
            ("TOPICRULE_BROKER_PASSWORD_FILE", &mut b.password_file),
            ("TOPICRULE_BROKER_CA_FILE", &mut b.ca_file),
            ("TOPICRULE_BROKER_CERT_FILE", &mut b.cert_file),
            ("TOPICRULE_BROKER_KEY_FILE", &mut b.key_file),
        ] {
            if let Some(path) = get(name) {
                *slot = Some(PathBuf::from(path));
            }
        }
        if let Some(p) = get("TOPICRULE_BROKER_PROTOCOL") {
            b.protocol = p.parse().map_err(|e: UnknownProtocol| SettingsError::Env {
                name: "TOPICRULE_BROKER_PROTOCOL".into(),
                message: e.to_string(),
            })?;
        }
        if let Some(group) = get("TOPICRULE_BROKER_SHARED_GROUP") {
            b.shared_group = (!group.is_empty()).then_some(group);
        }
        Ok(())
    }

    /// This instance's name in S3 batch keys and spool folders: `[s3] instance_id`, else
    /// the client id; safe in a path and a key.
    pub fn instance_id(&self) -> String {
        let id = self
            .s3
            .instance_id
            .as_deref()
            .unwrap_or(&self.broker.client_id);
        let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        match id
            .chars()
            .map(|c| if safe(c) { c } else { '_' })
            .collect::<String>()
        {
            id if id.is_empty() || id.chars().all(|c| c == '.') => "topicrule".into(),
            id => id,
        }
    }

    /// The broker password: from the settings, or the first line of the password file.
    pub fn password(&self) -> Result<Option<String>, SettingsError> {
        if let Some(p) = &self.broker.password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.broker.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|error| SettingsError::Read {
            path: path.clone(),
            error,
        })?;
        Ok(Some(text.lines().next().unwrap_or("").to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_env(vars: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        let mut settings = Settings::default();
        let get = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        settings.apply_env(get).map(|()| settings)
    }

    #[test]
    fn environment_overrides_are_parsed_or_refused_by_name() {
        let settings = with_env(&[
            ("TOPICRULE_METRICS_LISTEN", "127.0.0.1:9464"),
            ("TOPICRULE_SHADOW_ENABLED", "true"),
            ("TOPICRULE_S3_ATTEMPTS", "7"),
        ])
        .unwrap();
        assert_eq!(settings.metrics.listen, Some(([127, 0, 0, 1], 9464).into()));
        assert!(settings.shadow.enabled);
        assert_eq!(settings.s3.attempts, 7);
        for (name, value, expected) in [
            (
                "TOPICRULE_METRICS_LISTEN",
                "here",
                "`here` is not an address such as 127.0.0.1:9464",
            ),
            (
                "TOPICRULE_SHADOW_ENABLED",
                "yes",
                "`yes` is not true or false",
            ),
            (
                "TOPICRULE_S3_FORCE_PATH_STYLE",
                "1",
                "`1` is not true or false",
            ),
            (
                "TOPICRULE_BROKER_KEEP_ALIVE",
                "soon",
                "`soon` is not a number",
            ),
        ] {
            let error = with_env(&[(name, value)]).unwrap_err().to_string();
            assert_eq!(error, format!("invalid value of `{name}`: {expected}"));
        }
    }
}
