//! wk-alerter command line: `run` (the daemon), `check` (compile rules, and with a source
//! configured evaluate them once, sending nothing), `test` (a rule over recorded line
//! protocol with a simulated clock), `notifiers test` (one test message per notifier) and
//! `silence add|list|expire`. The logic lives in the library ([`wk_alerter::app`]);
//! this file parses arguments, prints and forwards signals.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use tokio::sync::mpsc;
use tracing::error;
use wk_alerter::app;
use wk_alerter::model::AlertEvent;
use wk_core::cli::{Generate, exit};

const EXIT_INVALID: u8 = exit::INVALID;

#[derive(Parser, Debug)]
#[command(
    name = "wk-alerter",
    version,
    about = "Watchkeeper alert processor: Rhai rules over InfluxDB",
    after_long_help = "Exit status: 0 done (or stopped by SIGTERM/SIGINT); 1 a run-time \
        failure (a listener that cannot bind, the runtime); 2 invalid input: a config or rule \
        that does not load, data that does not parse, every evaluation of `test` failed, a bad \
        silence, an unknown notifier name, or invalid arguments. `notifiers test` exits 1 when \
        a receiver did not take its message.\n\nSIGHUP reloads the config and rules (what does not \
        load is refused and the running version kept). See docs/cli.md."
)]
struct Cli {
    /// Config file.
    #[arg(
        long,
        global = true,
        default_value = "/etc/watchkeeper/wk-alerter.conf"
    )]
    config: PathBuf,
    /// Log at debug level.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the alerter (the default).
    Run,
    /// Compile rule files (default: every file of the config's rules_dir); with a source
    /// configured, evaluate them once and print what would fire. Sends nothing.
    Check {
        /// Rule files; without any, the rules directory of the config.
        rules: Vec<PathBuf>,
        /// Only compile and run on sample data, even when a source is configured.
        #[arg(long)]
        no_eval: bool,
        /// Line protocol file (timestamps in ns) to run each rule on, at its last point's
        /// time, instead of synthetic sample data.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Evaluate one rule over recorded line protocol with a simulated clock and print the
    /// alert events it would send.
    Test {
        /// The rule file (.rhai).
        rule: PathBuf,
        /// Line protocol file (timestamps in ns).
        #[arg(long)]
        data: PathBuf,
        /// Print events as JSON lines.
        #[arg(long)]
        json: bool,
        /// Keep evaluating this long after the last point (to see NoData and recoveries).
        #[arg(long, default_value = "0s", value_parser = wk_core::values::parse_duration)]
        tail: Duration,
    },
    /// The config's notifiers.
    Notifiers {
        #[command(subcommand)]
        cmd: NotifiersCmd,
    },
    /// Silences made at run time: through the running alerter's API ([http] url, or its
    /// listener), or in the state dir when it does not answer or takes no changes without a
    /// token and none is configured (it reads them at start and every reload_interval); they
    /// survive restarts.
    Silence {
        #[command(subcommand)]
        cmd: SilenceCmd,
    },
    #[command(flatten)]
    Generate(Generate),
}

