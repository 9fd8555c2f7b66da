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

use super::session::{Client, Event, EventLoop, Message};
use super::Stats;
use crate::backoff::Backoff;

/// A message, the connection it arrived on, and its place in that connection's stream.
pub struct Delivery {
    pub message: Message,
    pub generation: u64,
    pub seq: u64,
}

/// The acknowledgements of the current connection. A finished message waits in `window`
/// until every earlier one has finished, so that PUBACKs leave in the order the messages
/// came (MQTT 3.1.1 section 4.6); then in `unsent` until rumqttc's request queue has room
/// (it takes one request a poll, and the window can release hundreds at once).
#[derive(Default)]
struct Acks {
    /// The connection the messages came on: bumped when it is lost.
    generation: u64,
    next_seq: u64,
    /// The seq of the first slot of `window`.
    base: u64,
    /// A slot a message received on this connection; filled when it finished.
    window: VecDeque<Option<Message>>,
    unsent: VecDeque<Message>,
}

impl Acks {
    /// Tags a message received now.
    fn received(&mut self, message: Message) -> Delivery {
        self.window.push_back(None);
        self.next_seq += 1;
        Delivery {
            message,
            generation: self.generation,
            seq: self.next_seq - 1,
        }
    }

    /// A message finished: its ack, and those of the later ones that finished before it,
    /// become ready. False when it came on a connection since lost.
    fn finished(&mut self, done: Delivery) -> bool {
        if done.generation != self.generation {
            return false;
        }
        self.window[(done.seq - self.base) as usize] = Some(done.message);
        while let Some(Some(_)) = self.window.front() {
            self.base += 1;
            self.unsent.extend(self.window.pop_front().flatten());
        }
        true
    }

    /// Hands the ready acks to rumqttc while it has room; returns how many.
    fn send(&mut self, client: &Client) -> u64 {
        let mut sent = 0;
        while let Some(message) = self.unsent.pop_front() {
            if !client.try_ack(&message) {
                self.unsent.push_front(message);
                break;
            }
            sent += 1;
        }
        sent
    }

    /// The connection is lost: rumqttc dropped the acks it had not sent, and the broker
    /// redelivers every message not acknowledged; the finished ones that lose their ack
    /// are counted in `acks_dropped`.
    fn connection_lost(&mut self, stats: &Stats) {
        self.generation += 1;
        let finished = self.window.iter().flatten().count() + self.unsent.len();
        stats
            .acks_dropped
            .fetch_add(finished as u64, Ordering::Relaxed);
        self.window.clear();
        self.unsent.clear();
        self.base = self.next_seq;
    }
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
    /// leaves later messages unacknowledged for redelivery); acknowledges the messages that
    /// come back `finished` until `close`, so that those finishing during the shutdown grace
    /// are acknowledged.
    pub async fn run(
        mut self,
        dispatch: mpsc::Sender<Delivery>,
        mut finished: mpsc::Receiver<Delivery>,
        shutdown: CancellationToken,
        close: CancellationToken,
        mut recycled: watch::Receiver<u64>,
    ) {
        let mut dispatch = Some(dispatch);
        let mut backlog: VecDeque<Delivery> = VecDeque::new();
        let mut acks = Acks::default();
        let mut connected_before = false;
        let mut connected = false;
        let mut backoff = Backoff::reconnect();
        let mut reconnect_at: Option<Instant> = None;
        loop {
            if dispatch.is_some() && shutdown.is_cancelled() {
                dispatch = None; // The router sees the end of its queue.
                backlog.clear(); // Left unacknowledged: redelivered on the next session.
            }
            let sent = acks.send(&self.client);
            self.stats.acknowledged.fetch_add(sent, Ordering::Relaxed);
            // Not biased: a stream of finished messages must not starve the poll, which is
            // what drains rumqttc's request queue.
            tokio::select! {
                _ = close.cancelled() => break,
                Ok(()) = recycled.changed() => {
                    self.event_loop.clean();
                    acks.connection_lost(&self.stats);
                    connected = false;
                    reconnect_at = None;
                }
                Some(done) = finished.recv(), if acks.unsent.is_empty() => {
                    if !acks.finished(done) {
                        self.stats.acks_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                permit = reserve(&dispatch), if !backlog.is_empty() => {
                    if let Some(permit) = permit {
                        permit.send(backlog.pop_front().expect("the backlog is not empty"));
                    }
                }
                // Past `max_backlog`, only to hand rumqttc the acks waiting for room: the
                // poll is what drains its request queue.
                event = self.event_loop.poll_after(reconnect_at), if backlog.len() < self.max_backlog || !acks.unsent.is_empty() => match event {
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
                            backlog.push_back(acks.received(message));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        acks.connection_lost(&self.stats);
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
        acks.send(&self.client);
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
