//! The shadow document model of AWS IoT's Device Shadow service: pure and synchronous, no I/O.
//!
//! Invariant: a [`Shadow`]'s `metadata` has the shape of its `state`: every leaf of
//! `state.desired` and `state.reported` has `{"timestamp": <epoch seconds of the update that
//! set it>}` at the same path (arrays mirrored element by element); no section, and no object
//! in one outside arrays, is empty (an update that empties one removes it); `version` grows by
//! exactly one on every accepted update, and continues across a delete and re-create within
//! 48 hours.
//!
//! The behaviour follows AWS's documentation ("Device Shadow service documents", "Device
//! Shadow MQTT topics", "Interacting with shadows", "Device Shadow error messages"); where it
//! is silent, AWS's own local implementation of the service (the Greengrass shadow manager);
//! the few remaining choices are marked "(our choice)".

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Number, Value};

/// The most bytes `desired` and `reported` may take together, as compact JSON (metadata does
/// not count): 8 KB, the Device Shadow quota.
pub const MAX_STATE_BYTES: usize = 8 * 1024;
/// The deepest nesting of objects and arrays in `desired` or `reported`, the section's own
/// object being level 1 ("JSON contains too many levels of nesting; maximum is 6").
pub const MAX_DEPTH: usize = 6;
/// The longest `clientToken`, in bytes.
pub const MAX_CLIENT_TOKEN_BYTES: usize = 64;
/// How long a deleted shadow's version is remembered: a shadow re-created within this time
/// continues the version, later it starts again at 1.
pub const VERSION_KEPT_SECS: i64 = 48 * 60 * 60;

type Object = Map<String, Value>;

const UNSUPPORTED_ENCODING: &str = "Unsupported documented encoding; supported encoding is UTF-8";

/// The `desired` and `reported` sections of a shadow's state, or of its metadata; a section
/// absent is `None`, never an empty object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sections {
    /// What apps ask of the device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired: Option<Object>,
    /// What the device last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<Object>,
}

impl Sections {
    fn to_object(&self) -> Object {
        let mut out = Object::new();
        for (key, section) in [("desired", &self.desired), ("reported", &self.reported)] {
            if let Some(map) = section {
                out.insert(key.to_owned(), Value::Object(map.clone()));
            }
        }
        out
    }
}

/// One thing's classic or named shadow. Serialized (serde) as
/// `{"state": {...}, "metadata": {...}, "version": N, "timestamp": T}`, so that it can be
/// kept as a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shadow {
    state: Sections,
    metadata: Sections,
    version: u64,
    /// When the last accepted update was applied, in epoch seconds.
    timestamp: i64,
}

impl Shadow {
    /// The `desired` and `reported` state.
    pub fn state(&self) -> &Sections {
        &self.state
    }

    /// The per-leaf timestamps, in the shape of [`Shadow::state`].
    pub fn metadata(&self) -> &Sections {
        &self.metadata
    }

    /// 1 after the first update, one more after each accepted update.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When the last accepted update was applied, in epoch seconds.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The desired fields that differ from the reported ones, recursively, with their desired
    /// metadata; `None` when there are none.
    pub fn delta(&self) -> Option<(Object, Object)> {
        let desired = self.state.desired.as_ref()?;
        let (state, metadata) = delta(
            desired,
            self.metadata.desired.as_ref(),
            self.state.reported.as_ref(),
            self.timestamp,
        );
        (!state.is_empty()).then_some((state, metadata))
    }

    /// The `/update/delta` document, if desired differs from reported.
    fn delta_document(&self, token: Option<&str>, now: i64) -> Option<Vec<u8>> {
        let (state, metadata) = self.delta()?;
        let body = json!({
            "state": state,
            "metadata": metadata,
            "version": self.version,
            "timestamp": now,
        });
        Some(response(body, token))
    }

    /// The `previous` or `current` part of an `/update/documents` message.
    fn body(&self) -> Value {
        json!({
            "state": self.state.to_object(),
            "metadata": self.metadata.to_object(),
            "version": self.version,
        })
    }
}

/// What a deleted shadow leaves behind: its last version, so that a shadow re-created soon
/// after continues from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The deleted shadow's version.
    pub version: u64,
    /// When the shadow was deleted, in epoch seconds.
    pub deleted_at: i64,
}

