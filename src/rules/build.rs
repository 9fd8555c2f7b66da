//! Validation: a [`Draft`] becomes a [`Rule`], or every error it has.

use std::path::{Path, PathBuf};

use super::draft::{ActionDraft, ActionKind, Draft, DraftError, HeadersDraft, Located};
use super::{ActionSpec, FileAppend, Headers, Republish, Rule};
use crate::sql::{self, SqlError, SqlVersion};
use crate::template::Template;

/// AWS's limit on rule names.
const MAX_NAME: usize = 128;

/// Validates a draft against the rules already loaded. `Ok(None)`: a valid, disabled rule.
pub fn build(
    draft: Draft,
    path: &Path,
    seen: &[(String, PathBuf)],
) -> Result<Option<Rule>, Vec<DraftError>> {
    let mut errors = Vec::new();
    check_name(&draft.name, seen, &mut errors);
    let version = match &draft.sql_version {
        None => draft.default_version,
        Some(v) => v.value.parse::<SqlVersion>().unwrap_or_else(|message| {
            errors.push(DraftError::new(v.span, message));
            draft.default_version
        }),
    };
    let query = match sql::compile(&draft.sql.value, version) {
        Ok(query) => Some(query),
        Err(sql_errors) => {
            errors.extend(
                sql_errors
                    .0
                    .into_iter()
                    .map(|e| located_error(&draft.sql, e)),
            );
            None
        }
    };
    let vars: Vec<String> = query
        .iter()
        .flat_map(|q| q.set.iter().map(|(name, _)| name.clone()))
        .collect();
    let from = query.as_ref().and_then(|q| q.from.clone());
    let mut actions = Vec::new();
    for action in &draft.actions {
        if let Some(spec) = build_action(action, version, &vars, from.as_deref(), &mut errors) {
            actions.push(spec);
        }
    }
    let error_action = draft
        .error_action
        .as_ref()
        .and_then(|a| build_action(a, version, &vars, None, &mut errors));
    match query {
        Some(query) if errors.is_empty() => Ok(draft.enabled.then(|| Rule {
            name: draft.name.value,
            description: draft.description,
            query,
            actions,
            error_action,
            origin: path.to_owned(),
        })),
        _ => Err(errors),
    }
}

fn check_name(name: &Located, seen: &[(String, PathBuf)], errors: &mut Vec<DraftError>) {
    let valid = !name.value.is_empty()
        && name.value.len() <= MAX_NAME
        && name
            .value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        errors.push(
            DraftError::new(name.span, format!("invalid rule name `{}`", name.value))
                .with_hint("rule names are 1 to 128 letters, digits and `_`, as in AWS"),
        );
    }
    if let Some((_, origin)) = seen.iter().find(|(n, _)| *n == name.value) {
        errors.push(
            DraftError::new(name.span, format!("duplicate rule name `{}`", name.value))
                .with_hint(format!("a rule of that name is in {}", origin.display())),
        );
    }
}

/// An SQL or template error, placed inside the string that holds the text.
fn located_error(holder: &Located, e: SqlError) -> DraftError {
    DraftError {
        span: holder.inner(e.span),
        message: e.message,
        hint: e.hint,
    }
}

fn template(
    text: &Located,
    version: SqlVersion,
    vars: &[String],
    errors: &mut Vec<DraftError>,
) -> Option<Template> {
    match Template::parse(&text.value, version, vars) {
        Ok(t) => Some(t),
        Err(errs) => {
            errors.extend(errs.into_iter().map(|e| located_error(text, e)));
            None
        }
    }
}

