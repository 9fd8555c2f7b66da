//! The publishing connection: a clean session of its own (client id + `-pub`) for the
//! republish actions, driven by one task.
//!
//! Invariant: a publish's waiter is resolved only by the PUBACK of its own packet id on the
//! connection it was sent on, by the loss of that connection (an error: the action's retry
//! policy publishes again), or by its deadline (`publish_timeout`); never by another
//! publish's acknowledgement, and never left waiting. Publishes queue while the connection
//! is down and leave in the order they were asked for.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, ConnectError, Lost};
use super::session::{Refused, Unencodable};
use super::Stats;
use crate::actions::republish::PublishRequest;
use crate::actions::ActionError;
use crate::backoff::Backoff;

type Waiter = oneshot::Sender<Result<(), PublishError>>;

/// Why a publish was not acknowledged.
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Unencodable(#[from] Unencodable),
    #[error("no acknowledgement from the broker within {0:?}")]
    Timeout(Duration),
    #[error("the connection to the broker was lost before its acknowledgement")]
    Lost,
    #[error("topicrule is stopping")]
    Stopping,
}

/// A publish asked for, and who waits for its PUBACK.
struct Job {
    request: PublishRequest,
    done: Waiter,
    since: Instant,
}

/// The publishes asked for and not yet taken by the publishing task, and how to wake it.
/// Bounded without a limit of its own: a message's effects run one after the other, so each
/// of the (at most `max_in_flight`) messages being processed waits on one publish at most.
#[derive(Default)]
struct Outbox {
    jobs: VecDeque<Job>,
    waker: Option<Waker>,
    closed: bool,
}

/// Publishes through the publishing connection; cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    outbox: Arc<Mutex<Outbox>>,
}

impl Publisher {
    /// Publishes `request` and waits for the broker's PUBACK (at QoS 0: for it to be
    /// written), at most `[router] publish_timeout`.
    pub async fn publish(&self, request: &PublishRequest) -> Result<(), ActionError> {
        let fail = |e: PublishError| ActionError::new(&request.topic, e.to_string());
        let (done, result) = oneshot::channel();
        let waker = {
            let mut outbox = lock(&self.outbox);
            if outbox.closed {
                return Err(fail(PublishError::Stopping));
            }
            outbox.jobs.push_back(Job {
                request: request.clone(),
                done,
                since: Instant::now(),
            });
            outbox.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        match result.await {
            Err(_) => Err(fail(PublishError::Stopping)),
            Ok(result) => result.map_err(fail),
        }
    }
}

fn lock(outbox: &Mutex<Outbox>) -> std::sync::MutexGuard<'_, Outbox> {
    outbox.lock().unwrap_or_else(|e| e.into_inner())
}

/// The publisher handle, and the task to spawn that owns the connection.
pub(super) fn start(
    conn: Conn,
    max_in_flight: u16,
    timeout: Duration,
    stop: CancellationToken,
    stats: Arc<Stats>,
) -> (Publisher, impl std::future::Future<Output = ()>) {
    let outbox = Arc::new(Mutex::new(Outbox::default()));
    let task = Connection {
        conn,
        outbox: outbox.clone(),
        queued: VecDeque::new(),
        in_flight: HashMap::new(),
        next_pkid: 0,
        quota: usize::from(max_in_flight),
        max_in_flight: usize::from(max_in_flight),
        timeout,
        stats,
    }
    .run(stop);
    (Publisher { outbox }, task)
}

struct Connection {
    conn: Conn,
    outbox: Arc<Mutex<Outbox>>,
    /// Taken from the outbox, not sent yet (the connection is down, or the broker's
    /// receive maximum is reached).
    queued: VecDeque<Job>,
    /// Sent at QoS 1, waiting for their PUBACK, by packet id; the waiter is gone once its
    /// deadline passed (the packet id stays taken until the PUBACK).
    in_flight: HashMap<u16, (Option<Waiter>, Instant)>,
    next_pkid: u16,
    /// At most this many publishes wait for a PUBACK (ours, or the broker's receive
    /// maximum if lower).
    quota: usize,
    max_in_flight: usize,
    timeout: Duration,
    stats: Arc<Stats>,
}

