//! What an operator watches: Prometheus metrics, health and readiness over HTTP
//! (`[metrics] listen`), and a status line in the log every `[metrics] status_interval`.
//!
//! Invariant: the message path only adds to counters it already holds. The labelled
//! counters of a rule and its actions are looked up once, when a rule set is built
//! ([`RuleMetrics::new`]), never per message; the router's own counters ([`Stats`]) are
//! plain atomics read at scrape time.
//!
//! The families are process-wide (one rule set runs at a time, and a reload looks its
//! rules' counters up again, so a rule that stays keeps counting); the HTTP endpoint and
//! its registry belong to one router run.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::router::Stats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    rule: String,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpoolLabel {
    spool: String,
}

type Durations = Family<ActionLabel, Histogram, fn() -> Histogram>;

/// Every labelled metric topicrule keeps.
struct Families {
    matched: Family<RuleLabel, Counter>,
    fired: Family<RuleLabel, Counter>,
    rule_errors: Family<RuleLabel, Counter>,
    succeeded: Family<ActionLabel, Counter>,
    failed: Family<ActionLabel, Counter>,
    retries: Family<ActionLabel, Counter>,
    duration: Durations,
    reloads: Family<ResultLabel, Counter>,
    spool_batches: Family<SpoolLabel, Gauge>,
    spool_bytes: Family<SpoolLabel, Gauge>,
}

/// Seconds an action takes, from a local file append (tens of microseconds) to a put into
/// a store far away, retries included.
fn action_seconds() -> Histogram {
    Histogram::new([
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0, 30.0,
    ])
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    matched: Family::default(),
    fired: Family::default(),
    rule_errors: Family::default(),
    succeeded: Family::default(),
    failed: Family::default(),
    retries: Family::default(),
    duration: Durations::new_with_constructor(action_seconds),
    reloads: Family::default(),
    spool_batches: Family::default(),
    spool_bytes: Family::default(),
});

/// The counters of one rule, held by the rule set.
#[derive(Debug)]
pub struct RuleMetrics {
    /// Messages whose topic matched the rule's FROM.
    pub matched: Counter,
    /// Messages the rule fired on (its WHERE held).
    pub fired: Counter,
    /// Actions of the rule that failed (the error action then runs).
    pub errors: Counter,
    actions: Vec<(&'static str, ActionMetrics)>,
}

/// The counters of one action of a rule (actions of one kind in one rule share them).
#[derive(Debug)]
pub struct ActionMetrics {
    pub succeeded: Counter,
    /// Attempts that failed, each one (the action is retried).
    pub failed: Counter,
    pub retries: Counter,
    /// Seconds from the first attempt to the last one's end.
    pub duration: Histogram,
}

impl RuleMetrics {
    /// The counters of the rule `rule` with these actions (by their AWS names).
    pub fn new(rule: &str, actions: impl IntoIterator<Item = &'static str>) -> RuleMetrics {
        let f = &*FAMILIES;
        let label = RuleLabel { rule: rule.into() };
        let actions = actions.into_iter().map(|action| {
            let label = ActionLabel {
                rule: rule.into(),
                action,
            };
            let metrics = ActionMetrics {
                succeeded: f.succeeded.get_or_create_owned(&label),
                failed: f.failed.get_or_create_owned(&label),
                retries: f.retries.get_or_create_owned(&label),
                duration: f.duration.get_or_create_owned(&label),
            };
            (action, metrics)
        });
        RuleMetrics {
            matched: f.matched.get_or_create_owned(&label),
            fired: f.fired.get_or_create_owned(&label),
            errors: f.rule_errors.get_or_create_owned(&label),
            actions: actions.collect(),
        }
    }

