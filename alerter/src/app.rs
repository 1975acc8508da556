//! The program's commands as library functions (mini-redis's `server::run`), so tests run
//! them in-process and `main.rs` only parses arguments and forwards signals:
//! [`run`] (the daemon: source or stream receiver, scheduler, reload and stop through
//! [`Control`]), [`check`] (compile rules, evaluate them once against the source) and
//! [`replay`] (one rule over recorded points with a simulated clock).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, info, warn};
use wk_core::metric::Metric;

use crate::config::{self, Config, InfluxSource, SourceKind};
use crate::model::{AlertEvent, CycleResult, EventKind, Level, RuleSettings};
use crate::rules::{Limits, Rule, load_rule_with, rule_files};
use crate::service::Service;
use crate::source::{
    InfluxAuth, InfluxDbConfig, InfluxDbSource, MemorySource, QuerySource, SyntheticSource,
    VictoriaMetricsConfig, VictoriaMetricsSource,
};
use crate::state::{RuleState, determine_level};

pub use wk_core::control::Control;

/// Why [`run`] could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}: no data source configured")]
    NoSource(String),
    #[error("[[sources.*]] {url}: {message}")]
    Source { url: String, message: String },
    #[error("[{section}] cannot listen on {listen}: {source}")]
    Listen {
        section: &'static str,
        listen: String,
        source: std::io::Error,
    },
}

/// Loads the config, logging its warnings, and every error on failure.
pub fn load_config(path: &Path, env: wk_core::options::EnvLookup<'_>) -> Option<Config> {
    match config::load(path, env) {
        Ok(c) => {
            for w in &c.warnings {
                warn!("{w}");
            }
            Some(c)
        }
        Err(e) => {
            for d in &e.errors {
                error!("{d}");
            }
            None
        }
    }
}

