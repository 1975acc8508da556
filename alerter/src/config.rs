//! The alerter's config file (TOML), read with the agent's typed options reader so every
//! problem names file, line and column.
//!
//! ```toml
//! [alerter]
//! rules_dir = "/etc/watchkeeper/rules"
//! state_dir = "/var/lib/wk-alerter"
//!
//! [[sources.influxdb]]
//! url = "http://127.0.0.1:8086"
//! database = "telegraf"
//!
//! [[notifiers.log]]
//! name = "log"
//! ```
//!
//! Or VictoriaMetrics (single node, or a cluster's vmselect with its `/select/<tenant>/prometheus`
//! prefix in `url`), which answers the same rules in MetricsQL:
//!
//! ```toml
//! [[sources.victoriametrics]]
//! url = "http://127.0.0.1:8428"
//! database = "telegraf"   # the `db` label the agents' writes carry; "" = any
//! ```
//!
//! Instead of a source, stream mode (no database: agents write line protocol to
//! the alerter, which keeps a bounded window in memory):
//!
//! ```toml
//! [stream]
//! listen = "127.0.0.1:8186"
//! token = "${WK_STREAM_TOKEN}"
//! window = "1h"
//! max_points = 100000
//! ```
//!
//! The status page and JSON API (`[http]`, docs/api.md) are served on the stream listener in
//! stream mode, and on `[http] listen` (default `127.0.0.1:8187`) in query mode.

use crate::stream::MIN_TOKEN_LEN;
pub use crate::stream::StreamSettings;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use wk_core::diag::{ConfigError, Diag, Diagnostics, Severity, Source};
use wk_core::options::{EnvLookup, Options};

use crate::notify::config::NotifyPlan;

/// The `[alerter]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where the `.rhai` rule files are (one rule per file).
    pub rules_dir: PathBuf,
    /// Where alert state is persisted across restarts.
    pub state_dir: PathBuf,
    /// How often the rules directory is checked for changes.
    pub reload_interval: Duration,
    /// Longest one rule evaluation may run before it is stopped and reported.
    pub max_eval_time: Duration,
    /// Rule evaluations running at once.
    pub max_concurrent_evals: usize,
    /// Bytes one rule evaluation may hold before it is stopped and reported.
    pub max_rule_memory_bytes: usize,
    /// Notifiers told when a rule file does not load (the `wk_rules` alert).
    pub rule_errors_notify: Vec<String>,
    /// How long after its tick a rule is evaluated (as of the tick), so that the points
    /// collected on the tick have arrived; `None`: [`Settings::delay`]'s default.
    pub evaluation_delay: Option<Duration>,
    /// Rules that share an `every` start over this much time after their tick, each at a
    /// fixed offset of its own (zero: all at once), still evaluated as of the tick.
    pub evaluation_spread: Duration,
    /// How long the query source must fail before the `wk_source` alert fires.
    pub source_outage_after: Duration,
    /// After the source answers again, how long series missing from results do not go
    /// NoData (the agents re-send what they buffered during the outage).
    pub source_recovery_grace: Duration,
    /// How long a notifier must fail to deliver (no attempt succeeding since one failed)
    /// before the `wk_notifiers` alert fires.
    pub notifier_outage_after: Duration,
    /// How often one summary line (rules evaluated, firing, silenced, actions) is logged;
    /// zero: never.
    pub summary_interval: Duration,
}

impl Settings {
    /// The evaluation delay for a rule evaluated every `every`: the configured one, else a
    /// quarter of `every` capped at 2 s; never more than half of `every`.
    pub fn delay(&self, every: Duration) -> Duration {
        self.evaluation_delay
            .unwrap_or_else(|| (every / 4).min(Duration::from_secs(2)))
            .min(every / 2)
    }

    /// How long after its tick the rule in file `key` starts: the evaluation delay, plus
    /// its own offset within `evaluation_spread` (at most half of `every`), fixed by a hash
    /// of `key` so that it is the same at every tick and after a restart.
    pub fn start_after(&self, every: Duration, key: &str) -> Duration {
        let spread = self.evaluation_spread.min(every / 2);
        let share = u128::from(crc32fast::hash(key.as_bytes()));
        let offset = Duration::from_nanos(((spread.as_nanos() * share) >> 32) as u64);
        self.delay(every) + offset
    }
}

