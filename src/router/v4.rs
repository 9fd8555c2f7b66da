//! MQTT 3.1.1 (`protocol = "3.1.1"`), in rumqttc's v4 packet codec, behind the router's
//! `session` shape.
//!
//! What MQTT 3.1.1 lacks, and what takes its place:
//! - session expiry: the subscribing session is persistent (clean session off) and lasts as
//!   long as the broker keeps such sessions (mosquitto: `persistent_client_expiration`);
//! - receive maximum: the broker's own in-flight limit (mosquitto: `max_inflight_messages`)
//!   and the subscriber's bound on messages held, which stops reading the socket, bound memory
//!   instead;
//! - republish `headers` and the incoming MQTT 5 properties: dropped, with a warning at start.

use bytes::BytesMut;
use rumqttc::mqttbytes::Error;
use rumqttc::{
    ConnectReturnCode, Login, Packet, Protocol, Publish, QoS, Subscribe, SubscribeFilter,
    SubscribeReasonCode,
};

use super::session::{ConnectOptions, Incoming, Malformed, Message, Unencodable, MAX_PACKET};
use crate::actions::republish::PublishRequest;
use crate::actions::ActionSpec;
use crate::rules::Rule;

pub(super) fn read(buf: &mut BytesMut) -> Result<Option<Incoming>, Malformed> {
    let packet = match Packet::read(buf, MAX_PACKET) {
        Ok(packet) => packet,
        Err(Error::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(Malformed(Box::new(e))),
    };
    Ok(Some(match packet {
        Packet::ConnAck(ack) => Incoming::ConnAck {
            session_present: ack.session_present,
            refused: (ack.code != ConnectReturnCode::Success)
                .then(|| format!("the broker refused the connection: {:?}", ack.code)),
            receive_maximum: None,
        },
        Packet::Publish(publish) => Incoming::Publish(Message::V4(publish)),
        // MQTT 3.1.1 has no reason codes: a PUBACK is a success.
        Packet::PubAck(ack) => Incoming::PubAck {
            pkid: ack.pkid,
            result: Ok(()),
        },
        Packet::SubAck(ack) => {
            let granted = ack
                .return_codes
                .iter()
                .filter(|c| matches!(c, SubscribeReasonCode::Success(_)))
                .count();
            Incoming::SubAck {
                granted,
                refused: ack.return_codes.len() - granted,
            }
        }
        Packet::PingResp => Incoming::PingResp,
        _ => Incoming::Other,
    }))
}

pub(super) fn connect(buf: &mut BytesMut, o: &ConnectOptions) {
    let connect = rumqttc::Connect {
        protocol: Protocol::V4,
        keep_alive: o.keep_alive_secs,
        client_id: o.client_id.clone(),
        clean_session: o.clean,
        last_will: None,
        login: o.login.as_ref().map(|(u, p)| Login::new(u, p)),
    };
    Packet::Connect(connect)
        .write(buf, MAX_PACKET)
        .expect("a CONNECT is far below the packet size limit");
}

pub(super) fn subscribe(buf: &mut BytesMut, pkid: u16, filters: &[String]) {
    let mut subscribe = Subscribe::new_many(
        filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce)),
    );
    subscribe.pkid = pkid;
    Packet::Subscribe(subscribe)
        .write(buf, MAX_PACKET)
        .expect("a SUBSCRIBE is far below the packet size limit");
}

pub(super) fn unsubscribe(buf: &mut BytesMut, pkid: u16, filters: &[String]) {
    let unsubscribe = rumqttc::Unsubscribe {
        pkid,
        topics: filters.to_vec(),
    };
    Packet::Unsubscribe(unsubscribe)
        .write(buf, MAX_PACKET)
        .expect("an UNSUBSCRIBE is far below the packet size limit");
}

/// Publishes without the MQTT 5 headers, which MQTT 3.1.1 cannot carry.
pub(super) fn publish(
    buf: &mut BytesMut,
    req: PublishRequest,
    pkid: u16,
) -> Result<(), Unencodable> {
    let qos = if req.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let publish = Publish {
        dup: false,
        qos,
        retain: req.retain,
        topic: req.topic,
        pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
        payload: req.payload,
    };
    Packet::Publish(publish)
        .write(buf, MAX_PACKET)
        .map(drop)
        .map_err(|e| Unencodable(Box::new(e)))
}

/// Warns, once at start, about each rule whose republish headers MQTT 3.1.1 will drop.
pub(super) fn warn_about_mqtt5_headers(rules: &[Rule]) {
    for rule in rules {
        let uses_headers = rule
            .actions
            .iter()
            .chain(&rule.error_action)
            .any(|action| matches!(action, ActionSpec::Republish(r) if r.headers.is_some()));
        if uses_headers {
            tracing::warn!(
                "rule `{}`: republish headers are MQTT 5 only; with protocol 3.1.1 they are not sent",
                rule.name
            );
        }
    }
}
