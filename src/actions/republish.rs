//! The `republish` action: publish the output message to a topic (reserved `$aws/...`
//! topics too, written `$$aws/...`), at QoS 0 or 1, with AWS's MQTT 5 headers.

use base64::Engine as _;
use bytes::Bytes;

use super::ActionError;
use crate::sql::{Message, Value};
use crate::template::Template;

/// The `republish` action.
#[derive(Debug, Clone)]
pub struct Republish {
    pub topic: Template,
    /// 0 or 1; AWS's default is 0.
    pub qos: u8,
    pub retain: bool,
    /// None when no header is set (most rules): the action then costs no room for them.
    pub headers: Option<Box<Headers>>,
}

/// AWS's MQTT 5 `headers` of a republish action: as built, its texts are templates and its
/// payload format is `true` for `UTF8_DATA`, `false` for `UNSPECIFIED_BYTES`; as written in a
/// rule file (`rules::draft::HeadersDraft`), each is a text and its place.
#[derive(Debug, Clone)]
pub struct Headers<T = Template, F = bool> {
    pub content_type: Option<T>,
    pub payload_format: Option<F>,
    pub response_topic: Option<T>,
    /// Base64 once expanded, decoded when the action runs.
    pub correlation_data: Option<T>,
    /// Seconds (AWS takes it as a string).
    pub message_expiry: Option<T>,
    pub user_properties: Vec<(String, T)>,
}

impl<T, F> Default for Headers<T, F> {
    fn default() -> Self {
        Headers {
            content_type: None,
            payload_format: None,
            response_topic: None,
            correlation_data: None,
            message_expiry: None,
            user_properties: Vec::new(),
        }
    }
}

impl<T, F> Headers<T, F> {
    /// No header is set.
    pub fn is_empty(&self) -> bool {
        self.content_type.is_none()
            && self.payload_format.is_none()
            && self.response_topic.is_none()
            && self.correlation_data.is_none()
            && self.message_expiry.is_none()
            && self.user_properties.is_empty()
    }
}

/// A publish, ready to send.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PublishRequest {
    pub topic: String,
    pub payload: Bytes,
    pub qos: u8,
    pub retain: bool,
    pub content_type: Option<String>,
    pub payload_format_utf8: Option<bool>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub message_expiry: Option<u32>,
    pub user_properties: Vec<(String, String)>,
}

impl PublishRequest {
    pub fn describe(&self) -> serde_json::Value {
        let mut out = serde_json::json!({
            "action": "republish",
            "topic": self.topic,
            "qos": self.qos,
            "payload": String::from_utf8_lossy(&self.payload),
        });
        if self.retain {
            out["retain"] = true.into();
        }
        if let Some(ct) = &self.content_type {
            out["content_type"] = ct.clone().into();
        }
        if !self.user_properties.is_empty() {
            out["user_properties"] = self
                .user_properties
                .iter()
                .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                .collect();
        }
        out
    }
}

/// Expands the topic and headers. A topic that comes out empty, with a wildcard, or
/// otherwise invalid fails the action.
pub fn prepare(
    action: &Republish,
    msg: &Message,
    vars: &[Value],
    output: &Bytes,
) -> Result<PublishRequest, ActionError> {
    let topic = action.topic.expand(msg, vars);
    if let Err(e) = crate::topic::validate_topic(&topic) {
        return Err(ActionError::new(
            &topic,
            format!("the republish topic `{topic}` is invalid: {e}"),
        ));
    }
    let Some(h) = &action.headers else {
        return Ok(PublishRequest {
            topic,
            payload: output.clone(),
            qos: action.qos,
            retain: action.retain,
            ..PublishRequest::default()
        });
    };
    let expand = |t: &Option<crate::template::Template>| t.as_ref().map(|t| t.expand(msg, vars));
    let response_topic = expand(&h.response_topic);
    if let Some(rt) = &response_topic {
        if let Err(e) = crate::topic::validate_topic(rt) {
            return Err(ActionError::new(
                &topic,
                format!("the response topic `{rt}` is invalid: {e}"),
            ));
        }
    }
    let correlation_data = match expand(&h.correlation_data) {
        None => None,
        Some(text) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| {
                    ActionError::new(&topic, format!("the correlation data is not base64: {e}"))
                })?,
        ),
    };
    let message_expiry = match expand(&h.message_expiry) {
        None => None,
        Some(text) => Some(text.trim().parse::<u32>().map_err(|_| {
            ActionError::new(
                &topic,
                format!("the message expiry `{text}` is not a number of seconds"),
            )
        })?),
    };
    Ok(PublishRequest {
        topic,
        payload: output.clone(),
        qos: action.qos,
        retain: action.retain,
        content_type: expand(&h.content_type),
        payload_format_utf8: h.payload_format,
        response_topic,
        correlation_data,
        message_expiry,
        user_properties: h
            .user_properties
            .iter()
            .map(|(k, v)| (k.clone(), v.expand(msg, vars)))
            .collect(),
    })
}
