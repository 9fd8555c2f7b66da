//! The subscribing connection: a persistent session with manual acks. One task owns it: it
//! (re)subscribes, hands each message to the workers, and sends their acknowledgements.
//!
//! Invariant: an acknowledgement goes out only on the connection its message came on. A
//! message is tagged with the connection it arrived on (`generation`); when that connection
//! is lost, the broker redelivers the message on the next one (same session, same packet
//! id), so the late ack of the old copy is dropped, never sent on the new connection where
//! its packet id may name another message. Because this task alone hands acks to rumqttc,
//! the check and the send cannot race with a reconnection.
//!
//! The task never awaits anything but its own events (rumqtt issues #263 and #1025): while
//! the workers are busy, messages wait in `backlog`; past `max_backlog` it stops reading the
//! network, which pushes back on the broker through TCP.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::publisher::poll_after;
use super::session::{Client, Event, EventLoop, Message};
use super::Stats;
use crate::backoff::Backoff;

/// A message and the connection it arrived on.
pub struct Delivery {
    pub message: Message,
    pub generation: u64,
}

/// What the task needs besides its connection.
pub(super) struct Subscriber {
    pub client: Client,
    pub event_loop: EventLoop,
    pub filters: Vec<String>,
    pub client_id: String,
    pub broker: String,
    pub max_backlog: usize,
    pub stats: Arc<Stats>,
}

impl Subscriber {
    /// Runs until `close`. Hands messages to `dispatch` until `shutdown` (then drops it, and
    /// leaves later messages unacknowledged for redelivery); sends the acks of `acks` until
    /// `close`, so that the messages finishing during the shutdown grace are acknowledged.
    pub async fn run(
        mut self,
        dispatch: mpsc::Sender<Delivery>,
        mut acks: mpsc::Receiver<Delivery>,
        shutdown: CancellationToken,
        close: CancellationToken,
        mut recycled: watch::Receiver<u64>,
    ) {
        let mut dispatch = Some(dispatch);
        let mut backlog: VecDeque<Delivery> = VecDeque::new();
        let mut generation = 0u64;
        let mut connected_before = false;
        let mut connected = false;
        let mut backoff = Backoff::reconnect();
        let mut reconnect_at: Option<Instant> = None;
        loop {
            if dispatch.is_some() && shutdown.is_cancelled() {
                dispatch = None; // The router sees the end of its queue.
                backlog.clear(); // Left unacknowledged: redelivered on the next session.
            }
            tokio::select! {
                biased;
                _ = close.cancelled() => break,
                Ok(()) = recycled.changed() => {
                    self.event_loop.clean();
                    generation += 1;
                    connected = false;
                    reconnect_at = None;
                }
                Some(done) = acks.recv() => {
                    if done.generation == generation {
                        self.client.try_ack(&done.message);
                        self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                    } else {
                        self.stats.acks_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                permit = reserve(&dispatch), if !backlog.is_empty() => {
                    if let Some(permit) = permit {
                        permit.send(backlog.pop_front().expect("the backlog is not empty"));
                    }
                }
                event = poll_after(&mut self.event_loop, reconnect_at), if backlog.len() < self.max_backlog => match event {
                    Ok(Event::Connected { session_present }) => {
                        reconnect_at = None;
                        backoff.reset();
                        connected = true;
                        self.on_connected(session_present, connected_before);
                        connected_before = true;
                    }
                    Ok(Event::Subscribed { granted, refused }) => self.on_subscribed(granted, refused),
                    Ok(Event::Message(message)) => {
                        self.stats.received.fetch_add(1, Ordering::Relaxed);
                        if message.dup() {
                            self.stats.redelivered.fetch_add(1, Ordering::Relaxed);
                        }
                        if dispatch.is_some() {
                            backlog.push_back(Delivery { message, generation });
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // rumqttc dropped the acks it had not sent; the messages of this
                        // connection will come again.
                        generation += 1;
                        self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                        let pause = backoff.pause();
                        if connected {
                            tracing::warn!("broker connection lost: {e}; reconnecting in {pause:?}");
                        } else {
                            tracing::warn!("cannot connect to the broker at {}: {e}; retrying in {pause:?}", self.broker);
                        }
                        connected = false;
                        reconnect_at = Some(Instant::now() + pause);
                    }
                },
            }
        }
        self.client.try_disconnect();
        // Let the last acks and the DISCONNECT reach the broker, briefly.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while self.event_loop.poll().await.is_ok() {}
        })
        .await;
    }

    fn on_connected(&self, session_present: bool, connected_before: bool) {
        tracing::info!(
            "connected to the broker at {} as `{}` (session present: {session_present})",
            self.broker,
            self.client_id
        );
        if !session_present && connected_before {
            tracing::warn!(
                "the broker lost topicrule's session: messages published while topicrule was disconnected may be lost; \
                 keep sessions across broker restarts (mosquitto: `persistence true`, and `max_queued_messages` high enough; \
                 MQTT 5 brokers: a session expiry, `[broker] session_expiry`)"
            );
        }
        // A present session keeps its subscriptions: subscribing again would make the
        // broker send its retained messages again.
        if session_present && connected_before {
            return;
        }
        if let Err(e) = self.client.try_subscribe(&self.filters) {
            tracing::error!("cannot subscribe to {:?}: {e}", self.filters);
        }
    }

    fn on_subscribed(&self, granted: usize, refused: usize) {
        if refused > 0 {
            self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                "the broker refused {refused} of the subscriptions {:?}",
                self.filters
            );
        }
        tracing::info!("subscribed to {granted} filter(s)");
    }
}

/// Room in the dispatch queue; `None` once the queue is dropped or closed.
async fn reserve(dispatch: &Option<mpsc::Sender<Delivery>>) -> Option<mpsc::Permit<'_, Delivery>> {
    match dispatch {
        Some(dispatch) => dispatch.reserve().await.ok(),
        None => std::future::pending().await,
    }
}
