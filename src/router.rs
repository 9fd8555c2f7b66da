//! The MQTT side: two connections, the watchdog, the shutdown.
//!
//! Invariant: the PUBACK of a message goes to the broker only after every action of every
//! matched rule has finished (or its failure was handled by the rule's error action), and
//! only on the connection the message came on. A message whose actions could not be done
//! is left unacknowledged: the broker redelivers it on the next session, so nothing is lost.
//!
//! Each connection has one task that owns it (`conn`: its stream, buffers, keep-alive) and
//! never awaits anything but its own wake-ups: `subscriber` (a persistent session with
//! manual acks; each message processed as a future of that task, acks out in arrival order)
//! and `publisher` (a clean session for the republish actions; each publish waits for its
//! own PUBACK). Every wait has a deadline, and the watchdog reconnects both when messages
//! stop progressing.
//!
//! `lanes`: the messages of one topic are processed one at a time, in arrival order,
//! different topics in parallel.
//!
//! `session` gives both protocols (`v5`, and `v4` for MQTT 3.1.1, rumqttc's packet codecs)
//! one shape, and `transport` turns the broker URL (mqtt, mqtts, ws, wss) and the TLS files
//! into a byte stream.

mod conn;
mod lanes;
mod pace;
mod publisher;
mod session;
mod subscriber;
mod transport;
mod v4;
mod v5;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::actions::file::Files;
use crate::actions::s3::store::Stores;
use crate::config::{Protocol, Settings};
use crate::engine::Engine;
use crate::worker::{Activity, Worker};
use conn::Conn;
pub use publisher::Publisher;
use session::{Codec, ConnectOptions};
use subscriber::{Subscriber, Subscriptions};

/// The router's counters and state: logged at shutdown and in status lines, served as
/// metrics and health.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages received, redeliveries included.
    pub received: AtomicU64,
    /// Messages the broker marked as redelivered (DUP): a fault made it send them again.
    pub redelivered: AtomicU64,
    pub acknowledged: AtomicU64,
    /// Messages processed whose ack was dropped because their connection was lost first:
    /// the broker redelivers them.
    pub acks_dropped: AtomicU64,
    /// Redeliveries acknowledged with the result of their first copy, not processed again.
    pub adopted: AtomicU64,
    /// Messages whose processing ended (acknowledged or not): the watchdog's progress.
    pub processed: AtomicU64,
    pub action_failures: AtomicU64,
    /// Connections to the broker lost or refused.
    pub connection_errors: AtomicU64,
    /// The rule set runs: its stores are ready and the router started.
    pub ready: AtomicBool,
    /// Connected to the broker, with the subscriptions granted (or kept by the session).
    pub subscribed: AtomicBool,
    /// The watchdog sees messages in flight and none finishing.
    pub stalled: AtomicBool,
}

impl Stats {
    /// Why topicrule is not healthy (not connected and subscribed, or stalled); None when
    /// it is.
    pub fn unhealthy(&self) -> Option<&'static str> {
        if !self.subscribed.load(Ordering::Relaxed) {
            Some("not connected to the broker (or not subscribed)")
        } else if self.stalled.load(Ordering::Relaxed) {
            Some("stalled: messages are in flight and none finishes")
        } else {
            None
        }
    }

    /// Messages received and neither acknowledged nor redelivered yet: the broker delivers
    /// them again on the next session.
    pub fn left_for_redelivery(&self) -> u64 {
        let settled =
            self.acknowledged.load(Ordering::Relaxed) + self.acks_dropped.load(Ordering::Relaxed);
        self.received
            .load(Ordering::Relaxed)
            .saturating_sub(settled)
    }
}

