//! AWS IoT SQL: parse, compile and evaluate rule statements.
//!
//! - `ast`: the syntax tree, with spans; `parse`: text to tree (nom);
//! - `compile`: tree to [`Query`], resolving functions once and reporting every error;
//! - `eval`: a pure function from a message to the rule's output;
//! - `value`: the value type and the reference's conversion tables (`value::number`: number
//!   text as AWS reads and writes it; `value::de`: JSON decoded into values);
//! - `functions`: the built-in functions.

pub mod ast;
pub mod compile;
pub mod error;
pub mod eval;
pub mod functions;
pub mod parse;
pub mod value;

pub use compile::{compile, Query};
pub use error::{ErrorKind, SqlError, SqlErrors};
pub use eval::{Evaluation, Message};
pub use value::Value;

/// The SQL version of a rule (`awsIotSqlVersion`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SqlVersion {
    /// The first version, and AWS's default when a rule does not name one.
    V2015_10_08,
    /// The recommended version: nested queries, JSON literals, more functions; topicrule's default.
    #[default]
    V2016_03_23,
}

impl SqlVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            SqlVersion::V2015_10_08 => "2015-10-08",
            SqlVersion::V2016_03_23 => "2016-03-23",
        }
    }
}

/// A `sql_version` topicrule does not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("the `beta` SQL version is not supported; use 2016-03-23")]
    Beta,
    #[error("unknown SQL version `{0}`; use 2016-03-23 or 2015-10-08")]
    Unknown(String),
}

impl std::str::FromStr for SqlVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<SqlVersion, VersionError> {
        match s {
            "2015-10-08" => Ok(SqlVersion::V2015_10_08),
            "2016-03-23" => Ok(SqlVersion::V2016_03_23),
            "beta" => Err(VersionError::Beta),
            other => Err(VersionError::Unknown(other.to_owned())),
        }
    }
}

impl std::fmt::Display for SqlVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