/// The source a `[[sources.influxdb]]` or `[[sources.victoriametrics]]` table describes.
pub fn query_source(
    s: &InfluxSource,
    handle: tokio::runtime::Handle,
) -> Option<Arc<dyn QuerySource>> {
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
    if s.kind == SourceKind::VictoriaMetrics {
        let cfg = VictoriaMetricsConfig {
            url: s.url.clone(),
            database: (!s.database.is_empty()).then(|| s.database.clone()),
            auth,
            timeout: s.timeout,
        };
        return match VictoriaMetricsSource::new(cfg, handle) {
            Ok(src) => Some(Arc::new(src)),
            Err(e) => {
                error!("[[sources.victoriametrics]] {}: {e}", s.url);
                None
            }
        };
    }
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

/// The daemon: starts the source (or the stream receiver), runs the rules until
/// [`Control::Stop`] (or the sender is dropped); on [`Control::Reload`] re-reads the config at
/// `config_path` with `env` and applies it only if it loads.
pub async fn run(
    config_path: &Path,
    cfg: Config,
    env: fn(&str) -> Option<String>,
    mut control: mpsc::Receiver<Control>,
) -> Result<(), StartError> {
    // The loader guarantees exactly one of [[sources.*]] and [stream].
    let source_cfg = cfg.sources.first().cloned();
    let stream_cfg = cfg.stream.clone();
    let http_cfg = cfg.http.clone();
    // Stream mode with snapshots: the periodic saver, and what to save at the end.
    let mut _snapshots: Option<tokio::task::JoinHandle<()>> = None;
    let mut window: Option<(Arc<MemorySource>, std::path::PathBuf)> = None;
    let (source, store, label): (Arc<dyn QuerySource>, Option<Arc<MemorySource>>, String) =
        match (&source_cfg, &stream_cfg) {
            (Some(sc), _) => {
                let source =
                    query_source(sc, tokio::runtime::Handle::current()).ok_or_else(|| {
                        StartError::Source {
                            url: sc.url.clone(),
                            message: "cannot build the client".into(),
                        }
                    })?;
                (source, None, sc.url.clone())
            }
            (None, Some(st)) => {
                let store = if st.snapshot_interval.is_zero() {
                    Arc::new(MemorySource::new())
                } else {
                    let path = cfg.settings.state_dir.join(crate::stream::WINDOW_FILE);
                    let load =
                        tokio::task::spawn_blocking(move || crate::stream::load_window(&path));
                    let store = Arc::new(load.await.unwrap_or_default());
                    let path = cfg.settings.state_dir.join(crate::stream::WINDOW_FILE);
                    _snapshots = Some(tokio::spawn(crate::stream::snapshot_loop(
                        store.clone(),
                        path.clone(),
                        st.snapshot_interval,
                    )));
                    window = Some((store.clone(), path));
                    store
                };
                (store.clone(), Some(store), "stream".into())
            }
            (None, None) => return Err(StartError::NoSource(config_path.display().to_string())),
        };
    let state_dir = cfg.settings.state_dir.clone();
    let mut live = Running {
        state_dir: state_dir.clone(),
        stream: stream_cfg.clone(),
        http: http_cfg.clone(),
    };
    let rules_dir = cfg.settings.rules_dir.clone();
    let mut service = Service::new(cfg, source);
    if stream_cfg.is_some() {
        service.source_back_now();
    }
    let board = service.board();
    let (reload_tx, reload_rx) = mpsc::unbounded_channel();
    let api = Arc::new(crate::api::Api::new(
        board.clone(),
        service.router().clone(),
        service.engine().clone(),
        state_dir,
        reload_tx.clone(),
        live.openness(),
    ));
    let access = api.clone();
    // One HTTP server: the stream receiver with the API, or (query mode) the API alone.
    // It lives as long as this function (dropping it stops it).
    let _server = serve(stream_cfg.as_ref(), &http_cfg, store, api).await?;
    let label = match &_server {
        Some(s) if stream_cfg.is_some() => format!("stream http://{}", s.local_addr()),
        _ => label,
    };
    board.update(|b| {
        b.started = crate::clock::now_ns();
        b.source = label.clone();
    });
    info!(rules_dir = %rules_dir.display(), source = %label, "wk-alerter starting");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run(
        async {
            let _ = stop_rx.await;
        },
        reload_rx,
    ));
    while let Some(Control::Reload) = control.recv().await {
        info!("reloading configuration and rules");
        match load_config(config_path, &env) {
            Some(mut c) => {
                let restart = live.pin(&mut c);
                let listener = (c.stream.clone(), c.http.clone());
                // Nothing of it applies unless the running rules fit it.
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = reload_tx.send(Some((Box::new(c), tx)));
                match rx.await {
                    Ok(Ok(())) => {
                        for what in restart {
                            warn!(
                                "changed {what}: restart wk-alerter to apply it; the running one stays"
                            );
                        }
                        live.reload((&listener.0, &listener.1), _server.as_ref(), &access)
                    }
                    Ok(Err(e)) => error!("new configuration refused; keeping the running one: {e}"),
                    Err(_) => {}
                }
            }
            None => error!("new configuration is invalid; keeping the running one"),
        }
    }
    let _ = stop_tx.send(());
    let _ = running.await;
    // Writes stop before the window's last save, and those under way finish: an agent told
    // 204 does not send them again.
    if let Some(server) = _server {
        server.shutdown().await;
    }
    if let Some(task) = _snapshots {
        task.abort();
    }
    if let Some((store, path)) = window {
        // The last writes are in: save them so that the next start has the whole window.
        let saved = tokio::task::spawn_blocking(move || {
            crate::stream::save_window(&store, &path).map(|b| (b, path))
        })
        .await;
        match saved {
            Ok(Ok((bytes, path))) => info!(bytes, "stream: window saved to {}", path.display()),
            Ok(Err(e)) => error!("stream: cannot save the window; it is lost at exit: {e}"),
            Err(e) => error!("stream: saving the window failed: {e}"),
        }
    }
    Ok(())
}