/// The default `max_eval_time`: the time limit of one rule evaluation (docs/alerter.md).
pub const DEFAULT_MAX_EVAL_TIME: Duration = Duration::from_secs(5);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rules_dir: "/etc/watchkeeper/rules".into(),
            state_dir: "/var/lib/wk-alerter".into(),
            reload_interval: Duration::from_secs(5),
            max_eval_time: DEFAULT_MAX_EVAL_TIME,
            max_concurrent_evals: 4,
            max_rule_memory_bytes: 32 << 20,
            rule_errors_notify: Vec::new(),
            evaluation_delay: None,
            evaluation_spread: Duration::ZERO,
            source_outage_after: Duration::from_secs(30),
            source_recovery_grace: Duration::from_secs(60),
            notifier_outage_after: Duration::from_secs(60),
            summary_interval: Duration::from_secs(60),
        }
    }
}

/// Which engine a `[[sources.KIND]]` table names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceKind {
    /// InfluxQL over the v1 `/query` API.
    #[default]
    InfluxDb,
    /// MetricsQL over the Prometheus API (`/api/v1/query`, `/api/v1/export`).
    VictoriaMetrics,
}

impl SourceKind {
    /// The config table's key: `[[sources.KEY]]`.
    pub fn key(self) -> &'static str {
        match self {
            SourceKind::InfluxDb => "influxdb",
            SourceKind::VictoriaMetrics => "victoriametrics",
        }
    }
}

/// A database to query: an InfluxDB (`[[sources.influxdb]]`) over the v1 `/query` API that
/// InfluxDB 1.x, 2.x (v1 compatibility) and 3.x answer, or a VictoriaMetrics
/// (`[[sources.victoriametrics]]`) over its Prometheus API.
#[derive(Debug, Clone, PartialEq)]
pub struct InfluxSource {
    pub kind: SourceKind,
    pub name: String,
    pub url: String,
    /// InfluxDB: the database; VictoriaMetrics: the `db` label to match ("" = any).
    pub database: String,
    /// InfluxDB only.
    pub retention_policy: String,
    pub username: String,
    pub password: String,
    /// `Authorization: Token …` (InfluxDB 2.x/3.x), `Authorization: Bearer …`
    /// (VictoriaMetrics behind vmauth); used instead of username/password.
    pub token: String,
    pub timeout: Duration,
}

/// Where the status page listens in query mode when `[http]` does not say.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8187";

/// The `[http]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Query mode: where the page and the API listen; empty: not served.
    pub listen: String,
    /// Needed off loopback (query mode; stream mode uses the `[stream]` token).
    pub token: String,
    /// Off loopback, serve GET requests without the token.
    pub read_only_without_token: bool,
    /// On a loopback listener, changes (silences) without the token too. Off by default: a
    /// reverse proxy on the same host makes every request loopback.
    pub loopback_writes_without_token: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The URL `wk-alerter silence` uses to reach the running alerter; empty: from `listen`.
    pub url: String,
    /// Whether `listen`, a token or TLS was set (stream mode refuses them).
    pub listen_set: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            listen: DEFAULT_LISTEN.into(),
            token: String::new(),
            read_only_without_token: false,
            loopback_writes_without_token: false,
            tls_cert: None,
            tls_key: None,
            url: String::new(),
            listen_set: false,
        }
    }
}

/// What the scheduler (`service::Service::run`) is sent: `None` to read the rules directory
/// now, or a new config (SIGHUP) and where to say whether it was taken.
pub type Reload = Option<(
    Box<Config>,
    tokio::sync::oneshot::Sender<Result<(), String>>,
)>;

/// A loaded, validated config.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub settings: Settings,
    pub sources: Vec<InfluxSource>,
    /// Stream mode (exactly one of `sources` and `stream` is set).
    pub stream: Option<StreamSettings>,
    pub notify: NotifyPlan,
    /// `[actions]` and `[[actions.ssh]]`.
    pub actions: crate::actions::ActionsConfig,
    /// `[http]`: the status page and API.
    pub http: HttpSettings,
    /// `[heartbeat]`: pings to an external dead man's switch.
    pub heartbeat: Option<crate::heartbeat::HeartbeatConfig>,
    pub warnings: Vec<Diag>,
}

/// The token of the listener that serves the API: `[stream]`'s in stream mode, else
/// `[http]`'s (empty: none).
pub fn api_token<'a>(stream: &'a Option<StreamSettings>, http: &'a HttpSettings) -> &'a str {
    stream.as_ref().map_or(&http.token, |s| &s.token)
}