/// Why a session ended.
enum End {
    Stop,
    Lost(Lost),
}

/// How many places in the broker's window (its receive maximum) publishes that wait for
/// room need before they leave, at most.
const SEND_BATCH: usize = 8;

/// Whether the queued publishes leave now, with `free` places in a window of `window`: at
/// once when they all fit; when they do not (the broker's window is full, under load),
/// once a batch of places is free (half a small window), rather than one publish with
/// each PUBACK. One at a time, each publish took a write that woke the broker, and each
/// PUBACK a wake-up and a read of its own: at full load at QoS 1, 84,000 of the 90,000
/// writes for 100,000 republishes carried one publish; in batches, 12,000 writes. The
/// PUBACKs of the publishes in flight free the places: nothing waits for a timer.
fn leave_now(free: usize, queued: usize, window: usize) -> bool {
    queued <= free || free >= SEND_BATCH.min(window.div_ceil(2))
}

impl Connection {
    async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Backoff::reconnect();
        let mut stopped = pin!(stop.cancelled());
        loop {
            let connected = tokio::select! {
                _ = stopped.as_mut() => break,
                connected = self.conn.connect() => connected,
            };
            let end = match connected {
                Ok(connected) => {
                    backoff.reset();
                    self.quota = connected.receive_maximum.map_or(self.max_in_flight, |m| {
                        self.max_in_flight.min(usize::from(m))
                    });
                    poll_fn(|cx| self.poll_session(cx, stopped.as_mut())).await
                }
                Err(e) => {
                    if matches!(e, ConnectError::Refused(_)) {
                        tracing::error!(
                            "the broker refused the publishing connection `{}` (the broker's ACL must allow this client id too): {e}",
                            self.conn.client_id()
                        );
                    }
                    End::Lost(e.into())
                }
            };
            let End::Lost(e) = end else { break };
            self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
            let pause = backoff.pause();
            if self.conn.is_connected() {
                tracing::warn!("publishing connection lost: {e}; reconnecting in {pause:?}");
            } else {
                tracing::debug!("publishing connection: {e}; retrying in {pause:?}");
            }
            self.conn.drop_connection();
            self.fail_in_flight(|| PublishError::Lost);
            // While it waits, the publishes asked for meet their deadline.
            let deadline = tokio::time::Instant::now() + pause;
            loop {
                tokio::select! {
                    _ = stopped.as_mut() => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => self.expire(),
                }
            }
            if stop.is_cancelled() {
                break;
            }
        }
        lock(&self.outbox).closed = true;
        self.fail_in_flight(|| PublishError::Stopping);
        self.queued.clear();
        lock(&self.outbox).jobs.clear();
        self.conn.disconnect(Duration::from_millis(200)).await;
    }

    /// Drives a connection until it is lost or topicrule stops.
    fn poll_session(
        &mut self,
        cx: &mut Context<'_>,
        mut stopped: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Poll<End> {
        loop {
            if stopped.as_mut().poll(cx).is_ready() {
                return Poll::Ready(End::Stop);
            }
            let mut progress = false;
            match self.conn.poll_read(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(End::Lost(e)),
                Poll::Ready(Ok(())) => progress = true,
                Poll::Pending => {}
            }
            loop {
                match self.conn.next_packet() {
                    Err(e) => return Poll::Ready(End::Lost(e.into())),
                    Ok(None) => break,
                    Ok(Some(super::session::Incoming::PubAck { pkid, result })) => {
                        if let Some((Some(waiter), _)) = self.in_flight.remove(&pkid) {
                            let _ = waiter.send(result.map_err(PublishError::from));
                        }
                    }
                    Ok(Some(super::session::Incoming::Disconnect(reason))) => {
                        return Poll::Ready(End::Lost(Lost::Disconnected(reason)))
                    }
                    Ok(Some(_)) => {}
                }
            }
            progress |= self.take_jobs(cx);
            self.send_queued();
            // The PUBACKs to come: the reads wait for a few of them at most (`pace`).
            self.conn.window(self.in_flight.len());
            match self.conn.poll_write(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(End::Lost(e)),
                Poll::Ready(Ok(())) | Poll::Pending => {}
            }
            match self.conn.poll_tick(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(End::Lost(e)),
                Poll::Ready(Ok(())) => {
                    progress = true;
                    self.expire();
                }
                Poll::Pending => {}
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }

    /// Moves the publishes asked for into `queued`; false (and the waker kept) when there
    /// were none.
    fn take_jobs(&mut self, cx: &mut Context<'_>) -> bool {
        let mut outbox = lock(&self.outbox);
        if outbox.jobs.is_empty() {
            outbox.waker = Some(cx.waker().clone());
            return false;
        }
        if self.queued.is_empty() {
            std::mem::swap(&mut self.queued, &mut outbox.jobs);
        } else {
            self.queued.append(&mut outbox.jobs);
        }
        true
    }

    /// Encodes the queued publishes the broker has room for into the write buffer.
    fn send_queued(&mut self) {
        if !self.conn.is_connected() {
            return;
        }
        let free = self.quota.saturating_sub(self.in_flight.len());
        if !leave_now(free, self.queued.len(), self.quota) {
            return;
        }
        while self.in_flight.len() < self.quota {
            let Some(job) = self.queued.pop_front() else {
                break;
            };
            if job.done.is_closed() {
                continue; // Its worker stopped waiting.
            }
            let qos = job.request.qos;
            let pkid = if qos == 0 { 0 } else { self.free_pkid() };
            match self
                .conn
                .codec
                .publish(&mut self.conn.out, job.request, pkid)
            {
                Err(e) => {
                    let _ = job.done.send(Err(e.into()));
                }
                Ok(()) if qos == 0 => {
                    let _ = job.done.send(Ok(()));
                }
                Ok(()) => {
                    self.in_flight.insert(pkid, (Some(job.done), job.since));
                }
            }
        }
    }

    fn free_pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.in_flight.contains_key(&self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Fails the publishes older than `publish_timeout`. One sent keeps its packet id until
    /// its PUBACK or the end of the connection, so that a late PUBACK resolves nothing else.
    fn expire(&mut self) {
        let timeout = self.timeout;
        while let Some(job) = self.queued.front() {
            if job.since.elapsed() < timeout {
                break;
            }
            let job = self.queued.pop_front().expect("not empty");
            let _ = job.done.send(Err(PublishError::Timeout(timeout)));
        }
        for (waiter, since) in self.in_flight.values_mut() {
            if since.elapsed() >= timeout {
                if let Some(waiter) = waiter.take() {
                    let _ = waiter.send(Err(PublishError::Timeout(timeout)));
                }
            }
        }
    }

    fn fail_in_flight(&mut self, reason: impl Fn() -> PublishError) {
        for waiter in self.in_flight.drain().filter_map(|(_, (waiter, _))| waiter) {
            let _ = waiter.send(Err(reason()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::leave_now;

    #[test]
    fn publishes_past_the_window_leave_in_batches() {
        // Room for all: at once, however few places.
        assert!(leave_now(1, 1, 20));
        assert!(leave_now(3, 3, 20));
        // Past the window: once 8 places are free, not with each PUBACK.
        assert!(!leave_now(1, 50, 20));
        assert!(!leave_now(7, 50, 20));
        assert!(leave_now(8, 50, 20));
        // A small window: half of it; a window of one: each place.
        assert!(!leave_now(1, 50, 4));
        assert!(leave_now(2, 50, 4));
        assert!(leave_now(1, 50, 1));
        assert!(!leave_now(0, 50, 1));
    }
}