    /// The counters of the rule's action named `action`.
    pub fn action(&self, action: &str) -> Option<&ActionMetrics> {
        self.actions
            .iter()
            .find(|(a, _)| *a == action)
            .map(|(_, m)| m)
    }
}

/// Counts a reload: applied, or refused (the old set kept).
pub fn reloaded(applied: bool) {
    let result = if applied { "applied" } else { "refused" };
    FAMILIES
        .reloads
        .get_or_create(&ResultLabel { result })
        .inc();
}

/// The gauges of an S3 batch spool: batches closed and not stored yet, and their bytes.
pub fn spool_gauges(spool: &str) -> (Gauge, Gauge) {
    let label = SpoolLabel {
        spool: spool.into(),
    };
    (
        FAMILIES.spool_batches.get_or_create_owned(&label),
        FAMILIES.spool_bytes.get_or_create_owned(&label),
    )
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener`.
pub async fn serve(listener: tokio::net::TcpListener, stats: Arc<Stats>) {
    let registry = Arc::new(registry(stats.clone()));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("metrics endpoint: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (registry, stats) = (registry.clone(), stats.clone());
        let service = hyper::service::service_fn(move |request: Request<_>| {
            let response = respond(&registry, &stats, &request);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        // A scraper that keeps its connection open, or never sends, is cut after a while.
        tokio::spawn(tokio::time::timeout(Duration::from_secs(60), connection));
    }
}

/// Binds the metrics endpoint's address.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} for [metrics] listen: {e}"))
}

fn respond(
    registry: &Registry,
    stats: &Stats,
    request: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, registry) {
                Ok(()) => (
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                ),
                Err(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "cannot encode the metrics\n".into(),
                ),
            }
        }
        "/healthz" => match stats.unhealthy() {
            None => (StatusCode::OK, "text/plain", "ok\n".into()),
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("{why}\n"),
            ),
        },
        "/readyz" if stats.ready.load(Ordering::Relaxed) => {
            (StatusCode::OK, "text/plain", "ok\n".into())
        }
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "the rule set is not running yet\n".into(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: /metrics, /healthz and /readyz are served\n".into(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// The registry of one run: the labelled families and the router's counters.
fn registry(stats: Arc<Stats>) -> Registry {
    let f = &*FAMILIES;
    let mut r = Registry::with_prefix("topicrule");
    r.register(
        "rule_matched",
        "Messages whose topic matched the rule's FROM",
        f.matched.clone(),
    );
    r.register(
        "rule_fired",
        "Messages the rule fired on (its WHERE held)",
        f.fired.clone(),
    );
    r.register(
        "rule_errors",
        "Actions of the rule that failed, so that its error action ran",
        f.rule_errors.clone(),
    );
    r.register("action_succeeded", "Actions done", f.succeeded.clone());
    r.register(
        "action_failed",
        "Attempts of an action that failed",
        f.failed.clone(),
    );
    r.register(
        "action_retries",
        "Attempts of an action after a failed one",
        f.retries.clone(),
    );
    r.register(
        "action_duration_seconds",
        "Time an action took, its retries included",
        f.duration.clone(),
    );
    // Both series from the start, so that a rate over them is 0, not missing.
    for result in ["applied", "refused"] {
        f.reloads.get_or_create_owned(&ResultLabel { result });
    }
    r.register(
        "reloads",
        "Rule set reloads, applied or refused",
        f.reloads.clone(),
    );
    r.register(
        "s3_spool_batches",
        "S3 batches closed and not stored yet",
        f.spool_batches.clone(),
    );
    r.register(
        "s3_spool_bytes",
        "Bytes (uncompressed) of the S3 batches closed and not stored yet",
        f.spool_bytes.clone(),
    );
    r.register_collector(Box::new(Router(stats)));
    r
}

/// The router's counters, read at each scrape.
#[derive(Debug)]
struct Router(Arc<Stats>);

impl Collector for Router {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let s = &self.0;
        let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let counters = [
            ("messages_received", "Messages received, redeliveries included", get(&s.received)),
            ("messages_redelivered", "Messages the broker sent again (DUP) after a fault", get(&s.redelivered)),
            ("messages_acknowledged", "Messages acknowledged to the broker", get(&s.acknowledged)),
            ("acks_dropped", "Messages processed whose connection was lost before their ack: the broker redelivers them", get(&s.acks_dropped)),
            ("broker_reconnects", "Connections to the broker lost or refused", get(&s.connection_errors)),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let flag = |flag: &std::sync::atomic::AtomicBool| i64::from(flag.load(Ordering::Relaxed));
        let gauges = [
            (
                "messages_pending",
                "Messages received and not acknowledged yet",
                s.left_for_redelivery() as i64,
            ),
            (
                "rules",
                "Rules in the running rule set",
                get(&s.rules) as i64,
            ),
            (
                "broker_connected",
                "1 while connected to the broker and subscribed",
                flag(&s.subscribed),
            ),
            (
                "stalled",
                "1 while the watchdog sees messages in flight and none finishing",
                flag(&s.stalled),
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// Logs a status line every `interval` in which messages arrived: how many, the rate, the
/// acks and failures, and what is in flight.
pub async fn status_lines(stats: Arc<Stats>, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    let totals = |s: &Stats| {
        [&s.received, &s.acknowledged, &s.action_failures].map(|c| c.load(Ordering::Relaxed))
    };
    let mut last = (totals(&stats), Instant::now());
    loop {
        ticks.tick().await;
        let now = totals(&stats);
        let [received, acknowledged, failures] =
            std::array::from_fn(|i| now[i].saturating_sub(last.0[i]));
        let secs = last.1.elapsed().as_secs_f64();
        last = (now, Instant::now());
        if received == 0 && acknowledged == 0 {
            continue;
        }
        let mut line = format!(
            "status: {received} received ({:.1} msg/s), {acknowledged} acknowledged, {failures} action failure(s) in the last {secs:.0} s",
            received as f64 / secs.max(0.001)
        );
        let pending = stats.left_for_redelivery();
        if pending > 0 {
            let _ = write!(line, "; {pending} pending");
        }
        tracing::info!("{line}");
    }
}
