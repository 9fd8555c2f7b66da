//! The MQTT side: subscribe, dispatch each message through the rules, acknowledge.
//!
//! Invariant: the PUBACK of a message goes to the broker only after every action of every
//! matched rule has finished (or its failure was handled by the rule's error action).
//! A message whose actions could not be done is left unacknowledged: the broker redelivers
//! it on the next session, so nothing is lost.
//!
//! Two MQTT connections, each with its own event loop polled by a task that never awaits
//! anything else (rumqtt issues #263 and #1025): one subscribes on a persistent session with
//! manual acks; the other publishes the republish actions and reports each PUBACK back to
//! the action that waits for it.
//!
//! `session` gives both protocols (`v5`, and `v4` for MQTT 3.1.1) one shape, and `transport`
//! turns the broker URL (mqtt, mqtts, ws, wss) and the TLS files into a connection.

mod session;
mod transport;
mod v4;
mod v5;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::actions::republish::PublishRequest;
use crate::actions::s3_store::Stores;
use crate::actions::{file, s3, ActionError, Effect};
use crate::config::{Protocol, Settings};
use crate::engine::{Engine, Plan};
use crate::sql::eval::MqttProperties;
use session::{Client, Event, EventLoop, Message, Role};

/// The capacity of the subscribing connection's request queue (acks); see `run`.
const ACK_QUEUE: usize = 65_536;

/// Counters, logged at shutdown.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub acknowledged: AtomicU64,
    pub left_unacknowledged: AtomicU64,
    pub action_failures: AtomicU64,
    pub connection_errors: AtomicU64,
}

/// Runs until `shutdown` is cancelled, then drains in-flight messages.
pub async fn run(
    settings: Settings,
    engine: Engine,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::default());
    // Before connecting: bad S3 settings stop topicrule before it takes any message.
    let s3 = Stores::for_rules(&settings.s3, engine.rules()).await?;
    let filters = subscriptions(&engine, settings.broker.shared_group.as_deref())?;
    if settings.broker.protocol == Protocol::V311 {
        v4::warn_about_mqtt5_headers(engine.rules());
    }
    // The request queue of the subscribing connection carries the acks. rumqttc drains it
    // one request per poll while it reads up to ten packets, so under a flood acks pile up
    // here until the broker's flow control pauses it: the queue is sized so that a worker
    // never waits for room (an ack is a few bytes).
    let (sub_client, sub_loop) = session::connect(&settings, Role::Subscriber, ACK_QUEUE)?;
    let (pub_client, pub_loop) = session::connect(&settings, Role::Publisher, 1024)?;
    let pending = Arc::new(PendingAcks::default());
    let publisher = Publisher {
        client: pub_client.clone(),
        pending: pending.clone(),
        order: tokio::sync::Mutex::new(()),
    };
    let (dispatch_tx, mut dispatch_rx) =
        tokio::sync::mpsc::channel::<Message>(usize::from(settings.router.max_in_flight));

    let pollers = TaskTracker::new();
    let max_backlog = 4 * usize::from(settings.router.max_in_flight);
    pollers.spawn(poll_subscriber(
        sub_loop,
        sub_client.clone(),
        filters,
        dispatch_tx,
        max_backlog,
        shutdown.clone(),
        stats.clone(),
    ));
    let publisher_stop = CancellationToken::new();
    pollers.spawn(poll_publisher(
        pub_loop,
        pending,
        publisher_stop.clone(),
        stats.clone(),
    ));

    let worker = Arc::new(Worker {
        engine,
        publisher,
        base_dir: settings.file.base_dir.clone(),
        s3,
        attempts: settings.router.action_attempts.max(1),
        ack: sub_client.clone(),
        stats: stats.clone(),
        shutdown: shutdown.clone(),
    });
    let in_flight = Arc::new(Semaphore::new(usize::from(settings.router.max_in_flight)));
    let tasks = TaskTracker::new();
    while let Some(publish) = dispatch_rx.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let worker = worker.clone();
        tasks.spawn(async move {
            worker.process(publish).await;
            drop(permit);
        });
    }
    tasks.close();
    let grace = Duration::from_secs(settings.router.shutdown_grace);
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            "in-flight messages did not finish within {grace:?}; the broker will redeliver them"
        );
    }
    sub_client.disconnect().await;
    pub_client.disconnect().await;
    publisher_stop.cancel();
    pollers.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), pollers.wait()).await;
    Ok(stats)
}

/// The filters to subscribe to. With a shared group, they go through `$share/<group>/`, so
/// that each message reaches one instance of the group; except the filters starting with
/// `$` (Basic Ingest's `$aws/rules/...`, FROM on `$aws/...`): mosquitto 2.0 delivers no
/// `$` topic to a shared subscription, so sharing them would silently drop those messages;
/// unshared, every instance processes them (at least once, never lost).
fn subscriptions(engine: &Engine, group: Option<&str>) -> anyhow::Result<Vec<String>> {
    let filters = engine.subscriptions();
    let Some(group) = group else {
        return Ok(filters);
    };
    if group.is_empty() || group.contains(['/', '+', '#']) {
        anyhow::bail!("invalid shared_group `{group}`: a name without `/`, `+` or `#`");
    }
    tracing::info!(
        "shared group `{group}`: filters on `$` topics ($aws/rules/... too) are not shared; every instance gets their messages"
    );
    Ok(filters
        .into_iter()
        .map(|f| {
            if f.starts_with('$') {
                f
            } else {
                format!("$share/{group}/{f}")
            }
        })
        .collect())
}

