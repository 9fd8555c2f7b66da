//! What happens to one message between its arrival and its acknowledgement: the rules it
//! fires, their effects executed, the retry and error-action policy.
//!
//! Invariant: `process` returns true (acknowledge) only when every effect of every rule the
//! message fired is done, or failed in a way no retry can mend and the rule's error action
//! ran; a failure on a sink is retried until it succeeds or topicrule stops, and a message
//! interrupted by the stop returns false (left for redelivery).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use foldhash::HashMap;
use tokio_util::sync::CancellationToken;

use crate::actions::file::Files;
use crate::actions::s3::store::Stores;
use crate::actions::{s3, ActionError, Effect};
use crate::backoff::Backoff;
use crate::engine::{Engine, Plan};
use crate::metrics::ActionMetrics;
use crate::router::{Publisher, Stats};
use crate::shadow::Shadows;
use crate::sql::eval::{MqttProperties, ShadowReader};

/// Processes messages: evaluates the rules, runs the actions.
pub struct Worker {
    /// The rule set; a reload swaps it, and a message keeps the one it started with.
    pub engine: Arc<ArcSwap<Engine>>,
    pub publisher: Publisher,
    /// The `file` action's appending thread.
    pub files: Files,
    /// The S3 clients, built once at start.
    pub s3: Stores,
    /// Attempts of an effect before the error action runs.
    pub attempts: u32,
    pub stats: Arc<Stats>,
    /// What each message in flight is doing, for the watchdog.
    pub activity: Activity,
    /// Cancelled at SIGINT/SIGTERM: retries stop, their messages stay unacknowledged.
    pub shutdown: CancellationToken,
    /// The Device Shadow service, when `[shadow] enabled`.
    pub shadows: Option<Shadows>,
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
    /// Runs the rules `topic` fires; true when the message may be acknowledged.
    pub async fn process(
        &self,
        topic: &str,
        payload: &Bytes,
        properties: Option<&MqttProperties>,
    ) -> bool {
        let now = chrono::Utc::now().timestamp_millis();
        // Boxed: the shadow request's future (its file write) is large, and inline it would
        // make every message's future as large, to be moved with it.
        let mut done = match &self.shadows {
            Some(shadows) => Box::pin(self.serve_shadow(shadows, topic, payload, now)).await,
            None => true,
        };
        let engine = self.engine.load_full();
        let shadows = self.shadows.as_ref().map(|s| s as &dyn ShadowReader);
        let clientid = publisher_id(properties);
        let plans = engine.plan(topic, payload, clientid, now, properties, shadows);
        tracing::debug!("message on `{topic}`: {} rule(s) fire", plans.len());
        if plans.is_empty() {
            return done;
        }
        let id = self.activity.start(topic);
        for plan in &plans {
            done &= self.run_plan(&engine, id, plan, topic, payload).await;
        }
        self.activity.finish(id);
        if !done {
            tracing::warn!("a message on `{topic}` is left unacknowledged; the broker will redeliver it on the next session");
        }
        done
    }

    /// Answers a shadow request (any other topic passes); false when its change could not
    /// be kept or its answers not published: the broker then redelivers the request.
    async fn serve_shadow(
        &self,
        shadows: &Shadows,
        topic: &str,
        payload: &[u8],
        now_ms: i64,
    ) -> bool {
        let answers = match shadows.handle(topic, payload, now_ms / 1000).await {
            None => return true,
            Some(Ok(answers)) => answers,
            Some(Err(e)) => {
                tracing::error!("shadow request on `{topic}`: {e}");
                return false;
            }
        };
        for answer in answers {
            if let Err(e) = self.execute(&Effect::Publish(answer), None).await {
                tracing::warn!("shadow request on `{topic}`: cannot answer: {}", e.message);
                return false;
            }
        }
        true
    }

    /// Runs one rule's effects. Any failure runs the rule's error action, once (AWS's
    /// behaviour). An effect that failed on its sink (a store down, a full disk) is then
    /// retried until it succeeds, holding the message: it is acknowledged only when every
    /// effect is done, and the workers it keeps busy push back on the broker. A failure no
    /// retry can mend (a template that expands to a bad topic) is not retried. Returns false
    /// only when a shutdown interrupts the retries.
    async fn run_plan(
        &self,
        engine: &Engine,
        id: u64,
        plan: &Plan,
        topic: &str,
        payload: &[u8],
    ) -> bool {
        let metrics = engine.metrics(plan.rule);
        let mut failures = plan.failures.clone();
        for (name, _) in &failures {
            if let Some(action) = metrics.action(name) {
                action.failed.inc();
            }
        }
        let mut to_retry = Vec::new();
        for (name, effect) in &plan.effects {
            self.activity.step(id, &plan.rule_name, name, false);
            let counters = metrics.action(name);
            if let Err(e) = self.execute(effect, counters).await {
                failures.push((*name, e));
                to_retry.push((*name, effect, counters));
            }
        }
        if failures.is_empty() {
            return true;
        }
        metrics.errors.inc_by(failures.len() as u64);
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
        self.run_error_action(engine, plan, topic, payload, &failures)
            .await;
        for (name, effect, counters) in to_retry {
            self.activity.step(id, &plan.rule_name, name, true);
            if !self
                .retry_until_done(&plan.rule_name, effect, counters)
                .await
            {
                return false;
            }
        }
        true
    }