/// What the store holds under a shadow's name when an update arrives.
#[derive(Debug, Clone, Copy)]
pub enum Existing<'a> {
    /// No shadow was ever created (or its tombstone was dropped).
    Absent,
    /// The shadow as it stands.
    Live(&'a Shadow),
    /// Deleted: the version continues if the tombstone is younger than [`VERSION_KEPT_SECS`].
    Deleted(&'a Tombstone),
}

impl<'a> From<Option<&'a Shadow>> for Existing<'a> {
    fn from(shadow: Option<&'a Shadow>) -> Self {
        shadow.map_or(Existing::Absent, Existing::Live)
    }
}

impl Existing<'_> {
    /// The version a request's `version` must match; an update makes it one more. A shadow
    /// not yet created is at 0 (our choice: AWS does not say what `version` may come with a
    /// first update); one deleted over 48 hours ago too ("the version number ... will be 0").
    fn version(self, now: i64) -> u64 {
        match self {
            Existing::Absent => 0,
            Existing::Live(shadow) => shadow.version,
            Existing::Deleted(t) if now.saturating_sub(t.deleted_at) <= VERSION_KEPT_SECS => {
                t.version
            }
            Existing::Deleted(_) => 0,
        }
    }
}

/// An accepted update: the new shadow and the messages to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Updated {
    /// The shadow to keep in place of the old one.
    pub shadow: Shadow,
    /// For `/update/accepted`: the request's `state` and the metadata of the fields it set.
    pub accepted: Vec<u8>,
    /// For `/update/documents`: the shadow before (`null` if there was none) and after.
    pub documents: Vec<u8>,
    /// For `/update/delta`: present when the request had a `desired` section and desired
    /// still differs from reported (the topic is for "the request state document contains
    /// different values for desired and reported states").
    pub delta: Option<Vec<u8>>,
}

/// An accepted delete.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    /// To keep in the shadow's place, for [`Existing::Deleted`].
    pub tombstone: Tombstone,
    /// For `/delete/accepted`: `version`, `timestamp`, `clientToken`.
    pub accepted: Vec<u8>,
}

/// A rejected request: an HTTP status code and AWS's message for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} {message}")]
pub struct ShadowError {
    /// The HTTP status code: 400, 404, 409, 413, 415 or 500.
    pub code: u16,
    /// AWS's message for it, e.g. "Version conflict".
    pub message: String,
    /// The request's `clientToken`, when it had a valid one, to echo.
    pub client_token: Option<String>,
}

impl ShadowError {
    fn new(code: u16, message: impl Into<String>) -> Self {
        ShadowError {
            code,
            message: message.into(),
            client_token: None,
        }
    }

    fn with_token(mut self, token: Option<&str>) -> Self {
        self.client_token = token.map(str::to_owned);
        self
    }

    /// 404 for a shadow that does not exist. `name` is the thing name for a classic shadow,
    /// the shadow name for a named one (as in AWS's named-shadow tutorial).
    pub fn not_found(name: &str) -> Self {
        Self::new(404, format!("No shadow exists with name: '{name}'"))
    }

    /// The `/rejected` document: `code`, `message`, `timestamp` and `clientToken` if any.
    pub fn rejected_document(&self, now: i64) -> Vec<u8> {
        let body = json!({ "code": self.code, "message": self.message, "timestamp": now });
        response(body, self.client_token.as_deref())
    }
}

/// Applies an `/update` request, at `now` (epoch seconds), to the shadow `existing`.
pub fn update(existing: Existing<'_>, request: &[u8], now: i64) -> Result<Updated, ShadowError> {
    let request = UpdateRequest::parse(request)?;
    let token = request.client_token.as_deref();
    let fail = |code, message: &str| ShadowError::new(code, message).with_token(token);
    let current = existing.version(now);
    if request.version.is_some_and(|v| v != current) {
        return Err(fail(409, "Version conflict"));
    }
    let version = current
        .checked_add(1)
        .ok_or_else(|| fail(500, "Internal service failure"))?;
    let previous = match existing {
        Existing::Live(shadow) => Some(shadow),
        _ => None,
    };
    let mut shadow = previous.cloned().unwrap_or_else(|| Shadow {
        state: Sections::default(),
        metadata: Sections::default(),
        version,
        timestamp: now,
    });
    apply(&mut shadow, request.patch(), now);
    if state_bytes(&shadow.state) > MAX_STATE_BYTES {
        return Err(fail(413, "The payload exceeds the maximum size allowed"));
    }
    (shadow.version, shadow.timestamp) = (version, now);
    let documents = json!({
        "previous": previous.map_or(Value::Null, Shadow::body),
        "current": shadow.body(),
        "timestamp": now,
    });
    Ok(Updated {
        accepted: request.accepted(version, now),
        documents: response(documents, token),
        delta: request
            .sets_desired()
            .then(|| shadow.delta_document(token, now))
            .flatten(),
        shadow,
    })
}

