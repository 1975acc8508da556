//! wk-agent command line: parse flags, load the config, then test, run once or run as a daemon
//! (SIGHUP reloads, SIGTERM/SIGINT stop). The logic lives in the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing::{error, info, warn};
use wk_agent::config::{self, LoadRequest, Plan};
use wk_agent::hostpaths::HostPaths;
use wk_agent::{agent, inputs, lineproto, outputs};

/// Exit status for a config that does not load.
const EXIT_CONFIG: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "wk-agent",
    version,
    about = "Watchkeeper host agent: Telegraf-compatible metrics from /proc"
)]
struct Cli {
    /// Config file (repeatable). Default: $TELEGRAF_CONFIG_PATH, else /etc/telegraf/telegraf.conf
    /// plus /etc/telegraf/telegraf.d/*.conf.
    #[arg(long, value_name = "FILE")]
    config: Vec<PathBuf>,
    /// Directory of *.conf files, walked recursively in lexical order (repeatable).
    #[arg(long, value_name = "DIR")]
    config_directory: Vec<PathBuf>,
    /// Gather once (twice for rate inputs), print line protocol to stdout, write nowhere.
    #[arg(long)]
    test: bool,
    /// Gather once, write to the outputs, exit; non-zero if an input failed or metrics are unsent.
    #[arg(long)]
    once: bool,
    /// With --test: wait this many seconds after gathering before exiting.
    #[arg(long, value_name = "SECS")]
    test_wait: Option<u64>,
    /// Only run these inputs, separated by ':' (e.g. cpu:mem).
    #[arg(long, value_name = "a:b")]
    input_filter: Option<String>,
    /// Only run these outputs, separated by ':'.
    #[arg(long, value_name = "a:b")]
    output_filter: Option<String>,
    /// Print a sample config (limited by --input-filter/--output-filter) and exit.
    #[arg(long)]
    sample_config: bool,
    /// Log at debug level.
    #[arg(long)]
    debug: bool,
    /// Log only errors.
    #[arg(long)]
    quiet: bool,
    /// Write the process id to this file.
    #[arg(long, value_name = "FILE")]
    pidfile: Option<PathBuf>,
}