/// Reads a secret from `key` or, when `key_file` is set, from that file (trailing newline
/// trimmed), so that configs in git hold no secrets.
fn secret(o: &mut Options<'_, '_>, key: &str) -> String {
    let inline = o.string(key, "");
    let file_key = format!("{key}_file");
    match o.opt_string(&file_key) {
        Some(path) if !inline.is_empty() => {
            o.error_at(
                &file_key,
                format!("set either {key} or {file_key}, not both ({path})"),
            );
            inline
        }
        Some(path) => match std::fs::read_to_string(&path) {
            Ok(s) => s.trim_end_matches(['\n', '\r']).to_owned(),
            Err(e) => {
                o.error_at(&file_key, format!("cannot read {path}: {e}"));
                String::new()
            }
        },
        None => inline,
    }
}

/// Loads the config file.
pub fn load(path: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        errors: vec![Diag {
            severity: Severity::Error,
            file: path.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read: {e}"),
        }],
    })?;
    load_str(path, &text, env)
}

/// Loads a config from text (`path` only names it in messages).
pub fn load_str(path: &Path, text: &str, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let src = Source::new(path, text.to_owned());
    let mut diags = Diagnostics::default();
    let mut settings = Settings::default();
    let mut sources = Vec::new();
    let mut stream = None;
    let mut notify = NotifyPlan::default();
    let mut actions = crate::actions::ActionsConfig::default();
    let mut http = None;
    let mut heartbeat = None;
    match DeTable::parse(&src.text) {
        Err(e) => diags.push(src.toml_error(&e)),
        Ok(doc) => {
            let doc = doc.get_ref();
            for (key, value) in doc.iter() {
                match (key.get_ref().as_ref(), value.get_ref()) {
                    ("alerter", DeValue::Table(t)) => {
                        let mut o =
                            Options::new(&src, "alerter", t, value.span().start, &mut diags, env);
                        settings = alerter_section(&mut o);
                        o.finish();
                    }
                    ("sources", DeValue::Table(kinds)) => {
                        sources.extend(database_sources(&src, kinds, &mut diags, env));
                    }
                    ("stream", DeValue::Table(t)) => {
                        let mut o =
                            Options::new(&src, "stream", t, value.span().start, &mut diags, env);
                        let s = stream_section(&mut o);
                        o.finish();
                        stream = Some((s, value.span().start));
                    }
                    ("http", DeValue::Table(t)) => {
                        let mut o =
                            Options::new(&src, "http", t, value.span().start, &mut diags, env);
                        http = Some((http_section(&mut o), value.span().start));
                        o.finish();
                    }
                    ("heartbeat", DeValue::Table(t)) => {
                        let mut o =
                            Options::new(&src, "heartbeat", t, value.span().start, &mut diags, env);
                        heartbeat = Some(crate::heartbeat::HeartbeatConfig::read(&mut o));
                        o.finish();
                    }
                    ("notifiers" | "silences" | "actions", _) => {}
                    (name, _) => {
                        let msg = format!(
                            "unsupported config section [{name}]: expected alerter, sources, stream, http, heartbeat, notifiers, silences or actions"
                        );
                        diags.push(src.diag(Severity::Error, key.span().start, msg));
                    }
                }
            }
            notify = crate::notify::config::load(&src, doc, &mut diags, env);
            actions = crate::actions::config::load(&src, doc, &mut diags, env);
            if let Err(e) = notify.validate_names(&actions.record) {
                let offset = doc.get("actions").map_or(0, |v| v.span().start);
                diags.push(src.diag(Severity::Error, offset, format!("[actions] record: {e}")));
            }
            if let Err(e) = notify.validate_names(&settings.rule_errors_notify) {
                let offset = doc.get("alerter").map_or(0, |v| v.span().start);
                diags.push(src.diag(
                    Severity::Error,
                    offset,
                    format!("[alerter] rule_errors_notify: {e}"),
                ));
            }
        }
    }
    // wk_actions are written to an InfluxDB source's database; a VictoriaMetrics source takes
    // writes elsewhere (vminsert), so [actions] record_url names that.
    let source_db = sources
        .first()
        .filter(|s| s.kind == SourceKind::InfluxDb)
        .map(|s| crate::actions::record::SourceDb {
            url: s.url.clone(),
            database: s.database.clone(),
            retention_policy: s.retention_policy.clone(),
            username: s.username.clone(),
            password: s.password.clone(),
            token: s.token.clone(),
        });
    actions.resolve_record(source_db.as_ref());
    if sources.len() > 1 {
        let msg =
            "only one [[sources.*]] is supported for now; split rules between alerters instead";
        diags.push(src.diag(Severity::Error, 0, msg));
    }
    match (&stream, sources.is_empty()) {
        (Some((_, at)), false) => diags.push(src.diag(
            Severity::Error,
            *at,
            "[stream] and [[sources.*]] are both set: configure exactly one (stream mode \
             keeps points in memory, query mode asks InfluxDB or VictoriaMetrics)",
        )),
        (None, true) if !diags.has_errors() => diags.push(src.diag(
            Severity::Error,
            0,
            "no data source: configure [[sources.influxdb]] (query an InfluxDB), \
             [[sources.victoriametrics]] (query a VictoriaMetrics) or [stream] (receive the \
             agents' writes, no database)",
        )),
        _ => {}
    }
    let http = match (http, &stream) {
        // Stream mode: one listener, the stream receiver's, serves the page and the API.
        (Some((h, at)), Some(_)) if h.listen_set => {
            diags.push(src.diag(
                Severity::Error,
                at,
                "[http] listen, token and tls_* are for query mode: in stream mode the status \
                 page and the API are served on the [stream] listener with its token (only \
                 read_only_without_token and url may be set here)",
            ));
            h
        }
        (Some((h, _)), _) => h,
        (None, _) => HttpSettings::default(),
    };
    if diags.has_errors() {
        return Err(ConfigError {
            errors: diags.errors().cloned().collect(),
        });
    }
    Ok(Config {
        path: path.to_owned(),
        settings,
        sources,
        stream: stream.map(|(s, _)| s),
        notify,
        actions,
        http,
        heartbeat,
        warnings: diags.warnings().cloned().collect(),
    })
}

