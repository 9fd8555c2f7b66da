//! Actions: what a rule does with its output message.
//!
//! Every action has the same shape, in two steps:
//! 1. `prepare` (pure, synchronous): expand the templates against the input message and
//!    turn the action into an [`Effect`], a concrete request (this topic, this payload;
//!    this file, this line; this bucket, this key). `topicrule test` stops here and prints the effects.
//! 2. `execute` (async): carry the effect out against a sink. It returns only when the
//!    effect is done (published and acknowledged, written), so that the router can
//!    acknowledge the input message after it.
//!
//! Each action has one home that holds its settings type, its checks, `prepare` and
//! `execute`: `republish`, `file`, `s3` (with `s3::batch`, the batch mode, and `s3::store`,
//! the clients). [`ActionSpec`] is the sum of them; `rules` builds it from rule files and
//! depends on this module, never the reverse.
//!
//! Invariant: a template that expands to something unsafe (a topic with wildcards, a path
//! out of the base directory, an object key with a `..` segment) fails the action in
//! `prepare`; nothing is ever sent there.

pub(crate) mod durable;
pub mod file;
pub mod republish;
pub mod s3;

use bytes::Bytes;

use crate::sql::{Message, Value};
use file::FileAppend;
use republish::Republish;
use s3::S3Put;

/// What an action does, with its templates compiled.
#[derive(Debug, Clone)]
pub enum ActionSpec {
    /// Publish the output message to a topic.
    Republish(Box<Republish>),
    /// Append the output message as one line to a file under the base directory.
    File(FileAppend),
    /// Write the output message as one object to an S3-compatible store.
    S3(Box<S3Put>),
}

impl ActionSpec {
    /// The name AWS gives this kind of action in error documents (`failedAction`).
    pub fn aws_name(&self) -> &'static str {
        match self {
            ActionSpec::Republish(_) => "RepublishAction",
            ActionSpec::File(_) => "FileAction",
            ActionSpec::S3(_) => "S3Action",
        }
    }
}

/// An action's concrete request.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Publish(republish::PublishRequest),
    Append(file::AppendRequest),
    Put(s3::PutRequest),
}

/// Why an action failed; the message goes into the error document's `errorMessage`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    /// The resource the action was working on (a topic, a path), for `failedResource`.
    pub resource: String,
    pub message: String,
}

impl ActionError {
    pub fn new(resource: impl Into<String>, message: impl Into<String>) -> ActionError {
        ActionError {
            resource: resource.into(),
            message: message.into(),
        }
    }
}

impl ActionSpec {
    /// Expands the action for one message. `output` is the rule's output payload (shared:
    /// a republish sends it without a copy).
    pub fn prepare(
        &self,
        msg: &Message,
        vars: &[Value],
        output: &Bytes,
    ) -> Result<Effect, ActionError> {
        match self {
            ActionSpec::Republish(r) => {
                republish::prepare(r, msg, vars, output).map(Effect::Publish)
            }
            ActionSpec::File(f) => file::prepare(f, msg, vars, output).map(Effect::Append),
            ActionSpec::S3(p) => s3::prepare(p, msg, vars, output).map(Effect::Put),
        }
    }
}

impl Effect {
    /// A JSON description, as `topicrule test` prints it.
    pub fn describe(&self) -> serde_json::Value {
        match self {
            Effect::Publish(p) => p.describe(),
            Effect::Append(a) => a.describe(),
            Effect::Put(p) => p.describe(),
        }
    }
}
