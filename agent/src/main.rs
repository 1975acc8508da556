//! wk-agent command line: parse flags, load the config, then test, run once or run as a daemon
//! (SIGHUP reloads, SIGTERM/SIGINT stop). The logic lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use tokio::sync::mpsc;
use tracing::error;
use wk_agent::config::{self, LoadRequest};
use wk_agent::daemon;
use wk_agent::hostpaths::HostPaths;
use wk_core::cli::{Generate, exit};

#[derive(Parser, Debug)]
#[command(
    name = "wk-agent",
    version,
    about = "Watchkeeper host agent: Telegraf-compatible metrics from /proc",
    after_long_help = "Exit status: 0 done (or stopped by SIGTERM/SIGINT); 1 an input failed \
        in --test or --once, metrics unsent, or a run-time failure; 2 the config does not load \
        or the arguments are invalid.\n\nSIGHUP reloads the config (a config that does not load \
        is refused and the running one kept). See docs/cli.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Generate>,
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
    /// With --test: also apply the daemon's checks (a config without outputs is invalid,
    /// exit 2), as a deploy must before installing a config the daemon will load.
    #[arg(long)]
    require_outputs: bool,
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
    if let Some(g) = &cli.command {
        return ExitCode::from(g.run(Cli::command()));
    }
    let input_filter = split_filter(&cli.input_filter);
    let output_filter = split_filter(&cli.output_filter);
    if cli.sample_config {
        print!(
            "{}",
            config::sample_config(input_filter.as_deref(), output_filter.as_deref())
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
        test_mode: test_mode && !cli.require_outputs,
        stats: Default::default(),
    };
    let Some(plan) = daemon::load(&req) else {
        return ExitCode::from(exit::INVALID);
    };
    let flags_chose_level = cli.debug || cli.quiet;
    config_log_level(flags_chose_level, &plan);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let status = |ok: bool| {
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(exit::FAILURE)
        }
    };
    if test_mode {
        let wait = cli.test_wait.map(Duration::from_secs);
        return status(rt.block_on(daemon::test(plan, wait, &mut std::io::stdout().lock())));
    }
    if cli.once {
        return status(rt.block_on(daemon::once(plan)));
    }
    if let Some(p) = &cli.pidfile
        && let Err(e) = std::fs::write(p, format!("{}\n", std::process::id()))
    {
        error!("cannot write pidfile {}: {e}", p.display());
        return ExitCode::from(exit::FAILURE);
    }
    let code = rt.block_on(async {
        let (tx, rx) = mpsc::channel(4);
        if let Err(e) = wk_core::control::forward_signals(tx) {
            error!("cannot install signal handlers: {e}");
            return ExitCode::from(exit::FAILURE);
        }
        let reload = || {
            let plan = daemon::load(&req)?;
            config_log_level(flags_chose_level, &plan);
            Some(plan)
        };
        daemon::run(plan, reload, rx).await;
        ExitCode::SUCCESS
    });
    if let Some(p) = &cli.pidfile {
        let _ = std::fs::remove_file(p);
    }
    code
}

/// The config's `[agent] debug`/`quiet`, at start and at every reload (back to info when
/// a reload turns them off), unless a flag chose the level (flags, then `WK_LOG`, win).
fn config_log_level(flags_chose_level: bool, plan: &wk_agent::config::Plan) {
    if flags_chose_level {
        return;
    }
    wk_agent::logging::set_level(match (plan.agent.debug, plan.agent.quiet) {
        (true, _) => "debug",
        (false, true) => "error",
        _ => "info",
    });
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