/// Starts the alerter's HTTP server: the stream receiver (stream mode) or `[http] listen`
/// (query mode), with the status page and API; says where the page is. In query mode
/// without an `[http]` listen of its own, a default address already in use (another alerter
/// on this host) is a warning, not a failure.
async fn serve(
    stream: Option<&crate::stream::StreamSettings>,
    http: &crate::config::HttpSettings,
    store: Option<Arc<MemorySource>>,
    api: Arc<crate::api::Api>,
) -> Result<Option<crate::stream::Receiver>, StartError> {
    let board = api.clone();
    let (settings, section) = match stream {
        Some(st) => (st.clone(), "stream"),
        None if http.listen.is_empty() => {
            info!("status page off ([http] listen = \"\")");
            return Ok(None);
        }
        None => (
            crate::stream::StreamSettings {
                listen: http.listen.clone(),
                token: http.token.clone(),
                tls_cert: http.tls_cert.clone(),
                tls_key: http.tls_key.clone(),
                ..Default::default()
            },
            "http",
        ),
    };
    let server = match crate::stream::Receiver::start_with(&settings, store, Some(api)).await {
        Ok(s) => s,
        Err(e)
            if stream.is_none()
                && !http.listen_set
                && e.kind() == std::io::ErrorKind::AddrInUse =>
        {
            warn!(
                "status page not served: {} is in use (another wk-alerter?); set [http] listen",
                settings.listen
            );
            return Ok(None);
        }
        Err(source) => {
            return Err(StartError::Listen {
                section,
                listen: settings.listen.clone(),
                source,
            });
        }
    };
    if stream.is_some() {
        crate::stream::log_listening(&server, &settings);
    }
    let scheme = if settings.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let mut addr = server.local_addr();
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("{scheme}://{addr}/");
    info!(
        listen = %server.local_addr(),
        "status page at {url} (JSON API under {url}api/v1/, metrics at {url}metrics)"
    );
    board.board().set_url(url);
    Ok(Some(server))
}

/// A runtime for the alerter. Rules run on the blocking pool and wait for InfluxDB answers
/// that the worker threads drive, so the runtime needs workers of its own.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

/// What `notifiers test` found for one notifier.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyTest {
    pub name: String,
    pub kind: String,
    /// How long the receiver took to accept the message, or why it did not.
    pub outcome: Result<Duration, String>,
}

