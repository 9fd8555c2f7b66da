//! One shape over MQTT 5 (`v5.rs`) and MQTT 3.1.1 (`v4.rs`), both encoded and decoded by
//! rumqttc's packet codecs: the packets the router reads (`Incoming`) and writes, so that
//! its logic (connect, subscribe, dispatch, acknowledge, publish and match the PUBACK) is
//! written once, and each protocol's details stay in its own file.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

use crate::actions::republish::PublishRequest;
use crate::config::Protocol;
use crate::sql::eval::MqttProperties;

use super::{v4, v5};

/// The largest packet topicrule reads or writes (MQTT's own limit is 256 MB).
pub(super) const MAX_PACKET: usize = 256 * 1024 * 1024;

/// Which protocol a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codec {
    V4,
    V5,
}

impl From<Protocol> for Codec {
    fn from(protocol: Protocol) -> Codec {
        match protocol {
            Protocol::V5 => Codec::V5,
            Protocol::V311 => Codec::V4,
        }
    }
}

/// What a CONNECT says.
#[derive(Debug, Clone)]
pub(super) struct ConnectOptions {
    pub client_id: String,
    /// A new session (true), or the one the broker kept (false).
    pub clean: bool,
    pub keep_alive_secs: u16,
    pub login: Option<(String, String)>,
    /// MQTT 5: how long the broker keeps the session after a disconnection.
    pub session_expiry: Option<u32>,
    /// MQTT 5: at most this many unacknowledged QoS 1 messages from the broker.
    pub receive_maximum: Option<u16>,
}

/// A message received from the broker.
pub(super) enum Message {
    V4(rumqttc::Publish),
    V5(rumqttc::v5::mqttbytes::v5::Publish),
}

impl Message {
    pub fn topic(&self) -> Cow<'_, str> {
        match self {
            Message::V4(p) => Cow::Borrowed(&p.topic),
            Message::V5(p) => String::from_utf8_lossy(&p.topic),
        }
    }

    pub fn payload(&self) -> &Bytes {
        match self {
            Message::V4(p) => &p.payload,
            Message::V5(p) => &p.payload,
        }
    }

    /// Whether the broker marked it as a redelivery (the DUP flag).
    pub fn dup(&self) -> bool {
        match self {
            Message::V4(p) => p.dup,
            Message::V5(p) => p.dup,
        }
    }

    /// The packet id its PUBACK names; `None` at QoS 0, which has no PUBACK.
    pub fn pkid(&self) -> Option<u16> {
        let (qos, pkid) = match self {
            Message::V4(p) => (p.qos as u8, p.pkid),
            Message::V5(p) => (p.qos as u8, p.pkid),
        };
        (qos > 0).then_some(pkid)
    }

    /// The message with its own copy of its bytes, holding no share of the read buffer it
    /// was parsed from: the next read then reuses that buffer instead of allocating one.
    pub fn detached(mut self) -> Message {
        match &mut self {
            Message::V4(p) => p.payload = Bytes::copy_from_slice(&p.payload),
            Message::V5(p) => {
                p.topic = Bytes::copy_from_slice(&p.topic);
                p.payload = Bytes::copy_from_slice(&p.payload);
            }
        }
        self
    }

    /// The MQTT 5 properties; MQTT 3.1.1 has none.
    pub fn properties(&self) -> Option<MqttProperties> {
        match self {
            Message::V4(_) => None,
            Message::V5(p) => crate::engine::incoming_properties(p.properties.as_ref()),
        }
    }
}

