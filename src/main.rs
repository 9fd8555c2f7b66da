//! The command line: `run`, `check`, `test`, `eval`.
//!
//! This is the only place that chooses exit codes: 0 for success, 1 when a rule does not
//! fire, 2 for errors.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand};

use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use topicrule::broker::EmbeddedBroker;
use topicrule::config::Settings;
use topicrule::engine::Engine;
use topicrule::sql::value::Payload;
use topicrule::sql::{self, Message, SqlError, SqlVersion};
use topicrule::template::Template;
use topicrule::{router, rules};

#[derive(Parser)]
#[command(
    name = "topicrule",
    version,
    about = "AWS IoT Core topic rules for any MQTT broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How logs are written to stderr: `text` for people, `json` (one object a line) for
    /// a log collector.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "TOPICRULE_LOG_FORMAT")]
    log_format: LogFormat,
    /// The least severe of topicrule's messages logged: error, warn, info, debug (what each
    /// message does) or trace. `RUST_LOG`, when set, overrides it with a full filter.
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "TOPICRULE_LOG_LEVEL"
    )]
    log_level: tracing::Level,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the broker and route messages through the rules until SIGINT/SIGTERM.
    ///
    /// Exit status: 0 after a clean stop; 2 when the settings or the rules are invalid.
    Run(RunArgs),
    /// Validate rule files; print every error with file:line:col and a caret.
    ///
    /// Exit status: 0 all rules are valid; 2 some are not.
    Check(CheckArgs),
    /// Try rules without a broker: on one message, or on the files' `[[test]]` tables.
    ///
    /// With --topic and --payload: print, as JSON lines, every rule that fires and what each
    /// of its actions would do. Without them: run the `[[test]]` tables of the rule files.
    ///
    /// Exit status: 0 some rule fired (every test passed); 1 none did (some test failed);
    /// 2 the rules are invalid.
    Test(TestArgs),
    /// Evaluate one SQL statement on one message and print the output message.
    ///
    /// Exit status: 0 the rule fired and its output was printed; 1 the rule does not fire
    /// (the topic does not match FROM, or WHERE is not true); 2 the SQL is invalid.
    Eval(EvalArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The settings file (default: ./topicrule.toml when it exists).
    #[arg(long, env = "TOPICRULE_CONFIG")]
    config: Option<PathBuf>,
    /// Rule files or directories, instead of the settings' `[rules] paths`.
    #[arg(long, num_args = 1..)]
    rules: Vec<PathBuf>,
    /// The broker to connect to (mqtt://host:port), instead of `[broker] url`; `embedded`
    /// hosts the embedded broker of `[broker.embedded]` even when a URL is set.
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
}

