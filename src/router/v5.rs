//! MQTT 5 (the default): rumqttc's `v5` client behind the router's `session` shape.
//!
//! The subscribing session expires `session_expiry` seconds after a disconnection, and
//! announces `max_in_flight` as its receive maximum, so that the broker itself never sends
//! more unacknowledged messages than the router holds.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{Filter, Packet, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, MqttOptions};
use rumqttc::Outgoing;

use super::session::{Event, Message, Role};
use super::transport::Endpoint;
use crate::actions::republish::PublishRequest;
use crate::config::Settings;

/// Outgoing in-flight publishes the subscribing connection has room for (it has none).
const SUBSCRIBER_OUTGOING: u16 = 8;

pub(super) fn options(
    settings: &Settings,
    endpoint: Endpoint,
    password: Option<String>,
    role: Role,
) -> MqttOptions {
    let mut o = MqttOptions::new(role.client_id(settings), endpoint.addr, endpoint.port);
    o.set_transport(endpoint.transport);
    o.set_keep_alive(Duration::from_secs(settings.broker.keep_alive.max(5)));
    o.set_max_packet_size(Some(256 * 1024 * 1024));
    if let Some(user) = &settings.broker.username {
        o.set_credentials(user.clone(), password.unwrap_or_default());
    }
    match role {
        Role::Subscriber => {
            o.set_clean_start(false);
            o.set_session_expiry_interval(Some(settings.broker.session_expiry));
            o.set_manual_acks(true);
            o.set_receive_maximum(Some(settings.router.max_in_flight.get()));
            // It publishes nothing: rumqttc's table of outgoing publishes stays small
            // (by default it is sized for 65,535 of them, 14 MB).
            o.set_outgoing_inflight_upper_limit(SUBSCRIBER_OUTGOING);
        }
        Role::Publisher => {
            o.set_clean_start(true);
            o.set_outgoing_inflight_upper_limit(settings.router.max_in_flight.get());
        }
    }
    o
}

pub(super) fn event(event: rumqttc::v5::Event) -> Event {
    use rumqttc::v5::Event::{Incoming, Outgoing as Out};
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
        Incoming(Packet::Publish(publish)) => Event::Message(Message::V5(publish)),
        Incoming(Packet::PubAck(ack)) => {
            let result = if (ack.reason as u8) < 0x80 {
                Ok(())
            } else {
                Err(format!("the broker refused the publish ({:?})", ack.reason))
            };
            Event::Acked {
                pkid: ack.pkid,
                result,
            }
        }
        Out(Outgoing::Publish(pkid)) => Event::Sent(pkid),
        _ => Event::Other,
    }
}

pub(super) fn try_subscribe(client: &AsyncClient, filters: &[String]) -> Result<(), String> {
    client
        .try_subscribe_many(
            filters
                .iter()
                .map(|f| Filter::new(f.clone(), QoS::AtLeastOnce)),
        )
        .map_err(|e| e.to_string())
}

/// Takes the request by value: its topic, payload and headers move into the packet.
pub(super) fn try_publish(client: &AsyncClient, req: PublishRequest) -> Result<(), String> {
    let qos = if req.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let properties = PublishProperties {
        payload_format_indicator: req.payload_format_utf8.map(u8::from),
        message_expiry_interval: req.message_expiry,
        response_topic: req.response_topic,
        correlation_data: req.correlation_data.map(Into::into),
        user_properties: req.user_properties,
        content_type: req.content_type,
        ..Default::default()
    };
    client
        .try_publish_with_properties(req.topic, qos, req.retain, req.payload, properties)
        .map_err(|e| e.to_string())
}