/// Bytes from the broker that are not an MQTT packet of its protocol: the connection is
/// to be dropped.
#[derive(Debug, thiserror::Error)]
#[error("a malformed packet from the broker: {0}")]
pub(super) struct Malformed(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// A publish the codec cannot encode (a topic or property beyond MQTT's limits).
#[derive(Debug, thiserror::Error)]
#[error("cannot publish: {0}")]
pub(super) struct Unencodable(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// An MQTT 5 PUBACK with a failure reason code, the reason's name.
#[derive(Debug, thiserror::Error)]
#[error("the broker refused the publish ({0})")]
pub(super) struct Refused(pub String);

/// What the router needs to know of a packet from the broker.
pub(super) enum Incoming {
    ConnAck {
        session_present: bool,
        /// Why the broker refused the connection.
        refused: Option<String>,
        /// MQTT 5: at most this many unacknowledged QoS 1 publishes to the broker.
        receive_maximum: Option<u16>,
    },
    Publish(Message),
    /// The broker's PUBACK of a publish, or its refusal (MQTT 5 reason codes).
    PubAck {
        pkid: u16,
        result: Result<(), Refused>,
    },
    SubAck {
        granted: usize,
        refused: usize,
    },
    PingResp,
    /// The broker closes the connection, with this reason code (and reason string).
    Disconnect(String),
    Other,
}

impl Codec {
    /// The next whole packet at the front of `buf` (taken out of it); `None` until it has
    /// arrived whole. An error is a protocol violation: the connection is to be dropped.
    pub fn read(self, buf: &mut BytesMut) -> Result<Option<Incoming>, Malformed> {
        if buf.is_empty() {
            return Ok(None);
        }
        match self {
            Codec::V4 => v4::read(buf),
            Codec::V5 => v5::read(buf),
        }
    }

    pub fn connect(self, buf: &mut BytesMut, options: &ConnectOptions) {
        match self {
            Codec::V4 => v4::connect(buf, options),
            Codec::V5 => v5::connect(buf, options),
        }
    }

    /// A SUBSCRIBE of `filters` at QoS 1.
    pub fn subscribe(self, buf: &mut BytesMut, pkid: u16, filters: &[String]) {
        match self {
            Codec::V4 => v4::subscribe(buf, pkid, filters),
            Codec::V5 => v5::subscribe(buf, pkid, filters),
        }
    }

    pub fn unsubscribe(self, buf: &mut BytesMut, pkid: u16, filters: &[String]) {
        match self {
            Codec::V4 => v4::unsubscribe(buf, pkid, filters),
            Codec::V5 => v5::unsubscribe(buf, pkid, filters),
        }
    }

    /// A PUBLISH of `request` with packet id `pkid` (ignored at QoS 0). Takes the request
    /// by value: its topic, payload and headers move into the packet.
    pub fn publish(
        self,
        buf: &mut BytesMut,
        request: PublishRequest,
        pkid: u16,
    ) -> Result<(), Unencodable> {
        match self {
            Codec::V4 => v4::publish(buf, request, pkid),
            Codec::V5 => v5::publish(buf, request, pkid),
        }
    }

    pub fn puback(self, buf: &mut BytesMut, pkid: u16) {
        // The same four bytes in both protocols (MQTT 5 omits a success reason code).
        buf.extend_from_slice(&[0x40, 0x02]);
        buf.extend_from_slice(&pkid.to_be_bytes());
    }

    pub fn ping(self, buf: &mut BytesMut) {
        buf.extend_from_slice(&[0xC0, 0x00]);
    }

    pub fn disconnect(self, buf: &mut BytesMut) {
        // A normal disconnection; MQTT 5 omits the reason code 0 as well.
        buf.extend_from_slice(&[0xE0, 0x00]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(qos: u8) -> PublishRequest {
        PublishRequest {
            topic: "a/b".into(),
            payload: bytes::Bytes::from_static(b"{\"x\":1}"),
            qos,
            ..PublishRequest::default()
        }
    }

    /// What topicrule writes, its codec reads back: a publish, its PUBACK, a PINGRESP.
    #[test]
    fn packets_round_trip_in_both_protocols() {
        for codec in [Codec::V4, Codec::V5] {
            let mut buf = BytesMut::new();
            codec.publish(&mut buf, request(1), 7).unwrap();
            codec.puback(&mut buf, 7);
            buf.extend_from_slice(&[0xD0, 0x00]);
            let whole = buf.clone();
            // Byte by byte: nothing is read before the packet is whole.
            let mut partial = BytesMut::new();
            let mut read = Vec::new();
            for byte in whole {
                partial.extend_from_slice(&[byte]);
                while let Some(packet) = codec.read(&mut partial).unwrap() {
                    read.push(packet);
                }
            }
            assert_eq!(read.len(), 3, "{codec:?}");
            match &read[0] {
                Incoming::Publish(m) => {
                    assert_eq!(m.topic(), "a/b");
                    assert_eq!(&m.payload()[..], b"{\"x\":1}");
                    assert_eq!(m.pkid(), Some(7));
                    assert!(!m.dup());
                }
                _ => panic!("not a publish"),
            }
            assert!(matches!(
                read[1],
                Incoming::PubAck {
                    pkid: 7,
                    result: Ok(())
                }
            ));
            assert!(matches!(read[2], Incoming::PingResp));
        }
    }

    #[test]
    fn qos0_messages_have_no_packet_id() {
        for codec in [Codec::V4, Codec::V5] {
            let mut buf = BytesMut::new();
            codec.publish(&mut buf, request(0), 9).unwrap();
            match codec.read(&mut buf).unwrap() {
                Some(Incoming::Publish(m)) => assert_eq!(m.pkid(), None),
                _ => panic!("not a publish"),
            }
        }
    }
}
