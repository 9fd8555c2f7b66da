//! The engine's own settings: `topicrule.toml`, overridden by `TOPICRULE_*` variables.

use std::net::SocketAddr;
use std::num::{NonZeroU16, NonZeroU64};
use std::path::{Path, PathBuf};

use serde::Deserialize;

mod env;

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
    /// When messages (and the PUBACKs of republishes) come less than half a millisecond
    /// apart, read them at most a millisecond late, several at once (`router/pace.rs`):
    /// about half the CPU, for that millisecond of latency. Off: every message is read the
    /// moment it arrives.
    pub batch_reads: bool,
}

impl Default for RouterSettings {
    fn default() -> RouterSettings {
        RouterSettings {
            max_in_flight: NonZeroU16::new(256).expect("not zero"),
            action_attempts: 3,
            shutdown_grace: 10,
            publish_timeout: NonZeroU64::new(30).expect("not zero"),
            stall_timeout: NonZeroU64::new(60).expect("not zero"),
            batch_reads: true,
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
    /// A `TOPICRULE_*` variable that names no setting, or whose text its setting does not
    /// take; the message names the variable.
    #[error("{0}")]
    Env(String),
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
        let (file, text) = match path {
            None => (toml::Table::new(), String::new()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| SettingsError::Read {
                    path: path.to_owned(),
                    error,
                })?;
                let file = crate::toml_read::from_str::<toml::Table>(&text)
                    .map_err(|(errors, _)| SettingsError::parse(path, &text, &errors))?;
                (file, text)
            }
        };
        // `vars_os`: a variable that is not UTF-8 (of any program) must not stop topicrule.
        let vars = std::env::vars_os().filter_map(|(name, value)| {
            Some((
                name.into_string().ok()?,
                value.to_string_lossy().into_owned(),
            ))
        });
        Settings::layered(file, vars).map_err(|error| {
            // The file's values lost their places in the table: read it again as settings,
            // for every error of the file with its place. None: the error is a variable's.
            let errors = path.and_then(|_| crate::toml_read::from_str::<Settings>(&text).err());
            match (path, errors) {
                (Some(path), Some((errors, _))) => SettingsError::parse(path, &text, &errors),
                _ => error,
            }
        })
    }

    /// The settings of `file` (a settings file's values) with the `TOPICRULE_*` variables
    /// of `vars` over them (see `env`).
    pub fn layered(
        file: toml::Table,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        Settings::deserialize(env::overlay(file, vars))
            .map_err(|e| SettingsError::Env(e.to_string()))
    }

    /// This instance's name in S3 batch keys and spool folders, and in its `file` journal's
    /// name: `[s3] instance_id`, else the client id; safe in a path and a key.
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
        let vars = vars.iter().map(|(n, v)| (n.to_string(), v.to_string()));
        Settings::layered(toml::Table::new(), vars)
    }

    #[test]
    fn every_setting_has_its_variable_read_as_its_type() {
        let settings = with_env(&[
            ("TOPICRULE_METRICS_LISTEN", "127.0.0.1:9464"),
            ("TOPICRULE_SHADOW_ENABLED", "true"),
            ("TOPICRULE_S3_ATTEMPTS", "7"),
            ("TOPICRULE_ROUTER_MAX_IN_FLIGHT", "32"),
            ("TOPICRULE_ROUTER_PUBLISH_TIMEOUT", "5"),
            ("TOPICRULE_BROKER_PASSWORD", "1234"),
            ("TOPICRULE_BROKER_CLIENT_ID", "true"),
            ("TOPICRULE_BROKER_EMBEDDED_LISTEN", "127.0.0.1:1999"),
            ("TOPICRULE_RULES_PATHS", "rules:more"),
            ("TOPICRULE_S3_FORCE_PATH_STYLE", "false"),
            ("TOPICRULE_LOG_LEVEL", "debug"),
            ("TOPICRULE_BIN", "/not/a/setting"),
        ])
        .unwrap();
        assert_eq!(settings.metrics.listen, Some(([127, 0, 0, 1], 9464).into()));
        assert!(settings.shadow.enabled);
        assert_eq!(settings.s3.attempts, 7);
        assert_eq!(settings.router.max_in_flight.get(), 32);
        assert_eq!(settings.router.publish_timeout.get(), 5);
        assert_eq!(settings.broker.password.as_deref(), Some("1234"));
        assert_eq!(settings.broker.client_id, "true");
        assert_eq!(
            settings.broker.embedded.listen,
            ([127, 0, 0, 1], 1999).into()
        );
        assert_eq!(
            settings.rules.paths,
            [PathBuf::from("rules"), PathBuf::from("more")]
        );
        assert_eq!(settings.s3.force_path_style, Some(false));
    }

    #[test]
    fn variables_override_the_file_key_by_key_and_empty_unsets() {
        let file: toml::Table = toml::from_str(
            "[broker]\nurl = \"mqtt://a:1883\"\nusername = \"u\"\nkeep_alive = 9\n[router]\naction_attempts = 4\n",
        )
        .unwrap();
        let vars = [
            ("TOPICRULE_BROKER_URL", "mqtt://b:1883"),
            ("TOPICRULE_BROKER_USERNAME", ""),
        ]
        .map(|(n, v)| (n.to_owned(), v.to_owned()));
        let settings = Settings::layered(file, vars).unwrap();
        assert_eq!(settings.broker.url, "mqtt://b:1883");
        assert_eq!(settings.broker.username, None);
        assert_eq!(settings.broker.keep_alive, 9);
        assert_eq!(settings.router.action_attempts, 4);
        assert_eq!(settings.broker.client_id, "topicrule", "a default stays");
    }

    #[test]
    fn a_variable_over_a_section_the_file_gives_as_a_value_is_an_error_not_a_panic() {
        let file: toml::Table = toml::from_str("broker = 5\n").unwrap();
        let vars = [("TOPICRULE_BROKER_URL".to_owned(), "mqtt://b".to_owned())];
        let error = Settings::layered(file, vars).unwrap_err().to_string();
        assert!(error.contains("invalid type: integer `5`"), "{error}");
    }

    #[test]
    fn a_bad_variable_is_refused_by_name() {
        for (name, value, expected) in [
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
            (
                "TOPICRULE_ROUTER_MAX_IN_FLIGHT",
                "0",
                "invalid value: integer `0`",
            ),
            (
                "TOPICRULE_METRICS_LISTEN",
                "here",
                "invalid socket address syntax",
            ),
            (
                "TOPICRULE_BROKER_PROTOCOL",
                "4",
                "unknown variant `4`, expected `5` or `3.1.1`",
            ),
        ] {
            let error = with_env(&[(name, value)]).unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("invalid value of `{name}`: "))
                    && error.contains(expected),
                "{name}={value}: {error}"
            );
        }
        let error = with_env(&[("TOPICRULE_ROUTER_MAX_INFLIGHT", "3")])
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("`TOPICRULE_ROUTER_MAX_INFLIGHT` is not a setting: unknown field `max_inflight`, expected one of `max_in_flight`"),
            "{error}"
        );
    }
}