/// `tls_cert` and `tls_key` of a listener: both or neither, and readable.
fn check_tls(o: &mut Options<'_, '_>, cert: &Option<PathBuf>, key: &Option<PathBuf>) {
    match (cert, key) {
        (Some(_), None) => o.error_at("tls_cert", "set tls_key too"),
        (None, Some(_)) => o.error_at("tls_key", "set tls_cert too"),
        _ => {}
    }
    for (name, path) in [("tls_cert", cert), ("tls_key", key)] {
        if let Some(p) = path
            && let Err(e) = std::fs::File::open(p)
        {
            o.error_at(name, format!("cannot read {}: {e}", p.display()));
        }
    }
}

/// A listener's token (when set): not an unset `${VAR}`, which is left as written (as
/// Telegraf does) and must never become a guessable token; at least [`MIN_TOKEN_LEN`]
/// characters (`advice` ends that message).
fn check_token(o: &mut Options<'_, '_>, token: &str, advice: &str) {
    if token.contains("${") {
        o.error_at(
            "token",
            format!("{token:?} names an environment variable that is not set"),
        );
    } else if !token.is_empty() && token.chars().count() < MIN_TOKEN_LEN {
        let key = if o.has("token_file") {
            "token_file"
        } else {
            "token"
        };
        o.error_at(
            key,
            format!(
                "the token has {} characters; use at least {MIN_TOKEN_LEN} random ones{advice}",
                token.chars().count()
            ),
        );
    }
}