#[derive(Args)]
struct CheckArgs {
    /// Rule files or directories [default: the settings' `[rules] paths`, else rules].
    paths: Vec<PathBuf>,
    /// The settings file (default: ./topicrule.toml when it exists); checked too.
    #[arg(long, env = "TOPICRULE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
#[command(group(ArgGroup::new("message").requires("topic")))]
struct TestArgs {
    /// Rule files or directories [default: the settings' `[rules] paths`, else rules].
    paths: Vec<PathBuf>,
    /// The settings file (default: ./topicrule.toml when it exists).
    #[arg(long, env = "TOPICRULE_CONFIG")]
    config: Option<PathBuf>,
    /// The topic the message arrives on; without it, the files' `[[test]]` tables run.
    #[arg(long, requires = "message")]
    topic: Option<String>,
    #[command(flatten)]
    payload: PayloadArgs,
    /// The publisher's client id, as clientid() returns it.
    #[arg(long)]
    clientid: Option<String>,
}

#[derive(Args)]
#[command(group(ArgGroup::new("message").required(true)))]
struct EvalArgs {
    /// The statement, e.g. "SELECT * FROM 'sensors/+/data' WHERE temp > 30".
    sql: String,
    /// The topic the message arrives on.
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    payload: PayloadArgs,
    /// The SQL version of the rule.
    #[arg(long, default_value = "2016-03-23", value_parser = clap::value_parser!(SqlVersion))]
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

/// A message's payload, one of the two: the group `message`, which `eval` requires and
/// `test` takes with a `--topic` (alone, `test` runs the files' `[[test]]` tables).
#[derive(Args)]
#[group(skip)]
struct PayloadArgs {
    /// The message payload as text; `-` reads it from standard input.
    #[arg(long, group = "message")]
    payload: Option<String>,
    /// Read the message payload from a file (bytes, JSON or not).
    #[arg(long, group = "message")]
    payload_file: Option<PathBuf>,
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
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| format!("topicrule={}", cli.log_level).into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Check(args) => check(args),
        Command::Test(args) => test(args),
        Command::Eval(args) => eval(args),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`topicrule test ... | head -1`): a normal end, as for
        // other command-line tools.
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The rule paths given, else those of the settings (which are loaded, and so checked).
fn default_paths(paths: Vec<PathBuf>, config: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let settings = Settings::load(config)?;
    Ok(if paths.is_empty() {
        settings.rules.paths
    } else {
        paths
    })
}

/// Loads rules, printing every error; None when some are invalid.
fn load_rules(paths: &[PathBuf]) -> Option<rules::RuleSet> {
    match rules::load(paths) {
        Ok(set) => {
            for warning in &set.warnings {
                eprint!("{}", warning.render());
            }
            Some(set)
        }
        Err(errors) => {
            for error in &errors.0 {
                eprint!("{}", error.render());
            }
            eprintln!("{} error(s) in the rule files", errors.0.len());
            None
        }
    }
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let paths = default_paths(args.paths, args.config.as_deref())?;
    let Some(set) = load_rules(&paths) else {
        return Ok(ExitCode::from(2));
    };
    if set.rules.is_empty() {
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "error: no enabled rule in {}\n  hint: rule files are `*.toml` (`[[rule]]` tables) or AWS rule `*.json`",
            paths.join(", ")
        );
        return Ok(ExitCode::from(2));
    }
    writeln!(std::io::stdout(), "{} rule(s) valid", set.rules.len())?;
    Ok(ExitCode::SUCCESS)
}

fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let paths = default_paths(args.paths, args.config.as_deref())?;
    let Some(set) = load_rules(&paths) else {
        return Ok(ExitCode::from(2));
    };
    let Some(topic) = args.topic else {
        let tests = set.tests.clone();
        return run_rule_tests(&Engine::new(set), &tests);
    };
    let payload = args.payload.read()?;
    let engine = Engine::new(set);
    let now = chrono::Utc::now().timestamp_millis();
    let plans = engine.plan(
        &topic,
        &payload.into(),
        args.clientid.as_deref(),
        now,
        None,
        None,
    );
    let mut out = std::io::stdout().lock();
    for plan in &plans {
        let actions: Vec<_> = plan.effects.iter().map(|(_, e)| e.describe()).collect();
        let mut line = serde_json::json!({"rule": &*plan.rule_name, "actions": actions});
        if !plan.failures.is_empty() {
            line["failures"] = topicrule::engine::failures_json(&plan.failures);
        }
        writeln!(out, "{line}")?;
    }
    Ok(if plans.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs the `[[test]]` tables: one line per test, `ok` or `FAIL` with what differs.
fn run_rule_tests(engine: &Engine, tests: &[rules::RuleTest]) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for test in tests {
        let timestamp = test
            .timestamp
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let plans = engine.plan(
            &test.topic,
            &test.payload,
            test.clientid.as_deref(),
            timestamp,
            None,
            None,
        );
        let fired = plans
            .iter()
            .find(|p| test.rule.as_deref().is_none_or(|r| r == &*p.rule_name));
        let got = fired.map(|p| {
            serde_json::from_slice::<serde_json::Value>(&p.output)
                .map_err(|_| String::from_utf8_lossy(&p.output).into_owned())
        });
        let problem = match (&test.expect, got) {
            (None, None) => None,
            (None, Some(_)) => Some("expected no rule to fire, but it fired".to_owned()),
            (Some(_), None) => Some("expected an output, but the rule did not fire".to_owned()),
            (Some(want), Some(Ok(output))) if *want == output => None,
            (Some(want), Some(Ok(output))) => Some(format!("expected {want}\n     got {output}")),
            (Some(want), Some(Err(raw))) => {
                Some(format!("expected {want}\n     got (not JSON) {raw}"))
            }
        };
        match problem {
            None => writeln!(out, "ok   {} {}", test.place, test.name)?,
            Some(why) => {
                failed += 1;
                writeln!(out, "FAIL {} {}\n     {why}", test.place, test.name)?;
            }
        }
    }
    writeln!(
        out,
        "{} of {} rule test(s) passed",
        tests.len() - failed,
        tests.len()
    )?;
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load(args.config.as_deref())?;
    if !args.rules.is_empty() {
        settings.rules.paths = args.rules;
    }
    if let Some(url) = args.broker {
        settings.broker.url = url;
    }
    let Some(set) = load_rules(&settings.rules.paths) else {
        return Ok(ExitCode::from(2));
    };
    tracing::info!("loaded {} rule(s)", set.rules.len());
    let engine = Engine::new(set);
    // One thread: the message path hands each message between tasks several times, and on
    // one thread that costs no wake-up of another (README, Architecture). Blocking work
    // goes to tokio's blocking pool.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let reloads = topicrule::reload::watch(settings.rules.paths.clone(), shutdown.clone());
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stopping: finishing the messages in flight");
            signals.cancel();
        });
        let broker = start_embedded_broker(&mut settings).await?;
        let stats = router::run(settings, engine, reloads, shutdown).await;
        // After the router: its last acknowledgements go through the embedded broker.
        if let Some(broker) = broker {
            let _ = tokio::time::timeout(Duration::from_secs(2), broker.shutdown()).await;
        }
        let stats = stats?;
        tracing::info!("stopped: {}", summary(&stats));
        Ok(ExitCode::SUCCESS)
    });
    // A file write still blocking a thread (a hung disk) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

