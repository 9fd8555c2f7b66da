//! Errors of the SQL language, with the byte span they are about.

use super::ast::Span;
use crate::diagnostic::Diagnostic;

/// What kind of mistake an error is: what a program or a test checks, rather than the
/// wording of the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The text does not follow its grammar: SQL, a template, TOML, JSON.
    Syntax,
    /// A name that names nothing: a function, a cast type, a variable not set, a key, a
    /// compression, a canned ACL, a rule.
    Unknown,
    /// A function called with a number of arguments it does not take.
    Arity,
    /// A feature of SQL version 2016-03-23 under 2015-10-08.
    Version,
    /// A value outside what is allowed: a QoS, a topic or filter, a bucket, a rule name, a
    /// limit.
    Invalid,
    /// Given twice: a rule name, a variable.
    Duplicate,
    /// Required and absent: a rule's `sql`, a bucket, the rules of a file, a test's
    /// expectation.
    Missing,
    /// Unsafe to run: a path that leaves the base directory, a republish that feeds its own
    /// rule.
    Unsafe,
    /// Needs an AWS service topicrule does not have: an action (`lambda`, `dynamoDB`...), a
    /// function (`aws_lambda`, `get_dynamodb`...).
    Unsupported,
    /// Loads, but likely not what the author meant (a warning): an S3 key that repeats.
    Suspicious,
    /// A rule file or folder that cannot be read.
    Unreadable,
}

/// An error in a text (a statement, a template; as `rules::DraftError`, a rule file): where
/// it is, what kind of mistake, what is wrong, and what might fix it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    pub kind: ErrorKind,
    /// The byte span in the text that the error points at.
    pub span: Span,
    /// What is wrong: lowercase, no final period, no position.
    pub message: String,
    /// A suggestion, shown under the caret: "did you mean `upper`?"
    pub hint: Option<String>,
    /// A warning: what it is about still loads and runs.
    pub warning: bool,
}

impl SqlError {
    pub fn new(kind: ErrorKind, span: Span, message: impl Into<String>) -> SqlError {
        SqlError {
            kind,
            span,
            message: message.into(),
            hint: None,
            warning: false,
        }
    }

    pub fn warning(kind: ErrorKind, span: Span, message: impl Into<String>) -> SqlError {
        SqlError {
            warning: true,
            ..SqlError::new(kind, span, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> SqlError {
        self.hint = Some(hint.into());
        self
    }

    /// The error shown in `source`, the text of `origin` (a file name, or `<sql>`).
    pub fn diagnostic<'a>(&'a self, origin: &'a str, source: &'a str) -> Diagnostic<'a> {
        Diagnostic {
            origin,
            source,
            span: self.span,
            message: &self.message,
            hint: self.hint.as_deref(),
            warning: self.warning,
        }
    }
}

/// Every error found in one statement, in source order.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; "))]
pub struct SqlErrors(pub Vec<SqlError>);