/// `[http]`: where the status page and API listen in query mode, their token, and whether
/// reading needs it.
fn http_section(o: &mut Options<'_, '_>) -> HttpSettings {
    let d = HttpSettings::default();
    let listen_set = ["listen", "token", "token_file", "tls_cert", "tls_key"]
        .iter()
        .any(|k| o.has(k));
    let h = HttpSettings {
        listen: o.string("listen", &d.listen),
        token: secret(o, "token"),
        read_only_without_token: o.bool("read_only_without_token", d.read_only_without_token),
        loopback_writes_without_token: o.bool(
            "loopback_writes_without_token",
            d.loopback_writes_without_token,
        ),
        tls_cert: o.opt_string("tls_cert").map(PathBuf::from),
        tls_key: o.opt_string("tls_key").map(PathBuf::from),
        url: o.string("url", ""),
        listen_set,
    };
    check_tls(o, &h.tls_cert, &h.tls_key);
    if !h.listen.is_empty() {
        match h.listen.parse::<std::net::SocketAddr>() {
            Err(_) => o.error_at(
                "listen",
                format!(
                    "{:?} is not an address:port (e.g. \"127.0.0.1:8187\"; \"\" turns the \
                     status page off)",
                    h.listen
                ),
            ),
            Ok(addr) if !addr.ip().is_loopback() && h.token.is_empty() => o.error_at(
                "listen",
                format!(
                    "{} is reachable from other hosts: set a token (token = \"${{WK_HTTP_TOKEN}}\" \
                     or token_file) or listen on loopback",
                    h.listen
                ),
            ),
            Ok(addr) if !addr.ip().is_loopback() && h.tls_cert.is_none() => o.warn_at(
                "listen",
                format!(
                    "{} is reachable from other hosts over plain HTTP: the token travels in \
                     clear (set tls_cert and tls_key)",
                    h.listen
                ),
            ),
            Ok(_) => {}
        }
    }
    check_token(o, &h.token, "");
    if !(h.url.is_empty() || h.url.starts_with("http://") || h.url.starts_with("https://")) {
        o.error_at(
            "url",
            format!("{:?} is not an http:// or https:// URL", h.url),
        );
    }
    h
}

/// `[alerter]`: where rules and state live, reload and evaluation limits.
fn alerter_section(o: &mut Options<'_, '_>) -> Settings {
    let mut settings = Settings::default();
    settings.rules_dir = o
        .string("rules_dir", &settings.rules_dir.to_string_lossy())
        .into();
    settings.state_dir = o
        .string("state_dir", &settings.state_dir.to_string_lossy())
        .into();
    settings.reload_interval = o.duration("reload_interval", settings.reload_interval);
    settings.max_eval_time = o.duration("max_eval_time", settings.max_eval_time);
    settings.max_concurrent_evals = o.int(
        "max_concurrent_evals",
        settings.max_concurrent_evals as i64,
        1,
        256,
    ) as usize;
    settings.max_rule_memory_bytes = o.size(
        "max_rule_memory_bytes",
        settings.max_rule_memory_bytes as u64,
    ) as usize;
    if settings.max_rule_memory_bytes < 1 << 20 {
        o.error_at("max_rule_memory_bytes", "must be at least 1MiB");
    }
    settings.rule_errors_notify = o.strings("rule_errors_notify");
    settings.evaluation_delay = o.opt_duration("evaluation_delay");
    settings.evaluation_spread = o.duration("evaluation_spread", settings.evaluation_spread);
    settings.source_outage_after = o.duration("source_outage_after", settings.source_outage_after);
    settings.source_recovery_grace =
        o.duration("source_recovery_grace", settings.source_recovery_grace);
    settings.notifier_outage_after =
        o.duration("notifier_outage_after", settings.notifier_outage_after);
    settings.summary_interval = o.duration("summary_interval", settings.summary_interval);
    if settings.reload_interval.is_zero() {
        o.error_at("reload_interval", "must be greater than 0");
    }
    if settings.max_eval_time.is_zero() {
        o.error_at("max_eval_time", "must be greater than 0");
    }
    settings
}

/// `[[sources.influxdb]]` and `[[sources.victoriametrics]]` tables (any other kind is an
/// error).
fn database_sources(
    src: &Source,
    kinds: &DeTable<'_>,
    diags: &mut Diagnostics,
    env: EnvLookup<'_>,
) -> Vec<InfluxSource> {
    let mut sources = Vec::new();
    for (kind, instances) in kinds.iter() {
        let kind_name = kind.get_ref().as_ref();
        let kind = match kind_name {
            "influxdb" => SourceKind::InfluxDb,
            "victoriametrics" => SourceKind::VictoriaMetrics,
            other => {
                let msg = format!(
                    "[sources.{other}]: unknown source kind (expected influxdb or victoriametrics)"
                );
                diags.push(src.diag(Severity::Error, kind.span().start, msg));
                continue;
            }
        };
        let section = format!("sources.{kind_name}");
        let tables: Vec<_> = match instances.get_ref() {
            DeValue::Array(a) => a.iter().collect(),
            _ => vec![instances],
        };
        for t in tables {
            let DeValue::Table(table) = t.get_ref() else {
                diags.push(src.diag(
                    Severity::Error,
                    t.span().start,
                    format!("[[{section}]] must be a table"),
                ));
                continue;
            };
            let mut o = Options::new(src, &section, table, t.span().start, diags, env);
            let (url, database) = match kind {
                SourceKind::InfluxDb => ("http://127.0.0.1:8086", "telegraf"),
                SourceKind::VictoriaMetrics => ("http://127.0.0.1:8428", ""),
            };
            let s = InfluxSource {
                kind,
                name: o.string("name", "default"),
                url: o.string("url", url),
                database: o.string("database", database),
                retention_policy: match kind {
                    SourceKind::InfluxDb => o.string("retention_policy", ""),
                    SourceKind::VictoriaMetrics => String::new(),
                },
                username: o.string("username", ""),
                password: secret(&mut o, "password"),
                token: secret(&mut o, "token"),
                timeout: o.duration("timeout", Duration::from_secs(10)),
            };
            if s.timeout.is_zero() {
                o.error_at("timeout", "must be greater than 0 (every query would fail)");
            }
            if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
                o.error_at(
                    "url",
                    format!("{:?} is not an http:// or https:// URL", s.url),
                );
            }
            o.finish();
            sources.push(s);
        }
    }

    sources
}

