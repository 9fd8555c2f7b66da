//! The embedded broker: hosted by topicrule when no `[broker] url` is set, so that one
//! program does the whole job on a bare machine. The router connects to it like any client.
//!
//! Invariant: only this file knows the broker crate (`mqtt5`); the rest of topicrule sees
//! `EmbeddedBroker::start`, `local_addr` and `shutdown`, so another crate can replace it.
//!
//! `mqtt5`'s defaults suit a stand-alone server, not a sidecar; `start` overrides them:
//! - it binds every interface: here only `listen` (loopback unless configured);
//! - it persists to `./mqtt_storage`: here to `data_dir`, and persistence stays on, since
//!   without it the broker silently stops queueing for offline sessions;
//! - it announces a maximum packet size of 268,435,456, one byte above what MQTT can encode,
//!   which strict v5 clients refuse (paho drops the CONNACK): here `max_packet_size`, the
//!   MQTT maximum by default;
//! - it keeps 10,000 messages a session before dropping the oldest: here
//!   `max_queued_messages`, so that a flood queued behind topicrule is absorbed, not lost.
//!
//! It also adds an `x-mqtt-client-id` user property to every v5 message it forwards; mqtt5
//! 0.49.0 has no setting to turn that off (MQTT 3.1.1 subscribers never see it).
//!
//! `Presence` publishes AWS IoT's lifecycle events for every client that connects or
//! disconnects: `$aws/events/presence/connected/<clientId>` and `.../disconnected/...`.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mqtt5::broker::config::{BrokerConfig, StorageBackend, StorageConfig};
use mqtt5::broker::router::MessageRouter;
use mqtt5::broker::{
    BrokerEventHandler, BrokerShutdownHandle, ClientConnectEvent, ClientDisconnectEvent, MqttBroker,
};
use mqtt5::packet::publish::PublishPacket;
use mqtt5::QoS;
use tokio::task::JoinHandle;

use crate::config::EmbeddedSettings;

/// How long `shutdown` waits for the broker to close its sessions and flush its storage.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);

/// Bytes queued for one session before the oldest messages are dropped; the count limit
/// (`max_queued_messages`) is the one meant to bind.
const MAX_QUEUED_BYTES: usize = 1 << 30;

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(
        "cannot start the embedded broker on {addr}: the address is already in use; if a broker \
         runs there, set `[broker] url = \"mqtt://{addr}\"` (or `--broker mqtt://{addr}`) to use it, \
         or set `[broker.embedded] listen` to another address"
    )]
    AddrInUse { addr: SocketAddr },
    #[error("cannot start the embedded broker on {addr}: {message}")]
    Start { addr: SocketAddr, message: String },
    #[error("cannot create the embedded broker's data directory `{path}`: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// The first line of the broker's error (the rest repeats its causes).
fn first_line(e: &mqtt5::error::MqttError) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// A running embedded broker.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    handle: BrokerShutdownHandle,
    task: JoinHandle<Result<(), mqtt5::error::MqttError>>,
}

impl EmbeddedBroker {
    /// Binds `settings.listen` and starts serving MQTT 3.1.1 and 5 there. A port already in
    /// use is an error now, not a retry loop later.
    pub async fn start(settings: &EmbeddedSettings) -> Result<EmbeddedBroker, BrokerError> {
        let addr = settings.listen;
        probe(addr)?;
        std::fs::create_dir_all(&settings.data_dir).map_err(|source| BrokerError::DataDir {
            path: settings.data_dir.clone(),
            source,
        })?;
        let presence = Arc::new(Presence::default());
        let config = config(settings).with_event_handler(presence.clone());
        let mut broker = MqttBroker::with_config(config)
            .await
            .map_err(|e| BrokerError::Start {
                addr,
                message: first_line(&e),
            })?;
        let _ = presence.router.set(broker.router());
        let addr = broker.local_addr().unwrap_or(addr);
        let handle = broker.shutdown_handle();
        let mut ready = broker.ready_receiver();
        let mut task = tokio::spawn(async move {
            let result = broker.run().await;
            if let Err(e) = &result {
                tracing::error!("the embedded broker stopped: {e}");
            }
            result
        });
        // It reads its stored sessions before it accepts anyone: a data directory it
        // cannot read is an error at start too, not a router retrying forever.
        tokio::select! {
            Ok(_) = ready.wait_for(|ready| *ready) => {}
            result = &mut task => {
                let message = match result {
                    Ok(Err(e)) => first_line(&e),
                    _ => "it stopped before accepting connections".to_owned(),
                };
                return Err(BrokerError::Start { addr, message });
            }
        }
        tracing::info!(
            "embedded broker listening on {addr}; its sessions and queued messages in `{}` ([broker.embedded] data_dir)",
            settings.data_dir.display()
        );
        Ok(EmbeddedBroker { addr, handle, task })
    }