fn build_action(
    action: &ActionDraft,
    version: SqlVersion,
    vars: &[String],
    from: Option<&str>,
    errors: &mut Vec<DraftError>,
) -> Option<ActionSpec> {
    match &action.kind {
        ActionKind::Republish {
            topic,
            qos,
            retain,
            headers,
        } => {
            let qos = match qos {
                None => 0,
                Some((q @ 0..=1, _)) => *q as u8,
                Some((q, span)) => {
                    errors.push(
                        DraftError::new(*span, format!("invalid qos {q}"))
                            .with_hint("republish takes qos 0 or 1, as AWS"),
                    );
                    0
                }
            };
            let topic_template = template(topic, version, vars, errors)?;
            check_republish_topic(topic, &topic_template, from, errors);
            let headers = build_headers(headers, version, vars, errors);
            Some(ActionSpec::Republish(Box::new(Republish {
                topic: topic_template,
                qos,
                retain: *retain,
                headers,
            })))
        }
        ActionKind::File { path } => {
            let path_template = template(path, version, vars, errors)?;
            if let Some(text) = path_template.as_static() {
                if crate::actions::file::confined(text).is_none() {
                    errors.push(
                        DraftError::new(
                            path.span,
                            format!("file path `{text}` leaves the base directory"),
                        )
                        .with_hint("use a relative path without `..`"),
                    );
                }
            }
            Some(ActionSpec::File(FileAppend {
                path: path_template,
            }))
        }
        ActionKind::Unsupported(kind) if kind == "s3" => {
            errors.push(
                DraftError::new(
                    action.span,
                    "the `s3` action is not available in this build of topicrule",
                )
                .with_hint("archive to local files with a `file` action for now"),
            );
            None
        }
        ActionKind::Unsupported(kind) => {
            errors.push(
                DraftError::new(
                    action.span,
                    format!(
                        "the AWS action `{kind}` needs an AWS service; topicrule cannot run it"
                    ),
                )
                .with_hint("topicrule runs `republish` and `file` actions"),
            );
            None
        }
        ActionKind::Malformed(message) => {
            errors.push(DraftError::new(action.span, message.clone()));
            None
        }
    }
}

/// A static topic must be a valid topic name, and must not feed the rule's own FROM.
fn check_republish_topic(
    topic: &Located,
    template: &Template,
    from: Option<&str>,
    errors: &mut Vec<DraftError>,
) {
    let Some(text) = template.as_static() else {
        return;
    };
    if let Err(e) = crate::topic::validate_topic(text) {
        errors.push(DraftError::new(
            topic.span,
            format!("invalid republish topic: {e}"),
        ));
        return;
    }
    if let Some(filter) = from {
        if crate::topic::matches(filter, text) {
            errors.push(
                DraftError::new(
                    topic.span,
                    format!("republishing to `{text}` feeds this rule's own FROM '{filter}'"),
                )
                .with_hint("the rule would loop forever; publish to a topic outside the filter"),
            );
        }
    }
}

fn build_headers(
    h: &HeadersDraft,
    version: SqlVersion,
    vars: &[String],
    errors: &mut Vec<DraftError>,
) -> Headers {
    let mut t = |s: &Option<Located>| s.as_ref().and_then(|s| template(s, version, vars, errors));
    let content_type = t(&h.content_type);
    let response_topic = t(&h.response_topic);
    let correlation_data = t(&h.correlation_data);
    let message_expiry = t(&h.message_expiry);
    let payload_format_utf8 = match h
        .payload_format_indicator
        .as_ref()
        .map(|p| (p.value.as_str(), p.span))
    {
        None => None,
        Some(("UTF8_DATA", _)) => Some(true),
        Some(("UNSPECIFIED_BYTES", _)) => Some(false),
        Some((other, span)) => {
            errors.push(
                DraftError::new(span, format!("invalid payload format indicator `{other}`"))
                    .with_hint("use UTF8_DATA or UNSPECIFIED_BYTES"),
            );
            None
        }
    };
    let user_properties = h
        .user_properties
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), template(v, version, vars, errors)?)))
        .collect();
    Headers {
        content_type,
        payload_format_utf8,
        response_topic,
        correlation_data,
        message_expiry,
        user_properties,
    }
}
