//! The publishing connection: republish actions go out on it, and each waits for the
//! broker's PUBACK of its own publish.
//!
//! Invariant: a waiter is resolved only by the acknowledgement of its own publish, or failed;
//! never left waiting. One task owns the connection and is the only one that hands requests
//! to rumqttc, so it knows exactly which publishes a lost connection took with it:
//! - rumqttc sends its requests in the order it receives them and reports each as
//!   `Sent(pkid)`: the oldest unsent waiter is the one of that publish;
//! - when the connection is lost, every publish handed over and not yet acknowledged is
//!   gone (the session is clean, so rumqttc drops them at the next CONNACK): their waiters
//!   fail at once, and the action's retry policy sends them again;
//! - nothing is handed over while disconnected, so no request can outlive a connection
//!   unseen. Workers never wait longer than `timeout` (`[router] publish_timeout`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::session::{Client, Event, EventLoop};
use super::Stats;
use crate::actions::republish::PublishRequest;
use crate::actions::ActionError;
use crate::backoff::Backoff;

/// How many requests the task hands to rumqttc before their `Sent`: rumqttc's request
/// queue, which it reads only while the broker's receive maximum allows.
pub(super) const HANDED_OVER: usize = 64;

type Waiter = oneshot::Sender<Result<(), String>>;

struct Job {
    request: PublishRequest,
    done: Waiter,
}

/// The workers' handle: cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    jobs: mpsc::Sender<Job>,
    timeout: Duration,
}

impl Publisher {
    /// Publishes `request` and returns when the broker acknowledged it (at QoS 1) or it was
    /// written (at QoS 0); an error when the broker refused it, the connection was lost
    /// first, or `timeout` passed.
    pub async fn publish(&self, request: &PublishRequest) -> Result<(), ActionError> {
        let fail = |message: String| ActionError::new(&request.topic, message);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let (done, result) = oneshot::channel();
        let job = Job {
            request: request.clone(),
            done,
        };
        let timed_out = || {
            fail(format!(
                "no acknowledgement from the broker within {:?}",
                self.timeout
            ))
        };
        match tokio::time::timeout_at(deadline, self.jobs.send(job)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(_)) => return Err(fail("topicrule is stopping".into())),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline, result).await {
            Err(_) => Err(timed_out()),
            Ok(Err(_)) => Err(fail("topicrule is stopping".into())),
            Ok(Ok(result)) => result.map_err(fail),
        }
    }
}

/// The publishing connection's task and its handle.
pub(super) fn start(
    client: Client,
    event_loop: EventLoop,
    timeout: Duration,
    stop: CancellationToken,
    recycled: watch::Receiver<u64>,
    stats: Arc<Stats>,
) -> (Publisher, impl std::future::Future<Output = ()>) {
    let (jobs, queue) = mpsc::channel(HANDED_OVER);
    let task = Connection {
        client,
        event_loop,
        unsent: VecDeque::new(),
        by_pkid: HashMap::new(),
        connected: false,
        stats,
    }
    .run(queue, stop, recycled);
    (Publisher { jobs, timeout }, task)
}

struct Connection {
    client: Client,
    event_loop: EventLoop,
    /// Waiters of the publishes handed to rumqttc and not yet sent, in order.
    unsent: VecDeque<Waiter>,
    /// Waiters of the QoS 1 publishes sent and not yet acknowledged.
    by_pkid: HashMap<u16, Waiter>,
    connected: bool,
    stats: Arc<Stats>,
}

impl Connection {
    async fn run(
        mut self,
        mut queue: mpsc::Receiver<Job>,
        stop: CancellationToken,
        mut recycled: watch::Receiver<u64>,
    ) {
        let mut backoff = Backoff::reconnect();
        let mut reconnect_at: Option<Instant> = None;
        loop {
            let can_hand_over = self.connected && self.unsent.len() < HANDED_OVER;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Ok(()) = recycled.changed() => {
                    self.event_loop.clean();
                    self.connected = false;
                    self.fail_all("the connection was recycled by the watchdog");
                }
                Some(job) = queue.recv(), if can_hand_over => self.hand_over(job),
                event = self.event_loop.poll_after(reconnect_at) => match event {
                    Ok(event) => {
                        reconnect_at = None;
                        if matches!(event, Event::Connected { .. }) {
                            backoff.reset();
                            self.connected = true;
                        }
                        self.on_event(event);
                    }
                    Err(e) => {
                        self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                        let pause = backoff.pause();
                        if self.connected {
                            tracing::warn!("publishing connection lost: {e}; reconnecting in {pause:?}");
                        } else {
                            tracing::debug!("publishing connection: {e}; retrying in {pause:?}");
                        }
                        self.connected = false;
                        self.fail_all("the connection to the broker was lost before its acknowledgement");
                        reconnect_at = Some(Instant::now() + pause);
                    }
                },
            }
        }
        self.fail_all("topicrule is stopping");
        if self.connected {
            self.client.try_disconnect();
            // Let the DISCONNECT reach the broker, briefly.
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                while self.event_loop.poll().await.is_ok() {}
            })
            .await;
        }
    }

    fn hand_over(&mut self, job: Job) {
        if job.done.is_closed() {
            return; // Its worker gave up waiting (timeout): it will publish again itself.
        }
        match self.client.try_publish(job.request) {
            Ok(()) => self.unsent.push_back(job.done),
            Err(e) => {
                let _ = job.done.send(Err(format!("cannot publish: {e}")));
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Sent(pkid) => {
                let Some(waiter) = self.unsent.pop_front() else {
                    return;
                };
                if pkid == 0 {
                    let _ = waiter.send(Ok(()));
                } else {
                    self.by_pkid.insert(pkid, waiter);
                }
            }
            Event::Acked { pkid, result } => {
                if let Some(waiter) = self.by_pkid.remove(&pkid) {
                    let _ = waiter.send(result);
                }
            }
            _ => {}
        }
    }

    fn fail_all(&mut self, reason: &str) {
        for waiter in self
            .unsent
            .drain(..)
            .chain(self.by_pkid.drain().map(|(_, w)| w))
        {
            let _ = waiter.send(Err(reason.to_owned()));
        }
    }
}