fn split_filter(f: &Option<String>) -> Option<Vec<String>> {
    f.as_ref().map(|s| {
        s.split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect()
    })
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let input_filter = split_filter(&cli.input_filter);
    let output_filter = split_filter(&cli.output_filter);
    if cli.sample_config {
        print!(
            "{}",
            sample_config(input_filter.as_deref(), output_filter.as_deref())
        );
        return ExitCode::SUCCESS;
    }
    init_logging(cli.debug, cli.quiet);

    let (configs, config_dirs) = default_config_paths(&cli);
    let test_mode = cli.test || cli.test_wait.is_some() && !cli.once;
    let req = LoadRequest {
        configs,
        config_dirs,
        input_filter,
        output_filter,
        env: &env_lookup,
        paths: HostPaths::from_env(&env_lookup),
        test_mode,
        stats: Default::default(),
    };
    let plan = match load(&req) {
        Ok(p) => p,
        Err(()) => return ExitCode::from(EXIT_CONFIG),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if test_mode {
        return rt.block_on(run_test(plan, cli.test_wait));
    }
    if cli.once {
        return rt.block_on(run_once(plan));
    }
    if let Some(p) = &cli.pidfile
        && let Err(e) = std::fs::write(p, format!("{}\n", std::process::id()))
    {
        error!("cannot write pidfile {}: {e}", p.display());
        return ExitCode::FAILURE;
    }
    let code = rt.block_on(run_daemon(plan, &req));
    if let Some(p) = &cli.pidfile {
        let _ = std::fs::remove_file(p);
    }
    code
}

fn init_logging(debug: bool, quiet: bool) {
    wk_agent::logging::init(if debug {
        "debug"
    } else if quiet {
        "error"
    } else {
        "info"
    });
}

/// Telegraf's defaults when no --config is given.
fn default_config_paths(cli: &Cli) -> (Vec<PathBuf>, Vec<PathBuf>) {
    if !cli.config.is_empty() || !cli.config_directory.is_empty() {
        return (cli.config.clone(), cli.config_directory.clone());
    }
    if let Ok(p) = std::env::var("TELEGRAF_CONFIG_PATH") {
        return (vec![p.into()], vec![]);
    }
    let dirs = if std::path::Path::new("/etc/telegraf/telegraf.d").is_dir() {
        vec![PathBuf::from("/etc/telegraf/telegraf.d")]
    } else {
        vec![]
    };
    (vec![PathBuf::from("/etc/telegraf/telegraf.conf")], dirs)
}

/// Loads the config, logging warnings, and every error on failure.
fn load(req: &LoadRequest<'_>) -> Result<Plan, ()> {
    match config::load(req) {
        Ok(plan) => {
            for w in &plan.warnings {
                warn!("{w}");
            }
            Ok(plan)
        }
        Err(e) => {
            for d in &e.errors {
                error!("{d}");
            }
            Err(())
        }
    }
}

async fn run_test(mut plan: Plan, wait: Option<u64>) -> ExitCode {
    let results = agent::gather_once(&mut plan, true).await;
    let mut failed = false;
    let mut out = std::io::stdout().lock();
    for (name, outcome) in &results {
        for e in &outcome.errors {
            error!(input = %name, "{e}");
            failed = true;
        }
        for m in &outcome.metrics {
            let _ = out.write_all(lineproto::test_format(m).as_bytes());
        }
    }
    let _ = out.flush();
    if let Some(secs) = wait {
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn run_once(mut plan: Plan) -> ExitCode {
    for o in plan.outputs.iter_mut() {
        agent::open_disk_buffer(o);
    }
    let results = agent::gather_once(&mut plan, true).await;
    let mut failed = false;
    for (name, outcome) in &results {
        for e in &outcome.errors {
            error!(input = %name, "{e}");
            failed = true;
        }
        for m in &outcome.metrics {
            for o in plan.outputs.iter_mut() {
                o.add(m);
            }
        }
    }
    for o in plan.outputs.iter_mut() {
        if let Err(e) = o.flush() {
            error!(output = %o.log_name(), unsent = o.buffered(), "write failed: {e}");
            failed = true;
        }
        o.close();
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn run_daemon(mut plan: Plan, req: &LoadRequest<'_>) -> ExitCode {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    loop {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(agent::run(plan, async {
            let _ = stop_rx.await;
        }));
        let next = loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading configuration");
                    // Build the new plan first; the running one stays if it does not build.
                    match load(req) {
                        Ok(new) => break Some(new),
                        Err(()) => error!("new configuration is invalid; keeping the running one"),
                    }
                }
                _ = term.recv() => break None,
                _ = int.recv() => break None,
            }
        };
        let _ = stop_tx.send(());
        if let Ok(Err(e)) = running.await {
            error!("agent failed: {e:#}");
            return ExitCode::FAILURE;
        }
        match next {
            Some(new) => plan = new,
            None => return ExitCode::SUCCESS,
        }
    }
}

/// The `[agent]` section, every output's and every input's sample, as Telegraf's
/// `telegraf config` prints them.
fn sample_config(inputs_f: Option<&[String]>, outputs_f: Option<&[String]>) -> String {
    let mut s = String::from(include_str!("agent_sample.conf"));
    let keep = |f: Option<&[String]>, name: &str| f.is_none_or(|f| f.iter().any(|n| n == name));
    for o in outputs::REGISTRY.iter().filter(|o| keep(outputs_f, o.name)) {
        s.push('\n');
        s.push_str(o.sample_config);
    }
    for i in inputs::REGISTRY.iter().filter(|i| keep(inputs_f, i.name)) {
        s.push('\n');
        s.push_str(i.sample_config);
    }
    s
}
