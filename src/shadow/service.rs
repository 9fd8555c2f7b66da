//! The Device Shadow service over MQTT (`[shadow] enabled`): requests on
//! `$aws/things/<thing>/shadow[/name/<shadow>]/update|get|delete`, answers on the same topic
//! plus `/accepted` or `/rejected` (and `/update/delta`, `/update/documents`), as AWS IoT.
//!
//! Invariant: a shadow's file under `[shadow] dir` is always a whole document (written to a
//! temporary file, synced, renamed); a request is answered only after its change is on disk,
//! and requests are applied one at a time, so versions never fork. Rules read shadows
//! (`get_thing_shadow()`) from the same cache, as the last answered request left them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::document::{self, Existing, Shadow, ShadowError, Tombstone};
use crate::actions::republish::PublishRequest;
use crate::sql::eval::ShadowReader;

/// The filters of the requests: classic and named shadows. Their answers (one level more)
/// do not match them.
pub const FILTERS: [&str; 2] = ["$aws/things/+/shadow/+", "$aws/things/+/shadow/name/+/+"];

/// The shadows, kept as files and cached once read.
pub struct Shadows {
    dir: PathBuf,
    /// Held by a request from its read to its write: requests apply one at a time.
    requests: Mutex<()>,
    /// What each shadow's file holds, once read or written; a shadow with no file is not
    /// kept, so that asking for any name never grows it. Locked only briefly, never across
    /// an await: `get_thing_shadow()` reads it from rules, synchronously.
    cache: std::sync::RwLock<HashMap<PathBuf, Arc<Stored>>>,
}

/// A shadow's file: the shadow, or what its deletion left.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Stored {
    Shadow(Box<Shadow>),
    Deleted(Tombstone),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Update,
    Get,
    Delete,
}

/// A request's topic, taken apart.
struct Request<'t> {
    thing: &'t str,
    /// None: the classic shadow.
    shadow: Option<&'t str>,
    op: Op,
}

/// Thing and shadow names as AWS allows them: letters, digits, `:`, `_`, `-`; they also
/// make safe file names.
fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

fn parse(topic: &str) -> Option<Request<'_>> {
    let rest = topic.strip_prefix("$aws/things/")?;
    let (thing, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("shadow/")?;
    let (shadow, op) = match rest.strip_prefix("name/") {
        Some(named) => {
            let (name, op) = named.split_once('/')?;
            (Some(name), op)
        }
        None => (None, rest),
    };
    let op = match op {
        "update" => Op::Update,
        "get" => Op::Get,
        "delete" => Op::Delete,
        _ => return None,
    };
    Some(Request { thing, shadow, op })
}

impl Shadows {
    pub fn new(dir: PathBuf) -> Shadows {
        Shadows {
            dir,
            requests: Mutex::new(()),
            cache: std::sync::RwLock::new(HashMap::new()),
        }
    }

    /// Handles a message when its topic is a shadow request: the answers to publish, once
    /// the change is on disk. None for any other topic.
    pub async fn handle(
        &self,
        topic: &str,
        payload: &[u8],
        now: i64,
    ) -> Option<Result<Vec<PublishRequest>, StoreError>> {
        let request = parse(topic)?;
        let answer = |suffix: &str, payload: Vec<u8>| PublishRequest {
            topic: format!("{topic}/{suffix}"),
            payload: payload.into(),
            qos: 1,
            ..PublishRequest::default()
        };
        let name = request.shadow.unwrap_or(request.thing);
        let Some(path) = self.path(request.thing, request.shadow) else {
            let error = ShadowError {
                code: 400,
                message: "Invalid thing or shadow name".into(),
                client_token: None,
            };
            return Some(Ok(vec![answer("rejected", error.rejected_document(now))]));
        };
        let _one_at_a_time = self.requests.lock().await;
        let stored = match self.stored(&path) {
            Ok(stored) => stored,
            Err(e) => return Some(Err(e)),
        };
        let live = match stored.as_deref() {
            Some(Stored::Shadow(shadow)) => Some(&**shadow),
            _ => None,
        };
        let (change, answers) = match request.op {
            Op::Get => match document::get(live, name, payload, now) {
                Ok(doc) => (None, vec![answer("accepted", doc)]),
                Err(e) => (None, vec![answer("rejected", e.rejected_document(now))]),
            },
            Op::Update => {
                let existing = match stored.as_deref() {
                    Some(Stored::Shadow(shadow)) => Existing::Live(shadow),
                    Some(Stored::Deleted(tombstone)) => Existing::Deleted(tombstone),
                    None => Existing::Absent,
                };
                match document::update(existing, payload, now) {
                    Ok(updated) => {
                        let mut answers = vec![answer("accepted", updated.accepted)];
                        answers.extend(updated.delta.map(|delta| answer("delta", delta)));
                        answers.push(answer("documents", updated.documents));
                        (Some(Stored::Shadow(Box::new(updated.shadow))), answers)
                    }
                    Err(e) => (None, vec![answer("rejected", e.rejected_document(now))]),
                }
            }
            Op::Delete => match document::delete(live, name, payload, now) {
                Ok(deleted) => (
                    Some(Stored::Deleted(deleted.tombstone)),
                    vec![answer("accepted", deleted.accepted)],
                ),
                Err(e) => (None, vec![answer("rejected", e.rejected_document(now))]),
            },
        };
        if let Some(change) = change {
            if let Err(e) = write(&path, &change).await {
                return Some(Err(e));
            }
            self.cache_write().insert(path, Arc::new(change));
        }
        Some(Ok(answers))
    }