/// `notifiers test`: sends one test message through each notifier of `cfg` (or those named),
/// once, within its `timeout`, with no retry and whatever its `min_level` (a message the
/// operator asked for), as the running alerter would format it (a grouped notifier gets a
/// group of one). Names the config does not have are an error, listing those it has.
pub async fn notify_test(cfg: &Config, names: &[String]) -> Result<Vec<NotifyTest>, String> {
    let all = &cfg.notify.notifiers;
    let heartbeat = cfg.heartbeat.as_ref();
    if all.is_empty() && heartbeat.is_none() {
        return Err("the config has no [[notifiers.*]] and no [heartbeat]".into());
    }
    let unknown: Vec<&str> = (names.iter())
        .filter(|n| !all.iter().any(|rn| &rn.settings.name == *n))
        .filter(|n| !(heartbeat.is_some() && *n == "heartbeat"))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let mut known: Vec<&str> = all.iter().map(|rn| rn.settings.name.as_str()).collect();
        if heartbeat.is_some() {
            known.push("heartbeat");
        }
        return Err(format!(
            "no notifier named {}; the config has: {}",
            unknown.join(", "),
            known.join(", ")
        ));
    }
    let host = crate::actions::config::hostname();
    let mut out = Vec::new();
    for rn in all {
        let s = &rn.settings;
        if !names.is_empty() && !names.contains(&s.name) {
            continue;
        }
        let mut event = AlertEvent {
            rule: "wk_test".into(),
            id: format!("wk_test:{}", s.name),
            message: format!(
                "test message from wk-alerter on {host} (`wk-alerter notifiers test`): notifier {} reaches you",
                s.name
            ),
            kind: EventKind::Alert,
            level: Level::Info,
            time: crate::clock::now_ns(),
            notify: vec![s.name.clone()],
            ..Default::default()
        };
        event.point_time = event.time;
        event.tags.insert("host".into(), host.clone());
        let event = Arc::new(event);
        let started = tokio::time::Instant::now();
        let send = async {
            match &s.group {
                Some(g) => {
                    let n = crate::notify::Notification {
                        labels: g.labels(&event),
                        firing: vec![event.clone()],
                        resolved: Vec::new(),
                        reports: Vec::new(),
                        unchanged: Default::default(),
                    };
                    rn.notifier.send_group(&n).await
                }
                None => rn.notifier.send(&event).await,
            }
        };
        let outcome = match tokio::time::timeout(s.timeout, send).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "no answer within its timeout ({})",
                crate::template::format_duration(s.timeout)
            )),
        };
        out.push(NotifyTest {
            name: s.name.clone(),
            kind: s.kind.clone(),
            outcome,
        });
    }
    // The dead man's switch: one ping to `url` (never `fail_url`: that would page).
    if let Some(h) =
        heartbeat.filter(|_| names.is_empty() || names.iter().any(|n| n == "heartbeat"))
    {
        let started = tokio::time::Instant::now();
        out.push(NotifyTest {
            name: "heartbeat".into(),
            kind: "heartbeat".into(),
            outcome: h.ping_once().await.map(|()| started.elapsed()),
        });
    }
    Ok(out)
}

/// The HTTP side a reload can change only in part: the token and the access switches apply
/// at once (rotation without a restart); the listener, TLS, the rest of `[stream]` and the
/// state dir need a restart, and the running ones are kept until then, with a warning.
struct Running {
    state_dir: std::path::PathBuf,
    stream: Option<crate::stream::StreamSettings>,
    http: crate::config::HttpSettings,
}

impl Running {
    /// The token in force: `[stream]`'s in stream mode, else `[http]`'s.
    fn token(&self) -> &str {
        crate::config::api_token(&self.stream, &self.http)
    }

    /// What the API serves without the token.
    fn openness(&self) -> crate::api::Openness {
        crate::api::Openness {
            read_only_without_token: self.http.read_only_without_token,
            // Not even when no token is configured (query mode on loopback): a reverse proxy
            // on this host that adds no X-Forwarded-For would open changes to whoever
            // reaches it. `wk-alerter silence` then writes in the state dir.
            loopback_writes: self.http.loopback_writes_without_token,
        }
    }