/// Answers a `/get` request: the `/get/accepted` document, with `state.delta` when desired
/// differs from reported; `metadata` has `desired` and `reported` only, as in AWS's SDK
/// models. `name` is for the 404 message (see [`ShadowError::not_found`]).
pub fn get(
    shadow: Option<&Shadow>,
    name: &str,
    request: &[u8],
    now: i64,
) -> Result<Vec<u8>, ShadowError> {
    let token = payload_token(request)?;
    let shadow = shadow.ok_or_else(|| ShadowError::not_found(name).with_token(token.as_deref()))?;
    let mut state = shadow.state.to_object();
    if let Some((delta, _)) = shadow.delta() {
        state.insert("delta".to_owned(), Value::Object(delta));
    }
    let body = json!({
        "state": state,
        "metadata": shadow.metadata.to_object(),
        "version": shadow.version,
        "timestamp": now,
    });
    Ok(response(body, token.as_deref()))
}

/// Answers a `/delete` request: the tombstone to keep and the `/delete/accepted` document.
/// `name` is for the 404 message (see [`ShadowError::not_found`]).
pub fn delete(
    shadow: Option<&Shadow>,
    name: &str,
    request: &[u8],
    now: i64,
) -> Result<Deleted, ShadowError> {
    let token = payload_token(request)?;
    let shadow = shadow.ok_or_else(|| ShadowError::not_found(name).with_token(token.as_deref()))?;
    let body = json!({ "version": shadow.version, "timestamp": now });
    Ok(Deleted {
        tombstone: Tombstone {
            version: shadow.version,
            deleted_at: now,
        },
        accepted: response(body, token.as_deref()),
    })
}

/// A validated `/update` request.
struct UpdateRequest {
    client_token: Option<String>,
    version: Option<u64>,
    /// As received, for `/update/accepted`: `null`, or an object of `desired` and
    /// `reported`, each an object or `null`.
    state: Value,
}

impl UpdateRequest {
    fn parse(bytes: &[u8]) -> Result<Self, ShadowError> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| ShadowError::new(415, UNSUPPORTED_ENCODING))?;
        let Ok(Value::Object(mut root)) = serde_json::from_str::<Value>(text) else {
            return Err(ShadowError::new(400, "Invalid JSON"));
        };
        let client_token = client_token(&root)?;
        let fail =
            |message: String| ShadowError::new(400, message).with_token(client_token.as_deref());
        // Nodes other than these three are ignored: "JSON content outside of those sections
        // is ignored" (Diagnosing problems with shadows).
        let version = match root.get("version") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| fail("Invalid version".into()))?),
        };
        let state = root
            .remove("state")
            .ok_or_else(|| fail("Missing required node: state".into()))?;
        check_state(&state).map_err(|e| e.with_token(client_token.as_deref()))?;
        Ok(UpdateRequest {
            client_token,
            version,
            state,
        })
    }

    /// The sections to merge; `None` for `"state": null`, which clears the whole state.
    fn patch(&self) -> Option<&Object> {
        self.state.as_object()
    }

    fn sets_desired(&self) -> bool {
        self.patch().is_some_and(|p| p.contains_key("desired"))
    }

    /// The `/update/accepted` document: the request's `state`, with a timestamp for each
    /// field it names (deleted ones included).
    fn accepted(&self, version: u64, now: i64) -> Vec<u8> {
        let body = json!({
            "state": self.state,
            "metadata": metadata_of(&self.state, now),
            "version": version,
            "timestamp": now,
        });
        response(body, self.client_token.as_deref())
    }
}

/// The `clientToken` of a request: absent, or a string of at most 64 bytes.
fn client_token(root: &Object) -> Result<Option<String>, ShadowError> {
    match root.get("clientToken") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(t)) if t.len() <= MAX_CLIENT_TOKEN_BYTES => Ok(Some(t.clone())),
        Some(_) => Err(ShadowError::new(400, "Invalid clientToken")),
    }
}

/// The `clientToken` of a `/get` or `/delete` payload. AWS documents these payloads as empty
/// and a delete's content as ignored, so anything but a JSON object is ignored (our choice).
fn payload_token(request: &[u8]) -> Result<Option<String>, ShadowError> {
    match serde_json::from_slice::<Value>(request) {
        Ok(Value::Object(root)) => client_token(&root),
        _ => Ok(None),
    }
}

