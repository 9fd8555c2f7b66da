//! Runs the SQL conformance cases of `tests/sql/cases/*.toml` (see `tests/sql/README.md`):
//! every example of the AWS IoT SQL reference, with the output AWS documents.

use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;
use topicrule::sql::value::Payload;
use topicrule::sql::{self, ErrorKind, Message, SqlVersion};
use topicrule::template::Template;

#[derive(Deserialize)]
struct CaseFile {
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[allow(dead_code)]
    source: Option<String>,
    sql: String,
    topic: Option<String>,
    payload: Option<String>,
    payload_base64: Option<String>,
    clientid: Option<String>,
    timestamp: Option<i64>,
    version: Option<String>,
    rule: Option<String>,
    #[allow(dead_code)]
    note: Option<String>,
    expect: Option<String>,
    expect_none: Option<bool>,
    expect_raw: Option<String>,
    expect_regex: Option<String>,
    expect_error: Option<ErrorKind>,
    template: Option<String>,
    expect_template: Option<String>,
}

/// What a case produced.
enum Outcome {
    Output(Vec<u8>),
    Template(String),
    NoMatch,
    /// The errors' messages, and their kinds.
    Error(String, Vec<ErrorKind>),
}

fn run(case: &Case) -> Outcome {
    let version: SqlVersion = case
        .version
        .as_deref()
        .unwrap_or("2016-03-23")
        .parse()
        .unwrap();
    let query = match sql::compile(&case.sql, version) {
        Ok(query) => query,
        Err(errors) => {
            let kinds = errors.0.iter().map(|e| e.kind).collect();
            return Outcome::Error(errors.to_string(), kinds);
        }
    };
    let vars: Vec<String> = query.set.iter().map(|(name, _)| name.clone()).collect();
    let template = match case
        .template
        .as_deref()
        .map(|t| Template::parse(t, version, &vars))
    {
        Some(Err(errors)) => {
            let kinds = errors.iter().map(|e| e.kind).collect();
            return Outcome::Error(format!("{errors:?}"), kinds);
        }
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let bytes = match &case.payload_base64 {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        None => case.payload.as_deref().unwrap_or("{}").as_bytes().to_vec(),
    };
    let rule_name = case.rule.as_deref().unwrap_or("test_rule");
    let Some(topic) = query.route(case.topic.as_deref().unwrap_or("t"), rule_name) else {
        return Outcome::NoMatch;
    };
    let payload = Payload::new(bytes.into());
    let msg = Message {
        topic,
        payload: &payload,
        clientid: Some(case.clientid.as_deref().unwrap_or("test-client")),
        timestamp_ms: case.timestamp.unwrap_or(1_481_825_251_155),
        properties: None,
        rule_name,
        shadows: None,
    };
    let Some(evaluation) = query.evaluate(&msg) else {
        return Outcome::NoMatch;
    };
    if let Some(template) = template {
        return Outcome::Template(template.expand(&msg, &evaluation.vars));
    }
    let mut out = Vec::new();
    evaluation.output.write_payload(&mut out, version);
    Outcome::Output(out)
}

fn json(text: &[u8]) -> Option<serde_json::Value> {
    serde_json::from_slice(text).ok()
}

/// Checks one case; `Err` says what went wrong.
fn check(case: &Case) -> Result<(), String> {
    let outcome = run(case);
    let shown = match &outcome {
        Outcome::Output(bytes) => format!("output {}", String::from_utf8_lossy(bytes)),
        Outcome::Template(text) => format!("template {text:?}"),
        Outcome::NoMatch => "no match".to_owned(),
        Outcome::Error(e, kinds) => format!("error {kinds:?}: {e}"),
    };
    let ok = match (&outcome, case) {
        (
            Outcome::Error(_, kinds),
            Case {
                expect_error: Some(want),
                ..
            },
        ) => kinds.contains(want),
        (
            Outcome::NoMatch,
            Case {
                expect_none: Some(true),
                ..
            },
        ) => true,
        (
            Outcome::Template(text),
            Case {
                expect_template: Some(want),
                ..
            },
        ) => text == want,
        (
            Outcome::Output(bytes),
            Case {
                expect: Some(want), ..
            },
        ) => json(bytes).is_some() && json(bytes) == json(want.as_bytes()),
        (
            Outcome::Output(bytes),
            Case {
                expect_raw: Some(want),
                ..
            },
        ) => bytes == want.as_bytes(),
        (
            Outcome::Output(bytes),
            Case {
                expect_regex: Some(want),
                ..
            },
        ) => regex::Regex::new(want)
            .unwrap()
            .is_match(&String::from_utf8_lossy(bytes)),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let error = case
        .expect_error
        .map(|kind| format!("an error of kind {kind:?}"));
    let want = [
        &case.expect,
        &case.expect_raw,
        &case.expect_regex,
        &error,
        &case.expect_template,
    ]
    .into_iter()
    .flatten()
    .next()
    .cloned()
    .unwrap_or_else(|| "no match".to_owned());
    Err(format!(
        "  sql:  {}\n  want: {want}\n  got:  {shown}",
        case.sql
    ))
}

#[test]
fn aws_reference_examples() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql/cases");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let (mut total, mut failures) = (0, Vec::new());
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        let text = std::fs::read_to_string(path).unwrap();
        let file: CaseFile =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file_name = path.file_name().unwrap().to_string_lossy();
        for case in &file.case {
            total += 1;
            if let Err(why) = check(case) {
                failures.push(format!("{file_name} / {}\n{why}", case.name));
            }
        }
    }
    assert!(
        total >= 500,
        "only {total} cases found in {}",
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "{} of {total} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The AST prints as SQL that parses back to the same tree, for every statement of the
/// reference that parses.
#[test]
fn statements_print_back_to_the_same_tree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sql/cases");
    let mut checked = 0;
    let mut failures = Vec::new();
    // Corners the reference does not exercise: a minus before a number that is not part of it.
    let extra = ["SELECT - 1 AS a, -(1) AS b, - -2 AS c, -a.b AS d FROM 't' WHERE NOT - x < 3"];
    for sql in extra {
        let tree = sql::parse::parse_statement(sql).unwrap();
        assert_eq!(
            sql::parse::parse_statement(&tree.to_string()).unwrap(),
            tree,
            "{sql} printed as {tree}"
        );
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let file: CaseFile = toml::from_str(&text).unwrap();
        for case in &file.case {
            let Ok(tree) = sql::parse::parse_statement(&case.sql) else {
                continue;
            };
            let printed = tree.to_string();
            checked += 1;
            match sql::parse::parse_statement(&printed) {
                Ok(again) if again == tree => {}
                Ok(_) => failures.push(format!(
                    "{}\n  printed: {printed}\n  (a different tree)",
                    case.sql
                )),
                Err(e) => {
                    failures.push(format!("{}\n  printed: {printed}\n  error: {e}", case.sql))
                }
            }
        }
    }
    assert!(checked > 500, "only {checked} statements parsed");
    assert!(
        failures.is_empty(),
        "{} of {checked}:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
