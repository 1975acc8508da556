//! wk-alerter command line: `run` (the daemon), `check` (compile rules, and with a source
//! configured evaluate them once, sending nothing) and `test` (a rule over recorded line
//! protocol with a simulated clock). The logic lives in the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing::{error, info, warn};
use wk_alerter::config::{self, Config, InfluxSource};
use wk_alerter::model::{AlertEvent, CycleResult, Level};
use wk_alerter::rules::{Limits, load_rule_with};
use wk_alerter::service::Service;
use wk_alerter::source::{InfluxAuth, InfluxDbConfig, InfluxDbSource, MemorySource, QuerySource};
use wk_alerter::state::{RuleState, determine_level};

const EXIT_INVALID: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "wk-alerter",
    version,
    about = "Watchkeeper alert processor: Rhai rules over InfluxDB"
)]
struct Cli {
    /// Config file.
    #[arg(long, global = true, default_value = "/etc/wk-alerter/wk-alerter.conf")]
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
        /// Only compile, even when a source is configured.
        #[arg(long)]
        no_eval: bool,
    },
    /// Evaluate one rule over recorded line protocol with a simulated clock and print the
    /// alert events it would send.
    Test {
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
}

fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.debug);
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::Run => run(&cli.config),
        Cmd::Check { rules, no_eval } => check(&cli.config, &rules, no_eval),
        Cmd::Test {
            rule,
            data,
            json,
            tail,
        } => test(&rule, &data, json, tail),
    }
}

fn init_logging(debug: bool) {
    wk_core::logging::init(if debug { "debug" } else { "info" });
}