/// Checks `state`: `null`, or an object of `desired` and `reported` only, each an object
/// (within [`MAX_DEPTH`], no `null` in arrays) or `null`. The error is AWS's 400 and message.
fn check_state(state: &Value) -> Result<(), ShadowError> {
    let invalid = |message: String| Err(ShadowError::new(400, message));
    let sections = match state {
        Value::Null => return Ok(()),
        Value::Object(sections) => sections,
        _ => return invalid("State node must be an object".into()),
    };
    for (key, value) in sections {
        let not_object = match key.as_str() {
            "desired" => "Desired node must be an object",
            "reported" => "Reported node must be an object",
            // AWS's text is "State contains an invalid node"; the service appends the node.
            other => return invalid(format!("State contains an invalid node: '{other}'")),
        };
        match value {
            Value::Null => {}
            Value::Object(_) if too_deep(value, 1) => {
                return invalid(format!(
                    "JSON contains too many levels of nesting; maximum is {MAX_DEPTH}"
                ));
            }
            // "Arrays can't have null values ... will be rejected": the text is our choice.
            Value::Object(_) if null_in_array(value, false) => {
                return invalid("Arrays can't have null values".into());
            }
            Value::Object(_) => {}
            _ => return invalid(not_object.into()),
        }
    }
    Ok(())
}

/// Whether objects and arrays nest deeper than [`MAX_DEPTH`], `value` being at `level`.
fn too_deep(value: &Value, level: usize) -> bool {
    match value {
        Value::Object(map) => level > MAX_DEPTH || map.values().any(|v| too_deep(v, level + 1)),
        Value::Array(items) => level > MAX_DEPTH || items.iter().any(|v| too_deep(v, level + 1)),
        _ => false,
    }
}

/// Whether a `null` appears anywhere inside an array (`in_array`: `value` is inside one).
fn null_in_array(value: &Value, in_array: bool) -> bool {
    match value {
        Value::Null => in_array,
        Value::Object(map) => map.values().any(|v| null_in_array(v, in_array)),
        Value::Array(items) => items.iter().any(|v| null_in_array(v, true)),
        _ => false,
    }
}

/// Merges a validated patch into `shadow`'s state and metadata; `None` clears both.
fn apply(shadow: &mut Shadow, patch: Option<&Object>, now: i64) {
    let Some(patch) = patch else {
        shadow.state = Sections::default();
        shadow.metadata = Sections::default();
        return;
    };
    let (state, metadata) = (&mut shadow.state, &mut shadow.metadata);
    let sections = [
        ("desired", &mut state.desired, &mut metadata.desired),
        ("reported", &mut state.reported, &mut metadata.reported),
    ];
    for (key, state, metadata) in sections {
        match patch.get(key) {
            None => {}
            Some(Value::Object(change)) => {
                let mut s = state.take().unwrap_or_default();
                let mut m = metadata.take().unwrap_or_default();
                merge(&mut s, &mut m, change, now);
                if !s.is_empty() {
                    (*state, *metadata) = (Some(s), Some(m));
                }
            }
            // `"desired": null` removes the section.
            Some(_) => (*state, *metadata) = (None, None),
        }
    }
}

/// Merges `patch` into `state` and its `metadata`: `null` deletes, an object merges
/// recursively (an object left empty is removed), anything else (arrays included) replaces.
fn merge(state: &mut Object, metadata: &mut Object, patch: &Object, now: i64) {
    for (key, change) in patch {
        match change {
            Value::Null => {
                state.shift_remove(key);
                metadata.shift_remove(key);
            }
            Value::Object(change) => {
                let old = take_object(state, key);
                // A leaf's metadata (`{"timestamp": ..}`) must not become an object's.
                let old_meta = old.is_some().then(|| take_object(metadata, key)).flatten();
                let (mut s, mut m) = (old.unwrap_or_default(), old_meta.unwrap_or_default());
                merge(&mut s, &mut m, change, now);
                if s.is_empty() {
                    state.shift_remove(key);
                    metadata.shift_remove(key);
                } else {
                    state.insert(key.clone(), Value::Object(s));
                    metadata.insert(key.clone(), Value::Object(m));
                }
            }
            value => {
                state.insert(key.clone(), value.clone());
                metadata.insert(key.clone(), metadata_of(value, now));
            }
        }
    }
}

/// The value at `key` if it is an object, taken out (`null` is left in its place, which keeps
/// the key's position for the object put back).
fn take_object(map: &mut Object, key: &str) -> Option<Object> {
    match map.get_mut(key).map(Value::take) {
        Some(Value::Object(object)) => Some(object),
        _ => None,
    }
}

