//! Config in two stages: telegraf.conf TOML (with spans) → a validated [`Plan`]. Hot reload
//! builds a new plan and swaps only if it built.
//!
//! - `diag`, `options`, `values`: diagnostics, table reading and values, from `wk_core`.
//! - [`telegraf_plugins`]: every Telegraf plugin name, to tell "not implemented" from "typo".

pub mod telegraf_plugins;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

pub use wk_core::diag::{ConfigError, Diag, Diagnostics, Severity, Source};
pub use wk_core::options::{EnvLookup, Harmless, Options};
pub use wk_core::{diag, options, values};

use crate::hostpaths::HostPaths;
use crate::inputs::{self, BuildContext, InputSpec};
use crate::models::running_input::{GlobalTags, RunningInput};
use crate::models::running_output::RunningOutput;
use crate::outputs;
use crate::selfstat::SelfStats;

/// The `[agent]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSettings {
    pub interval: Duration,
    pub round_interval: bool,
    pub collection_jitter: Duration,
    pub collection_offset: Duration,
    pub flush_interval: Duration,
    pub flush_jitter: Duration,
    pub metric_batch_size: usize,
    pub metric_buffer_limit: usize,
    /// Timestamps are rounded to this; derived from the interval when the config says 0.
    pub precision: Duration,
    /// The config set a non-zero `precision` (else each input's default follows its own
    /// interval, as Telegraf's `getPrecision`).
    pub precision_set: bool,
    pub hostname: String,
    pub omit_hostname: bool,
    pub debug: bool,
    pub quiet: bool,
    /// `buffer_strategy = "disk"`: each output's buffer is kept in `buffer_directory`.
    pub buffer_disk: bool,
    pub buffer_directory: PathBuf,
    /// fsync every write to the disk buffer.
    pub buffer_disk_sync: bool,
}

impl Default for AgentSettings {
    fn default() -> Self {
        AgentSettings {
            interval: Duration::from_secs(10),
            round_interval: true,
            collection_jitter: Duration::ZERO,
            collection_offset: Duration::ZERO,
            flush_interval: Duration::from_secs(10),
            flush_jitter: Duration::ZERO,
            metric_batch_size: 1000,
            metric_buffer_limit: 10000,
            precision: Duration::ZERO,
            precision_set: false,
            hostname: String::new(),
            omit_hostname: false,
            debug: false,
            quiet: false,
            buffer_disk: false,
            buffer_directory: PathBuf::new(),
            buffer_disk_sync: true,
        }
    }
}

/// Telegraf `[agent]` keys wk-agent does not act on, with the values that mean what wk-agent
/// does anyway (logs to stderr as text, memory buffer, no state file, no remote config): only
/// other values get a warning.
const AGENT_UNSUPPORTED: &[(&str, Harmless)] = &[
    ("logformat", Harmless::Str(&["", "text"])),
    ("logtarget", Harmless::Str(&["", "stderr"])),
    ("logfile", Harmless::Str(&[""])),
    ("logfile_rotation_interval", Harmless::ZeroDuration),
    ("logfile_rotation_max_size", Harmless::ZeroSize),
    ("logfile_rotation_max_archives", Harmless::Int(5)),
    ("log_with_timezone", Harmless::Str(&["", "UTC", "utc"])),
    ("structured_log_message_key", Harmless::Str(&["", "msg"])),
    ("statefile", Harmless::Str(&[""])),
    ("always_include_local_tags", Harmless::Bool(false)),
    ("always_include_global_tags", Harmless::Bool(false)),
    ("config_url_retry_attempts", Harmless::Int(3)),
    ("config_url_watch_interval", Harmless::ZeroDuration),
];

/// `[agent]` keys that have no meaning on Linux or for us and are accepted silently.
const AGENT_ACCEPTED: &[&str] = &[
    "snmp_translator",
    "skip_processors_before_aggregators",
    "skip_processors_after_aggregators",
];

/// What to load and how.
pub struct LoadRequest<'a> {
    pub configs: Vec<PathBuf>,
    pub config_dirs: Vec<PathBuf>,
    /// `--input-filter`: only these inputs are built (others are still checked by name).
    pub input_filter: Option<Vec<String>>,
    /// `--output-filter`.
    pub output_filter: Option<Vec<String>>,
    pub env: EnvLookup<'a>,
    /// Roots from the environment; `[agent] host_*` keys override them.
    pub paths: HostPaths,
    /// `--test`: outputs are not required.
    pub test_mode: bool,
    /// The process's self-telemetry registry (kept across reloads).
    pub stats: Arc<SelfStats>,
}

