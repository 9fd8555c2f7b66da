//! What an operator watches: Prometheus metrics, health and readiness over HTTP
//! (`[metrics] listen`), and a status line in the log every `[metrics] status_interval`.
//!
//! Invariant: the message path only adds to counters it already holds. A rule's counters
//! are plain atomics in its rule set ([`RuleMetrics`], a few words a rule: no label, no
//! allocation of their own), read through the running set at scrape time; the router's own
//! counters ([`Stats`]) likewise. A reload carries each remaining rule's counts over, so a
//! rule that stays keeps counting.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode as encode_text;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::engine::Engine;
use crate::router::Stats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
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

type Durations = Family<KindLabel, Histogram, fn() -> Histogram>;

/// The labelled metrics that are not a rule's: few series each.
struct Families {
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
    duration: Durations::new_with_constructor(action_seconds),
    reloads: Family::default(),
    spool_batches: Family::default(),
    spool_bytes: Family::default(),
});

/// A counter the message path adds to: one atomic, read at scrape time.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one rule, held by the rule set beside the rule.
#[derive(Debug)]
pub struct RuleMetrics {
    /// Messages whose topic matched the rule's FROM.
    pub matched: Count,
    /// Messages the rule fired on (its WHERE held).
    pub fired: Count,
    /// Actions of the rule that failed (the error action then runs).
    pub errors: Count,
    /// By action kind (AWS's name): actions of one kind in one rule share them.
    actions: Box<[ActionMetrics]>,
}

/// The counters of a rule's actions of one kind.
#[derive(Debug)]
pub struct ActionMetrics {
    kind: &'static str,
    pub succeeded: Count,
    /// Attempts that failed, each one (the action is retried).
    pub failed: Count,
    pub retries: Count,
    /// Seconds from the first attempt to the last one's end, by action kind (shared by
    /// every rule: a histogram a rule would cost more than the rule).
    pub duration: Histogram,
}

impl RuleMetrics {
    /// Counters at 0 for a rule with these actions (by their AWS names).
    pub fn new(actions: impl IntoIterator<Item = &'static str>) -> RuleMetrics {
        let mut kinds: Vec<&'static str> = Vec::new();
        for kind in actions {
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        let actions = kinds.into_iter().map(|kind| ActionMetrics {
            kind,
            succeeded: Count::default(),
            failed: Count::default(),
            retries: Count::default(),
            duration: FAMILIES
                .duration
                .get_or_create_owned(&KindLabel { action: kind }),
        });
        RuleMetrics {
            matched: Count::default(),
            fired: Count::default(),
            errors: Count::default(),
            actions: actions.collect(),
        }
    }

    /// The counters of the rule's actions of kind `action`.
    pub fn action(&self, action: &str) -> Option<&ActionMetrics> {
        self.actions.iter().find(|a| a.kind == action)
    }

    /// Adds the counts of `old`, the same rule in the set a reload replaced.
    pub fn carry_over(&self, old: &RuleMetrics) {
        self.matched.inc_by(old.matched.get());
        self.fired.inc_by(old.fired.get());
        self.errors.inc_by(old.errors.get());
        for before in old.actions.iter() {
            if let Some(now) = self.action(before.kind) {
                now.succeeded.inc_by(before.succeeded.get());
                now.failed.inc_by(before.failed.get());
                now.retries.inc_by(before.retries.get());
            }
        }
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
pub async fn serve(
    listener: tokio::net::TcpListener,
    stats: Arc<Stats>,
    engine: Arc<ArcSwap<Engine>>,
) {
    let registry = Arc::new(registry(stats.clone(), engine));
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
            match encode_text(&mut text, registry) {
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

/// The registry of one run: the labelled families, the rules' counters (through the
/// running set, `engine`) and the router's.
fn registry(stats: Arc<Stats>, engine: Arc<ArcSwap<Engine>>) -> Registry {
    let f = &*FAMILIES;
    let mut r = Registry::with_prefix("topicrule");
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
    r.register_collector(Box::new(Rules(engine)));
    r.register_collector(Box::new(Router(stats)));
    r
}

/// The rules' counters, read through the running set at each scrape.
struct Rules(Arc<ArcSwap<Engine>>);

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rules")
    }
}

type RuleCount = fn(&RuleMetrics) -> &Count;
type ActionCount = fn(&ActionMetrics) -> &Count;

impl Collector for Rules {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let engine = self.0.load();
        let rules = || {
            engine
                .rules()
                .iter()
                .enumerate()
                .map(|(i, r)| (r, engine.metrics(i)))
        };
        let by_rule: [(&str, &str, RuleCount); 3] = [
            (
                "rule_matched",
                "Messages whose topic matched the rule's FROM",
                |m| &m.matched,
            ),
            (
                "rule_fired",
                "Messages the rule fired on (its WHERE held)",
                |m| &m.fired,
            ),
            (
                "rule_errors",
                "Actions of the rule that failed, so that its error action ran",
                |m| &m.errors,
            ),
        ];
        for (name, help, count) in by_rule {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (rule, metrics) in rules() {
                let labels = [("rule", &*rule.name)];
                ConstCounter::new(count(metrics).get()).encode(family.encode_family(&labels)?)?;
            }
        }
        let by_action: [(&str, &str, ActionCount); 3] = [
            ("action_succeeded", "Actions done", |m| &m.succeeded),
            ("action_failed", "Attempts of an action that failed", |m| {
                &m.failed
            }),
            (
                "action_retries",
                "Attempts of an action after a failed one",
                |m| &m.retries,
            ),
        ];
        for (name, help, count) in by_action {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (rule, metrics) in rules() {
                for action in metrics.actions.iter() {
                    let labels = [("rule", &*rule.name), ("action", action.kind)];
                    ConstCounter::new(count(action).get())
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let size = ConstGauge::new(engine.rules().len() as i64);
        let help = "Rules in the running rule set";
        size.encode(encoder.encode_descriptor("rules", help, None, size.metric_type())?)?;
        Ok(())
    }
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
/// acks and failures, and how many are pending.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_carries_a_rules_counts_over() {
        let old = RuleMetrics::new(["RepublishAction", "FileAction", "RepublishAction"]);
        assert_eq!(old.actions.len(), 2, "one set of counters a kind");
        old.matched.inc_by(5);
        old.fired.inc_by(4);
        old.action("FileAction").unwrap().failed.inc();
        let new = RuleMetrics::new(["FileAction", "S3Action"]);
        new.fired.inc();
        new.carry_over(&old);
        assert_eq!((new.matched.get(), new.fired.get()), (5, 5));
        assert_eq!(new.action("FileAction").unwrap().failed.get(), 1);
        assert_eq!(new.action("S3Action").unwrap().failed.get(), 0);
        assert!(new.action("RepublishAction").is_none());
    }
}
