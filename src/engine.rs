//! The rule set, ready to route: from a message to the effects of the rules it fires.
//!
//! Pure and synchronous, shared by the router (which then executes the effects) and by
//! `topicrule test` (which prints them).
//!
//! Invariant: each rule whose FROM filter matches the topic runs once per message, however
//! many of its filters overlap; the payload is decoded once, when a rule first reads it, and
//! shared by all of them.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;

use crate::actions::{ActionError, ActionSpec, Effect};
use crate::metrics::RuleMetrics;
use crate::rules::{Rule, RuleSet};
use crate::sql::compile::{basic_ingest, BASIC_INGEST_PREFIX};
use crate::sql::eval::{MqttProperties, ShadowReader};
use crate::sql::value::Payload;
use crate::sql::{Message, Value};
use crate::topic::FilterTrie;

/// Gives the memory freed while a rule set loaded and was subscribed to (the files' texts
/// and syntax trees, the filters, a set replaced) back to the system. glibc's malloc only
/// gives back the top of its heap, and the rules sit above much of what was freed: with
/// 10,000 rules, ~0.4 KB a rule of idle RSS kept for nothing. It takes 0.4 ms there; it is
/// called at a SUBACK and a reload, never per message.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists, under its locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The rule set with its topic index.
pub struct Engine {
    rules: Vec<Rule>,
    /// Each rule's counters, by its index.
    metrics: Vec<RuleMetrics>,
    trie: FilterTrie<usize>,
    /// The rules' indices in the order of their names (a map would cost a rule five times
    /// the room): a rule by name for Basic Ingest topics and reloads.
    by_name: Box<[usize]>,
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
    /// What the error action's templates need (with the payload): the topic as `topic()`
    /// saw it, the SET variables, the client id and time.
    pub seen_topic: String,
    pub vars: Vec<Value>,
    pub clientid: Option<String>,
    pub timestamp_ms: i64,
}