impl<'a> LoadRequest<'a> {
    /// A request for `configs` and nothing else: no directories or filters, no environment
    /// variables, the default host paths, not `--test`, fresh self-telemetry. Set the rest
    /// with struct update syntax: `LoadRequest { test_mode: true, ..LoadRequest::new(files) }`.
    pub fn new(configs: Vec<PathBuf>) -> Self {
        LoadRequest {
            configs,
            config_dirs: Vec::new(),
            input_filter: None,
            output_filter: None,
            env: &no_env,
            paths: HostPaths::default(),
            test_mode: false,
            stats: Default::default(),
        }
    }
}

/// The empty environment of [`LoadRequest::new`].
fn no_env(_: &str) -> Option<String> {
    None
}

/// A validated config, ready to run.
pub struct Plan {
    pub agent: AgentSettings,
    pub global_tags: GlobalTags,
    pub paths: HostPaths,
    pub inputs: Vec<RunningInput>,
    pub outputs: Vec<RunningOutput>,
    /// Warnings to log (unknown Telegraf plugins and options, deprecated spellings).
    pub warnings: Vec<Diag>,
    /// Every file that was read, in order.
    pub files: Vec<PathBuf>,
    /// Self-telemetry, shared with the `internal` input.
    pub stats: Arc<SelfStats>,
}