    /// Keeps the running state dir in `new` (the API and the scheduler go on writing where
    /// they started); returns what of `new` needs a restart, to be said once it is taken.
    fn pin(&self, new: &mut Config) -> Vec<&'static str> {
        let restart = self.restart_needed(new);
        new.settings.state_dir = self.state_dir.clone();
        restart
    }

    /// Applies a new config's token and access switches (its `[stream]` and `[http]`) to
    /// `server` and `api`.
    fn reload(
        &mut self,
        (stream, http): (
            &Option<crate::stream::StreamSettings>,
            &crate::config::HttpSettings,
        ),
        server: Option<&crate::stream::Receiver>,
        api: &crate::api::Api,
    ) {
        let new_token = crate::config::api_token(stream, http).to_owned();
        // The loader wants a token off loopback, judged on the new listen: a listener that
        // runs off loopback keeps its token until the restart that moves it.
        let exposed = self.stream.is_none()
            && self
                .http
                .listen
                .parse::<std::net::SocketAddr>()
                .is_ok_and(|a| !a.ip().is_loopback());
        if exposed && new_token.is_empty() && !self.token().is_empty() {
            warn!(
                "[http] token removed while {} is off loopback: the running one is kept until a restart",
                self.http.listen
            );
        } else if new_token != self.token() && self.stream.is_some() == stream.is_some() {
            if let Some(server) = server {
                server.set_token(&new_token);
            }
            let section = if self.stream.is_some() {
                "[stream]"
            } else {
                "[http]"
            };
            info!("{section} token replaced: requests with the previous one are refused");
            match &mut self.stream {
                Some(s) => s.token = new_token,
                None => self.http.token = new_token,
            }
        }
        self.http.read_only_without_token = http.read_only_without_token;
        self.http.loopback_writes_without_token = http.loopback_writes_without_token;
        api.set_open(self.openness());
    }

    /// What of `new` differs from the running listener and needs a restart.
    fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        if new.settings.state_dir != self.state_dir {
            out.push("[alerter] state_dir");
        }
        match (&self.stream, &new.stream) {
            (Some(old), Some(now)) => {
                let blank = |s: &crate::stream::StreamSettings| crate::stream::StreamSettings {
                    token: String::new(),
                    ..s.clone()
                };
                if blank(old) != blank(now) {
                    out.push("[stream] (other than its token)");
                }
            }
            (None, None) => {
                if self.http.listen != new.http.listen {
                    out.push("[http] listen");
                }
                if self.http.tls_cert != new.http.tls_cert || self.http.tls_key != new.http.tls_key
                {
                    out.push("[http] tls_cert/tls_key");
                }
            }
            _ => out.push("the data source (query mode or [stream])"),
        }
        out
    }
}

/// What `check` does beyond compiling.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions<'a> {
    /// Also evaluate each rule once against the configured InfluxDB source.
    pub eval: bool,
    /// Recorded points to evaluate each rule on (at the last point's time) instead of
    /// synthetic data.
    pub data: Option<&'a [Metric]>,
}

