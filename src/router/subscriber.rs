//! The subscribing connection: a persistent session with manual acks. One task owns it: it
//! (re)subscribes, processes each message (its rules, their actions) as a future of its
//! own, and sends the acknowledgements, in the order the messages arrived.
//!
//! Invariant: an acknowledgement goes out only on the connection its message came on, and
//! only after the acknowledgements of every message that arrived before it on that
//! connection (MQTT 3.1.1, 4.6). A message is tagged with the connection it arrived on
//! (`generation`); when that connection is lost, the broker redelivers the message on the
//! next one (same session, same packet id), so the late ack of the old copy is dropped,
//! never sent on the new connection where its packet id may name another message.
//!
//! Nothing here waits on anything but this task's own wake-ups: what one read brings is
//! parsed, dispatched and answered with one write. The messages being processed are
//! futures polled by this task (no task per message); past `max_held` messages held it
//! stops reading the socket, which pushes back on the broker through TCP.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, ConnectError, Lost};
use super::lanes::Lanes;
use super::session::{Incoming, Message};
use super::Stats;
use crate::backoff::Backoff;
use crate::engine::Engine;
use crate::worker::Worker;

/// A message, the connection it arrived on, and its place in that connection's stream.
pub struct Delivery {
    pub message: Message,
    pub generation: u64,
    pub seq: u64,
}

/// A message being processed; true when it may be acknowledged.
type Processing = Pin<Box<dyn Future<Output = (Delivery, bool)> + Send>>;

/// The acknowledgements of the current connection, in arrival order.
#[derive(Default)]
struct Acks {
    next_seq: u64,
    /// The sequence number of `window[0]`.
    base: u64,
    /// Per message since `base`: its packet id (`None` at QoS 0, which has no PUBACK), and
    /// whether it finished.
    window: VecDeque<(Option<u16>, bool)>,
    /// Finished, with every earlier message: to be sent.
    ready: Vec<Option<u16>>,
}

impl Acks {
    fn received(&mut self, pkid: Option<u16>) -> u64 {
        self.window.push_back((pkid, false));
        self.next_seq += 1;
        self.next_seq - 1
    }

    fn finished(&mut self, seq: u64) {
        self.window[(seq - self.base) as usize].1 = true;
        while let Some((_, true)) = self.window.front() {
            self.base += 1;
            self.ready
                .extend(self.window.pop_front().map(|(pkid, _)| pkid));
        }
    }

    /// Forgets the connection's acks: how many finished messages lose theirs, and the
    /// messages the broker still counts as unacknowledged (by packet id).
    fn connection_lost(&mut self) -> (u64, Vec<(u16, Orphan)>) {
        let mut lost = self.ready.len() as u64;
        let mut orphans: Vec<(u16, Orphan)> = self
            .ready
            .drain(..)
            .flatten()
            .map(|p| (p, Orphan::Done))
            .collect();
        for (i, (pkid, finished)) in self.window.drain(..).enumerate() {
            lost += u64::from(finished);
            if let Some(pkid) = pkid {
                let seq = self.base + i as u64;
                orphans.push((
                    pkid,
                    if finished {
                        Orphan::Done
                    } else {
                        Orphan::Pending(seq)
                    },
                ));
            }
        }
        self.base = self.next_seq;
        (lost, orphans)
    }
}

/// A message of a lost connection the broker will redeliver (same packet id, DUP) when the
/// session is resumed: its redelivery is acknowledged with its result, not processed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orphan {
    /// Still processed, under this sequence number.
    Pending(u64),
    /// Finished: its redelivery is acknowledged at once.
    Done,
}

/// Past this many acks waiting in the write buffer, they are written at once: well within
/// the window of unacknowledged messages brokers keep for a client (mosquitto's
/// `max_inflight_messages` is 20 by default), so that it never runs dry.
const ACK_BATCH: usize = 8;

/// How long a broker host name that does not resolve is retried before the first
/// connection, for a network still coming up at boot.
const UNRESOLVED_GRACE: Duration = Duration::from_secs(5);

