//! The command line: `eval` (and, as they land, `run`, `check`, `test`).
//!
//! This is the only place that chooses exit codes: 0 for success, 1 when a rule does not
//! fire, 2 for errors.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use topicrule::diagnostic::Diagnostic;
use topicrule::sql::{self, Message, SqlError, SqlVersion, Value};
use topicrule::template::Template;

#[derive(Parser)]
#[command(
    name = "topicrule",
    version,
    about = "AWS IoT Core topic rules for any MQTT broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate one SQL statement on one message and print the output message.
    ///
    /// Exit status: 0 the rule fired and its output was printed; 1 the rule does not fire
    /// (the topic does not match FROM, or WHERE is not true); 2 the SQL is invalid.
    Eval(EvalArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// The statement, e.g. "SELECT * FROM 'sensors/+/data' WHERE temp > 30".
    sql: String,
    /// The topic the message arrives on.
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    payload: PayloadArgs,
    /// The SQL version of the rule.
    #[arg(long, default_value = "2016-03-23", value_parser = parse_version)]
    sql_version: SqlVersion,
    /// The publisher's client id, as clientid() returns it.
    #[arg(long)]
    clientid: Option<String>,
    /// The rule's name, for Basic Ingest topics ($aws/rules/<name>/...).
    #[arg(long, default_value = "eval")]
    rule_name: String,
    /// Print this substitution template, expanded, instead of the output message.
    #[arg(long)]
    template: Option<String>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct PayloadArgs {
    /// The message payload as text; `-` reads it from standard input.
    #[arg(long)]
    payload: Option<String>,
    /// Read the message payload from a file (bytes, JSON or not).
    #[arg(long)]
    payload_file: Option<PathBuf>,
}

fn parse_version(s: &str) -> Result<SqlVersion, String> {
    s.parse()
}

impl PayloadArgs {
    fn read(&self) -> anyhow::Result<Vec<u8>> {
        match (&self.payload, &self.payload_file) {
            (Some(text), _) if text == "-" => {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .context("cannot read the payload from standard input")?;
                Ok(bytes)
            }
            (Some(text), _) => Ok(text.clone().into_bytes()),
            (None, Some(path)) => std::fs::read(path)
                .with_context(|| format!("cannot read the payload file `{}`", path.display())),
            (None, None) => unreachable!("clap requires one payload argument"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => eval(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn print_errors(origin: &str, source: &str, errors: &[SqlError]) {
    for error in errors {
        let diagnostic = Diagnostic {
            origin,
            source,
            span: error.span,
            message: &error.message,
            hint: error.hint.as_deref(),
        };
        eprint!("{}", diagnostic.render());
    }
}

fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let query = match sql::compile(&args.sql, args.sql_version) {
        Ok(query) => query,
        Err(errors) => {
            print_errors("<sql>", &args.sql, &errors.0);
            return Ok(ExitCode::from(2));
        }
    };
    let vars: Vec<String> = query.set.iter().map(|(name, _)| name.clone()).collect();
    let template = match args
        .template
        .as_deref()
        .map(|t| Template::parse(t, args.sql_version, &vars))
    {
        Some(Err(errors)) => {
            print_errors(
                "<template>",
                args.template.as_deref().unwrap_or(""),
                &errors,
            );
            return Ok(ExitCode::from(2));
        }
        Some(Ok(template)) => Some(template),
        None => None,
    };
    let bytes = args.payload.read()?;
    let Some(topic) = query.route(&args.topic, &args.rule_name) else {
        return Ok(ExitCode::from(1));
    };
    let payload = Value::from_payload(&bytes);
    let msg = Message {
        topic,
        payload: &payload,
        clientid: args.clientid.as_deref(),
        timestamp_ms: chrono::Utc::now().timestamp_millis(),
        properties: None,
        rule_name: &args.rule_name,
    };
    let Some(evaluation) = query.evaluate(&msg) else {
        return Ok(ExitCode::from(1));
    };
    let mut out = Vec::new();
    match template {
        Some(template) => out.extend_from_slice(template.expand(&msg, &evaluation.vars).as_bytes()),
        None => evaluation.output.write_payload(&mut out, args.sql_version),
    }
    out.push(b'\n');
    std::io::stdout()
        .write_all(&out)
        .context("cannot write to standard output")?;
    Ok(ExitCode::SUCCESS)
}
