//! MQTT 3.1.1 (`protocol = "3.1.1"`): rumqttc's v4 client behind the router's `session` shape.
//!
//! What MQTT 3.1.1 lacks, and what takes its place:
//! - session expiry: the subscribing session is persistent (clean session off) and lasts as
//!   long as the broker keeps such sessions (mosquitto: `persistent_client_expiration`);
//! - receive maximum: the broker's own in-flight limit (mosquitto: `max_inflight_messages`)
//!   and the router's bounded backlog, which stops reading the socket, bound memory instead;
//! - republish `headers` and the incoming MQTT 5 properties: dropped, with a warning at start.

use std::time::Duration;

use rumqttc::{
    AsyncClient, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter, SubscribeReasonCode,
};

use super::session::{Event, Message, Role};
use super::transport::Endpoint;
use crate::actions::republish::PublishRequest;
use crate::config::Settings;
use crate::rules::{ActionSpec, Rule};

pub(super) fn options(
    settings: &Settings,
    endpoint: Endpoint,
    password: Option<String>,
    role: Role,
) -> MqttOptions {
    let mut o = MqttOptions::new(role.client_id(settings), endpoint.addr, endpoint.port);
    o.set_transport(endpoint.transport);
    o.set_keep_alive(Duration::from_secs(settings.broker.keep_alive.max(5)));
    o.set_max_packet_size(256 * 1024 * 1024, 256 * 1024 * 1024);
    if let Some(user) = &settings.broker.username {
        o.set_credentials(user.clone(), password.unwrap_or_default());
    }
    match role {
        Role::Subscriber => {
            o.set_clean_session(false);
            o.set_manual_acks(true);
            o.set_inflight(8); // It publishes nothing.
        }
        Role::Publisher => {
            o.set_clean_session(true);
            o.set_inflight(settings.router.max_in_flight.get());
        }
    }
    o
}

pub(super) fn event(event: rumqttc::Event) -> Event {
    use rumqttc::Event::{Incoming, Outgoing as Out};
    match event {
        Incoming(Packet::ConnAck(ack)) => Event::Connected {
            session_present: ack.session_present,
        },
        Incoming(Packet::SubAck(ack)) => {
            let granted = ack
                .return_codes
                .iter()
                .filter(|c| matches!(c, SubscribeReasonCode::Success(_)))
                .count();
            Event::Subscribed {
                granted,
                refused: ack.return_codes.len() - granted,
            }
        }
        Incoming(Packet::Publish(publish)) => Event::Message(Message::V4(publish)),
        // MQTT 3.1.1 has no reason codes: a PUBACK is a success.
        Incoming(Packet::PubAck(ack)) => Event::Acked {
            pkid: ack.pkid,
            result: Ok(()),
        },
        Out(Outgoing::Publish(pkid)) => Event::Sent(pkid),
        _ => Event::Other,
    }
}

pub(super) fn try_subscribe(client: &AsyncClient, filters: &[String]) -> Result<(), String> {
    client
        .try_subscribe_many(
            filters
                .iter()
                .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
        )
        .map_err(|e| e.to_string())
}

/// Publishes without the MQTT 5 headers, which MQTT 3.1.1 cannot carry.
pub(super) fn try_publish(client: &AsyncClient, req: PublishRequest) -> Result<(), String> {
    let qos = if req.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    client
        .try_publish(req.topic, qos, req.retain, req.payload)
        .map_err(|e| e.to_string())
}

/// Warns, once at start, about each rule whose republish headers MQTT 3.1.1 will drop.
pub(super) fn warn_about_mqtt5_headers(rules: &[Rule]) {
    for rule in rules {
        let uses_headers =
            rule.actions.iter().chain(&rule.error_action).any(
                |action| matches!(action, ActionSpec::Republish(r) if has_headers(&r.headers)),
            );
        if uses_headers {
            tracing::warn!(
                "rule `{}`: republish headers are MQTT 5 only; with protocol 3.1.1 they are not sent",
                rule.name
            );
        }
    }
}

fn has_headers(h: &crate::rules::Headers) -> bool {
    h.content_type.is_some()
        || h.payload_format_utf8.is_some()
        || h.response_topic.is_some()
        || h.correlation_data.is_some()
        || h.message_expiry.is_some()
        || !h.user_properties.is_empty()
}
