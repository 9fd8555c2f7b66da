//! Validation: a [`Draft`] becomes a [`Rule`], or every error it has.

use std::sync::Arc;

use super::draft::BatchDraft;
use super::draft::{ActionDraft, ActionKind, Draft, DraftError, HeadersDraft, Located};
use super::{Rule, Seen};
use crate::actions::file::FileAppend;
use crate::actions::republish::{Headers, Republish};
use crate::actions::s3::{Batch, Compression, S3Put, StoreId};
use crate::actions::ActionSpec;
use crate::sql::ast::Span;
use crate::sql::{self, ErrorKind, SqlError, SqlVersion};
use crate::template::Template;

/// AWS's limit on rule names.
const MAX_NAME: usize = 128;

/// Validates a draft against the rules already loaded. `Ok(None)`: a valid, disabled rule.
/// `name` is the draft's name, made once: the rule and `seen` share it.
pub fn build(
    draft: Draft,
    name: Arc<str>,
    seen: &Seen,
) -> Result<(Option<Rule>, Vec<DraftError>), Vec<DraftError>> {
    let mut errors = Vec::new();
    check_name(&draft.name, seen, &mut errors);
    let version = match &draft.sql_version {
        None => draft.default_version,
        Some(v) => v.value.parse::<SqlVersion>().unwrap_or_else(|e| {
            errors.push(DraftError::new(ErrorKind::Invalid, v.span, e.to_string()));
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
    let mut error_action = draft
        .error_action
        .as_ref()
        .and_then(|a| build_action(a, version, &vars, None, &mut errors));
    actions.shrink_to_fit();
    name_spools(&draft.name.value, &mut actions, error_action.as_mut());
    let (warnings, errors): (Vec<_>, Vec<_>) = errors.into_iter().partition(|e| e.warning);
    match query {
        Some(query) if errors.is_empty() => {
            let rule = draft.enabled.then(|| Rule {
                name,
                query,
                actions,
                error_action,
            });
            Ok((rule, warnings))
        }
        _ => Err(errors),
    }
}

fn check_name(name: &Located, seen: &Seen, errors: &mut Vec<DraftError>) {
    let valid = !name.value.is_empty()
        && name.value.len() <= MAX_NAME
        && name
            .value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        errors.push(
            DraftError::new(
                ErrorKind::Invalid,
                name.span,
                format!("invalid rule name `{}`", name.value),
            )
            .with_hint("rule names are 1 to 128 letters, digits and `_`, as in AWS"),
        );
    }
    if let Some(origin) = seen.get(name.value.as_str()) {
        errors.push(
            DraftError::new(
                ErrorKind::Duplicate,
                name.span,
                format!("duplicate rule name `{}`", name.value),
            )
            .with_hint(format!("a rule of that name is in {}", origin.display())),
        );
    }
}

/// An SQL or template error, placed inside the string that holds the text.
fn located_error(holder: &Located, e: SqlError) -> DraftError {
    DraftError {
        span: holder.inner(e.span),
        ..e
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
                        DraftError::new(ErrorKind::Invalid, *span, format!("invalid qos {q}"))
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
                if let Err(why) = crate::actions::file::confined(text) {
                    errors.push(
                        DraftError::new(
                            ErrorKind::Unsafe,
                            path.span,
                            format!("file path `{text}` {why}"),
                        )
                        .with_hint(
                            "use a relative path without `..`, not starting with `.topicrule`",
                        ),
                    );
                }
            }
            Some(ActionSpec::File(FileAppend {
                path: path_template,
            }))
        }
        ActionKind::S3 {
            bucket,
            key,
            canned_acl,
            endpoint,
            region,
            batch,
            compression,
        } => {
            let key_template = template(key, version, vars, errors)?;
            let batch = build_batch(batch.as_ref(), compression.as_ref(), errors);
            let checked = S3Draft {
                bucket,
                key,
                canned_acl: canned_acl.as_ref(),
                span: action.span,
            };
            checked.check(&key_template, errors);
            if batch.is_none() && !key_template.can_differ_per_message() {
                errors.push(
                    DraftError::warning(
                        ErrorKind::Suspicious,
                        key.span,
                        "this key can be the same for two messages: the later object overwrites the earlier one",
                    )
                    .with_hint("add `${newuuid()}` to the key, or use batch mode"),
                );
            }
            Some(ActionSpec::S3(Box::new(S3Put {
                bucket: bucket.value.clone(),
                key: key_template,
                canned_acl: canned_acl.as_ref().map(|a| a.value.clone()),
                store: StoreId {
                    endpoint: endpoint.as_ref().map(|e| e.value.clone()),
                    region: region.as_ref().map(|r| r.value.clone()),
                },
                batch,
                spool: String::new(),
            })))
        }
        ActionKind::Unsupported(kind) => {
            errors.push(
                DraftError::new(
                    ErrorKind::Unsupported,
                    action.span,
                    format!(
                        "the AWS action `{kind}` needs an AWS service; topicrule cannot run it"
                    ),
                )
                .with_hint("topicrule runs `republish`, `s3` and `file` actions"),
            );
            None
        }
        ActionKind::Malformed(message) => {
            errors.push(DraftError::new(
                ErrorKind::Invalid,
                action.span,
                message.clone(),
            ));
            None
        }
        ActionKind::Unreadable => None,
    }
}