impl Engine {
    pub fn new(set: RuleSet) -> Engine {
        let mut trie = FilterTrie::new();
        for (i, rule) in set.rules.iter().enumerate() {
            if let Some(from) = &rule.query.from {
                trie.insert(from, i);
            }
        }
        trie.shrink_to_fit();
        let mut by_name: Box<[usize]> = (0..set.rules.len()).collect();
        by_name.sort_unstable_by(|&a, &b| set.rules[a].name.cmp(&set.rules[b].name));
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
            if let Some(before) = old.rule_named(&rule.name) {
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

    /// The index of the rule named `name`.
    fn rule_named(&self, name: &str) -> Option<usize> {
        let at = self
            .by_name
            .binary_search_by(|&i| (*self.rules[i].name).cmp(name))
            .ok()?;
        Some(self.by_name[at])
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
                .rule_named(name)
                .map(|i| (i, rest))
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
        payload: &Bytes,
        clientid: Option<&str>,
        timestamp_ms: i64,
        properties: Option<&MqttProperties>,
        shadows: Option<&dyn ShadowReader>,
    ) -> Vec<Plan> {
        let matching = self.matching(topic);
        if matching.is_empty() {
            return Vec::new();
        }
        let payload = Payload::new(payload.clone());
        let mut plans = Vec::new();
        for (index, seen) in matching {
            let rule = &self.rules[index];
            let metrics = &self.metrics[index];
            metrics.matched.inc();
            let msg = Message {
                topic: seen,
                payload: &payload,
                clientid,
                timestamp_ms,
                properties,
                rule_name: &rule.name,
                shadows,
            };
            let (output, vars) = if rule.query.is_select_star() && payload.is_canonical_object() {
                // What decoding and writing it again would give.
                (payload.bytes().clone(), Vec::new())
            } else {
                let Some(evaluation) = rule.query.evaluate(&msg) else {
                    continue;
                };
                let mut output = Vec::with_capacity(payload.bytes().len());
                evaluation.output.write_payload(&mut output, rule.version());
                (Bytes::from(output), evaluation.vars)
            };
            metrics.fired.inc();
            let mut effects = Vec::new();
            let mut failures = Vec::new();
            for action in &rule.actions {
                match action.prepare(&msg, &vars, &output) {
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
                vars,
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
        let decoded = Payload::new(Bytes::copy_from_slice(payload));
        let msg = Message {
            topic: &plan.seen_topic,
            payload: &decoded,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(sql: &str) -> Engine {
        let dir = std::env::temp_dir().join(format!("topicrule-engine-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(format!("{}.toml", sql.len()));
        let rule = format!(
            "[[rule]]\nname = \"r\"\nsql = \"{sql}\"\n[[rule.actions]]\nrepublish = {{ topic = \"out/${{temp}}\" }}\n"
        );
        std::fs::write(&file, rule).unwrap();
        let set = crate::rules::load(std::slice::from_ref(&file)).unwrap();
        std::fs::remove_file(file).unwrap();
        let _ = std::fs::remove_dir(dir);
        Engine::new(set)
    }

    fn plan(engine: &Engine, payload: &Bytes) -> Plan {
        let mut plans = engine.plan("in/a", payload, None, 0, None, None);
        assert_eq!(plans.len(), 1);
        plans.remove(0)
    }

    #[test]
    fn a_basic_ingest_topic_reaches_the_rule_it_names_only() {
        let dir = std::env::temp_dir().join(format!("topicrule-ingest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rules.toml");
        let rules: String = ["zeta", "alpha", "mid", "alpha_2"]
            .iter()
            .map(|name| {
                format!(
                    "[[rule]]\nname = \"{name}\"\nsql = \"SELECT * FROM 'in/{name}'\"\n\
                     [[rule.actions]]\nrepublish = {{ topic = \"out/{name}\" }}\n"
                )
            })
            .collect();
        std::fs::write(&file, rules).unwrap();
        let engine = Engine::new(crate::rules::load(std::slice::from_ref(&file)).unwrap());
        std::fs::remove_dir_all(dir).unwrap();
        let payload = Bytes::from_static(b"{}");
        let fired = |topic: &str| -> Vec<String> {
            let plans = engine.plan(topic, &payload, None, 0, None, None);
            plans.iter().map(|p| p.rule_name.to_string()).collect()
        };
        for name in ["zeta", "alpha", "mid", "alpha_2"] {
            assert_eq!(fired(&format!("$aws/rules/{name}/in/x")), [name]);
            assert_eq!(fired(&format!("in/{name}")), [name]);
        }
        assert!(fired("$aws/rules/alpha_/in/x").is_empty());
        assert!(fired("$aws/rules/omega/in/x").is_empty());
    }

    #[test]
    fn select_star_passes_compact_json_on_as_it_came_and_rewrites_the_rest() {
        let star = engine("SELECT * FROM 'in/#'");
        let compact = Bytes::from_static(br#"{"temp":21.5,"id":"a"}"#);
        let out = plan(&star, &compact);
        assert_eq!(out.output, compact);
        assert_eq!(out.output.as_ptr(), compact.as_ptr(), "not copied");
        // The templates still read the payload: decoded when they do.
        let Effect::Publish(publish) = &out.effects[0].1 else {
            panic!("a republish")
        };
        assert_eq!(publish.topic, "out/21.5");

        for (payload, written) in [
            (&br#"{ "temp" : 21.50 }"#[..], &br#"{"temp":21.50}"#[..]),
            (br#"{"temp":1e1}"#, br#"{"temp":10}"#),
            (br#"{"a":1,"a":2}"#, br#"{"a":2}"#),
            (b"not json", b"not json"),
        ] {
            assert_eq!(
                &plan(&star, &Bytes::from_static(payload)).output[..],
                written
            );
        }
        // Not `SELECT *` alone: evaluated.
        let filtered = engine("SELECT * FROM 'in/#' WHERE temp > 30");
        assert!(filtered
            .plan("in/a", &compact, None, 0, None, None)
            .is_empty());
    }
}
