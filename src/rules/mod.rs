//! Rule files: TOML (`[[rule]]` tables) and AWS rule JSON, loaded into validated [`Rule`]s.
//!
//! Invariant: a [`RuleSet`] exists only when every file of it validated; every error of
//! every file is collected and reported with its place in the file, never only the first.
//!
//! - `toml_file`: the TOML format of the README (spans from `toml::Spanned`);
//! - `aws_json`: `aws iot get-topic-rule` output and `CreateTopicRule` payloads;
//! - `build`: the shared step from a draft (raw strings with their places) to a `Rule`.

mod aws_json;
mod build;
mod draft;
mod toml_file;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::sql::ast::Span;
use crate::sql::{Query, SqlVersion};
use crate::template::Template;

/// A validated rule, ready to run.
#[derive(Debug)]
pub struct Rule {
    /// Unique in the rule set: `[A-Za-z0-9_]+`, as AWS requires.
    pub name: String,
    pub description: Option<String>,
    pub query: Query,
    pub actions: Vec<ActionSpec>,
    pub error_action: Option<ActionSpec>,
    /// The file the rule came from.
    pub origin: PathBuf,
}

impl Rule {
    pub fn version(&self) -> SqlVersion {
        self.query.version
    }
}

/// What an action does, with its templates compiled.
#[derive(Debug, Clone)]
pub enum ActionSpec {
    /// Publish the output message to a topic.
    Republish(Box<Republish>),
    /// Append the output message as one line to a file under the base directory.
    File(FileAppend),
}

impl ActionSpec {
    /// The name AWS gives this kind of action in error documents (`failedAction`).
    pub fn aws_name(&self) -> &'static str {
        match self {
            ActionSpec::Republish(_) => "RepublishAction",
            ActionSpec::File(_) => "FileAction",
        }
    }
}

/// The `republish` action.
#[derive(Debug, Clone)]
pub struct Republish {
    pub topic: Template,
    /// 0 or 1; AWS's default is 0.
    pub qos: u8,
    pub retain: bool,
    pub headers: Headers,
}

/// AWS's MQTT 5 `headers` of a republish action. String fields are templates.
#[derive(Debug, Clone, Default)]
pub struct Headers {
    pub content_type: Option<Template>,
    /// `true` for `UTF8_DATA`, `false` for `UNSPECIFIED_BYTES`.
    pub payload_format_utf8: Option<bool>,
    pub response_topic: Option<Template>,
    /// A template whose expansion is base64, decoded when the action runs.
    pub correlation_data: Option<Template>,
    /// Seconds; a template (AWS takes it as a string).
    pub message_expiry: Option<Template>,
    pub user_properties: Vec<(String, Template)>,
}

/// The `file` action.
#[derive(Debug, Clone)]
pub struct FileAppend {
    /// A path relative to the base directory; substitutions may not leave it.
    pub path: Template,
}

/// All the rules of a rule set.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

/// An error in a rule file, with its place.
#[derive(Debug, Clone)]
pub struct RuleError {
    pub path: PathBuf,
    /// The whole file, for the source line under the message.
    pub source: Arc<str>,
    pub span: Span,
    pub message: String,
    pub hint: Option<String>,
}

impl RuleError {
    /// The error as `check` prints it: `file:line:col`, the line and a caret.
    pub fn render(&self) -> String {
        let origin = self.path.display().to_string();
        Diagnostic {
            origin: &origin,
            source: &self.source,
            span: self.span,
            message: &self.message,
            hint: self.hint.as_deref(),
        }
        .render()
    }
}

/// Every error of a rule set.
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in the rule files", .0.len())]
pub struct RuleErrors(pub Vec<RuleError>);

/// Loads every rule file under `paths` (files, or directories searched for `*.toml` and
/// `*.json`, sorted by name). Disabled rules are left out. Fails with every error found.
pub fn load(paths: &[PathBuf]) -> Result<RuleSet, RuleErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        collect_files(path, &mut files, &mut errors);
    }
    let mut rules: Vec<Rule> = Vec::new();
    let mut seen: Vec<(String, PathBuf)> = Vec::new();
    for path in files {
        let text: Arc<str> = match std::fs::read_to_string(&path) {
            Ok(text) => text.into(),
            Err(e) => {
                errors.push(file_error(&path, format!("cannot read the file: {e}")));
                continue;
            }
        };
        let drafts = if path.extension().is_some_and(|e| e == "json") {
            aws_json::parse(&path, &text)
        } else {
            toml_file::parse(&text)
        };
        let drafts = match drafts {
            Ok(drafts) => drafts,
            Err(errs) => {
                errors.extend(errs.into_iter().map(|e| e.into_rule_error(&path, &text)));
                continue;
            }
        };
        for draft in drafts {
            let name = draft.name.value.clone();
            let built = build::build(draft, &path, &seen);
            seen.push((name, path.clone()));
            match built {
                Ok(Some(rule)) => rules.push(rule),
                Ok(None) => {}
                Err(errs) => {
                    errors.extend(errs.into_iter().map(|e| e.into_rule_error(&path, &text)))
                }
            }
        }
    }
    if errors.is_empty() {
        Ok(RuleSet { rules })
    } else {
        Err(RuleErrors(errors))
    }
}

fn file_error(path: &Path, message: String) -> RuleError {
    RuleError {
        path: path.to_owned(),
        source: "".into(),
        span: Span::default(),
        message,
        hint: None,
    }
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<RuleError>) {
    if path.is_file() {
        files.push(path.to_owned());
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(file_error(
                path,
                format!("cannot read rules from `{}`: {e}", path.display()),
            ));
            return;
        }
    };
    let mut found: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    found.sort();
    for entry in found {
        if entry.is_dir() {
            collect_files(&entry, files, errors);
        } else if entry
            .extension()
            .is_some_and(|e| e == "toml" || e == "json")
        {
            files.push(entry);
        }
    }
}