/// The metadata of a value set at `now`: its shape, with `{"timestamp": now}` at each leaf
/// (`null` included, as in `/update/accepted` for a deleted field).
fn metadata_of(value: &Value, now: i64) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), metadata_of(v, now)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| metadata_of(v, now)).collect()),
        _ => json!({ "timestamp": now }),
    }
}

/// The desired fields that differ from `reported` ("the path all the way to the root" for
/// nested objects, arrays whole), with their metadata taken from `desired_meta` (or made
/// with `fallback` if that is missing).
fn delta(
    desired: &Object,
    desired_meta: Option<&Object>,
    reported: Option<&Object>,
    fallback: i64,
) -> (Object, Object) {
    let (mut state, mut metadata) = (Object::new(), Object::new());
    for (key, want) in desired {
        let have = reported.and_then(|r| r.get(key));
        let want_meta = desired_meta.and_then(|m| m.get(key));
        match (want, have) {
            (Value::Object(want), Some(Value::Object(have))) => {
                let (s, m) = delta(
                    want,
                    want_meta.and_then(Value::as_object),
                    Some(have),
                    fallback,
                );
                if !s.is_empty() {
                    state.insert(key.clone(), Value::Object(s));
                    metadata.insert(key.clone(), Value::Object(m));
                }
            }
            (_, Some(have)) if same(want, have) => {}
            _ => {
                state.insert(key.clone(), want.clone());
                let m = want_meta
                    .cloned()
                    .unwrap_or_else(|| metadata_of(want, fallback));
                metadata.insert(key.clone(), m);
            }
        }
    }
    (state, metadata)
}

/// JSON equality with numbers compared by value (`1` equals `1.0`), as AWS's delta does.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => same_number(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Numbers kept as their text: equal if the texts are; two integers otherwise differ (f64
/// would round large ones together); else compared as f64.
fn same_number(x: &Number, y: &Number) -> bool {
    let (tx, ty) = (x.to_string(), y.to_string());
    let integer = |t: &str| !t.contains(['.', 'e', 'E']);
    tx == ty
        || (!(integer(&tx) && integer(&ty)) && x.as_f64().is_some_and(|f| Some(f) == y.as_f64()))
}

/// The size of `desired` plus `reported` as compact JSON, as the quota counts it.
fn state_bytes(state: &Sections) -> usize {
    let len = |map| serde_json::to_vec(map).map_or(usize::MAX, |bytes| bytes.len());
    [&state.desired, &state.reported]
        .into_iter()
        .flatten()
        .map(len)
        .sum()
}