/// `[stream]`: the receiver's address, token and bounds.
fn stream_section(o: &mut Options<'_, '_>) -> StreamSettings {
    let d = StreamSettings::default();
    let s = StreamSettings {
        listen: o.string("listen", &d.listen),
        token: secret(o, "token"),
        window: o.duration("window", d.window),
        max_points: o.int("max_points", d.max_points as i64, 1, 1 << 40) as usize,
        max_body_size: o.size("max_body_size", d.max_body_size),
        header_timeout: o.duration("header_timeout", d.header_timeout),
        max_connections_per_ip: o.int(
            "max_connections_per_ip",
            d.max_connections_per_ip as i64,
            1,
            crate::stream::MAX_CONNECTIONS as i64,
        ) as usize,
        max_future: o.duration("max_future", d.max_future),
        max_bytes: o.size("max_bytes", d.max_bytes),
        max_string_size: o.size("max_string_size", d.max_string_size),
        tls_cert: o.opt_string("tls_cert").map(PathBuf::from),
        tls_key: o.opt_string("tls_key").map(PathBuf::from),
        snapshot_interval: o.duration("snapshot_interval", d.snapshot_interval),
    };
    check_tls(o, &s.tls_cert, &s.tls_key);
    if let Ok(addr) = s.listen.parse::<std::net::SocketAddr>()
        && !addr.ip().is_loopback()
        && s.tls_cert.is_none()
    {
        o.warn_at(
            "listen",
            format!(
                "{} is reachable from other hosts and the receiver speaks \
                 plain HTTP: the token and the data travel in clear (set \
                 tls_cert and tls_key, or listen on loopback behind a TLS proxy)",
                s.listen
            ),
        );
    }
    if s.listen.parse::<std::net::SocketAddr>().is_err() {
        o.error_at(
            "listen",
            format!(
                "{:?} is not an address:port (e.g. \"127.0.0.1:8186\")",
                s.listen
            ),
        );
    }
    if s.token.is_empty() {
        o.error_at(
            "token",
            "a token is required (listening endpoints take a token): \
             token = \"${WK_STREAM_TOKEN}\" or token_file = \"/path\"",
        );
    }
    check_token(
        o,
        &s.token,
        " (e.g. od -An -tx1 -N16 /dev/urandom | tr -d ' \\n')",
    );
    if s.window.is_zero() {
        o.error_at("window", "must be greater than 0");
    }
    if s.header_timeout.is_zero() {
        o.error_at("header_timeout", "must be greater than 0");
    }
    if s.max_body_size == 0 {
        o.error_at("max_body_size", "must be greater than 0");
    }
    // 0 would hold nothing, or refuse every line with a string field.
    if s.max_bytes == 0 {
        o.error_at("max_bytes", "must be greater than 0");
    }
    if s.max_string_size == 0 {
        o.error_at("max_string_size", "must be greater than 0");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_bounds_and_timeouts_are_refused_with_their_position() {
        for (text, want) in [
            (
                "[[sources.influxdb]]\n  timeout = \"0s\"\n",
                "wk.conf:2:13: error: [sources.influxdb] timeout: must be greater than 0",
            ),
            (
                "[stream]\n  token = \"${TOKEN}\"\n  max_bytes = 0\n",
                "[stream] max_bytes: must be greater than 0",
            ),
            (
                "[stream]\n  token = \"${TOKEN}\"\n  max_string_size = \"0B\"\n",
                "[stream] max_string_size: must be greater than 0",
            ),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    fn load(text: &str) -> Result<Config, String> {
        let env = |name: &str| (name == "TOKEN").then(|| "from-env-0123456789".to_owned());
        load_str(Path::new("wk.conf"), text, &env).map_err(|e| {
            e.errors
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    #[test]
    fn stream_section() {
        let c = load("[stream]\n  token = \"${TOKEN}\"\n").unwrap();
        let s = c.stream.unwrap();
        assert_eq!(s.token, "from-env-0123456789");
        assert_eq!(s.listen, "127.0.0.1:8186");
        assert_eq!(s.window, Duration::from_secs(3600));
        assert_eq!(s.max_points, 100_000);
        assert_eq!(s.header_timeout, Duration::from_secs(5));
        assert_eq!(s.max_connections_per_ip, 32);
        assert_eq!(s.max_future, Duration::from_secs(600));
        assert_eq!((s.max_bytes, s.max_string_size), (256 << 20, 64 << 10));
        assert!(c.sources.is_empty());

        let c = load(
            "[stream]\n  listen = \"0.0.0.0:9999\"\n  token = \"0123456789abcdef\"\n  window = \"10m\"\n  max_points = 500\n  max_body_size = \"1MiB\"\n",
        )
        .unwrap();
        // Off loopback without TLS: a warning naming the line.
        assert!(
            c.warnings[0].line == 2 && c.warnings[0].message.contains("plain HTTP"),
            "{:?}",
            c.warnings
        );
        let s = c.stream.unwrap();
        assert_eq!(
            (s.listen.as_str(), s.window, s.max_points, s.max_body_size),
            ("0.0.0.0:9999", Duration::from_secs(600), 500, 1 << 20)
        );

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "filed-0123456789\n").unwrap();
        let c = load(&format!("[stream]\n  token_file = {f:?}\n")).unwrap();
        assert_eq!(c.stream.unwrap().token, "filed-0123456789");
    }

    #[test]
    fn stream_errors_name_file_and_line() {
        let e = load("[alerter]\n\n[stream]\n  listen = \"nowhere\"\n").unwrap_err();
        assert!(
            e.contains("wk.conf:4:") && e.contains("not an address:port"),
            "{e}"
        );
        assert!(e.contains("a token is required"), "{e}");
        let e = load("[stream]\n  token = \"${UNSET}\"\n").unwrap_err();
        assert!(e.contains("wk.conf:2:") && e.contains("not set"), "{e}");
        let e = load("[stream]\n  token = \"${TOKEN}\"\n  window = \"0s\"\n").unwrap_err();
        assert!(e.contains("wk.conf:3:"), "{e}");
        // A weak token is a load error naming its line.
        let e = load("[alerter]\n[stream]\n  token = \"short\"\n").unwrap_err();
        assert!(
            e.contains("wk.conf:3:") && e.contains("5 characters; use at least 16"),
            "{e}"
        );
        let e = load("[stream]\n  token = \"${TOKEN}\"\n  tls_cert = \"/nonexistent.pem\"\n")
            .unwrap_err();
        assert!(
            e.contains("wk.conf:3:") && e.contains("set tls_key too"),
            "{e}"
        );
        assert!(e.contains("cannot read /nonexistent.pem"), "{e}");
    }

    #[test]
    fn victoriametrics_source() {
        let c = load("[[sources.victoriametrics]]\n  url = \"http://vmselect:8481/select/0/prometheus\"\n  database = \"telegraf\"\n  token = \"${TOKEN}\"\n").unwrap();
        let s = &c.sources[0];
        assert_eq!(s.kind, SourceKind::VictoriaMetrics);
        assert_eq!(
            (s.url.as_str(), s.database.as_str(), s.token.as_str()),
            (
                "http://vmselect:8481/select/0/prometheus",
                "telegraf",
                "from-env-0123456789"
            )
        );
        // Defaults: single node on loopback, any `db` label; wk_actions are not written to it.
        let c = load("[[sources.victoriametrics]]\n").unwrap();
        assert_eq!(
            (c.sources[0].url.as_str(), c.sources[0].database.as_str()),
            ("http://127.0.0.1:8428", "")
        );
        assert_eq!(c.sources[0].kind.key(), "victoriametrics");
        // retention_policy is InfluxDB's: unknown here, named by line.
        let c = load("[[sources.victoriametrics]]\n  retention_policy = \"x\"\n");
        assert!(
            c.as_ref().is_err_and(|e| e.contains("wk.conf:2:"))
                || c.as_ref()
                    .is_ok_and(|c| c.warnings.iter().any(|w| w.line == 2)),
            "{:?}",
            c.as_ref().map(|c| &c.warnings)
        );
        let e = load("[[sources.victoriametrics]]\n  url = \"vm:8428\"\n").unwrap_err();
        assert!(
            e.contains("wk.conf:2:") && e.contains("not an http://"),
            "{e}"
        );
        let e = load("[[sources.influxdb]]\n[[sources.victoriametrics]]\n").unwrap_err();
        assert!(e.contains("only one [[sources.*]]"), "{e}");
        let e = load("[[sources.prometheus]]\n").unwrap_err();
        assert!(e.contains("expected influxdb or victoriametrics"), "{e}");
    }

    #[test]
    fn http_section() {
        let c = load("[[sources.influxdb]]\n").unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:8187");
        assert!(!c.http.read_only_without_token && !c.http.listen_set);
        let c = load(
            "[[sources.influxdb]]\n[http]\n  listen = \"0.0.0.0:9000\"\n  token = \"${TOKEN}\"\n  read_only_without_token = true\n",
        )
        .unwrap();
        assert!(c.http.read_only_without_token && c.http.listen_set);
        assert!(
            c.warnings[0].message.contains("plain HTTP"),
            "{:?}",
            c.warnings
        );
        // Off loopback without a token: refused at its line.
        let e = load("[[sources.influxdb]]\n[http]\n  listen = \"0.0.0.0:9000\"\n").unwrap_err();
        assert!(e.contains("wk.conf:3:") && e.contains("set a token"), "{e}");
        let e = load("[[sources.influxdb]]\n[http]\n  listen = \"x\"\n  url = \"ftp://a\"\n")
            .unwrap_err();
        assert!(e.contains("wk.conf:3:") && e.contains("wk.conf:4:"), "{e}");
        // Stream mode: one listener, the receiver's.
        let e = load("[stream]\n  token = \"${TOKEN}\"\n[http]\n  listen = \"127.0.0.1:1\"\n")
            .unwrap_err();
        assert!(
            e.contains("wk.conf:3:") && e.contains("[stream] listener"),
            "{e}"
        );
        let c =
            load("[stream]\n  token = \"${TOKEN}\"\n[http]\n  read_only_without_token = true\n")
                .unwrap();
        assert!(c.http.read_only_without_token);
        let c = load("[[sources.influxdb]]\n[alerter]\n  summary_interval = \"0s\"\n").unwrap();
        assert!(c.settings.summary_interval.is_zero());
    }

    #[test]
    fn exactly_one_source() {
        let e = load("[alerter]\n").unwrap_err();
        assert!(e.contains("no data source"), "{e}");
        let e = load(
            "[[sources.influxdb]]\n  url = \"http://x:8086\"\n\n[stream]\n  token = \"${TOKEN}\"\n",
        )
        .unwrap_err();
        assert!(
            e.contains("wk.conf:4:") && e.contains("configure exactly one"),
            "{e}"
        );
        assert!(load("[[sources.influxdb]]\n").unwrap().stream.is_none());
    }

    #[test]
    fn heartbeat_section() {
        let c = load("[[sources.influxdb]]\n[heartbeat]\n  url = \"https://hc.example/ping/u\"\n")
            .unwrap();
        let h = c.heartbeat.unwrap();
        assert_eq!(h.stop_on, ["wk_source", "wk_notifiers"], "the default");
        assert_eq!((h.interval.as_secs(), h.post), (60, false));
        assert!(load("[[sources.influxdb]]\n").unwrap().heartbeat.is_none());
        let e = load(
            "[[sources.influxdb]]\n[heartbeat]\n  interval = \"100ms\"\n  stop_on = [\"wk_disk\"]\n  method = \"PUT\"\n",
        )
        .unwrap_err();
        for want in [
            "wk.conf:2:",
            "the dead man's switch's ping URL",
            "wk.conf:3:",
            "at least 1s",
            "wk.conf:4:",
            "\"wk_disk\" is not a built-in alert",
            "wk.conf:5:",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
