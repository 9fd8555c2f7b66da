//! topicrule: AWS IoT Core's topic rules for any MQTT broker.
//!
//! - `sql`: the AWS IoT SQL language: parse, compile, evaluate;
//! - `template`: substitution templates (`${expr}`, `$$`) in action parameters;
//! - `topic`: MQTT topic filters, the filter trie and the covering set;
//! - `rules`: rule files (TOML and AWS rule JSON) to validated rules;
//! - `engine`: the rule set indexed by topic: a message to the effects of its rules;
//! - `actions`: republish, s3 and file, each in two steps: prepare (pure) and execute;
//! - `router`: the MQTT sessions (MQTT 5 or 3.1.1; TCP, TLS, WebSockets): subscribe,
//!   dispatch, acknowledge, reconnect, watch for stalls, shut down;
//! - `worker`: one message's way from its rules to its acknowledgement: effects, retries,
//!   error actions;
//! - `backoff`: pauses between attempts, exponential with jitter;
//! - `metrics`: Prometheus metrics, `/healthz` and `/readyz` over HTTP, status lines;
//! - `reload`: hot reload: the rule folders watched, SIGHUP, a new set only when it validates;
//! - `shadow`: the Device Shadow service: the document model, and its MQTT topics;
//! - `broker`: the embedded broker, hosted when no broker URL is configured;
//! - `config`: the engine's settings (`topicrule.toml`, `TOPICRULE_*`);
//! - `toml_read`: a TOML file read with every error it has, not only the first;
//! - `diagnostic`: errors rendered with `file:line:col`, the source line and a caret.

pub mod actions;
pub mod backoff;
pub mod broker;
pub mod config;
pub mod diagnostic;
pub mod engine;
pub mod metrics;
pub mod reload;
pub mod router;
pub mod rules;
pub mod shadow;
pub mod sql;
pub mod template;
pub mod toml_read;
pub mod topic;
pub mod worker;