/// A response document with `clientToken` added when the request had one.
fn response(mut body: Value, client_token: Option<&str>) -> Vec<u8> {
    if let (Value::Object(map), Some(token)) = (&mut body, client_token) {
        map.insert("clientToken".to_owned(), Value::String(token.to_owned()));
    }
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("a response is JSON")
    }

    /// Applies `request` at `now` to the shadow `before` left (`None`: no shadow).
    fn up(before: Option<&Updated>, now: i64, request: Value) -> Updated {
        let existing = Existing::from(before.map(|u| &u.shadow));
        update(existing, request.to_string().as_bytes(), now).expect("accepted")
    }

    fn rejected(existing: Option<&Shadow>, request: &[u8]) -> ShadowError {
        update(existing.into(), request, 9).expect_err("rejected")
    }

    /// The shadow's state and metadata.
    fn kept(updated: &Updated) -> Value {
        let shadow = &updated.shadow;
        json!({"state": shadow.state(), "metadata": shadow.metadata()})
    }

    fn ts(t: i64) -> Value {
        json!({ "timestamp": t })
    }

    /// The AWS CLI session: reported off, desired on (a delta), reported on (no delta).
    #[test]
    fn cli_session_delta_appears_then_clears() {
        let v1 = up(None, 100, json!({"state": {"reported": {"power": "off"}}}));
        assert_eq!((v1.shadow.version(), &v1.delta), (1, &None));
        let accepted = json!({"state": {"reported": {"power": "off"}},
            "metadata": {"reported": {"power": ts(100)}}, "version": 1, "timestamp": 100});
        assert_eq!(doc(&v1.accepted), accepted);

        let request = json!({"state": {"desired": {"power": "on"}}, "clientToken": "a"});
        let v2 = up(Some(&v1), 200, request);
        let delta = json!({"state": {"power": "on"}, "metadata": {"power": ts(200)},
            "version": 2, "timestamp": 200, "clientToken": "a"});
        assert_eq!(doc(v2.delta.as_deref().expect("a delta")), delta);
        let got = json!({"state": {"desired": {"power": "on"}, "reported": {"power": "off"},
                "delta": {"power": "on"}},
            "metadata": {"desired": {"power": ts(200)}, "reported": {"power": ts(100)}},
            "version": 2, "timestamp": 250});
        let answer = get(Some(&v2.shadow), "lamp", b"", 250).expect("found");
        assert_eq!(doc(&answer), got);

        let r = json!({"state": {"reported": {"power": "on"}}});
        let v3 = up(Some(&v2), 300, r);
        assert_eq!((v3.shadow.version(), &v3.delta), (3, &None));
        let got = json!({"state": {"desired": {"power": "on"}, "reported": {"power": "on"}},
            "metadata": {"desired": {"power": ts(200)}, "reported": {"power": ts(300)}},
            "version": 3, "timestamp": 301, "clientToken": "c"});
        let answer = get(Some(&v3.shadow), "lamp", br#"{"clientToken": "c"}"#, 301);
        assert_eq!(doc(&answer.expect("found")), got);
    }

    #[test]
    fn stale_version_is_a_conflict_with_the_token_echoed() {
        let v1 = up(None, 1, json!({"state": {"desired": {"a": 1}}}));
        let request = br#"{"state": {}, "version": 0, "clientToken": "t"}"#;
        let e = rejected(Some(&v1.shadow), request);
        let document = json!({"code": 409, "message": "Version conflict", "timestamp": 42,
            "clientToken": "t"});
        assert_eq!(doc(&e.rejected_document(42)), document);
        let v2 = up(Some(&v1), 2, json!({"state": {}, "version": 1}));
        assert_eq!(v2.shadow.version(), 2);
    }

    #[test]
    fn null_deletes_fields_and_emptied_objects_disappear() {
        let reported = json!({"a": 1, "b": {"c": 2, "d": 3}, "e": {"f": 4}});
        let v1 = up(None, 10, json!({"state": {"reported": reported}}));
        let change = json!({"reported": {"a": null, "b": {"c": null}, "e": {"f": null}}});
        let v2 = up(Some(&v1), 20, json!({ "state": change }));
        let left = json!({"state": {"reported": {"b": {"d": 3}}},
            "metadata": {"reported": {"b": {"d": ts(10)}}}});
        assert_eq!(kept(&v2), left);
        let stamps = json!({"reported": {"a": ts(20), "b": {"c": ts(20)}, "e": {"f": ts(20)}}});
        let accepted = json!({"state": change, "metadata": stamps, "version": 2, "timestamp": 20});
        assert_eq!(doc(&v2.accepted), accepted);
        let v3 = up(Some(&v2), 30, json!({"state": {"reported": {"b": null}}}));
        assert_eq!(kept(&v3), json!({"state": {}, "metadata": {}}));
    }

    #[test]
    fn desired_null_removes_desired_and_state_null_clears_all() {
        let both = json!({"desired": {"x": 1}, "reported": {"x": 0}});
        let v1 = up(None, 1, json!({ "state": both }));
        let v2 = up(Some(&v1), 2, json!({"state": {"desired": null}}));
        let left = json!({"state": {"reported": {"x": 0}}, "metadata": {"reported": {"x": ts(1)}}});
        assert_eq!(kept(&v2), left);
        let v3 = up(Some(&v2), 3, json!({ "state": null }));
        let empty = json!({"state": {}, "metadata": {}});
        assert_eq!((kept(&v3), v3.shadow.version()), (empty, 3));
    }

    #[test]
    fn get_and_delete_of_no_shadow_are_404_and_delete_keeps_the_version() {
        let e = get(None, "lamp", br#"{"clientToken": "g"}"#, 5).expect_err("no shadow");
        let document = json!({"code": 404, "message": "No shadow exists with name: 'lamp'",
            "timestamp": 5, "clientToken": "g"});
        assert_eq!(doc(&e.rejected_document(5)), document);
        assert_eq!(delete(None, "lamp", b"", 5).map_err(|e| e.code), Err(404));

        let v1 = up(None, 1, json!({"state": {"reported": {"a": 1}}}));
        let v2 = up(Some(&v1), 2, json!({"state": {"reported": {"a": 2}}}));
        let deleted = delete(Some(&v2.shadow), "lamp", br#"{"clientToken": "d"}"#, 3);
        let deleted = deleted.expect("deleted");
        let accepted = json!({"version": 2, "timestamp": 3, "clientToken": "d"});
        assert_eq!(doc(&deleted.accepted), accepted);
        assert_eq!(get(None, "lamp", b"", 4).map_err(|e| e.code), Err(404));

        let again = |now| {
            let request = br#"{"state": {"reported": {"a": 3}}}"#;
            let updated = update(Existing::Deleted(&deleted.tombstone), request, now);
            updated.expect("accepted").shadow.version()
        };
        // Within 48 hours the version continues, after them it restarts.
        assert_eq!(again(3 + VERSION_KEPT_SECS), 3);
        assert_eq!(again(4 + VERSION_KEPT_SECS), 1);
    }

    #[test]
    fn malformed_requests_get_aws_messages() {
        #[rustfmt::skip]
        let cases: [(&[u8], u16, &str); 10] = [
            (b"not json", 400, "Invalid JSON"),
            (b"", 400, "Invalid JSON"),
            (b"[1]", 400, "Invalid JSON"),
            (b"{\"state\": \xff}", 415, UNSUPPORTED_ENCODING),
            (br#"{"clientToken": "t"}"#, 400, "Missing required node: state"),
            (br#"{"state": 3}"#, 400, "State node must be an object"),
            (br#"{"state": {"desired": [1]}}"#, 400, "Desired node must be an object"),
            (br#"{"state": {"reported": "x"}}"#, 400, "Reported node must be an object"),
            (br#"{"state": {"delta": {}}}"#, 400, "State contains an invalid node: 'delta'"),
            (br#"{"state": {}, "version": "1"}"#, 400, "Invalid version"),
        ];
        for (request, code, message) in cases {
            let e = rejected(None, request);
            assert_eq!((e.code, e.message.as_str()), (code, message), "{request:?}");
        }
        let long = json!({"state": {}, "clientToken": "x".repeat(65)}).to_string();
        let e = rejected(None, long.as_bytes());
        let expected = (400, "Invalid clientToken", None);
        assert_eq!((e.code, e.message.as_str(), e.client_token), expected);
        up(None, 1, json!({"state": {}, "other": 1})); // other nodes are ignored
        let e = rejected(None, br#"{"state": 1, "clientToken": "t"}"#);
        assert_eq!(e.client_token.as_deref(), Some("t"), "a valid token");
    }

    #[test]
    fn limits_on_size_depth_and_nulls_in_arrays() {
        // `{"a":"…"}` is the string and 8 bytes.
        let sized = |n| json!({"state": {"desired": {"a": "x".repeat(n)}}, "clientToken": "b"});
        up(None, 1, sized(MAX_STATE_BYTES - 8));
        let e = rejected(None, sized(MAX_STATE_BYTES - 7).to_string().as_bytes());
        let message = "The payload exceeds the maximum size allowed";
        assert_eq!((e.code, e.message.as_str()), (413, message));
        assert_eq!(e.client_token.as_deref(), Some("b"));

        let r = json!({"state": {"reported": {"1": {"2": {"3": {"4": {"5": [0]}}}}}}});
        up(None, 1, r);
        let seven = br#"{"state": {"reported": {"1": {"2": {"3": {"4": {"5": [[0]]}}}}}}}"#;
        let message = "JSON contains too many levels of nesting; maximum is 6";
        assert_eq!(rejected(None, seven).message, message);
        let nulls = br#"{"state": {"desired": {"a": [1, {"b": null}]}}}"#;
        let message = "Arrays can't have null values";
        assert_eq!(rejected(None, nulls).message, message);
    }

    #[test]
    fn documents_carry_previous_and_current_and_the_token() {
        let r = json!({"state": {"reported": {"a": 1}}, "clientToken": "one"});
        let v1 = up(None, 1, r);
        let current = json!({"state": {"reported": {"a": 1}},
            "metadata": {"reported": {"a": ts(1)}}, "version": 1});
        let documents =
            json!({"previous": null, "current": current, "timestamp": 1, "clientToken": "one"});
        assert_eq!(doc(&v1.documents), documents);
        assert_eq!(doc(&v1.accepted)["clientToken"], "one");

        let r = json!({"state": {"desired": {"a": 2}}, "clientToken": "two"});
        let v2 = up(Some(&v1), 2, r);
        let next = json!({"state": {"desired": {"a": 2}, "reported": {"a": 1}},
            "metadata": {"desired": {"a": ts(2)}, "reported": {"a": ts(1)}}, "version": 2});
        let documents =
            json!({"previous": current, "current": next, "timestamp": 2, "clientToken": "two"});
        assert_eq!(doc(&v2.documents), documents);
    }

    #[test]
    fn metadata_stamps_only_the_fields_an_update_set() {
        let r = json!({"state": {"reported": {"a": 1, "n": {"x": 1, "y": 1}}}});
        let v1 = up(None, 10, r);
        let r = json!({"state": {"reported": {"b": 2, "n": {"y": 2}}}});
        let v2 = up(Some(&v1), 20, r);
        let all = json!({"a": ts(10), "n": {"x": ts(10), "y": ts(20)}, "b": ts(20)});
        assert_eq!(kept(&v2)["metadata"]["reported"], all);
        let set = json!({"reported": {"b": ts(20), "n": {"y": ts(20)}}});
        assert_eq!(doc(&v2.accepted)["metadata"], set);
    }

    #[test]
    fn arrays_are_replaced_whole_with_metadata_per_element() {
        let r = json!({"state": {"desired": {"colors": ["RED", "GREEN", "BLUE"]}}});
        let v1 = up(None, 1, r);
        let r = json!({"state": {"desired": {"colors": ["RED"]}}});
        let v2 = up(Some(&v1), 2, r);
        let left = json!({"state": {"desired": {"colors": ["RED"]}},
            "metadata": {"desired": {"colors": [ts(2)]}}});
        assert_eq!(kept(&v2), left);
        let r = json!({"state": {"reported": {"colors": ["RED"]}}});
        let v3 = up(Some(&v2), 3, r);
        assert_eq!(v3.shadow.delta(), None, "equal arrays leave no delta");
    }

    #[test]
    fn nested_delta_holds_only_the_differing_leaves() {
        let r = json!({"state": {
            "desired": {"lights": {"color": {"r": 255, "g": 255, "b": 255}}, "mode": "eco"},
            "reported": {"lights": {"color": {"r": 255, "g": 0, "b": 255}}, "mode": "eco"}}});
        let v1 = up(None, 7, r);
        let delta = json!({"state": {"lights": {"color": {"g": 255}}},
            "metadata": {"lights": {"color": {"g": ts(7)}}}, "version": 1, "timestamp": 7});
        assert_eq!(doc(v1.delta.as_deref().expect("a delta")), delta);
        // A reported update that leaves a delta publishes none.
        let v2 = up(
            Some(&v1),
            8,
            json!({"state": {"reported": {"mode": "max"}}}),
        );
        assert!(v2.delta.is_none() && v2.shadow.delta().is_some());
    }

    #[test]
    fn numbers_keep_their_text_and_compare_by_value() {
        let big = "12345678901234567890123";
        let desired =
            format!(r#"{{"state": {{"desired": {{"t": 21.50, "n": 1, "big": {big}}}}}}}"#);
        let v1 = update(Existing::Absent, desired.as_bytes(), 1).expect("accepted");
        let accepted = String::from_utf8_lossy(&v1.accepted).into_owned();
        assert!(accepted.contains("21.50") && accepted.contains(big));
        let same = format!(r#"{{"state": {{"reported": {{"t": 21.5, "n": 1.0, "big": {big}}}}}}}"#);
        let v2 = update(Existing::Live(&v1.shadow), same.as_bytes(), 2).expect("accepted");
        assert_eq!(v2.shadow.delta(), None, "equal values written otherwise");
        let other = br#"{"state": {"reported": {"big": 12345678901234567890124}}}"#;
        let v3 = update(Existing::Live(&v2.shadow), other, 3).expect("accepted");
        let delta = v3.shadow.delta().map(|(state, _)| Value::Object(state));
        let expected = format!(r#"{{"big":{big}}}"#);
        assert_eq!(delta.map(|d| d.to_string()), Some(expected), "no rounding");
    }

    #[test]
    fn a_shadow_round_trips_through_serde() {
        let r = json!({"state": {"desired": {"a": [1, {"b": 2}]}, "reported": {"c": 3}}});
        let v1 = up(None, 5, r);
        let text = serde_json::to_string(&v1.shadow).expect("serializes");
        let back: Shadow = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, v1.shadow);
        let file = json!({"state": {"desired": {"a": [1, {"b": 2}]}, "reported": {"c": 3}},
            "metadata": {"desired": {"a": [ts(5), {"b": ts(5)}]}, "reported": {"c": ts(5)}},
            "version": 1, "timestamp": 5});
        assert_eq!(doc(text.as_bytes()), file);
    }
}