fn load_config(path: &Path) -> Result<Config, ()> {
    match config::load(path, &env_lookup) {
        Ok(c) => {
            for w in &c.warnings {
                warn!("{w}");
            }
            Ok(c)
        }
        Err(e) => {
            for d in &e.errors {
                error!("{d}");
            }
            Err(())
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    // Rules run on the blocking pool and wait for InfluxDB answers that the worker threads
    // drive, so the runtime needs workers of its own.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| error!("cannot start the runtime: {e}"))
        .ok()
}

fn influx_source(s: &InfluxSource, handle: tokio::runtime::Handle) -> Option<Arc<dyn QuerySource>> {
    let auth = if !s.token.is_empty() {
        InfluxAuth::Token(s.token.clone())
    } else if !s.username.is_empty() {
        InfluxAuth::Basic {
            username: s.username.clone(),
            password: s.password.clone(),
        }
    } else {
        InfluxAuth::None
    };
    let cfg = InfluxDbConfig {
        url: s.url.clone(),
        database: s.database.clone(),
        retention_policy: (!s.retention_policy.is_empty()).then(|| s.retention_policy.clone()),
        auth,
        timeout: s.timeout,
    };
    match InfluxDbSource::new(cfg, handle) {
        Ok(src) => Some(Arc::new(src)),
        Err(e) => {
            error!("[[sources.influxdb]] {}: {e}", s.url);
            None
        }
    }
}

fn run(config_path: &Path) -> ExitCode {
    let Ok(cfg) = load_config(config_path) else {
        return ExitCode::from(EXIT_INVALID);
    };
    // The loader guarantees exactly one of [[sources.influxdb]] and [stream].
    let source_cfg = cfg.sources.first().cloned();
    let stream_cfg = cfg.stream.clone();
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
            (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            error!("cannot install signal handlers");
            return ExitCode::FAILURE;
        };
        // Stream mode: the receiver lives as long as this block (dropping it stops it).
        let mut _receiver = None;
        let (source, label): (Arc<dyn QuerySource>, String) = match (&source_cfg, &stream_cfg) {
            (Some(sc), _) => {
                let Some(source) = influx_source(sc, tokio::runtime::Handle::current()) else {
                    return ExitCode::from(EXIT_INVALID);
                };
                (source, sc.url.clone())
            }
            (None, Some(st)) => {
                let store = Arc::new(MemorySource::new());
                let receiver = match wk_alerter::stream::Receiver::start(st, store.clone()).await {
                    Ok(r) => r,
                    Err(e) => {
                        error!("[stream] cannot listen on {}: {e}", st.listen);
                        return ExitCode::FAILURE;
                    }
                };
                wk_alerter::stream::log_listening(&receiver, st);
                let label = format!("stream http://{}", receiver.local_addr());
                _receiver = Some(receiver);
                (store, label)
            }
            (None, None) => {
                error!("{}: no data source configured", config_path.display());
                return ExitCode::from(EXIT_INVALID);
            }
        };
        info!(rules_dir = %cfg.settings.rules_dir.display(), source = %label, "wk-alerter starting");
        let service = Service::new(cfg, source);
        let (reload_tx, reload_rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(service.run(
            async {
                let _ = stop_rx.await;
            },
            reload_rx,
        ));
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    info!("SIGHUP: reloading configuration and rules");
                    // A config that does not load is refused; the running one stays.
                    match load_config(config_path) {
                        Ok(c) => {
                            if c.stream != stream_cfg {
                                warn!("[stream] changed: restart wk-alerter to apply it; the running receiver stays");
                            }
                            let _ = reload_tx.send(Some(Box::new(c)));
                        }
                        Err(()) => error!("new configuration is invalid; keeping the running one"),
                    }
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        let _ = stop_tx.send(());
        let _ = running.await;
        ExitCode::SUCCESS
    })
}

fn rule_paths(cfg: Option<&Config>, given: &[PathBuf]) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let Some(dir) = cfg.map(|c| c.settings.rules_dir.clone()) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

fn check(config_path: &Path, given: &[PathBuf], no_eval: bool) -> ExitCode {
    // The config is optional for compiling named files; it is needed to evaluate.
    let cfg = if config_path.exists() || given.is_empty() {
        match load_config(config_path) {
            Ok(c) => Some(c),
            Err(()) => return ExitCode::from(EXIT_INVALID),
        }
    } else {
        None
    };
    let paths = rule_paths(cfg.as_ref(), given);
    if paths.is_empty() {
        error!("no rule files to check");
        return ExitCode::from(EXIT_INVALID);
    }
    let limits = Limits {
        timeout: cfg
            .as_ref()
            .map_or(Duration::from_secs(10), |c| c.settings.max_eval_time),
        ..Limits::default()
    };
    let mut rules = Vec::new();
    let mut failed = false;
    for p in &paths {
        match load_rule_with(p, &limits) {
            Ok(r) => {
                let s = r.settings();
                if let Some(c) = &cfg
                    && let Err(e) = c.notify.validate_names(&s.notify)
                {
                    println!("{}: {e}", p.display());
                    failed = true;
                    continue;
                }
                if let Some(c) = &cfg
                    && let Err(((l, col), e)) = c.actions.validate_rule(s)
                {
                    println!("{}:{l}:{col}: {e}", p.display());
                    failed = true;
                    continue;
                }
                println!(
                    "ok {}: rule {:?} every {:?}, for {:?}, notify {:?}, actions {:?}",
                    p.display(),
                    s.name,
                    s.every,
                    s.pending,
                    s.notify,
                    s.actions
                        .iter()
                        .map(|a| a.action.as_str())
                        .collect::<Vec<_>>()
                );
                rules.push(r);
            }
            Err(e) => {
                println!("{e}");
                failed = true;
            }
        }
    }
    let source_cfg = cfg.as_ref().and_then(|c| c.sources.first().cloned());
    if !no_eval && cfg.as_ref().is_some_and(|c| c.stream.is_some()) {
        println!(
            "stream mode: rules compiled, not evaluated (the data only exists while wk-alerter runs)"
        );
    }
    if let (false, Some(sc)) = (no_eval, source_cfg) {
        let Some(rt) = runtime() else {
            return ExitCode::FAILURE;
        };
        let Some(source) = influx_source(&sc, rt.handle().clone()) else {
            return ExitCode::from(EXIT_INVALID);
        };
        let now = wk_alerter::clock::now_ns();
        for r in rules {
            let name = r.settings().name.clone();
            let src = source.clone();
            let result = rt.block_on(async move {
                tokio::task::spawn_blocking(move || r.evaluate(&src, now)).await
            });
            match result {
                Ok(CycleResult::Observed(obs)) => {
                    for o in obs {
                        let level = determine_level(Level::Ok, &o.levels);
                        let tags: Vec<String> =
                            o.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        let value = o
                            .fields
                            .get("value")
                            .map(|v| format!(" value={v:?}"))
                            .unwrap_or_default();
                        let verdict = if level > Level::Ok {
                            "would fire"
                        } else {
                            "ok"
                        };
                        println!("{name} [{}] {level} ({verdict}){value}", tags.join(","));
                    }
                }
                Ok(CycleResult::Failed(e)) => {
                    println!("{name}: evaluation failed: {e}");
                    failed = true;
                }
                Err(e) => {
                    println!("{name}: evaluation crashed: {e}");
                    failed = true;
                }
            }
        }
    }
    if failed {
        ExitCode::from(EXIT_INVALID)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_event(e: &AlertEvent, json: bool) {
    if json {
        match serde_json::to_string(e) {
            Ok(s) => println!("{s}"),
            Err(err) => error!("cannot encode event: {err}"),
        }
    } else {
        let t = wk_alerter::template::format_rfc3339(e.time);
        println!(
            "{t} {:<8} {:<9} {} {}",
            e.level.as_str(),
            format!("{:?}", e.kind).to_lowercase(),
            e.id,
            e.message
        );
    }
}

/// What the rule's actions would do for `e` (never run here).
fn print_actions(settings: &wk_alerter::model::RuleSettings, e: &AlertEvent, json: bool) {
    if e.kind != wk_alerter::model::EventKind::Alert {
        return;
    }
    for a in settings.actions.iter().filter(|a| e.level >= a.on) {
        let line = match a.render(e) {
            Ok(args) => {
                let plan = wk_alerter::actions::find(&a.action)
                    .map(|spec| (spec.build)(&args).plan().join("; "))
                    .unwrap_or_default();
                format!(
                    "would run {}({}) once held {} [{plan}]",
                    a.action,
                    args.summary(),
                    wk_alerter::template::format_duration(a.after)
                )
            }
            Err(m) => format!("would refuse: {m}"),
        };
        if json {
            println!(
                "{}",
                serde_json::json!({ "action": a.action, "id": e.id, "plan": line })
            );
        } else {
            println!("    {line}");
        }
    }
}

fn test(rule_path: &Path, data: &Path, json: bool, tail: Duration) -> ExitCode {
    let rule = match load_rule_with(rule_path, &Limits::default()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let text = match std::fs::read_to_string(data) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", data.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let points = match wk_core::lineproto::parse(&text, 0) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", data.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let (Some(first), Some(last)) = (
        points.iter().map(|m| m.time).min(),
        points.iter().map(|m| m.time).max(),
    ) else {
        eprintln!("{}: no points", data.display());
        return ExitCode::from(EXIT_INVALID);
    };
    let source: Arc<dyn QuerySource> = Arc::new(MemorySource::from_metrics(&points));
    let settings = rule.settings().clone();
    let every = settings.every.as_nanos().max(1) as i64;
    let mut state = RuleState::new();
    // The simulated clock: evaluations on multiples of `every`, from the first point to the
    // last plus `tail`.
    let mut now = (first.div_euclid(every) + 1) * every;
    let end = last + tail.as_nanos() as i64;
    let mut count = 0;
    while now <= end {
        let result = rule.evaluate(&source, now);
        if let CycleResult::Failed(e) = &result {
            eprintln!(
                "{}: evaluation failed: {e}",
                wk_alerter::template::format_rfc3339(now)
            );
        }
        for e in state.apply(&settings, &result, now) {
            print_event(&e, json);
            print_actions(&settings, &e, json);
            count += 1;
        }
        now += every;
    }
    if !json {
        eprintln!("{count} events");
    }
    ExitCode::SUCCESS
}