pub(super) struct Subscriber {
    pub conn: Conn,
    pub subscriptions: Subscriptions,
    pub broker: String,
    pub max_in_flight: usize,
    pub max_held: usize,
    pub grace: Duration,
    pub worker: Arc<Worker>,
    pub stats: Arc<Stats>,
}

/// What the subscribing session subscribes to, and the rule sets a reload brings. The
/// filters are not kept (with many rules they are a good part of the memory): they are
/// worked out from the rule set when needed, at a connection and at a reload.
pub(super) struct Subscriptions {
    pub group: Option<String>,
    /// The shadow service's filters are subscribed too.
    pub shadows: bool,
    pub reloads: mpsc::Receiver<Engine>,
    /// A reload changed the subscriptions on a connection lost since: the change may not
    /// have reached the broker, so the next connection subscribes to every filter again.
    pub unsure: bool,
    /// The packet id of the next SUBSCRIBE or UNSUBSCRIBE of a reload.
    pub next_pkid: u16,
}

impl Subscriptions {
    pub fn new(group: Option<String>, shadows: bool, reloads: mpsc::Receiver<Engine>) -> Self {
        Subscriptions {
            group,
            shadows,
            reloads,
            unsure: false,
            next_pkid: 2,
        }
    }

    /// The filters to subscribe to for `engine`'s rules.
    fn filters(&self, engine: &Engine) -> Vec<String> {
        super::subscriptions(engine, self.group.as_deref(), self.shadows)
    }

    fn pkid(&mut self) -> u16 {
        let pkid = self.next_pkid;
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(2);
        pkid
    }

    /// Swaps the worker's rule set for `engine` between two messages (those in flight
    /// finish under the set they started with) and changes the subscriptions by difference:
    /// the new filters are subscribed before the old ones go, in one write. A set the
    /// running S3 stores cannot serve is refused, and the old one kept.
    fn reload(&mut self, conn: &mut Conn, worker: &Worker, engine: Engine) {
        let running = worker.engine.load();
        let kept = running.rules().len();
        let filters = match worker.s3.serves(engine.actions()) {
            Ok(()) => self.filters(&engine),
            Err(why) => {
                tracing::error!(
                    "the new rule set is not applied: {why}; restart topicrule to apply it (keeping the {kept} rule(s) loaded)"
                );
                crate::metrics::reloaded(false);
                return;
            }
        };
        let (added, removed) = {
            let before = self.filters(&running);
            let old: HashSet<&String> = before.iter().collect();
            let new: HashSet<&String> = filters.iter().collect();
            let added: Vec<String> = filters
                .iter()
                .filter(|f| !old.contains(f))
                .cloned()
                .collect();
            let removed: Vec<String> = before
                .iter()
                .filter(|f| !new.contains(f))
                .cloned()
                .collect();
            (added, removed)
        };
        if !added.is_empty() {
            let pkid = self.pkid();
            conn.codec.subscribe(&mut conn.out, pkid, &added);
        }
        if matches!(conn.codec, super::session::Codec::V4) {
            super::v4::warn_about_mqtt5_headers(engine.rules());
        }
        let count = engine.rules().len();
        engine.carry_counts_over(&running);
        // The old set goes once no message in flight holds it; most of it is freed here.
        drop(running);
        worker.engine.store(Arc::new(engine));
        crate::engine::release_freed_memory();
        crate::metrics::reloaded(true);
        if !removed.is_empty() {
            let pkid = self.pkid();
            conn.codec.unsubscribe(&mut conn.out, pkid, &removed);
        }
        self.unsure |= !added.is_empty() || !removed.is_empty();
        tracing::info!(
            "rules reloaded: {count} rule(s) (were {kept}); {} filter(s) subscribed, {} unsubscribed",
            added.len(),
            removed.len()
        );
    }
}