/// `wk-alerter check`: compiles `paths` (validating notifier and action names against `cfg`
/// when given), runs each rule once on synthetic data (or the recorded `data`) so failures
/// that only show at run time are found before deployment, and, when `eval` and `cfg` has an
/// InfluxDB source, evaluates each rule once against it, printing what would fire to `out`.
/// False when anything failed.
pub fn check(
    cfg: Option<&Config>,
    paths: &[PathBuf],
    opts: &CheckOptions<'_>,
    out: &mut impl Write,
) -> bool {
    let mut rules = Vec::new();
    let mut failed = false;
    // Alerts and their state are kept by rule name: the running alerter refuses a second
    // file with a name already taken.
    let mut names: std::collections::BTreeMap<String, &Path> = Default::default();
    for p in paths {
        match load_rule(p, cfg) {
            Ok(r) => {
                let s = r.settings();
                if let Some(other) = names.get(&s.name) {
                    let (l, col) = s.name_pos;
                    let _ = writeln!(
                        out,
                        "{}:{l}:{col}: rule name {:?} is already used by {}: alerts and their \
                         state are kept by rule name; give this rule a name of its own",
                        p.display(),
                        s.name,
                        other.display()
                    );
                    failed = true;
                    continue;
                }
                names.insert(s.name.clone(), p);
                if let Some(c) = cfg
                    && let Err(e) = c.notify.validate_names(&s.notify)
                {
                    let (l, col) = s.notify_pos;
                    let _ = writeln!(out, "{}:{l}:{col}: {e}", p.display());
                    failed = true;
                    continue;
                }
                if let Some(c) = cfg
                    && let Err(((l, col), e)) = c.actions.validate_rule(s)
                {
                    let _ = writeln!(out, "{}:{l}:{col}: {e}", p.display());
                    failed = true;
                    continue;
                }
                let Some(sample) = dry_run(&r, opts.data, out) else {
                    failed = true;
                    continue;
                };
                let _ = writeln!(
                    out,
                    "ok {}: rule {:?} every {}, for {}, notify {:?}, actions {:?}",
                    p.display(),
                    s.name,
                    crate::template::format_duration(s.every),
                    crate::template::format_duration(s.pending),
                    s.notify,
                    s.actions
                        .iter()
                        .map(|a| a.action.as_str())
                        .collect::<Vec<_>>()
                );
                // The operator sees the message as it will read (templates fall back silently).
                let _ = writeln!(out, "  message: {}", sample_message(s, sample.as_ref()));
                rules.push(r);
            }
            Err(e) => {
                let _ = writeln!(out, "{e}");
                failed = true;
            }
        }
    }
    let source_cfg = cfg.and_then(|c| c.sources.first().cloned());
    if opts.eval && cfg.is_some_and(|c| c.stream.is_some()) {
        let _ = writeln!(
            out,
            "stream mode: rules compiled and run on sample data, not on live data (that only \
             exists while wk-alerter runs)"
        );
    }
    if let (true, Some(sc)) = (opts.eval, source_cfg) {
        let rt = match runtime() {
            Ok(rt) => rt,
            Err(e) => {
                error!("cannot start the runtime: {e}");
                return false;
            }
        };
        let Some(source) = query_source(&sc, rt.handle().clone()) else {
            return false;
        };
        let now = crate::clock::now_ns();
        let r_settings: Vec<RuleSettings> = rules.iter().map(|r| r.settings().clone()).collect();
        for r in rules {
            let name = r.settings().name.clone();
            let src = source.clone();
            let result = rt.block_on(async move {
                tokio::task::spawn_blocking(move || r.evaluate(&src, now)).await
            });
            let pending = r_pending(&r_settings, &name);
            match result {
                Ok(CycleResult::Observed(obs)) if obs.is_empty() => {
                    let _ = writeln!(
                        out,
                        "{name}: no series: the query matched nothing (is the measurement, field \
                         or a tag misspelled?)"
                    );
                }
                Ok(CycleResult::Observed(obs)) => {
                    for o in obs {
                        let level = determine_level(Level::Ok, &o.levels);
                        let tags: Vec<String> =
                            o.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        let value = o
                            .fields
                            .get("value")
                            .map(|v| format!(" value={}", plain_value(v)))
                            .unwrap_or_default();
                        let verdict = match (level > Level::Ok, &pending) {
                            (false, _) => "ok".to_owned(),
                            (true, None) => "would fire".to_owned(),
                            (true, Some(d)) => format!("would fire once it holds for {d}"),
                        };
                        let _ = writeln!(
                            out,
                            "{name} [{}] {level} ({verdict}){value}",
                            tags.join(",")
                        );
                    }
                }
                Ok(CycleResult::Failed(e)) => {
                    let _ = writeln!(out, "{name}: evaluation failed: {e}");
                    failed = true;
                }
                Err(e) => {
                    let _ = writeln!(out, "{name}: evaluation crashed: {e}");
                    failed = true;
                }
            }
        }
    }
    !failed
}

/// The rule's `pending` time, human-readable, when it has one.
fn r_pending(settings: &[RuleSettings], name: &str) -> Option<String> {
    settings
        .iter()
        .find(|s| s.name == name)
        .filter(|s| !s.pending.is_zero())
        .map(|s| crate::template::format_duration(s.pending))
}

/// A value as an operator reads it (`93.2`, not `Float(93.2)`).
fn plain_value(v: &crate::model::Value) -> String {
    match v {
        crate::model::Value::Float(f) => format!("{f}"),
        crate::model::Value::Int(i) => format!("{i}"),
        crate::model::Value::Bool(b) => format!("{b}"),
        crate::model::Value::Str(s) => format!("{s:?}"),
    }
}

