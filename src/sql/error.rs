//! Errors of the SQL language, with the byte span they are about.

use super::ast::Span;
use crate::diagnostic::Diagnostic;

/// An error in a text (a statement, a template; as `rules::DraftError`, a rule file): where
/// it is, what is wrong, and what might fix it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
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
    pub fn new(span: Span, message: impl Into<String>) -> SqlError {
        SqlError {
            span,
            message: message.into(),
            hint: None,
            warning: false,
        }
    }

    pub fn warning(span: Span, message: impl Into<String>) -> SqlError {
        SqlError {
            warning: true,
            ..SqlError::new(span, message)
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
