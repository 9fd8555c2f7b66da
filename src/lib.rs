//! topicrule: AWS IoT Core's topic rules for any MQTT broker.
//!
//! - `sql`: the AWS IoT SQL language: parse, compile, evaluate;
//! - `template`: substitution templates (`${expr}`, `$$`) in action parameters;
//! - `topic`: MQTT topic filters, the filter trie and the covering set;
//! - `diagnostic`: errors rendered with `file:line:col`, the source line and a caret.

pub mod diagnostic;
pub mod sql;
pub mod template;
pub mod topic;