/// The rule's message rendered for a CRITICAL alert on `sample` (or on no tags and fields).
fn sample_message(s: &RuleSettings, sample: Option<&crate::model::Observation>) -> String {
    use crate::template::{Template, TemplateData};
    let empty = crate::model::Observation::default();
    let o = sample.unwrap_or(&empty);
    let mut data = TemplateData::new(&s.name, &o.tags, &o.fields);
    data.level = Level::Critical;
    data.kind = Some(EventKind::Alert);
    data.measurement = &o.measurement;
    data.time_ns = o.time;
    let id = Template::parse(&s.id_template)
        .map(|t| t.render(&data))
        .unwrap_or_default();
    data.id = Some(&id);
    Template::parse(&s.message_template)
        .map(|t| t.render(&data))
        .unwrap_or_else(|e| format!("(template error: {e})"))
}

/// Runs `rule` once on `data` (at its last point's time) or on synthetic data: its first
/// observation (for rendering the message), or `None`, with the failure printed, when the
/// rule itself fails. A source that cannot answer (raw InfluxQL on
/// synthetic data) is a note, not a failure.
fn dry_run(
    rule: &Rule,
    data: Option<&[Metric]>,
    out: &mut impl Write,
) -> Option<Option<crate::model::Observation>> {
    let (source, now, what): (Arc<dyn QuerySource>, i64, &str) = match data {
        Some(points) => (
            Arc::new(MemorySource::from_metrics(points)),
            points.iter().map(|m| m.time).max().unwrap_or(0),
            "the recorded data",
        ),
        None => (
            Arc::new(SyntheticSource),
            crate::clock::now_ns(),
            "sample data",
        ),
    };
    match rule.evaluate(&source, now) {
        CycleResult::Observed(obs) => Some(obs.into_iter().next()),
        CycleResult::Failed(f) if f.is_rule_fault() => {
            let _ = writeln!(out, "{f} (run once on {what})");
            None
        }
        CycleResult::Failed(f) => {
            let _ = writeln!(out, "note: {f} (not run on {what})");
            Some(None)
        }
    }
}

/// What one replayed evaluation produced.
#[derive(Debug, Clone)]
pub struct Replayed {
    /// The evaluation time (ns).
    pub time: i64,
    /// An evaluation failure, when it failed.
    pub failure: Option<String>,
    /// The alert events it raised, each with what the rule's actions would do.
    pub events: Vec<(AlertEvent, Vec<ActionPlan>)>,
}

/// `wk-alerter test`: evaluates `rule` over `points` on a simulated clock — on multiples of
/// its `every`, from the first at or after the first point to the last point plus `tail` —
/// through the state machine,
/// and says what each event's actions would do (never running them).
pub fn replay(rule: &Rule, points: &[Metric], tail: Duration) -> Vec<Replayed> {
    let (Some(first), Some(last)) = (
        points.iter().map(|m| m.time).min(),
        points.iter().map(|m| m.time).max(),
    ) else {
        return Vec::new();
    };
    let source: Arc<dyn QuerySource> = Arc::new(MemorySource::from_metrics(points));
    let settings = rule.settings().clone();
    let every = settings.every.as_nanos().max(1) as i64;
    let mut state = RuleState::new();
    // The first tick at or after the first point: agents with round_interval write on the
    // ticks, and a point at exactly `now` is inside the query range `(now - range, now]`.
    let mut now = first.div_euclid(every) * every;
    if now < first {
        now += every;
    }
    let end = last + tail.as_nanos() as i64;
    let mut out = Vec::new();
    while now <= end {
        let result = rule.evaluate(&source, now);
        let failure = match &result {
            CycleResult::Failed(e) => Some(e.to_string()),
            _ => None,
        };
        let events = state
            .apply(&settings, &result, now)
            .into_iter()
            .map(|e| {
                let plans = action_plans(&settings, &e);
                (e, plans)
            })
            .collect();
        out.push(Replayed {
            time: now,
            failure,
            events,
        });
        now += every;
    }
    out
}