    /// What the file at `path` holds (None: no file): from the cache, else read (a small
    /// file) and cached.
    fn stored(&self, path: &Path) -> Result<Option<Arc<Stored>>, StoreError> {
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned();
        if cached.is_some() {
            return Ok(cached);
        }
        let stored = read(path)?.map(Arc::new);
        if let Some(stored) = &stored {
            self.cache_write().insert(path.to_owned(), stored.clone());
        }
        Ok(stored)
    }

    fn cache_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<PathBuf, Arc<Stored>>> {
        self.cache.write().unwrap_or_else(|e| e.into_inner())
    }

    /// `dir/<thing>/classic.json`, or `dir/<thing>/name-<shadow>.json`; None for a name AWS
    /// does not allow (which would not make a safe file name either).
    fn path(&self, thing: &str, shadow: Option<&str>) -> Option<PathBuf> {
        if !valid_name(thing, 128) || !shadow.is_none_or(|s| valid_name(s, 64)) {
            return None;
        }
        let file = match shadow {
            None => "classic.json".to_owned(),
            Some(name) => format!("name-{name}.json"),
        };
        Some(self.dir.join(thing).join(file))
    }
}

/// Why a shadow's file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the shadow file `{}` is damaged: {source}", path.display())]
    Damaged {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the shadow `{}`: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn read(path: &Path) -> Result<Option<Stored>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Damaged {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

impl ShadowReader for Shadows {
    /// The shadow's `/get/accepted` document, for `get_thing_shadow()`; None when it does
    /// not exist, its names are not valid, or its file cannot be read (logged).
    fn read(&self, thing: &str, shadow: Option<&str>) -> Option<Vec<u8>> {
        let stored = self
            .stored(&self.path(thing, shadow)?)
            .map_err(|e| tracing::warn!("get_thing_shadow(): {e}"))
            .ok()??;
        let Stored::Shadow(live) = &*stored else {
            return None;
        };
        let now = chrono::Utc::now().timestamp();
        document::get(Some(live), thing, b"", now).ok()
    }
}

/// Writes the file whole or not at all: a temporary file, synced, renamed over it, and the
/// folder synced.
async fn write(path: &Path, stored: &Stored) -> Result<(), StoreError> {
    let failed = |source| StoreError::Write {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec(stored).map_err(|e| failed(e.into()))?;
    let target = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let dir = target
            .parent()
            .expect("a shadow file is in its thing's folder");
        std::fs::create_dir_all(dir)?;
        let temporary = target.with_extension("json.new");
        let mut file = std::fs::File::create(&temporary)?;
        std::io::Write::write_all(&mut file, &bytes)?;
        file.sync_data()?;
        std::fs::rename(&temporary, &target)?;
        crate::actions::durable::sync_dir(dir)
    })
    .await
    .map_err(|e| failed(e.into()))?
    .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_topics_are_taken_apart() {
        let r = parse("$aws/things/RPI/shadow/update").unwrap();
        assert_eq!((r.thing, r.shadow, r.op), ("RPI", None, Op::Update));
        let r = parse("$aws/things/RPI/shadow/name/light/delete").unwrap();
        assert_eq!(
            (r.thing, r.shadow, r.op),
            ("RPI", Some("light"), Op::Delete)
        );
        for other in [
            "$aws/things/RPI/shadow/update/accepted",
            "$aws/things/RPI/shadow/name/light/get/rejected",
            "$aws/things/RPI/shadow/list",
            "my/things/RPI/update",
        ] {
            assert!(parse(other).is_none(), "{other}");
        }
    }

    #[test]
    fn names_make_safe_file_names() {
        assert!(valid_name("RPI-4:kitchen_1", 128));
        for bad in ["", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(!valid_name(bad, 128), "{bad}");
        }
    }
}
