//! The rule set, ready to route: from a message to the effects of the rules it fires.
//!
//! Pure and synchronous, shared by the router (which then executes the effects) and by
//! `topicrule test` (which prints them).
//!
//! Invariant: each rule whose FROM filter matches the topic runs once per message, however
//! many of its filters overlap; the payload is decoded once and shared by all of them.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;

use crate::actions::{ActionError, ActionSpec, Effect};
use crate::metrics::RuleMetrics;
use crate::rules::{Rule, RuleSet};
use crate::sql::compile::{basic_ingest, BASIC_INGEST_PREFIX};
use crate::sql::eval::{MqttProperties, ShadowReader};
use crate::sql::{Message, Value};
use crate::topic::FilterTrie;

/// The rule set with its topic index.
pub struct Engine {
    rules: Vec<Rule>,
    /// Each rule's counters, by its index.
    metrics: Vec<RuleMetrics>,
    trie: FilterTrie<usize>,
    by_name: HashMap<Arc<str>, usize>,
}

/// What one rule does with one message.
#[derive(Debug)]
pub struct Plan {
    pub rule: usize,
    pub rule_name: Arc<str>,
    /// The rule's output message, as its actions send it.
    pub output: Bytes,
    /// The effects of the actions that expanded, with the action's AWS name.
    pub effects: Vec<(&'static str, Effect)>,
    /// The actions that failed to expand (a bad topic, a path out of the base directory).
    pub failures: Vec<(&'static str, ActionError)>,
    /// What the error action's templates need: the topic as `topic()` saw it, the SET
    /// variables, the decoded payload, the client id and time.
    pub seen_topic: String,
    pub vars: Vec<Value>,
    pub payload: Arc<Value>,
    pub clientid: Option<String>,
    pub timestamp_ms: i64,
}

impl Engine {
    pub fn new(set: RuleSet) -> Engine {
        let mut trie = FilterTrie::new();
        let mut by_name = HashMap::new();
        for (i, rule) in set.rules.iter().enumerate() {
            if let Some(from) = &rule.query.from {
                trie.insert(from, i);
            }
            by_name.insert(rule.name.clone(), i);
        }
        trie.shrink_to_fit();
        let metrics = set
            .rules
            .iter()
            .map(|rule| RuleMetrics::new(rule.actions.iter().map(|a| a.aws_name())));
        Engine {
            metrics: metrics.collect(),
            rules: set.rules,
            trie,
            by_name,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every action of every rule, error actions included.
    pub fn actions(&self) -> impl Iterator<Item = &ActionSpec> {
        self.rules
            .iter()
            .flat_map(|rule| rule.actions.iter().chain(&rule.error_action))
    }

    /// The counters of the rule at `index`.
    pub fn metrics(&self, index: usize) -> &RuleMetrics {
        &self.metrics[index]
    }

    /// Takes over the counts of the rules of `old` (the set a reload replaces) that this
    /// set still has, by name.
    pub fn carry_counts_over(&self, old: &Engine) {
        for (rule, metrics) in self.rules.iter().zip(&self.metrics) {
            if let Some(&before) = old.by_name.get(&*rule.name) {
                metrics.carry_over(&old.metrics[before]);
            }
        }
    }

    /// The filters to subscribe to: the smallest set covering every FROM filter, and each
    /// rule's Basic Ingest topics.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut filters =
            crate::topic::covering_set(self.rules.iter().filter_map(|r| r.query.from.as_deref()));
        filters.extend(
            self.rules
                .iter()
                .map(|r| format!("{BASIC_INGEST_PREFIX}{}/#", r.name)),
        );
        filters
    }

    /// The rules a topic reaches, each with the topic as its `topic()` sees it: the rule a
    /// Basic Ingest topic names, or every rule whose FROM matches (found by the trie, so the
    /// filter is not matched a second time).
    fn matching<'t>(&self, topic: &'t str) -> Vec<(usize, &'t str)> {
        if topic.starts_with(BASIC_INGEST_PREFIX) {
            let Some((name, rest)) = basic_ingest(topic) else {
                return Vec::new();
            };
            return self
                .by_name
                .get(name)
                .map(|&i| (i, rest))
                .into_iter()
                .collect();
        }
        let mut found = Vec::new();
        self.trie.matches(topic, &mut found);
        found.into_iter().map(|&i| (i, topic)).collect()
    }

    /// Evaluates every matching rule on a message and expands its actions.
    pub fn plan(
        &self,
        topic: &str,
        payload: &[u8],
        clientid: Option<&str>,
        timestamp_ms: i64,
        properties: Option<&MqttProperties>,
        shadows: Option<&dyn ShadowReader>,
    ) -> Vec<Plan> {
        let matching = self.matching(topic);
        if matching.is_empty() {
            return Vec::new();
        }
        let decoded = Arc::new(Value::from_payload(payload));
        let mut plans = Vec::new();
        for (index, seen) in matching {
            let rule = &self.rules[index];
            let metrics = &self.metrics[index];
            metrics.matched.inc();
            let msg = Message {
                topic: seen,
                payload: &decoded,
                clientid,
                timestamp_ms,
                properties,
                rule_name: &rule.name,
                shadows,
            };
            let Some(evaluation) = rule.query.evaluate(&msg) else {
                continue;
            };
            metrics.fired.inc();
            let mut output = Vec::new();
            evaluation.output.write_payload(&mut output, rule.version());
            let output = Bytes::from(output);
            let mut effects = Vec::new();
            let mut failures = Vec::new();
            for action in &rule.actions {
                match action.prepare(&msg, &evaluation.vars, &output) {
                    Ok(effect) => effects.push((action.aws_name(), effect)),
                    Err(e) => failures.push((action.aws_name(), e)),
                }
            }
            plans.push(Plan {
                rule: index,
                rule_name: rule.name.clone(),
                output,
                effects,
                failures,
                seen_topic: seen.to_owned(),
                vars: evaluation.vars,
                payload: decoded.clone(),
                clientid: clientid.map(str::to_owned),
                timestamp_ms,
            });
        }
        plans
    }

    /// The effect of the rule's error action for these failures, with AWS's error
    /// document as its message; None when the rule has no error action.
    pub fn error_effect(
        &self,
        plan: &Plan,
        topic: &str,
        payload: &[u8],
        failures: &[(&'static str, ActionError)],
    ) -> Option<Result<Effect, ActionError>> {
        let rule = &self.rules[plan.rule];
        let action = rule.error_action.as_ref()?;
        let document = error_document(
            &rule.name,
            topic,
            plan.clientid.as_deref(),
            payload,
            failures,
        );
        let msg = Message {
            topic: &plan.seen_topic,
            payload: &plan.payload,
            clientid: plan.clientid.as_deref(),
            timestamp_ms: plan.timestamp_ms,
            properties: None,
            rule_name: &rule.name,
            shadows: None,
        };
        Some(action.prepare(&msg, &plan.vars, &document.into()))
    }
}

/// AWS's error action message.
pub fn error_document(
    rule: &str,
    topic: &str,
    clientid: Option<&str>,
    payload: &[u8],
    failures: &[(&'static str, ActionError)],
) -> Vec<u8> {
    let doc = serde_json::json!({
        "ruleName": rule,
        "topic": topic,
        "clientId": clientid.unwrap_or("n/a"),
        "base64OriginalPayload": base64::engine::general_purpose::STANDARD.encode(payload),
        "failures": failures_json(failures),
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// The `failures` of AWS's error document: each failed action, its resource and why.
pub fn failures_json(failures: &[(&'static str, ActionError)]) -> serde_json::Value {
    failures
        .iter()
        .map(|(action, e)| serde_json::json!({"failedAction": action, "failedResource": e.resource, "errorMessage": e.message}))
        .collect()
}

/// The MQTT 5 properties of an incoming publish, as the SQL functions read them.
pub fn incoming_properties(
    p: Option<&rumqttc::v5::mqttbytes::v5::PublishProperties>,
) -> Option<MqttProperties> {
    let p = p?;
    Some(MqttProperties {
        content_type: p.content_type.clone(),
        payload_format_indicator: p.payload_format_indicator,
        response_topic: p.response_topic.clone(),
        correlation_data: p.correlation_data.as_ref().map(|b| b.to_vec()),
        message_expiry_interval: p.message_expiry_interval,
        user_properties: p.user_properties.clone(),
    })
}