/// One action a replayed event would trigger: its name and what it would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionPlan {
    pub action: String,
    pub plan: String,
}

/// What the rule's actions would do for `e` (never run here).
pub fn action_plans(settings: &RuleSettings, e: &AlertEvent) -> Vec<ActionPlan> {
    if e.kind != EventKind::Alert {
        return Vec::new();
    }
    settings
        .actions
        .iter()
        .filter(|a| e.level >= a.on)
        .map(|a| ActionPlan {
            action: a.action.clone(),
            plan: match a.render(e) {
                Ok(args) => {
                    let plan = crate::actions::find(&a.action)
                        .map(|spec| (spec.build)(&args).plan().join("; "))
                        .unwrap_or_default();
                    format!(
                        "would run {}({}) once held {} [{plan}]",
                        a.action,
                        args.summary(),
                        crate::template::format_duration(a.after)
                    )
                }
                Err(m) => format!("would refuse: {m}"),
            },
        })
        .collect()
}

/// Loads a rule for `check` or `test` with the configured evaluation time limit.
pub fn load_rule(path: &Path, cfg: Option<&Config>) -> Result<Rule, crate::rules::RuleError> {
    let limits = cfg.map_or_else(
        || Limits::from_settings(&crate::config::Settings::default()),
        Limits::from_config,
    );
    load_rule_with(path, &limits)
}

/// The rule files `check` works on: the given ones, else every file of the rules directory.
pub fn rule_paths(cfg: Option<&Config>, given: &[PathBuf]) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    cfg.map(|c| rule_files(&c.settings.rules_dir).unwrap_or_default())
        .unwrap_or_default()
}

#[cfg(test)]
mod reload_tests {
    /// A reload applies the token and the access switches, names what needs a restart and
    /// keeps the running state dir (the scheduler took the new one while the API wrote
    /// silences in the old).
    #[test]
    fn a_reload_applies_the_token_and_names_what_needs_a_restart() {
        let load = |extra: &str| {
            let text = format!(
                "[alerter]\n  state_dir = \"/tmp/a\"\n[[sources.influxdb]]\n  url = \"http://127.0.0.1:9\"\n{extra}"
            );
            crate::config::load_str(std::path::Path::new("t.conf"), &text, &|_| None).unwrap()
        };
        let old = load("[http]\n  token = \"old-token-0123456789\"\n");
        let mut live = super::Running {
            state_dir: old.settings.state_dir.clone(),
            stream: old.stream.clone(),
            http: old.http.clone(),
        };
        assert!(live.restart_needed(&old).is_empty());
        assert!(!live.openness().loopback_writes, "a token: writes need it");
        let mut new = load(
            "[http]\n  token = \"new-token-0123456789\"\n  read_only_without_token = true\n  listen = \"127.0.0.1:1\"\n",
        );
        new.settings.state_dir = "/tmp/b".into();
        assert_eq!(
            live.restart_needed(&new),
            ["[alerter] state_dir", "[http] listen"]
        );
        let (board, router) = (
            std::sync::Arc::new(crate::api::board::Board::default()),
            crate::notify::Router::start(crate::notify::NotifyPlan::default()),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let engine = crate::actions::engine::Engine::new(
                crate::actions::ActionsConfig::default(),
                "/tmp/a".into(),
                router.clone(),
                None,
            );
            let api = crate::api::Api::new(
                board,
                router,
                engine,
                "/tmp/a".into(),
                tokio::sync::mpsc::unbounded_channel().0,
                live.openness(),
            );
            let _ = live.pin(&mut new);
            live.reload((&new.stream, &new.http), None, &api);
        });
        assert_eq!(new.settings.state_dir, std::path::Path::new("/tmp/a"));
        assert_eq!(live.token(), "new-token-0123456789");
        assert!(live.openness().read_only_without_token);
    }
}