/// What the run did, for its last log line; the numbers that are 0 and say nothing are
/// left out.
fn summary(stats: &router::Stats) -> String {
    let get = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
    let mut line = format!(
        "{} received, {} acknowledged, {} action failure(s)",
        get(&stats.received),
        get(&stats.acknowledged),
        get(&stats.action_failures),
    );
    let redelivered = get(&stats.redelivered);
    if redelivered > 0 {
        let adopted = get(&stats.adopted);
        line += &format!(
            "; the broker redelivered {redelivered} ({adopted} of them not processed again)"
        );
    }
    match stats.left_for_redelivery() {
        0 => {}
        left => {
            line += &format!(
                "; {left} not acknowledged: the broker sends them again on the next session"
            )
        }
    }
    line
}

/// Starts the embedded broker when no broker URL is set, and points the router at it.
async fn start_embedded_broker(settings: &mut Settings) -> anyhow::Result<Option<EmbeddedBroker>> {
    if settings.broker.external_url().is_some() {
        return Ok(None);
    }
    let broker = EmbeddedBroker::start(&settings.broker.embedded).await?;
    // The router reaches a broker listening on every address through the loopback one; a
    // socket address writes an IPv6 host in brackets, as a URL wants it.
    let mut addr = broker.local_addr();
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    settings.broker.url = format!("mqtt://{addr}");
    Ok(Some(broker))
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn print_errors(origin: &str, source: &str, errors: &[SqlError]) {
    for error in errors {
        eprint!("{}", error.diagnostic(origin, source).render());
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
    let payload = Payload::new(bytes.into());
    let msg = Message {
        topic,
        payload: &payload,
        clientid: args.clientid.as_deref(),
        timestamp_ms: chrono::Utc::now().timestamp_millis(),
        properties: None,
        rule_name: &args.rule_name,
        shadows: None,
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
