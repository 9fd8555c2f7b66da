//! MQTT 5 (the default), in rumqttc's `v5` packet codec, behind the router's `session` shape.
//!
//! The subscribing session expires `session_expiry` seconds after a disconnection, and
//! announces `max_in_flight` as its receive maximum, so that the broker itself never sends
//! more unacknowledged messages than the router holds.

use bytes::{Bytes, BytesMut};
use rumqttc::v5::mqttbytes::v5::{
    ConnAckProperties, Connect, ConnectProperties, ConnectReturnCode, Filter, Login, Packet,
    PubAckReason, Publish, PublishProperties, Subscribe, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::{Error, QoS};

use super::session::{
    ConnectOptions, Incoming, Malformed, Message, Refused, Unencodable, MAX_PACKET,
};
use crate::actions::republish::PublishRequest;

const MAX: Option<u32> = Some(MAX_PACKET as u32);

pub(super) fn read(buf: &mut BytesMut) -> Result<Option<Incoming>, Malformed> {
    let packet = match Packet::read(buf, MAX) {
        Ok(packet) => packet,
        Err(Error::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(Malformed(Box::new(e))),
    };
    Ok(Some(match packet {
        Packet::ConnAck(ack) => Incoming::ConnAck {
            session_present: ack.session_present,
            refused: (ack.code != ConnectReturnCode::Success)
                .then(|| format!("the broker refused the connection: {:?}", ack.code)),
            receive_maximum: ack
                .properties
                .as_ref()
                .and_then(|p: &ConnAckProperties| p.receive_max),
        },
        Packet::Publish(publish) => Incoming::Publish(Message::V5(publish)),
        Packet::PubAck(ack) => Incoming::PubAck {
            pkid: ack.pkid,
            result: match ack.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                refusal => Err(Refused(format!("{refusal:?}"))),
            },
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
        Packet::PingResp(_) => Incoming::PingResp,
        Packet::Disconnect(d) => Incoming::Disconnect(format!(
            "{:?}{}",
            d.reason_code,
            d.properties
                .and_then(|p| p.reason_string)
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
        _ => Incoming::Other,
    }))
}

pub(super) fn connect(buf: &mut BytesMut, o: &ConnectOptions) {
    let connect = Connect {
        keep_alive: o.keep_alive_secs,
        client_id: o.client_id.clone(),
        clean_start: o.clean,
        properties: Some(ConnectProperties {
            session_expiry_interval: o.session_expiry,
            receive_maximum: o.receive_maximum,
            max_packet_size: MAX,
            ..ConnectProperties::new()
        }),
    };
    let login = o.login.as_ref().map(|(u, p)| Login::new(u, p));
    Packet::Connect(connect, None, login)
        .write(buf, MAX)
        .expect("a CONNECT is far below the packet size limit");
}

pub(super) fn subscribe(buf: &mut BytesMut, pkid: u16, filters: &[String]) {
    let mut subscribe = Subscribe::new_many(
        filters
            .iter()
            .map(|f| Filter::new(f.clone(), QoS::AtLeastOnce)),
        None,
    );
    subscribe.pkid = pkid;
    Packet::Subscribe(subscribe)
        .write(buf, MAX)
        .expect("a SUBSCRIBE is far below the packet size limit");
}

pub(super) fn unsubscribe(buf: &mut BytesMut, pkid: u16, filters: &[String]) {
    let unsubscribe = rumqttc::v5::mqttbytes::v5::Unsubscribe {
        pkid,
        filters: filters.to_vec(),
        properties: None,
    };
    Packet::Unsubscribe(unsubscribe)
        .write(buf, MAX)
        .expect("an UNSUBSCRIBE is far below the packet size limit");
}

pub(super) fn publish(
    buf: &mut BytesMut,
    req: PublishRequest,
    pkid: u16,
) -> Result<(), Unencodable> {
    let properties = PublishProperties {
        payload_format_indicator: req.payload_format_utf8.map(u8::from),
        message_expiry_interval: req.message_expiry,
        response_topic: req.response_topic,
        correlation_data: req.correlation_data.map(Into::into),
        user_properties: req.user_properties,
        content_type: req.content_type,
        ..Default::default()
    };
    let has_properties = properties != PublishProperties::default();
    let qos = if req.qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let publish = Publish {
        dup: false,
        qos,
        retain: req.retain,
        topic: Bytes::from(req.topic.into_bytes()),
        pkid: if qos == QoS::AtMostOnce { 0 } else { pkid },
        payload: req.payload,
        properties: has_properties.then_some(properties),
    };
    Packet::Publish(publish)
        .write(buf, MAX)
        .map(drop)
        .map_err(|e| Unencodable(Box::new(e)))
}
