//! The engine's own settings: `topicrule.toml`, overridden by `TOPICRULE_*` variables.

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
}

/// The broker topicrule sits beside.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Broker {
    /// `mqtt://host:port`. `TOPICRULE_BROKER_URL` overrides it.
    pub url: String,
    /// The client id of the subscribing session; the publishing one adds `-pub`. It must be
    /// stable across restarts: the persistent session, and the messages the broker keeps
    /// for it while topicrule is down, are attached to it.
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A file holding the password (its first line), so that it stays out of the settings.
    pub password_file: Option<PathBuf>,
    /// Seconds between keep-alive pings.
    pub keep_alive: u64,
    /// How long the broker keeps topicrule's session (and its queued messages) while
    /// topicrule is disconnected, in seconds.
    pub session_expiry: u32,
}

impl Default for Broker {
    fn default() -> Broker {
        Broker {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "topicrule".into(),
            username: None,
            password: None,
            password_file: None,
            keep_alive: 30,
            session_expiry: 7 * 24 * 3600,
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
    /// broker, so that it never sends more unacknowledged messages than this.
    pub max_in_flight: u16,
    /// Attempts of an action that fails on its sink before the error action runs.
    pub action_attempts: u32,
    /// Seconds to finish in-flight messages after SIGINT/SIGTERM.
    pub shutdown_grace: u64,
}

impl Default for RouterSettings {
    fn default() -> RouterSettings {
        RouterSettings {
            max_in_flight: 256,
            action_attempts: 3,
            shutdown_grace: 10,
        }
    }
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read `{path}`: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid settings in `{path}`: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid value of `{name}`: {message}")]
    Env { name: String, message: String },
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
                let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| SettingsError::Parse {
                    path: path.to_owned(),
                    source,
                })?
            }
        };
        settings.apply_env(|name| std::env::var(name).ok())?;
        Ok(settings)
    }

    /// Applies overrides from the environment (`get` looks a variable up).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), SettingsError> {
        let number = |name: &str, text: String| {
            text.parse::<u64>().map_err(|_| SettingsError::Env {
                name: name.into(),
                message: format!("`{text}` is not a number"),
            })
        };
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
            self.broker.keep_alive = number("TOPICRULE_BROKER_KEEP_ALIVE", k)?;
        }
        if let Some(paths) = get("TOPICRULE_RULES_PATHS") {
            self.rules.paths = std::env::split_paths(&paths).collect();
        }
        if let Some(dir) = get("TOPICRULE_FILE_BASE_DIR") {
            self.file.base_dir = PathBuf::from(dir);
        }
        Ok(())
    }

    /// The broker password: from the settings, or the first line of the password file.
    pub fn password(&self) -> Result<Option<String>, SettingsError> {
        if let Some(p) = &self.broker.password {
            return Ok(Some(p.clone()));
        }
        let Some(path) = &self.broker.password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.clone(),
            source,
        })?;
        Ok(Some(text.lines().next().unwrap_or("").to_owned()))
    }
}
