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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::actions::ActionSpec;
use crate::sql::ast::Span;
use crate::sql::{ErrorKind, Query, SqlVersion};
use draft::DraftError;

/// A validated rule, ready to run.
#[derive(Debug)]
pub struct Rule {
    /// Unique in the rule set: `[A-Za-z0-9_]+`, as AWS requires.
    pub name: Arc<str>,
    pub query: Query,
    pub actions: Vec<ActionSpec>,
    pub error_action: Option<ActionSpec>,
}

impl Rule {
    pub fn version(&self) -> SqlVersion {
        self.query.version
    }
}

/// All the rules of a rule set.
#[derive(Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// The `[[test]]` tables of the TOML files, which `topicrule test` runs.
    pub tests: Vec<RuleTest>,
    /// What loads but is likely not what the author meant (an S3 key that repeats).
    pub warnings: Vec<RuleError>,
}

/// A `[[test]]` of a rule file: one message, and what a rule must make of it.
#[derive(Debug, Clone)]
pub struct RuleTest {
    /// For the report: the test's name, or the rule's and the topic.
    pub name: String,
    /// Where the test is written, as `file:line`.
    pub place: String,
    /// The rule checked; None with `expect: None`: no rule of the set may fire.
    pub rule: Option<String>,
    pub topic: String,
    pub payload: bytes::Bytes,
    pub clientid: Option<String>,
    pub timestamp: Option<i64>,
    /// The expected output message; None: the rule must not fire.
    pub expect: Option<serde_json::Value>,
}

/// An error in a rule file, with its place.
#[derive(Debug, Clone)]
pub struct RuleError {
    pub path: PathBuf,
    /// The whole file, for the source line under the message.
    pub source: Arc<str>,
    /// What is wrong, at which span of the file.
    pub error: DraftError,
}

impl RuleError {
    /// The error as `check` prints it: `file:line:col`, the line and a caret.
    pub fn render(&self) -> String {
        let origin = self.path.display().to_string();
        self.error.diagnostic(&origin, &self.source).render()
    }
}

/// Every error of a rule set.
#[derive(Debug, thiserror::Error)]
#[error("{} error(s) in the rule files", .0.len())]
pub struct RuleErrors(pub Vec<RuleError>);

/// The rule names met while loading, each with the file that defines it.
type Seen = HashMap<Arc<str>, Arc<Path>>;

/// The settings file's name, skipped in rule folders so that a folder (an example) can hold
/// its settings beside its rules.
const SETTINGS_FILE: &str = "topicrule.toml";

/// Loads every rule file under `paths` (files, or directories searched for `*.toml` and
/// `*.json` but `topicrule.toml`, sorted by name). Disabled rules are left out. Fails with every error found.
pub fn load(paths: &[PathBuf]) -> Result<RuleSet, RuleErrors> {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        collect_files(path, &mut files, &mut errors);
    }
    let mut rules: Vec<Rule> = Vec::new();
    // Each name met, with the file that defines it first. The names are the rules' own:
    // no copy of each is made, then dropped, between the rules kept.
    let mut seen: Seen = HashMap::new();
    let mut test_drafts = Vec::new();
    let mut warnings = Vec::new();
    for path in files {
        let path: Arc<Path> = path.into();
        let text: Arc<str> = match std::fs::read_to_string(&path) {
            Ok(text) => text.into(),
            Err(e) => {
                errors.push(file_error(&path, format!("cannot read the file: {e}")));
                continue;
            }
        };
        let (drafts, tests, errs) = if path.extension().is_some_and(|e| e == "json") {
            match aws_json::parse(&path, &text) {
                Ok(drafts) => (drafts, Vec::new(), Vec::new()),
                Err(errs) => (Vec::new(), Vec::new(), errs),
            }
        } else {
            toml_file::parse(&text)
        };
        let first_error = errors.len();
        errors.extend(errs.into_iter().map(|e| e.into_rule_error(&path, &text)));
        if !tests.is_empty() {
            let names: Vec<String> = drafts.iter().map(|d| d.name.value.clone()).collect();
            test_drafts.extend(
                tests
                    .into_iter()
                    .map(|t| (path.clone(), text.clone(), names.clone(), t)),
            );
        }
        for draft in drafts {
            let name: Arc<str> = draft.name.value.as_str().into();
            let built = build::build(draft, name.clone(), &seen);
            seen.entry(name).or_insert_with(|| path.clone());
            match built {
                Ok((rule, cautions)) => {
                    rules.extend(rule);
                    warnings.extend(
                        cautions
                            .into_iter()
                            .map(|w| w.into_rule_error(&path, &text)),
                    );
                }
                Err(errs) => {
                    errors.extend(errs.into_iter().map(|e| e.into_rule_error(&path, &text)))
                }
            }
        }
        // A file's errors in the order of the file.
        errors[first_error..].sort_by_key(|e| e.error.span.start);
    }
    let mut tests = Vec::new();
    for (path, text, file_rules, draft) in test_drafts {
        match resolve_test(draft, &path, &text, &file_rules, &seen) {
            Ok(test) => tests.push(test),
            Err(e) => errors.push(e.into_rule_error(&path, &text)),
        }
    }
    if errors.is_empty() {
        // The rules stay as long as the set: without the room the pushes reserved.
        rules.shrink_to_fit();
        Ok(RuleSet {
            rules,
            tests,
            warnings,
        })
    } else {
        Err(RuleErrors(errors))
    }
}

/// Checks the rule a test names (or picks the file's only rule) and places the test.
fn resolve_test(
    draft: draft::TestDraft,
    path: &Path,
    text: &str,
    file_rules: &[String],
    seen: &Seen,
) -> Result<RuleTest, draft::DraftError> {
    let rule = match (&draft.rule, &draft.expect, file_rules) {
        (Some((name, span)), _, _) => {
            if !seen.contains_key(name.as_str()) {
                return Err(draft::DraftError::new(
                    ErrorKind::Unknown,
                    *span,
                    format!("no rule named `{name}`"),
                ));
            }
            Some(name.clone())
        }
        (None, None, _) => None,
        (None, Some(_), [only]) => Some(only.clone()),
        (None, Some(_), _) => {
            return Err(draft::DraftError::new(
                ErrorKind::Missing,
                draft.span,
                "this test does not say which rule it checks",
            )
            .with_hint("add `rule = \"<name>\"`"));
        }
    };
    let (line, _) = crate::diagnostic::line_col(text, draft.span.start);
    let name = draft.name.clone().unwrap_or_else(|| match &rule {
        Some(rule) => format!("{rule} on {}", draft.topic),
        None => format!("nothing fires on {}", draft.topic),
    });
    Ok(RuleTest {
        name,
        place: format!("{}:{line}", path.display()),
        rule,
        topic: draft.topic,
        payload: draft.payload.into(),
        clientid: draft.clientid,
        timestamp: draft.timestamp,
        expect: draft.expect,
    })
}

fn file_error(path: &Path, message: String) -> RuleError {
    DraftError::new(ErrorKind::Unreadable, Span::default(), message)
        .into_rule_error(path, &Arc::from(""))
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
            && entry.file_name().is_some_and(|n| n != SETTINGS_FILE)
        {
            files.push(entry);
        }
    }
}
