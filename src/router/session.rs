//! One shape over rumqttc's two clients, MQTT 5 (`v5.rs`) and MQTT 3.1.1 (`v4.rs`), so that
//! the router's logic (subscribe, dispatch, acknowledge, publish and wait for the PUBACK) is
//! written once, and each protocol's details stay in its own file.

use std::borrow::Cow;

use crate::actions::republish::PublishRequest;
use crate::config::{Protocol, Settings};
use crate::sql::eval::MqttProperties;

use super::transport;
use super::{v4, v5};

/// Which of the two connections: they differ in session and flow-control settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    /// A persistent session with manual acks.
    Subscriber,
    /// A clean session of its own (client id + `-pub`), for the republish actions.
    Publisher,
}

impl Role {
    pub fn client_id(self, settings: &Settings) -> String {
        match self {
            Role::Subscriber => settings.broker.client_id.clone(),
            Role::Publisher => format!("{}-pub", settings.broker.client_id),
        }
    }
}

/// A message received on the subscribing connection.
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

    pub fn payload(&self) -> &[u8] {
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

    /// The MQTT 5 properties; MQTT 3.1.1 has none.
    pub fn properties(&self) -> Option<MqttProperties> {
        match self {
            Message::V4(_) => None,
            Message::V5(p) => crate::engine::incoming_properties(p.properties.as_ref()),
        }
    }
}

/// What the router needs to know of an event loop's events.
pub(super) enum Event {
    Connected {
        session_present: bool,
    },
    Subscribed {
        granted: usize,
        refused: usize,
    },
    Message(Message),
    /// A publish left for the network, with its packet id (0 at QoS 0).
    Sent(u16),
    /// The broker's PUBACK of a publish, or its refusal (MQTT 5 reason codes).
    Acked {
        pkid: u16,
        result: Result<(), String>,
    },
    Other,
}

/// A client handle: cheap to clone, usable from any task.
#[derive(Clone)]
pub(super) enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// An event loop; only the task that owns it polls it. Boxed: the two differ in size.
pub(super) enum EventLoop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// A client and its event loop for `role`, in the protocol of the settings. Nothing is
/// connected until the event loop is polled.
pub(super) fn connect(
    settings: &Settings,
    role: Role,
    queue: usize,
) -> anyhow::Result<(Client, EventLoop)> {
    let endpoint = transport::endpoint(&settings.broker)?;
    let password = settings.password()?;
    Ok(match settings.broker.protocol {
        Protocol::V5 => {
            let options = v5::options(settings, endpoint, password, role);
            let (client, events) = rumqttc::v5::AsyncClient::new(options, queue);
            (Client::V5(client), EventLoop::V5(Box::new(events)))
        }
        Protocol::V311 => {
            let options = v4::options(settings, endpoint, password, role);
            let (client, events) = rumqttc::AsyncClient::new(options, queue);
            (Client::V4(client), EventLoop::V4(Box::new(events)))
        }
    })
}

impl EventLoop {
    /// The next event; an error means the connection is lost (the next poll reconnects).
    /// As cancel-safe as rumqttc's own `poll`, so it may sit in a `select!`.
    pub async fn poll(&mut self) -> Result<Event, String> {
        match self {
            EventLoop::V4(events) => events
                .poll()
                .await
                .map(v4::event)
                .map_err(|e| e.to_string()),
            EventLoop::V5(events) => events
                .poll()
                .await
                .map(v5::event)
                .map_err(|e| e.to_string()),
        }
    }
}

impl EventLoop {
    /// Polls, first waiting until `at` (a reconnection's pause). Cancel-safe: a cancelled
    /// wait is started again with the same deadline.
    pub async fn poll_after(&mut self, at: Option<std::time::Instant>) -> Result<Event, String> {
        if let Some(at) = at {
            tokio::time::sleep_until(at.into()).await;
        }
        self.poll().await
    }

    /// Drops the connection (the watchdog's recycling); the next poll reconnects.
    pub fn clean(&mut self) {
        match self {
            EventLoop::V4(events) => events.clean(),
            EventLoop::V5(events) => events.clean(),
        }
    }
}

impl Client {
    /// Queues a SUBSCRIBE of `filters` at QoS 1 without waiting (see `poll_subscriber`).
    pub fn try_subscribe(&self, filters: &[String]) -> Result<(), String> {
        match self {
            Client::V4(c) => v4::try_subscribe(c, filters),
            Client::V5(c) => v5::try_subscribe(c, filters),
        }
    }

    /// Queues the PUBACK of `message` without waiting; false when rumqttc's request queue
    /// is full (the caller keeps the message and tries again after the next poll).
    pub fn try_ack(&self, message: &Message) -> bool {
        match (self, message) {
            (Client::V4(c), Message::V4(p)) => c.try_ack(p).is_ok(),
            (Client::V5(c), Message::V5(p)) => c.try_ack(p).is_ok(),
            _ => unreachable!("a message is acknowledged on the connection it came from"),
        }
    }

    /// Queues a publish without waiting (see `publisher`, which keeps room for it).
    pub fn try_publish(&self, req: PublishRequest) -> Result<(), String> {
        match self {
            Client::V4(c) => v4::try_publish(c, req),
            Client::V5(c) => v5::try_publish(c, req),
        }
    }

    /// Queues a DISCONNECT without waiting.
    pub fn try_disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}