/// The messages topicrule holds, and what happens to them.
struct Work {
    acks: Acks,
    lanes: Lanes,
    running: FuturesUnordered<Processing>,
    /// First messages of their lanes, waiting for one of the `max_in_flight` places.
    ready: VecDeque<Delivery>,
    /// Messages received and not finished (in `running`, `ready` or a lane).
    held: usize,
    /// Acks in the write buffer, not written yet.
    unsent_acks: usize,
    max_in_flight: usize,
    /// Past this many held, the socket is not read.
    max_held: usize,
    /// How long the messages in flight may take to finish at shutdown.
    grace: Duration,
    /// Set at shutdown: until when the messages in flight may finish.
    stopping: Option<Instant>,
    /// The unacknowledged messages of lost connections, by packet id, until the session
    /// resumes and the broker redelivers them.
    orphans: HashMap<u16, Orphan>,
    /// Redeliveries waiting for the result of their first copy: the first copy's sequence
    /// number, and the connection and sequence number to acknowledge.
    adopted: HashMap<u64, (u64, u64)>,
    worker: Arc<Worker>,
    stats: Arc<Stats>,
}

/// Why a session ended.
enum End {
    Stop,
    Lost(Lost),
}

/// The broker refused topicrule's very first connection: a mistake in the settings.
#[derive(Debug, thiserror::Error)]
pub enum Misconfigured {
    #[error("the broker at {broker} refused topicrule's connection as `{client_id}`: {why}; check [broker] username, password and client_id")]
    Refused {
        broker: String,
        client_id: String,
        why: String,
    },
    #[error("cannot connect to the broker at {broker}: {why}; check [broker] ca_file, cert_file and key_file")]
    Untrusted { broker: String, why: String },
    #[error("cannot connect to the broker at {broker}: {why}; check [broker] url (or --broker)")]
    Unresolved { broker: String, why: String },
}