#[derive(Subcommand, Debug)]
enum NotifiersCmd {
    /// Send one test message through each notifier (or those named) and say whether its
    /// receiver took it: once, within the notifier's timeout, no retry, whatever its
    /// min_level; with a [heartbeat], one ping to its url (name: heartbeat). Exits 1 when
    /// one did not.
    Test {
        /// Notifier names; without any, every notifier of the config.
        names: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum SilenceCmd {
    /// Silence the alerts that match every --match, for a while; prints the silence's id.
    Add {
        /// key=glob, key!=glob, key=~regex or key!~regex; `rule` names the rule, a quoted
        /// key ("k8s pod"=x) any tag (repeatable).
        #[arg(long = "match", required = true)]
        matchers: Vec<String>,
        /// How long from now (or from --starts), e.g. 2h.
        #[arg(long = "for", value_parser = wk_core::values::parse_duration, conflicts_with = "until")]
        duration: Option<Duration>,
        /// When it ends (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// When it starts (RFC 3339); default now.
        #[arg(long)]
        starts: Option<String>,
        /// Why, and who asked (shown in logs and `silence list`).
        #[arg(long, required = true)]
        comment: String,
    },
    /// List the silences (ended ones too with --all).
    List {
        /// Also the silences that have ended.
        #[arg(long)]
        all: bool,
    },
    /// End a silence now.
    Expire {
        /// The silence's id (as `silence add` printed it, or from `silence list`).
        id: String,
    },
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn main() -> ExitCode {
    wk_alerter::memory::tune();
    let cli = Cli::parse();
    init_logging(cli.debug);
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Run => run(&cli.config),
        Cmd::Check {
            rules,
            no_eval,
            data,
        } => check(&cli.config, &rules, no_eval, data.as_deref()),
        Cmd::Test {
            rule,
            data,
            json,
            tail,
        } => test(&rule, &data, json, tail),
        Cmd::Notifiers {
            cmd: NotifiersCmd::Test { names },
        } => notifiers_test(&cli.config, &names),
        Cmd::Silence { cmd } => silence(&cli.config, cmd),
        Cmd::Generate(g) => ExitCode::from(g.run(Cli::command())),
    }
}

/// The config (invalid: exit 2) and the runtime (cannot start: exit 1) a command runs on.
fn config_and_runtime(
    config_path: &Path,
) -> Result<(wk_alerter::config::Config, tokio::runtime::Runtime), ExitCode> {
    let cfg = app::load_config(config_path, &env_lookup).ok_or(ExitCode::from(EXIT_INVALID))?;
    let rt = app::runtime().map_err(|e| {
        error!("cannot start the runtime: {e}");
        ExitCode::from(exit::FAILURE)
    })?;
    Ok((cfg, rt))
}

fn notifiers_test(config_path: &Path, names: &[String]) -> ExitCode {
    let (cfg, rt) = match config_and_runtime(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let results = match rt.block_on(app::notify_test(&cfg, names)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wk-alerter notifiers test: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let mut failed = 0;
    for r in &results {
        let _ = match &r.outcome {
            Ok(took) => out(format_args!(
                "{} ({}): delivered in {} ms",
                r.name,
                r.kind,
                took.as_millis()
            )),
            Err(e) => {
                failed += 1;
                out(format_args!("{} ({}): FAILED: {e}", r.name, r.kind))
            }
        };
    }
    if failed > 0 {
        eprintln!("{failed} of {} notifiers failed", results.len());
        return ExitCode::from(exit::FAILURE);
    }
    ExitCode::SUCCESS
}

fn silence(config_path: &Path, cmd: SilenceCmd) -> ExitCode {
    use wk_alerter::api::client::{self, SilenceRequest};
    use wk_alerter::notify::text::parse_rfc3339;
    let Some(cfg) = app::load_config(config_path, &env_lookup) else {
        return ExitCode::from(EXIT_INVALID);
    };
    let now = wk_alerter::clock::now_ns();
    let req = match cmd {
        SilenceCmd::Add {
            matchers,
            duration,
            until,
            starts,
            comment,
        } => (|| {
            let starts = starts
                .map(|t| parse_rfc3339(&t).map_err(|e| format!("--starts: {e}")))
                .transpose()?;
            let ends = match (duration, until) {
                (Some(d), _) => starts.unwrap_or(now) + d.as_nanos() as i64,
                (None, Some(t)) => parse_rfc3339(&t).map_err(|e| format!("--until: {e}"))?,
                (None, None) => return Err("give --for DURATION or --until TIME".to_owned()),
            };
            Ok(SilenceRequest::Add {
                matchers,
                starts,
                ends,
                comment,
                by: who(),
            })
        })(),
        SilenceCmd::List { all } => Ok(SilenceRequest::List { all }),
        SilenceCmd::Expire { id } => Ok(SilenceRequest::Expire { id }),
    };
    match req.and_then(|r| client::silence(&cfg, &r, now)) {
        Ok((text, note)) => {
            if let Some(n) = note {
                eprintln!("wk-alerter silence: {n}");
            }
            if !text.is_empty() {
                println!("{text}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wk-alerter silence: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `$SUDO_USER` or `$USER`, at the host name: who made a silence.
fn who() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{user}@{}", host.trim())
}

fn init_logging(debug: bool) {
    wk_core::logging::init(if debug { "debug" } else { "info" });
}

fn run(config_path: &Path) -> ExitCode {
    let (cfg, rt) = match config_and_runtime(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    rt.block_on(async {
        let (tx, rx) = mpsc::channel(4);
        if let Err(e) = wk_core::control::forward_signals(tx) {
            error!("cannot install signal handlers: {e}");
            return ExitCode::from(exit::FAILURE);
        }
        match app::run(config_path, cfg, env_lookup, rx).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e @ app::StartError::Listen { .. }) => {
                error!("{e}");
                ExitCode::from(exit::FAILURE)
            }
            Err(e) => {
                error!("{e}");
                ExitCode::from(EXIT_INVALID)
            }
        }
    })
}

fn check(config_path: &Path, given: &[PathBuf], no_eval: bool, data: Option<&Path>) -> ExitCode {
    // The config is optional for compiling named files; it is needed to evaluate.
    let cfg = if config_path.exists() || given.is_empty() {
        match app::load_config(config_path, &env_lookup) {
            Some(c) => Some(c),
            None => return ExitCode::from(EXIT_INVALID),
        }
    } else {
        None
    };
    let paths = app::rule_paths(cfg.as_ref(), given);
    if paths.is_empty() {
        error!("no rule files to check");
        return ExitCode::from(EXIT_INVALID);
    }
    let points = match data.map(read_points).transpose() {
        Ok(p) => p,
        Err(code) => return code,
    };
    let opts = app::CheckOptions {
        eval: !no_eval,
        data: points.as_deref(),
    };
    if app::check(cfg.as_ref(), &paths, &opts, &mut std::io::stdout().lock()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_INVALID)
    }
}

/// Writes one line to stdout; false when stdout is gone (`wk-alerter test ... | head`), where
/// `println!` would panic on the broken pipe.
fn out(line: std::fmt::Arguments<'_>) -> bool {
    use std::io::Write;
    writeln!(std::io::stdout().lock(), "{line}").is_ok()
}

fn print_event(e: &AlertEvent, json: bool) -> bool {
    if json {
        match serde_json::to_string(e) {
            Ok(s) => out(format_args!("{s}")),
            Err(err) => {
                error!("cannot encode event: {err}");
                true
            }
        }
    } else {
        let t = wk_alerter::template::format_rfc3339(e.time);
        out(format_args!(
            "{t} {:<8} {:<9} {} {}",
            e.level.as_str(),
            format!("{:?}", e.kind).to_lowercase(),
            e.id,
            e.message
        ))
    }
}

/// The points of a line protocol file (timestamps in ns); at least one.
fn read_points(data: &Path) -> Result<Vec<wk_core::metric::Metric>, ExitCode> {
    let text = std::fs::read_to_string(data).map_err(|e| {
        eprintln!("{}: {e}", data.display());
        ExitCode::from(EXIT_INVALID)
    })?;
    let points = wk_core::lineproto::parse(&text, 0).map_err(|e| {
        eprintln!("{}: {e}", data.display());
        ExitCode::from(EXIT_INVALID)
    })?;
    if points.is_empty() {
        eprintln!("{}: no points", data.display());
        return Err(ExitCode::from(EXIT_INVALID));
    }
    Ok(points)
}

fn test(rule_path: &Path, data: &Path, json: bool, tail: Duration) -> ExitCode {
    let rule = match app::load_rule(rule_path, None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let points = match read_points(data) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (mut count, mut failed, mut evaluations) = (0, 0, 0);
    for step in app::replay(&rule, &points, tail) {
        evaluations += 1;
        if let Some(e) = &step.failure {
            failed += 1;
            eprintln!(
                "{}: evaluation failed: {e}",
                wk_alerter::template::format_rfc3339(step.time)
            );
        }
        for (e, plans) in &step.events {
            let mut written = print_event(e, json);
            for p in plans {
                written &= if json {
                    out(format_args!(
                        "{}",
                        serde_json::json!({ "action": p.action, "id": e.id, "plan": p.plan })
                    ))
                } else {
                    out(format_args!("    {}", p.plan))
                };
            }
            if !written {
                // The reader went away: nothing left to tell.
                return ExitCode::SUCCESS;
            }
            count += 1;
        }
    }
    if !json {
        eprintln!("{count} events, {evaluations} evaluations, {failed} failed");
    }
    // Every evaluation failing is not a clean replay (it printed "0 events" and exited 0).
    if evaluations > 0 && failed == evaluations {
        eprintln!("every evaluation failed");
        return ExitCode::from(EXIT_INVALID);
    }
    ExitCode::SUCCESS
}