/// The files `--config` and `--config-directory` name, in Telegraf's order: the config files,
/// then each directory walked recursively for `*.conf` in lexical order (directories whose
/// name starts with `..` are skipped, as Kubernetes config maps need; a file named just
/// `.conf` is not a config, as in Telegraf). `PathBuf` orders by component, so `a/x.conf`
/// sorts before `a.conf`, the order of Go's `filepath.Walk`.
pub fn config_files(req: &LoadRequest<'_>) -> Result<Vec<PathBuf>, String> {
    let mut files = req.configs.clone();
    for dir in &req.config_dirs {
        let mut found = Vec::new();
        walk_conf(dir, &mut found).map_err(|e| format!("{}: {e}", dir.display()))?;
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn walk_conf(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() {
            if !name.starts_with("..") {
                walk_conf(&path, out)?;
            }
        } else if name.len() > ".conf".len() && name.ends_with(".conf") {
            out.push(path);
        }
    }
    Ok(())
}

/// Loads and validates every file. Errors from all files are reported together.
pub fn load(req: &LoadRequest<'_>) -> Result<Plan, ConfigError> {
    load_with(req, inputs::REGISTRY)
}

/// [`load`] knowing the inputs of `registry` instead of [`inputs::REGISTRY`]: the registry is
/// a static list, so a test of the plugin contract hands the loader its own to run a
/// throwaway input exactly as a real one (agent/tests/adding_an_input.rs).
pub fn load_with(
    req: &LoadRequest<'_>,
    registry: &'static [InputSpec],
) -> Result<Plan, ConfigError> {
    let no_file = |msg: String| ConfigError {
        errors: vec![Diag {
            severity: Severity::Error,
            file: PathBuf::from("<config>"),
            line: 0,
            column: 0,
            message: msg,
        }],
    };
    let files = config_files(req).map_err(no_file)?;
    if files.is_empty() {
        return Err(no_file(
            "no configuration file given (use --config FILE or --config-directory DIR)".into(),
        ));
    }
    let mut sources = Vec::new();
    let mut diags = Diagnostics::default();
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(text) => sources.push(Source::new(f, text)),
            Err(e) => diags.push(Diag {
                severity: Severity::Error,
                file: f.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    let mut loader = Loader {
        req,
        registry,
        agent: AgentSettings::default(),
        agent_seen: false,
        global_tags: Vec::new(),
        paths: req.paths.clone(),
        inputs: Vec::new(),
        outputs: Vec::new(),
        ignored_outputs: Vec::new(),
        diags,
    };
    // Two passes: [agent] and [global_tags] of every file first, since plugins in any file
    // depend on them (interval, batch size, host paths).
    let docs: Vec<_> = sources
        .iter()
        .map(|s| (s, DeTable::parse(&s.text)))
        .collect();
    for (src, doc) in &docs {
        match doc {
            Ok(doc) => loader.settings(src, doc.get_ref()),
            Err(e) => {
                let mut d = src.toml_error(e);
                if unquoted_variable(src, e.span().map_or(0, |s| s.start)) {
                    d.message.push_str(
                        " (environment variables are replaced only inside strings: quote the value, e.g. \"${N}\")",
                    );
                }
                loader.diags.push(d);
            }
        }
    }
    for (src, doc) in &docs {
        if let Ok(doc) = doc {
            loader.plugins(src, doc.get_ref());
        }
    }
    loader.finish(files)
}

struct Loader<'r, 'e> {
    req: &'r LoadRequest<'e>,
    /// The inputs `[[inputs.<name>]]` may name.
    registry: &'static [InputSpec],
    agent: AgentSettings,
    agent_seen: bool,
    global_tags: Vec<(String, String)>,
    paths: HostPaths,
    inputs: Vec<RunningInput>,
    outputs: Vec<RunningOutput>,
    /// Telegraf outputs in the config that wk-agent does not implement, for the "no outputs"
    /// message.
    ignored_outputs: Vec<String>,
    diags: Diagnostics,
}

impl Loader<'_, '_> {
    fn settings(&mut self, src: &Source, doc: &DeTable<'_>) {
        for (key, value) in doc.iter() {
            let name = key.get_ref().as_ref();
            match (name, value.get_ref()) {
                ("agent", DeValue::Table(t)) => {
                    if self.agent_seen {
                        self.diags.push(src.diag(
                            Severity::Warning,
                            key.span().start,
                            "overlapping settings in multiple [agent] tables: later values override earlier ones",
                        ));
                    }
                    self.agent_seen = true;
                    self.agent_table(src, t, value.span().start);
                }
                ("global_tags" | "tags", DeValue::Table(t)) => {
                    let mut o = Options::new(
                        src,
                        name,
                        t,
                        value.span().start,
                        &mut self.diags,
                        self.req.env,
                    );
                    // Later files override earlier ones key by key, as Telegraf's tag map.
                    for (k, v) in o.all_strings() {
                        match self.global_tags.iter_mut().find(|(key, _)| *key == k) {
                            Some(slot) => slot.1 = v,
                            None => self.global_tags.push((k, v)),
                        }
                    }
                }
                (
                    "inputs" | "outputs" | "processors" | "aggregators" | "secretstores",
                    DeValue::Table(_),
                ) => {}
                ("plugins", DeValue::Table(_)) => {
                    // Telegraf still reads the pre-1.0 name of [inputs].
                    self.diags.push(src.diag(
                        Severity::Warning,
                        key.span().start,
                        "[plugins.*] is the old name of [inputs.*]: read as inputs; rename it",
                    ));
                }
                (
                    "agent" | "global_tags" | "tags" | "inputs" | "plugins" | "outputs"
                    | "processors" | "aggregators" | "secretstores",
                    v,
                ) => {
                    let single = matches!(name, "agent" | "global_tags" | "tags");
                    let msg = match (v, single) {
                        (DeValue::Array(_), true) => {
                            format!("[[{name}]] is not allowed: write [{name}]")
                        }
                        (DeValue::Array(_), false) => {
                            format!("[[{name}]] is not allowed: write [[{name}.NAME]]")
                        }
                        (_, true) => format!("{name} must be a table: write [{name}]"),
                        (_, false) => {
                            format!("{name} must be a table: write [[{name}.NAME]]")
                        }
                    };
                    self.diags
                        .push(src.diag(Severity::Error, key.span().start, msg));
                }
                (_, v) if !matches!(v, DeValue::Table(_)) => {
                    let msg = format!(
                        "top-level key {name:?} is not allowed: settings belong in a table such as [agent]"
                    );
                    self.diags
                        .push(src.diag(Severity::Error, key.span().start, msg));
                }
                _ => {
                    let msg = format!(
                        "unsupported config section [{name}]: expected agent, global_tags, inputs, outputs, processors or aggregators"
                    );
                    self.diags
                        .push(src.diag(Severity::Error, key.span().start, msg));
                }
            }
        }
    }

    fn agent_table(&mut self, src: &Source, t: &DeTable<'_>, offset: usize) {
        let mut o = Options::new(src, "agent", t, offset, &mut self.diags, self.req.env);
        let a = &mut self.agent;
        a.interval = o
            .opt_period("interval", crate::plugin::MIN_PERIOD)
            .unwrap_or(a.interval);
        a.round_interval = o.bool("round_interval", a.round_interval);
        a.collection_jitter = o.duration("collection_jitter", a.collection_jitter);
        a.collection_offset = o.duration("collection_offset", a.collection_offset);
        a.flush_interval = o
            .opt_period("flush_interval", crate::plugin::MIN_PERIOD)
            .unwrap_or(a.flush_interval);
        a.flush_jitter = o.duration("flush_jitter", a.flush_jitter);
        // 0 means Telegraf's default, as in its models/running_output.go.
        let defaults = AgentSettings::default();
        a.metric_batch_size =
            o.int("metric_batch_size", a.metric_batch_size as i64, 0, i64::MAX) as usize;
        if a.metric_batch_size == 0 {
            a.metric_batch_size = defaults.metric_batch_size;
        }
        a.metric_buffer_limit = o.int(
            "metric_buffer_limit",
            a.metric_buffer_limit as i64,
            0,
            i64::MAX,
        ) as usize;
        if a.metric_buffer_limit == 0 {
            a.metric_buffer_limit = defaults.metric_buffer_limit;
        }
        a.precision = o.duration("precision", a.precision);
        a.precision_set = !a.precision.is_zero();
        a.hostname = o.string("hostname", &a.hostname);
        a.omit_hostname = o.bool("omit_hostname", a.omit_hostname);
        a.debug = o.bool("debug", a.debug);
        a.quiet = o.bool("quiet", a.quiet);
        // "disk_write_through" is what Telegraf's "disk" stands for.
        let strategy = o.choice(
            "buffer_strategy",
            if a.buffer_disk { "disk" } else { "memory" },
            &["memory", "disk", "disk_write_through"],
        );
        a.buffer_disk = strategy != "memory";
        a.buffer_directory = o
            .opt_string("buffer_directory")
            .map_or(a.buffer_directory.clone(), PathBuf::from);
        a.buffer_disk_sync = o.bool("buffer_disk_sync", a.buffer_disk_sync);
        if a.buffer_disk && a.buffer_directory.as_os_str().is_empty() {
            o.error_at(
                "buffer_directory",
                "buffer_strategy = \"disk\" needs a buffer_directory (e.g. \"/var/lib/wk-agent/buffer\")",
            );
        }
        // Our own keys (not Telegraf's): the host roots, for a containerised agent.
        self.paths
            .set_roots(|name| o.opt_string(&format!("host_{name}")));
        o.unsupported_unless(AGENT_UNSUPPORTED);
        o.accepted(AGENT_ACCEPTED);
        o.finish();
    }

    fn plugins(&mut self, src: &Source, doc: &DeTable<'_>) {
        for (table, kind) in [
            ("inputs", "inputs"),
            ("plugins", "inputs"),
            ("outputs", "outputs"),
            ("processors", "processors"),
            ("aggregators", "aggregators"),
            ("secretstores", "secretstores"),
        ] {
            let Some(section) = doc.get(table) else {
                continue;
            };
            let DeValue::Table(plugins) = section.get_ref() else {
                continue;
            };
            for (name, instances) in plugins.iter() {
                let Some(tables) = wk_core::options::tables_of(instances) else {
                    let msg = format!("[{kind}.{}] must be a table", name.get_ref());
                    self.diags
                        .push(src.diag(Severity::Error, name.span().start, msg));
                    continue;
                };
                self.plugin(src, kind, name.get_ref(), name.span().start, &tables);
            }
        }
    }

    fn plugin(
        &mut self,
        src: &Source,
        kind: &str,
        name: &str,
        offset: usize,
        tables: &[(&DeTable<'_>, usize)],
    ) {
        let section = format!("{kind}.{name}");
        let ctx = BuildContext {
            paths: &self.paths,
            interval: self.agent.interval,
            stats: &self.req.stats,
        };
        // Every table is built (so its errors are reported); a filter only decides what runs.
        let wanted = |filter: &Option<Vec<String>>| {
            filter.as_ref().is_none_or(|f| f.iter().any(|n| n == name))
        };
        if kind == "inputs"
            && let Some(spec) = self.registry.iter().find(|s| s.name == name)
        {
            let wanted = wanted(&self.req.input_filter);
            for (t, off) in tables {
                let mut o = Options::new(src, &section, t, *off, &mut self.diags, self.req.env);
                let ri = RunningInput::build(spec, &mut o, &ctx);
                o.finish();
                if wanted {
                    self.inputs.push(ri);
                }
            }
            return;
        }
        if kind == "outputs"
            && let Some(spec) = outputs::find(name)
        {
            let wanted = wanted(&self.req.output_filter);
            let (batch, limit) = (self.agent.metric_batch_size, self.agent.metric_buffer_limit);
            for (t, off) in tables {
                let mut o = Options::new(src, &section, t, *off, &mut self.diags, self.req.env);
                let mut ro = RunningOutput::build(spec, &mut o, &ctx, batch, limit);
                o.finish();
                if self.agent.buffer_disk {
                    // One directory per output: its name, then its alias or position.
                    let n = self.outputs.iter().filter(|x| x.spec.name == name).count();
                    let id = match &ro.alias {
                        Some(a) => format!("{name}-{a}"),
                        None => format!("{name}-{n}"),
                    };
                    ro.set_disk_buffer(
                        self.agent.buffer_directory.join(id),
                        self.agent.buffer_disk_sync,
                    );
                }
                if wanted {
                    self.outputs.push(ro);
                }
            }
            return;
        }
        let (severity, msg) = if telegraf_plugins::is_telegraf_plugin(kind, name) {
            if kind == "outputs" {
                self.ignored_outputs.push(section.clone());
            }
            (
                Severity::Warning,
                format!(
                    "[{section}] is a Telegraf plugin wk-agent does not implement; it is ignored"
                ),
            )
        } else if let Some((version, notice)) = telegraf_plugins::removed(kind, name) {
            (
                Severity::Error,
                format!("[{section}] was removed from Telegraf in {version}: {notice}"),
            )
        } else {
            let mut msg = format!(
                "[{section}]: no such plugin (undefined but requested {})",
                kind.trim_end_matches('s')
            );
            if let Some(s) = telegraf_plugins::closest(kind, name) {
                msg.push_str(&format!("; did you mean {s:?}?"));
            }
            (Severity::Error, msg)
        };
        self.diags.push(src.diag(severity, offset, msg));
    }

    fn finish(mut self, files: Vec<PathBuf>) -> Result<Plan, ConfigError> {
        let first = files.first().cloned().unwrap_or_default();
        let whole = |msg: &str| Diag {
            severity: Severity::Error,
            file: first.clone(),
            line: 0,
            column: 0,
            message: msg.into(),
        };
        // As Telegraf, the checks apply after --input-filter/--output-filter.
        if self.inputs.is_empty() && !self.diags.has_errors() {
            let msg = match &self.req.input_filter {
                Some(f) => format!(
                    "no inputs found: --input-filter {} matches none of the [[inputs.*]] plugins",
                    f.join(":")
                ),
                None => "no inputs found: add at least one [[inputs.*]] plugin".into(),
            };
            self.diags.push(whole(&msg));
        }
        if self.outputs.is_empty() && !self.req.test_mode && !self.diags.has_errors() {
            let mut msg = match &self.req.output_filter {
                Some(f) => format!(
                    "no outputs found: --output-filter {} matches none of the [[outputs.*]] plugins",
                    f.join(":")
                ),
                None => String::from(
                    "no outputs found: add at least one [[outputs.*]] plugin (or run with --test)",
                ),
            };
            if !self.ignored_outputs.is_empty() {
                msg.push_str(&format!(
                    "; wk-agent does not implement [{}]",
                    self.ignored_outputs.join("], [")
                ));
            }
            self.diags.push(whole(&msg));
        }
        // Report in file order, then by position, whatever order the checks ran in.
        let file_index = |d: &Diag| files.iter().position(|f| *f == d.file);
        self.diags
            .items
            .sort_by_key(|d| (file_index(d), d.line, d.column));
        if self.diags.has_errors() {
            return Err(ConfigError {
                errors: self.diags.errors().cloned().collect(),
            });
        }
        let mut agent = self.agent;
        if agent.precision.is_zero() {
            agent.precision = default_precision(agent.interval);
        }
        if agent.hostname.is_empty() {
            agent.hostname = os_hostname();
        }
        let mut tags = self.global_tags;
        // Telegraf sets tags["host"] after reading [global_tags], so the hostname beats a
        // `host` global tag unless omit_hostname is set.
        if !agent.omit_hostname {
            tags.retain(|(k, _)| k != "host");
            tags.push(("host".into(), agent.hostname.clone()));
        }
        Ok(Plan {
            agent,
            global_tags: GlobalTags { tags },
            paths: self.paths,
            inputs: self.inputs,
            outputs: self.outputs,
            warnings: self.diags.warnings().cloned().collect(),
            files,
            stats: self.req.stats.clone(),
        })
    }
}

/// True when the line holding `offset` assigns an unquoted `$VAR`: the strict-mode mistake of
/// `metric_batch_size = ${N}`.
fn unquoted_variable(src: &Source, offset: usize) -> bool {
    let before = src.text.get(..offset).unwrap_or("");
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = src
        .text
        .get(start..)
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("");
    line.split_once('=')
        .is_some_and(|(_, value)| value.trim_start().starts_with('$'))
}

impl AgentSettings {
    /// The precision of an input with its own `interval` and `precision` (each `None` when
    /// unset): its own, else the agent's when the config set one, else derived from the
    /// input's interval (a 500 ms input gets ms, not the agent's 1 s: its points would
    /// overwrite each other).
    pub fn precision_for(
        &self,
        interval: Option<Duration>,
        precision: Option<Duration>,
    ) -> Duration {
        precision
            .filter(|p| !p.is_zero())
            .unwrap_or_else(|| match interval {
                Some(i) if !self.precision_set => default_precision(i),
                _ => self.precision,
            })
    }
}

/// Telegraf's precision when none is set: ≥1s → 1s, ≥1ms → 1ms, ≥1µs → 1µs, else 1ns.
pub fn default_precision(interval: Duration) -> Duration {
    for p in [
        Duration::from_secs(1),
        Duration::from_millis(1),
        Duration::from_micros(1),
    ] {
        if interval >= p {
            return p;
        }
    }
    Duration::from_nanos(1)
}

/// The kernel's node name (what Go's `os.Hostname()` returns), not the FQDN.
pub fn os_hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Telegraf's default `--input-filter` of `telegraf config`: the inputs its default config
/// file has on.
pub const TELEGRAF_DEFAULT_INPUTS: &[&str] = &[
    "cpu",
    "disk",
    "diskio",
    "kernel",
    "mem",
    "processes",
    "swap",
    "system",
];

/// The `[agent]` section, every output's and every input's sample, as Telegraf's
/// `telegraf config` prints them.
///
/// As `telegraf config`: without filters only Telegraf's default plugins are on (the host
/// inputs and `outputs.influxdb`), every other plugin is printed commented out, so the first
/// `--test` of the file probes nothing; plugins named by a filter are printed on.
pub fn sample_config(inputs_f: Option<&[String]>, outputs_f: Option<&[String]>) -> String {
    /// Telegraf's default `--output-filter` of `telegraf config`.
    const DEFAULT_OUTPUTS: &[&str] = &["influxdb"];
    let mut s = String::from(include_str!("../agent_sample.conf"));
    let keep = |f: Option<&[String]>, name: &str| f.is_none_or(|f| f.iter().any(|n| n == name));
    let mut add = |sample: &str, on: bool| {
        s.push('\n');
        if on {
            s.push_str(sample);
        } else {
            for line in sample.lines() {
                s.push_str(if line.is_empty() { "" } else { "# " });
                s.push_str(line);
                s.push('\n');
            }
        }
    };
    for o in outputs::REGISTRY.iter().filter(|o| keep(outputs_f, o.name)) {
        add(
            o.sample_config,
            outputs_f.is_some() || DEFAULT_OUTPUTS.contains(&o.name),
        );
    }
    for i in inputs::REGISTRY.iter().filter(|i| keep(inputs_f, i.name)) {
        add(
            i.sample_config,
            inputs_f.is_some() || TELEGRAF_DEFAULT_INPUTS.contains(&i.name),
        );
    }
    s
}