    /// The address it listens on (with the actual port when `listen` asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every session and flushes the broker's storage. Call it after the router has
    /// drained, so that topicrule's own last acknowledgements reach the broker.
    pub async fn shutdown(self) {
        self.handle.shutdown();
        if tokio::time::timeout(SHUTDOWN_WAIT, self.task)
            .await
            .is_err()
        {
            tracing::warn!("the embedded broker did not stop within {SHUTDOWN_WAIT:?}");
        }
    }
}

/// AWS IoT's lifecycle events, published by the broker as AWS publishes them: a rule can
/// then keep a device's `connected` state without a Last Will.
#[derive(Default)]
struct Presence {
    /// Set once the broker exists (its configuration, which holds this, comes first).
    router: OnceLock<Arc<MessageRouter>>,
    /// Each connected client's session identifier and version number, which its
    /// disconnection repeats; removed then, so this holds the live connections only.
    connections: Mutex<HashMap<String, (String, i64)>>,
}

impl Presence {
    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, i64)>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn publish(&self, event: &str, client_id: &str, mut document: serde_json::Value) {
        let Some(router) = self.router.get() else {
            return;
        };
        document["clientId"] = client_id.into();
        document["timestamp"] = chrono::Utc::now().timestamp_millis().into();
        document["eventType"] = event.into();
        let topic = format!("$aws/events/presence/{event}/{client_id}");
        let packet = PublishPacket::new(topic, document.to_string().into_bytes(), QoS::AtLeastOnce);
        router.route_message(&packet, None).await;
    }
}

impl BrokerEventHandler for Presence {
    fn on_client_connect<'a>(
        &'a self,
        event: ClientConnectEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let session = uuid::Uuid::new_v4().simple().to_string();
            // The connection's time in ms: it grows with each connection of a client id,
            // as AWS's version number does, with nothing kept between connections.
            let version = chrono::Utc::now().timestamp_millis();
            self.connections()
                .insert(event.client_id.to_string(), (session.clone(), version));
            let document = serde_json::json!({
                "sessionIdentifier": session,
                "principalIdentifier": event.user_id.as_deref().unwrap_or(""),
                "versionNumber": version,
            });
            self.publish("connected", &event.client_id, document).await;
        })
    }

    fn on_client_disconnect<'a>(
        &'a self,
        event: ClientDisconnectEvent,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            let (session, version) = self
                .connections()
                .remove(&*event.client_id)
                .unwrap_or_default();
            let reason = if event.unexpected {
                "CONNECTION_LOST"
            } else {
                "CLIENT_INITIATED_DISCONNECT"
            };
            let document = serde_json::json!({
                "sessionIdentifier": session,
                "principalIdentifier": event.user_id.as_deref().unwrap_or(""),
                "clientInitiatedDisconnect": !event.unexpected,
                "disconnectReason": reason,
                "versionNumber": version,
            });
            self.publish("disconnected", &event.client_id, document)
                .await;
        })
    }
}

/// mqtt5's configuration: its defaults, with the four overrides described above.
fn config(settings: &EmbeddedSettings) -> BrokerConfig {
    let storage = StorageConfig::new()
        .with_backend(StorageBackend::File)
        .with_base_dir(settings.data_dir.clone())
        .with_persistence(true)
        .with_max_queued_messages_per_client(settings.max_queued_messages.max(1))
        .with_max_queued_bytes_per_client(MAX_QUEUED_BYTES);
    BrokerConfig::new()
        .with_bind_address(settings.listen)
        .with_max_packet_size(settings.max_packet_size.clamp(1024, 268_435_455) as usize)
        .with_storage(storage)
}

/// Binds `addr` once, to tell "in use" apart from other failures before the broker
/// crate turns them into text.
fn probe(addr: SocketAddr) -> Result<(), BrokerError> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(BrokerError::AddrInUse { addr }),
        Err(e) => Err(BrokerError::Start {
            addr,
            message: e.to_string(),
        }),
    }
}