/// Runs until `shutdown` is cancelled, then finishes the messages in flight (for at most
/// `[router] shutdown_grace`) and disconnects.
pub async fn run(
    settings: Settings,
    engine: Engine,
    reloads: mpsc::Receiver<Engine>,
    shutdown: CancellationToken,
) -> anyhow::Result<Arc<Stats>> {
    let stats = Arc::new(Stats::default());
    // The running rule set: the worker's, swapped at a reload; the metrics read it.
    let running = Arc::new(ArcSwap::from_pointee(engine));
    let engine = running.load_full();
    if let Some(listen) = settings.metrics.listen {
        let listener = crate::metrics::bind(listen).await?;
        tracing::info!("serving /metrics, /healthz and /readyz on http://{listen}");
        let serve = crate::metrics::serve(listener, stats.clone(), running.clone());
        tokio::spawn(shutdown.clone().run_until_cancelled_owned(serve));
    }
    if let Some(interval) = settings.metrics.status_interval() {
        let status = crate::metrics::status_lines(stats.clone(), interval);
        tokio::spawn(shutdown.clone().run_until_cancelled_owned(status));
    }
    // Before connecting: bad S3 settings stop topicrule before it takes any message.
    let s3 = Stores::for_actions(&settings.s3, &settings.instance_id(), engine.actions()).await?;
    let shadows = settings.shadow.enabled;
    if !shadows {
        warn_about_shadow_reads(engine.rules());
    }
    check_group(settings.broker.shared_group.as_deref())?;
    if settings.broker.protocol == Protocol::V311 {
        v4::warn_about_mqtt5_headers(engine.rules());
    }
    let router = &settings.router;
    let max_in_flight = router.max_in_flight.get();
    let codec = Codec::from(settings.broker.protocol);
    let endpoint = transport::endpoint(&settings.broker)?;
    let login = match &settings.broker.username {
        Some(user) => Some((user.clone(), settings.password()?.unwrap_or_default())),
        None => None,
    };
    let subscribing = ConnectOptions {
        client_id: settings.broker.client_id.clone(),
        clean: false,
        keep_alive_secs: u16::try_from(settings.broker.keep_alive.max(5)).unwrap_or(u16::MAX),
        login,
        session_expiry: Some(settings.broker.session_expiry),
        receive_maximum: Some(max_in_flight),
    };
    let publishing = ConnectOptions {
        client_id: format!("{}-pub", settings.broker.client_id),
        clean: true,
        session_expiry: None,
        receive_maximum: None,
        ..subscribing.clone()
    };

    let close = CancellationToken::new();
    let recycles = Arc::new(AtomicU64::new(0));
    let (publisher, publishing) = publisher::start(
        // Its window is the PUBACKs it waits for: none yet.
        Conn::new(codec, endpoint.clone(), publishing, recycles.clone())
            .batch_reads(router.batch_reads, 0),
        max_in_flight,
        Duration::from_secs(router.publish_timeout.get()),
        close.clone(),
        stats.clone(),
    );
    let publishing = tokio::spawn(publishing);
    let worker = Arc::new(Worker {
        engine: running,
        publisher,
        files: Files::start(settings.file.base_dir.clone(), &settings.instance_id())
            .map_err(|e| anyhow::anyhow!("cannot start the file writer: {e}"))?,
        s3,
        attempts: router.action_attempts.max(1),
        stats: stats.clone(),
        activity: Activity::default(),
        shutdown: shutdown.clone(),
        shadows: shadows.then(|| crate::shadow::Shadows::new(settings.shadow.dir.clone())),
    });
    stats.ready.store(true, Ordering::Relaxed);
    let stall = Duration::from_secs(router.stall_timeout.get());
    let watchdog = tokio::spawn(watchdog(worker.clone(), stall, recycles.clone()));
    let max_in_flight = usize::from(max_in_flight);
    let grace = Duration::from_secs(router.shutdown_grace);
    let subscriber = Subscriber {
        conn: Conn::new(codec, endpoint, subscribing, recycles)
            .batch_reads(router.batch_reads, max_in_flight),
        subscriptions: Subscriptions::new(settings.broker.shared_group.clone(), shadows, reloads),
        broker: settings.broker.url.clone(),
        max_in_flight,
        // Messages beyond those being processed wait in their lanes; past this many held,
        // the subscriber stops reading, which pushes back on the broker.
        max_held: 6 * max_in_flight,
        grace,
        worker: worker.clone(),
        stats: stats.clone(),
    };
    // A task of its own, not the caller's future: a wake-up from the publishing task then
    // only queues it behind that task, where waking the caller's `block_on` future would
    // make the runtime poll its driver (one `epoll_wait` more per message).
    // S3 batch uploads stop at SIGTERM too, within the same grace as the messages in flight
    // (one after the other, a stop could take twice the grace).
    let uploads = tokio::spawn({
        let (worker, stop) = (worker.clone(), shutdown.clone());
        async move {
            stop.cancelled().await;
            worker.s3.spool().close(grace).await;
        }
    });
    let subscribed = tokio::spawn(subscriber.run(shutdown.clone())).await;
    worker.files.close(grace).await;
    watchdog.abort();
    close.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), publishing).await;
    // The subscriber also ends on its own (a refused first connection): stop them then.
    shutdown.cancel();
    let _ = uploads.await;
    match subscribed {
        Ok(Err(refused)) => Err(anyhow::anyhow!(refused)),
        _ => Ok(stats),
    }
}