/// Polls the subscribing connection: (re)subscribes on every connection, forwards each
/// message to the workers. Stops taking messages when `shutdown` is cancelled.
///
/// It keeps polling while the workers are busy, because the acknowledgements the workers
/// queue reach the broker only through this loop: a loop that waited for the workers while
/// they waited for it would deadlock (rumqtt #263, #1025). Messages that arrive meanwhile
/// wait in `backlog`; past `max_backlog` the loop stops reading the network until the
/// workers catch up, which pushes back on the broker through TCP. The broker's own flow
/// control (the receive maximum topicrule announces) normally keeps the backlog far below.
async fn poll_subscriber(
    mut event_loop: EventLoop,
    client: Client,
    filters: Vec<String>,
    dispatch: tokio::sync::mpsc::Sender<Message>,
    max_backlog: usize,
    shutdown: CancellationToken,
    stats: Arc<Stats>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut backlog: VecDeque<Message> = VecDeque::new();
    loop {
        let event = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            permit = dispatch.reserve(), if !backlog.is_empty() => {
                let Ok(permit) = permit else { return };
                permit.send(backlog.pop_front().expect("backlog is not empty"));
                continue;
            }
            event = event_loop.poll(), if backlog.len() < max_backlog => event,
        };
        match event {
            Ok(Event::Connected { session_present }) => {
                backoff = Duration::from_millis(100);
                tracing::info!("connected to the broker (session present: {session_present})");
                if let Err(e) = client.try_subscribe(&filters) {
                    tracing::error!("cannot subscribe to {filters:?}: {e}");
                }
            }
            Ok(Event::Subscribed { granted, refused }) => {
                if refused > 0 {
                    stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "the broker refused {refused} of the subscriptions {filters:?}"
                    );
                }
                tracing::info!("subscribed to {granted} filter(s)");
            }
            Ok(Event::Message(publish)) => {
                stats.received.fetch_add(1, Ordering::Relaxed);
                match dispatch.try_send(publish) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(publish)) => {
                        backlog.push_back(publish)
                    }
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Ok(_) => {}
            Err(e) => {
                stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("broker connection lost: {e}; reconnecting in {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The publishes waiting for their PUBACK. `queued` holds, in request order, the waiters of
/// publishes the event loop has not sent yet; `by_pkid` those it has sent at QoS 1.
#[derive(Default)]
struct PendingAcks {
    queued: Mutex<VecDeque<oneshot::Sender<Result<(), String>>>>,
    by_pkid: Mutex<HashMap<u16, oneshot::Sender<Result<(), String>>>>,
}

impl PendingAcks {
    fn sent(&self, pkid: u16) {
        let mut by_pkid = self.by_pkid.lock().unwrap_or_else(|e| e.into_inner());
        if pkid != 0 && by_pkid.contains_key(&pkid) {
            return; // A retransmission after a reconnect: its waiter is already here.
        }
        let Some(waiter) = self
            .queued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        else {
            return;
        };
        if pkid == 0 {
            let _ = waiter.send(Ok(()));
        } else {
            by_pkid.insert(pkid, waiter);
        }
    }

    fn acknowledged(&self, pkid: u16, result: Result<(), String>) {
        if let Some(waiter) = self
            .by_pkid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pkid)
        {
            let _ = waiter.send(result);
        }
    }
}

async fn poll_publisher(
    mut event_loop: EventLoop,
    pending: Arc<PendingAcks>,
    stop: CancellationToken,
    stats: Arc<Stats>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = event_loop.poll() => event,
        };
        match event {
            Ok(Event::Sent(pkid)) => pending.sent(pkid),
            Ok(Event::Acked { pkid, result }) => pending.acknowledged(pkid, result),
            Ok(Event::Connected { .. }) => backoff = Duration::from_millis(100),
            Ok(_) => {}
            Err(e) => {
                stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("publishing connection lost: {e}; reconnecting in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Publishes republish actions and waits for the broker's acknowledgement.
struct Publisher {
    client: Client,
    pending: Arc<PendingAcks>,
    /// Keeps the waiter queue in the order of the requests given to the event loop.
    order: tokio::sync::Mutex<()>,
}

impl Publisher {
    async fn publish(&self, req: &PublishRequest) -> Result<(), ActionError> {
        let fail = |message: String| ActionError::new(&req.topic, message);
        let (tx, rx) = oneshot::channel();
        {
            let _order = self.order.lock().await;
            self.pending
                .queued
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back(tx);
            let sent = self.client.publish(req).await;
            if let Err(e) = sent {
                self.pending
                    .queued
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .pop_back();
                return Err(fail(format!("cannot publish: {e}")));
            }
        }
        match rx.await {
            Ok(result) => result.map_err(fail),
            Err(_) => Err(fail("the publishing connection closed".into())),
        }
    }
}

/// Processes messages: evaluates the rules, runs the actions, acknowledges.
struct Worker {
    engine: Engine,
    publisher: Publisher,
    base_dir: PathBuf,
    /// The S3 clients, built once at start.
    s3: Stores,
    attempts: u32,
    ack: Client,
    stats: Arc<Stats>,
    /// Cancelled at SIGINT/SIGTERM: retries stop, their messages stay unacknowledged.
    shutdown: CancellationToken,
}

/// The publisher's client id, when the broker tells it. MQTT does not carry it; the
/// embedded broker adds it to MQTT 5 messages as the user property `x-mqtt-client-id`.
fn publisher_id(properties: Option<&MqttProperties>) -> Option<&str> {
    properties?
        .user_properties
        .iter()
        .find(|(key, _)| key == "x-mqtt-client-id")
        .map(|(_, value)| value.as_str())
}

impl Worker {
    async fn process(&self, publish: Message) {
        let topic = publish.topic().into_owned();
        let properties = publish.properties();
        let clientid = publisher_id(properties.as_ref());
        let plans = self.engine.plan(
            &topic,
            publish.payload(),
            clientid,
            chrono::Utc::now().timestamp_millis(),
            properties.as_ref(),
        );
        tracing::debug!("message on `{topic}`: {} rule(s) fire", plans.len());
        let mut done = true;
        for plan in &plans {
            done &= self.run_plan(plan, &topic, publish.payload()).await;
        }
        if done {
            self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
            // The ack queue holds an ack for every message topicrule can hold (see `run`), so
            // this never waits; if it ever were full, a task of its own waits, not the worker.
            if !self.ack.try_ack(&publish) {
                let client = self.ack.clone();
                tokio::spawn(async move { client.ack(&publish).await });
            }
        } else {
            self.stats
                .left_unacknowledged
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!("a message on `{topic}` is left unacknowledged; the broker will redeliver it on the next session");
        }
    }

    /// Runs one rule's effects. Any failure runs the rule's error action, once (AWS's
    /// behaviour). An effect that failed on its sink (a store down, a full disk) is then
    /// retried until it succeeds, holding the message: it is acknowledged only when every
    /// effect is done, and the workers it keeps busy push back on the broker. A failure no
    /// retry can mend (a template that expands to a bad topic) is not retried. Returns false
    /// only when a shutdown interrupts the retries.
    async fn run_plan(&self, plan: &Plan, topic: &str, payload: &[u8]) -> bool {
        let mut failures = plan.failures.clone();
        let mut to_retry = Vec::new();
        for (name, effect) in &plan.effects {
            if let Err(e) = self.execute(effect).await {
                failures.push((*name, e));
                to_retry.push(effect);
            }
        }
        if failures.is_empty() {
            return true;
        }
        self.stats
            .action_failures
            .fetch_add(failures.len() as u64, Ordering::Relaxed);
        for (action, error) in &failures {
            tracing::warn!(
                "rule `{}`: action `{action}` failed: {}",
                plan.rule_name,
                error.message
            );
        }
        self.run_error_action(plan, topic, payload, &failures).await;
        for effect in to_retry {
            if !self.retry_until_done(&plan.rule_name, effect).await {
                return false;
            }
        }
        true
    }

    async fn run_error_action(
        &self,
        plan: &Plan,
        topic: &str,
        payload: &[u8],
        failures: &[(&'static str, ActionError)],
    ) {
        let result = match self.engine.error_effect(plan, topic, payload, failures) {
            None => return,
            Some(Ok(effect)) => self.execute(&effect).await,
            Some(Err(e)) => Err(e),
        };
        if let Err(e) = result {
            tracing::error!(
                "rule `{}`: the error action failed too: {}",
                plan.rule_name,
                e.message
            );
        }
    }

    /// Retries an effect with a growing pause (up to a minute) until it succeeds; false when
    /// topicrule shuts down first.
    async fn retry_until_done(&self, rule: &str, effect: &Effect) -> bool {
        let mut delay = Duration::from_secs(1);
        loop {
            tracing::warn!(
                "rule `{rule}`: retrying a failed action in {delay:?}; the message waits"
            );
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            if self.execute(effect).await.is_ok() {
                tracing::info!("rule `{rule}`: the action succeeded on retry");
                return true;
            }
            delay = (delay * 2).min(Duration::from_secs(60));
        }
    }

    /// Runs an effect, retrying with backoff.
    async fn execute(&self, effect: &Effect) -> Result<(), ActionError> {
        let mut delay = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let result = match effect {
                Effect::Publish(req) => self.publisher.publish(req).await,
                Effect::Append(req) => file::execute(&self.base_dir, req).await,
                Effect::Put(req) => s3::execute(&self.s3, req).await,
            };
            match result {
                Err(e) if attempt < self.attempts => {
                    tracing::debug!(
                        "attempt {attempt} failed: {}; retrying in {delay:?}",
                        e.message
                    );
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}