impl Work {
    fn received(&mut self, message: Message, generation: u64) {
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        if message.dup() {
            self.stats.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        if self.stopping.is_some() {
            return; // Left unacknowledged: redelivered on the next session.
        }
        let pkid = message.pkid();
        let seq = self.acks.received(pkid);
        // A packet id the broker uses for a new message names no orphan any more.
        let orphan = match pkid {
            Some(p) if !self.orphans.is_empty() => {
                self.orphans.remove(&p).filter(|_| message.dup())
            }
            _ => None,
        };
        if let Some(orphan) = orphan {
            self.stats.adopted.fetch_add(1, Ordering::Relaxed);
            match orphan {
                Orphan::Done => self.acks.finished(seq),
                Orphan::Pending(first) => {
                    self.adopted.insert(first, (generation, seq));
                }
            }
            return;
        }
        self.held += 1;
        let delivery = Delivery {
            message,
            generation,
            seq,
        };
        if let Some(first) = self.lanes.enqueue(delivery) {
            self.start(first);
        }
    }

    fn start(&mut self, delivery: Delivery) {
        if self.running.len() >= self.max_in_flight {
            self.ready.push_back(delivery);
            return;
        }
        let worker = self.worker.clone();
        self.running.push(Box::pin(async move {
            let message = &delivery.message;
            let properties = message.properties();
            let done = worker
                .process(&message.topic(), message.payload(), properties.as_ref())
                .await;
            (delivery, done)
        }));
    }

    /// A message finished; `generation` is the current connection's (`None` while
    /// connecting: no ack can be sent).
    fn finished(&mut self, (delivery, done): (Delivery, bool), generation: Option<u64>) {
        self.held -= 1;
        self.stats.processed.fetch_add(1, Ordering::Relaxed);
        if done {
            if generation == Some(delivery.generation) {
                self.acks.finished(delivery.seq);
            } else {
                self.stats.acks_dropped.fetch_add(1, Ordering::Relaxed);
                self.settle_orphan(delivery.seq, delivery.message.pkid(), generation);
            }
        }
        match self.lanes.next(&delivery.message.topic()) {
            Some(next) => self.start(next),
            None => {
                if let Some(next) = self.ready.pop_front() {
                    self.start(next);
                }
            }
        }
    }

    /// A message of a lost connection finished: its redelivery on the current connection, if
    /// it came, is acknowledged; if it has not come yet, it will be at once.
    fn settle_orphan(&mut self, mut seq: u64, pkid: Option<u16>, generation: Option<u64>) {
        let Some(pkid) = pkid else { return };
        loop {
            match self.adopted.remove(&seq) {
                Some((g, redelivery)) if Some(g) == generation => {
                    self.acks.finished(redelivery);
                    return;
                }
                // Adopted on a connection lost since: its own redelivery comes later.
                Some((_, redelivery)) => seq = redelivery,
                None => {
                    if self.orphans.get(&pkid) == Some(&Orphan::Pending(seq)) {
                        self.orphans.insert(pkid, Orphan::Done);
                    }
                    return;
                }
            }
        }
    }

    /// The connection is lost: the acks not sent are dropped, and the messages they were
    /// for become orphans.
    fn connection_lost(&mut self) {
        let (dropped, orphans) = self.acks.connection_lost();
        self.stats
            .acks_dropped
            .fetch_add(dropped, Ordering::Relaxed);
        self.orphans.extend(orphans);
    }

    /// Connected again: a new session gets no redelivery, so the orphans are forgotten
    /// (their first copies still finish: nothing is lost).
    fn connected(&mut self, session_present: bool) {
        if !session_present {
            self.orphans.clear();
            self.adopted.clear();
        }
    }

    /// Stops taking messages: those waiting are dropped (the broker redelivers them), those
    /// being processed get `grace` to finish.
    fn stop(&mut self) {
        self.stopping = Some(Instant::now() + self.grace);
        let dropped = self.lanes.clear_waiting() + self.ready.len();
        self.ready.clear();
        self.held -= dropped;
    }

    /// Whether the task is done: stopping, and nothing left to finish or no time left.
    fn over(&self) -> bool {
        self.stopping
            .is_some_and(|until| self.running.is_empty() || Instant::now() >= until)
    }

    /// Waits until `until`, while the messages being processed go on; returns early when
    /// the work is over.
    async fn wait(&mut self, until: Instant, mut shutdown: Pin<&mut impl Future<Output = ()>>) {
        while !self.over() {
            let stop_at = self.stopping.unwrap_or(until);
            tokio::select! {
                _ = tokio::time::sleep_until(until.min(stop_at)) => return,
                _ = shutdown.as_mut(), if self.stopping.is_none() => self.stop(),
                Some(done) = self.running.next(), if !self.running.is_empty() => self.finished(done, None),
            }
        }
    }
}

impl Subscriber {
    /// Fails only when the broker refuses the very first connection (bad credentials, a
    /// client id it does not take): a misconfiguration, not an outage, so retrying would
    /// hide it. Refusals after a first success are retried, as any fault.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), Misconfigured> {
        let Subscriber {
            mut conn,
            mut subscriptions,
            broker,
            max_in_flight,
            max_held,
            grace,
            worker,
            stats,
        } = self;
        let mut work = Work {
            acks: Acks::default(),
            lanes: Lanes::default(),
            running: FuturesUnordered::new(),
            ready: VecDeque::new(),
            held: 0,
            unsent_acks: 0,
            max_in_flight,
            max_held,
            grace,
            stopping: None,
            orphans: HashMap::new(),
            adopted: HashMap::new(),
            worker,
            stats: stats.clone(),
        };
        let mut shutdown = pin!(shutdown.cancelled());
        let mut backoff = Backoff::reconnect();
        let mut connected_before = false;
        let started = Instant::now();
        while !work.over() {
            let connected = {
                let mut connecting = pin!(conn.connect());
                loop {
                    tokio::select! {
                        connected = &mut connecting => break Some(connected),
                        _ = shutdown.as_mut(), if work.stopping.is_none() => work.stop(),
                        Some(done) = work.running.next(), if !work.running.is_empty() => work.finished(done, None),
                    }
                    if work.over() {
                        break None;
                    }
                }
            };
            let lost = match connected {
                None => break,
                Some(Err(ConnectError::Refused(why))) if !connected_before => {
                    return Err(Misconfigured::Refused {
                        broker,
                        client_id: conn.client_id().to_owned(),
                        why,
                    });
                }
                Some(Err(ConnectError::Untrusted(why))) if !connected_before => {
                    return Err(Misconfigured::Untrusted { broker, why });
                }
                // A network that is not up yet gets a few seconds; a name that does not
                // resolve then is a mistake in the URL.
                Some(Err(ConnectError::Unresolved(why)))
                    if !connected_before && started.elapsed() >= UNRESOLVED_GRACE =>
                {
                    return Err(Misconfigured::Unresolved { broker, why });
                }
                Some(Err(e)) => format!("cannot connect to the broker at {broker}: {e}"),
                Some(Ok(connected)) => {
                    backoff.reset();
                    work.connected(connected.session_present);
                    let subscribing = on_connected(
                        &mut conn,
                        &broker,
                        &mut subscriptions,
                        &work.worker.engine.load(),
                        connected.session_present,
                        connected_before,
                    );
                    stats.subscribed.store(!subscribing, Ordering::Relaxed);
                    connected_before = true;
                    let end = poll_fn(|cx| {
                        session(
                            &mut conn,
                            &mut work,
                            &mut subscriptions,
                            cx,
                            shutdown.as_mut(),
                        )
                    })
                    .await;
                    match end {
                        End::Stop => break,
                        End::Lost(e) => {
                            work.connection_lost();
                            format!("broker connection lost: {e}")
                        }
                    }
                }
            };
            conn.drop_connection();
            stats.subscribed.store(false, Ordering::Relaxed);
            stats.connection_errors.fetch_add(1, Ordering::Relaxed);
            let pause = backoff.pause();
            tracing::warn!("{lost}; reconnecting in {pause:?}");
            work.wait(Instant::now() + pause, shutdown.as_mut()).await;
        }
        if !work.running.is_empty() {
            tracing::warn!(
                "{} message(s) did not finish within {grace:?}; they stay unacknowledged and the broker will redeliver them",
                work.running.len()
            );
        }
        conn.disconnect(Duration::from_millis(500)).await;
        Ok(())
    }
}