/// `get_thing_shadow()` reads topicrule's own shadows: without `[shadow] enabled` it is
/// always Undefined, which a rule written for AWS would not expect.
fn warn_about_shadow_reads(rules: &[crate::rules::Rule]) {
    for rule in rules {
        if rule.query.calls.contains(&"get_thing_shadow") {
            tracing::warn!(
                "rule `{}` calls get_thing_shadow(), which reads topicrule's own shadow service: set [shadow] enabled = true, or it returns nothing",
                rule.name
            );
        }
    }
}

/// Checks that messages in flight progress. When none has finished for `stall` while some
/// are in flight, logs what they wait on; unless they wait on a sink that is known to fail
/// (an action being retried, which logs on its own), it reconnects both connections: a
/// publish waiting on a dead connection then fails and is retried, and the broker
/// redelivers what the subscribing connection had not acknowledged.
async fn watchdog(worker: Arc<Worker>, stall: Duration, recycles: Arc<AtomicU64>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1).min(stall));
    let mut last_progress = (
        worker.stats.processed.load(Ordering::Relaxed),
        Instant::now(),
    );
    loop {
        ticks.tick().await;
        let processed = worker.stats.processed.load(Ordering::Relaxed);
        if processed != last_progress.0 || worker.activity.is_empty() {
            last_progress = (processed, Instant::now());
            worker.stats.stalled.store(false, Ordering::Relaxed);
            continue;
        }
        if last_progress.1.elapsed() < stall {
            continue;
        }
        worker.stats.stalled.store(true, Ordering::Relaxed);
        last_progress.1 = Instant::now();
        let in_flight = worker.activity.snapshot();
        let Some(oldest) = in_flight.first() else {
            continue;
        };
        let step = match &oldest.step {
            Some((rule, action, since)) => format!(
                ", at rule `{rule}` action `{action}` for {:?}{}",
                since.elapsed(),
                if oldest.retrying {
                    " (retrying after a failure of its sink)"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        tracing::error!(
            "stalled: no message finished for {stall:?}, {} in flight; the oldest, on `{}`, for {:?}{step}",
            in_flight.len(),
            oldest.topic,
            oldest.since.elapsed(),
        );
        if in_flight.iter().all(|doing| !doing.retrying) {
            tracing::error!("reconnecting to the broker to recover from the stall");
            recycles.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The filters to subscribe to. With a shared group, they go through `$share/<group>/`, so
/// that each message reaches one instance of the group; except the filters starting with
/// `$` (Basic Ingest's `$aws/rules/...`, FROM on `$aws/...`): mosquitto 2.0 delivers no
/// `$` topic to a shared subscription, so sharing them would silently drop those messages;
/// unshared, every instance processes them (at least once, never lost).
fn subscriptions(engine: &Engine, group: Option<&str>, shadows: bool) -> Vec<String> {
    let mut filters = engine.subscriptions();
    if shadows {
        filters.extend(crate::shadow::FILTERS.map(String::from));
    }
    let Some(group) = group else {
        return filters;
    };
    filters
        .into_iter()
        .map(|f| {
            if f.starts_with('$') {
                f
            } else {
                format!("$share/{group}/{f}")
            }
        })
        .collect()
}

/// Checks the shared group's name, once at start.
fn check_group(group: Option<&str>) -> anyhow::Result<()> {
    let Some(group) = group else {
        return Ok(());
    };
    if group.is_empty() || group.contains(['/', '+', '#']) {
        anyhow::bail!("invalid shared_group `{group}`: a name without `/`, `+` or `#`");
    }
    tracing::info!(
        "shared group `{group}`: filters on `$` topics ($aws/rules/... too) are not shared; every instance gets their messages"
    );
    Ok(())
}