/// Gives each `s3` action its spool folder, named after the rule and the action's place.
fn name_spools(rule: &str, actions: &mut [ActionSpec], error_action: Option<&mut ActionSpec>) {
    let indexed = actions
        .iter_mut()
        .enumerate()
        .map(|(i, a)| (i.to_string(), a));
    let error = error_action.map(|a| ("error".to_owned(), a));
    for (place, action) in indexed.chain(error) {
        if let ActionSpec::S3(put) = action {
            put.spool = format!("{rule}-{place}");
        }
    }
}

/// Batch limits (each at least 1; defaults for those left out) and the compression.
fn build_batch(
    batch: Option<&BatchDraft>,
    compression: Option<&Located>,
    errors: &mut Vec<DraftError>,
) -> Option<Batch> {
    let codec = match compression.map(|c| (c.value.as_str(), c.span)) {
        None | Some(("none", _)) => Compression::None,
        Some(("gzip", _)) => Compression::Gzip,
        Some(("zstd", _)) => Compression::Zstd,
        Some((other, span)) => {
            errors.push(
                DraftError::new(
                    ErrorKind::Unknown,
                    span,
                    format!("unknown compression `{other}`"),
                )
                .with_hint("use none, gzip or zstd"),
            );
            Compression::None
        }
    };
    let Some(batch) = batch else {
        if let Some(c) = compression {
            errors.push(
                DraftError::new(ErrorKind::Invalid, c.span, "compression needs batch mode")
                    .with_hint("add `batch = { max_records = 1000 }`, or remove `compression`"),
            );
        }
        return None;
    };
    let mut limit = |value: Option<(i64, Span)>, default: u64, what: &str| match value {
        None => default,
        Some((v, _)) if v >= 1 => v as u64,
        Some((v, span)) => {
            errors.push(DraftError::new(
                ErrorKind::Invalid,
                span,
                format!("invalid {what} {v}: at least 1"),
            ));
            default
        }
    };
    Some(Batch {
        max_records: limit(batch.max_records, 1000, "max_records"),
        max_bytes: limit(batch.max_bytes, 5 * 1024 * 1024, "max_bytes"),
        max_age: std::time::Duration::from_secs(limit(batch.max_age, 60, "max_age")),
        compression: codec,
    })
}

/// AWS's canned ACLs, as S3 names them.
const CANNED_ACLS: &[&str] = &[
    "private",
    "public-read",
    "public-read-write",
    "aws-exec-read",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
    "log-delivery-write",
];

/// The parts of an `s3` action checked at load time.
struct S3Draft<'d> {
    bucket: &'d Located,
    key: &'d Located,
    canned_acl: Option<&'d Located>,
    span: Span,
}

impl S3Draft<'_> {
    /// A bucket is a plain name; a static key must be a safe key; a canned ACL is one S3 knows.
    fn check(&self, key: &Template, errors: &mut Vec<DraftError>) {
        let bucket = &self.bucket.value;
        if bucket.is_empty() {
            errors.push(DraftError::new(
                ErrorKind::Missing,
                self.span,
                "the `s3` action needs a bucket",
            ));
        } else if bucket.contains(['/', '$']) || bucket.chars().any(char::is_whitespace) {
            errors.push(
                DraftError::new(
                    ErrorKind::Invalid,
                    self.bucket.span,
                    format!("invalid bucket name `{bucket}`"),
                )
                .with_hint("a bucket is a plain name: no `/`, `$` or blanks"),
            );
        }
        if let Some(text) = key.as_static() {
            if let Err(e) = crate::actions::s3::check_key(text) {
                let span = if text.is_empty() {
                    self.span
                } else {
                    self.key.span
                };
                errors.push(DraftError::new(ErrorKind::Invalid, span, e.to_string()));
            }
        }
        if let Some(acl) = self.canned_acl {
            if !CANNED_ACLS.contains(&acl.value.as_str()) {
                errors.push(
                    DraftError::new(
                        ErrorKind::Unknown,
                        acl.span,
                        format!("unknown canned ACL `{}`", acl.value),
                    )
                    .with_hint(format!("use one of {}", CANNED_ACLS.join(", "))),
                );
            }
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
            ErrorKind::Invalid,
            topic.span,
            format!("invalid republish topic: {e}"),
        ));
        return;
    }
    if let Some(filter) = from {
        if crate::topic::matches(filter, text) {
            errors.push(
                DraftError::new(
                    ErrorKind::Unsafe,
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
) -> Option<Box<Headers>> {
    let mut t = |s: &Option<Located>| s.as_ref().and_then(|s| template(s, version, vars, errors));
    let content_type = t(&h.content_type);
    let response_topic = t(&h.response_topic);
    let correlation_data = t(&h.correlation_data);
    let message_expiry = t(&h.message_expiry);
    let payload_format = match h
        .payload_format
        .as_ref()
        .map(|p| (p.value.as_str(), p.span))
    {
        None => None,
        Some(("UTF8_DATA", _)) => Some(true),
        Some(("UNSPECIFIED_BYTES", _)) => Some(false),
        Some((other, span)) => {
            errors.push(
                DraftError::new(
                    ErrorKind::Invalid,
                    span,
                    format!("invalid payload format indicator `{other}`"),
                )
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
    let headers = Headers {
        content_type,
        payload_format,
        response_topic,
        correlation_data,
        message_expiry,
        user_properties,
    };
    (!headers.is_empty()).then(|| Box::new(headers))
}