/// Logs the connection and subscribes when the session does not hold the subscriptions;
/// true when it subscribed (the SUBACK is to come).
fn on_connected(
    conn: &mut Conn,
    broker: &str,
    subscriptions: &mut Subscriptions,
    engine: &Engine,
    session_present: bool,
    connected_before: bool,
) -> bool {
    tracing::info!(
        "connected to the broker at {broker} as `{}` (session present: {session_present})",
        conn.client_id()
    );
    if !session_present && connected_before {
        tracing::warn!(
            "the broker lost topicrule's session: messages published while topicrule was disconnected may be lost; \
             keep sessions across broker restarts (mosquitto: `persistence true`, and `max_queued_messages` high enough; \
             MQTT 5 brokers: a session expiry, `[broker] session_expiry`)"
        );
    }
    // The filters are worked out only to be sent: with a session present, the broker has them.
    if engine.rules().is_empty() && !subscriptions.shadows {
        tracing::warn!("no rule is loaded: nothing to subscribe to until the rules are");
        false
    } else if !session_present || !connected_before || subscriptions.unsure {
        conn.codec
            .subscribe(&mut conn.out, 1, &subscriptions.filters(engine));
        subscriptions.unsure = false;
        true
    } else {
        false
    }
}

/// Drives a connection: reads and dispatches messages, polls the ones being processed,
/// writes their acks; until the connection is lost or the work is over.
fn session(
    conn: &mut Conn,
    work: &mut Work,
    subscriptions: &mut Subscriptions,
    cx: &mut Context<'_>,
    mut shutdown: Pin<&mut impl Future<Output = ()>>,
) -> Poll<End> {
    loop {
        let mut progress = false;
        if work.stopping.is_none() && shutdown.as_mut().poll(cx).is_ready() {
            work.stop();
        }
        while let Poll::Ready(Some(done)) = work.running.poll_next_unpin(cx) {
            work.finished(done, Some(conn.generation));
            progress = true;
        }
        let mut reloaded = false;
        while let Poll::Ready(Some(engine)) = subscriptions.reloads.poll_recv(cx) {
            subscriptions.reload(conn, &work.worker, engine);
            reloaded = true;
        }
        progress |= reloaded;
        let mut read = false;
        if work.held < work.max_held {
            match conn.poll_read(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(End::Lost(e)),
                Poll::Ready(Ok(())) => read = true,
                Poll::Pending => {}
            }
        }
        progress |= read;
        loop {
            match conn.next_packet() {
                Err(e) => return Poll::Ready(End::Lost(e.into())),
                Ok(None) => break,
                Ok(Some(Incoming::Publish(message))) => work.received(message, conn.generation),
                Ok(Some(Incoming::SubAck { granted, refused })) => {
                    if refused > 0 {
                        work.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("the broker refused {refused} of the subscriptions");
                    }
                    work.stats.subscribed.store(refused == 0, Ordering::Relaxed);
                    tracing::info!("subscribed to {granted} filter(s)");
                    // Set up: what the rules' loading and the subscribing freed goes back.
                    crate::engine::release_freed_memory();
                }
                Ok(Some(Incoming::Disconnect(reason))) => {
                    return Poll::Ready(End::Lost(Lost::Disconnected(reason)))
                }
                Ok(Some(Incoming::ConnAck { .. })) => {
                    return Poll::Ready(End::Lost(Lost::Unexpected("a second CONNACK")))
                }
                Ok(Some(_)) => {}
            }
        }
        if !work.acks.ready.is_empty() {
            work.stats
                .acknowledged
                .fetch_add(work.acks.ready.len() as u64, Ordering::Relaxed);
            for pkid in work.acks.ready.drain(..).flatten() {
                conn.codec.puback(&mut conn.out, pkid);
                work.unsent_acks += 1;
            }
        }
        // Acks leave together: when nothing else is being processed (no later ack to wait
        // for), when `ACK_BATCH` are waiting (the broker's window must not run dry), and at
        // the latest within a millisecond. Each write on loopback wakes the broker; one a
        // message cost more CPU than the messages themselves.
        let now =
            work.held == 0 || work.unsent_acks >= ACK_BATCH || reloaded || work.stopping.is_some();
        let flushed = match conn.poll_write_soon(cx, now) {
            Poll::Ready(Err(e)) => return Poll::Ready(End::Lost(e)),
            Poll::Ready(Ok(())) => {
                work.unsent_acks = 0;
                true
            }
            Poll::Pending => false,
        };
        if flushed && work.over() {
            return Poll::Ready(End::Stop);
        }
        match conn.poll_tick(cx) {
            Poll::Ready(Err(e)) => return Poll::Ready(End::Lost(e)),
            Poll::Ready(Ok(())) => progress = true,
            Poll::Pending => {}
        }
        if !progress {
            return Poll::Pending;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_leave_in_arrival_order() {
        let mut acks = Acks::default();
        let seqs: Vec<u64> = [Some(7), None, Some(9)]
            .into_iter()
            .map(|pkid| acks.received(pkid))
            .collect();
        acks.finished(seqs[2]);
        acks.finished(seqs[1]);
        assert!(acks.ready.is_empty(), "an ack overtook an earlier message");
        acks.finished(seqs[0]);
        assert_eq!(acks.ready, [Some(7), None, Some(9)]);
    }

    #[test]
    fn a_lost_connection_leaves_orphans_by_packet_id() {
        let mut acks = Acks::default();
        let first = acks.received(Some(1));
        let second = acks.received(Some(2));
        acks.received(None);
        acks.finished(second);
        let (lost, orphans) = acks.connection_lost();
        assert_eq!(lost, 1, "one finished message loses its ack");
        assert_eq!(
            orphans,
            [(1, Orphan::Pending(first)), (2, Orphan::Done)],
            "the QoS 0 message is no orphan"
        );
        // The next connection's messages start a new window.
        let next = acks.received(Some(1));
        acks.finished(next);
        assert_eq!(acks.ready, [Some(1)]);
    }
}