    async fn run_error_action(
        &self,
        engine: &Engine,
        plan: &Plan,
        topic: &str,
        payload: &[u8],
        failures: &[(&'static str, ActionError)],
    ) {
        let result = match engine.error_effect(plan, topic, payload, failures) {
            None => return,
            Some(Ok(effect)) => self.execute(&effect, None).await,
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
    async fn retry_until_done(
        &self,
        rule: &str,
        effect: &Effect,
        metrics: Option<&ActionMetrics>,
    ) -> bool {
        let mut backoff = Backoff::sink();
        loop {
            let delay = backoff.pause();
            tracing::warn!(
                "rule `{rule}`: retrying a failed action in {delay:?}; the message waits"
            );
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            if let Some(metrics) = metrics {
                metrics.retries.inc();
            }
            if self.execute(effect, metrics).await.is_ok() {
                tracing::info!("rule `{rule}`: the action succeeded on retry");
                return true;
            }
        }
    }

    /// Runs an effect, retrying with backoff; counts its attempts and time in `metrics`
    /// (none for an error action).
    async fn execute(
        &self,
        effect: &Effect,
        metrics: Option<&ActionMetrics>,
    ) -> Result<(), ActionError> {
        let start = Instant::now();
        let mut backoff = Backoff::attempts();
        let mut attempt = 1;
        let result = loop {
            let result = match effect {
                Effect::Publish(req) => self.publisher.publish(req).await,
                Effect::Append(req) => self.files.append(req).await,
                // Boxed: the S3 client's future is many kilobytes, and inline it would make
                // every message's future as large, copied whole when the message starts.
                Effect::Put(req) => Box::pin(s3::execute(&self.s3, req)).await,
            };
            match result {
                Err(e) if attempt < self.attempts && !self.shutdown.is_cancelled() => {
                    if let Some(metrics) = metrics {
                        metrics.failed.inc();
                        metrics.retries.inc();
                    }
                    let delay = backoff.pause();
                    tracing::debug!(
                        "attempt {attempt} failed: {}; retrying in {delay:?}",
                        e.message
                    );
                    tokio::select! {
                        _ = self.shutdown.cancelled() => {}
                        _ = tokio::time::sleep(delay) => {}
                    }
                    attempt += 1;
                }
                other => break other,
            }
        };
        if let Some(metrics) = metrics {
            match &result {
                Ok(()) => metrics.succeeded.inc(),
                Err(_) => metrics.failed.inc(),
            };
            metrics.duration.observe(start.elapsed().as_secs_f64());
        }
        result
    }
}

/// What each message in flight is doing: its topic, and the rule and action it waits on.
/// The watchdog reads it when nothing progresses.
#[derive(Default)]
pub struct Activity {
    next_id: AtomicU64,
    doing: Mutex<HashMap<u64, Doing>>,
}

/// One message in flight.
#[derive(Debug, Clone)]
pub struct Doing {
    pub topic: String,
    pub since: Instant,
    /// The rule and action it is on, and since when.
    pub step: Option<(Arc<str>, &'static str, Instant)>,
    /// Whether that action is being retried after a failure of its sink: a known wait,
    /// not a stall.
    pub retrying: bool,
}

impl Activity {
    fn start(&self, topic: &str) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let doing = Doing {
            topic: topic.to_owned(),
            since: Instant::now(),
            step: None,
            retrying: false,
        };
        self.lock().insert(id, doing);
        id
    }

    fn step(&self, id: u64, rule: &Arc<str>, action: &'static str, retrying: bool) {
        if let Some(doing) = self.lock().get_mut(&id) {
            if !matches!(&doing.step, Some((r, a, _)) if r == rule && *a == action) {
                doing.step = Some((rule.clone(), action, Instant::now()));
            }
            doing.retrying = retrying;
        }
    }

    fn finish(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// How many messages are in flight.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The messages in flight, oldest first.
    pub fn snapshot(&self) -> Vec<Doing> {
        let mut all: Vec<Doing> = self.lock().values().cloned().collect();
        all.sort_by_key(|d| d.since);
        all
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Doing>> {
        self.doing.lock().unwrap_or_else(|e| e.into_inner())
    }
}
