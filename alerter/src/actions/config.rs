//! `[actions]` and `[[actions.ssh]]`: global switches, where scripts, the audit log and the
//! host paths are, and how to reach remote hosts.
//!
//! ```toml
//! [actions]
//!   dry_run = false                       # true: log and report what would run, run nothing
//!   scripts_dir = "/etc/watchkeeper/scripts"
//!   audit_log = "/var/lib/wk-alerter/actions.log"
//!   record = ["ops-webhook"]              # other notifiers that get one event per result
//!                                         # (wk_actions goes to InfluxDB by record_influxdb)
//!   local_hosts = ["web1"]                # host tag values that mean "this host" (+ hostname)
//!
//! [[actions.ssh]]
//!   host = "web2"                         # the alert's host tag
//!   address = "10.0.0.12"                 # default: host
//!   user = "wk"
//!   key = "/etc/watchkeeper/id_ed25519"    # must exist (checked at load)
//!   known_hosts = "/etc/watchkeeper/known_hosts"
//!   port = 22
//!   helper = "/usr/local/bin/wk-remote-helper" # scripts/wk-remote-helper, for /proc there
//! ```
//!
//! Where an action runs: the alert's `host` tag (or no tag) naming this host → locally; a
//! host with an `[[actions.ssh]]` entry → over ssh; any other host → refused (reported),
//! because running "restart nginx" on the alerter's host for an alert about another host
//! would be wrong.

use std::path::PathBuf;
use std::time::Duration;

use toml::de::DeTable;
use wk_core::diag::{Diagnostics, Severity, Source};
use wk_core::options::{EnvLookup, Options};

use super::host::{Host, SshHost};

/// The validated `[actions]` config.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionsConfig {
    /// false: rules' actions are ignored (still shown by `check`).
    pub enabled: bool,
    /// Global dry run: every action only says what it would do.
    pub dry_run: bool,
    pub scripts_dir: PathBuf,
    /// Audit log file; empty = `<state_dir>/actions.log`.
    pub audit_log: PathBuf,
    pub audit_max_bytes: u64,
    pub audit_keep: u32,
    /// Notifier names that get one event per action result (an influxdb notifier with
    /// `measurement = "wk_actions"` gives Grafana its panel).
    pub record: Vec<String>,
    /// Host tag values meaning this host (the hostname is always in; `localhost` only when
    /// listed).
    pub local_hosts: Vec<String>,
    pub proc_root: PathBuf,
    pub passwd: PathBuf,
    /// SIGTERM → SIGKILL grace for stopped processes.
    pub grace: Duration,
    pub max_output_bytes: usize,
    pub ssh: Vec<SshHost>,
    /// How started services and operator scripts run on this host (`launch`: `auto` is
    /// `systemd-run` when the alerter is a systemd service and `systemd-run` is installed).
    pub launch: super::Launch,
    /// Write one `wk_actions` point per result to InfluxDB (default true).
    pub record_influxdb: bool,
    /// `record_url`, `record_database`, `record_measurement`, `record_username`,
    /// `record_password`, `record_token` as written (empty: from the source).
    pub record_options: RecordOptions,
    /// Where the points go: resolved by [`ActionsConfig::resolve_record`] from the options
    /// and the `[[sources.influxdb]]`; `None`: not recorded in InfluxDB.
    pub record_target: Option<super::record::RecordTarget>,
}

/// The `record_*` options as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordOptions {
    pub url: String,
    pub database: String,
    pub measurement: String,
    pub username: String,
    pub password: String,
    pub token: String,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig {
            enabled: true,
            dry_run: false,
            scripts_dir: "/etc/watchkeeper/scripts".into(),
            audit_log: PathBuf::new(),
            audit_max_bytes: 10 << 20,
            audit_keep: 3,
            record: Vec::new(),
            local_hosts: Vec::new(),
            proc_root: "/proc".into(),
            passwd: "/etc/passwd".into(),
            grace: Duration::from_secs(5),
            max_output_bytes: 4096,
            ssh: Vec::new(),
            record_influxdb: true,
            record_options: RecordOptions::default(),
            record_target: None,
            launch: super::Launch::Direct,
        }
    }
}

/// This machine's host name (`/proc/sys/kernel/hostname`, else `HOSTNAME`).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_default()
}

impl ActionsConfig {
    /// Where an action for an alert with host tag `host` runs, or why it may not.
    pub fn resolve(&self, host: Option<&str>) -> Result<Host, String> {
        let Some(h) = host.filter(|h| !h.is_empty()) else {
            return Ok(Host::Local);
        };
        // Not `localhost`: an agent that could not learn its name reports it, from any
        // machine. The alerter's own host name, or the names the operator lists, only.
        if h == hostname() || self.local_hosts.iter().any(|l| l == h) {
            return Ok(Host::Local);
        }
        if let Some(s) = self.ssh.iter().find(|s| s.host == h) {
            return Ok(Host::Ssh(s.clone()));
        }
        Err(format!(
            "host {h:?} is neither this host ({:?}, local_hosts) nor in [[actions.ssh]]: not acting on it",
            hostname()
        ))
    }
}

/// `launch = "auto"`: `systemd-run` when this process is a systemd system service — the
/// main process of a unit (systemd sets `INVOCATION_ID`; its parent is PID 1, so not a shell
/// in a terminal that inherited the variable from a user service) on a host booted with
/// systemd — and `systemd-run` is installed; else direct.
fn auto_launch() -> super::Launch {
    // Root too: the packaged unit's dynamic user may not ask PID 1 for units (polkit), and
    // started services and scripts worked directly there before.
    let service = std::env::var_os("INVOCATION_ID").is_some_and(|v| !v.is_empty())
        && rustix::process::geteuid().is_root()
        && std::os::unix::process::parent_id() == 1
        && std::path::Path::new("/run/systemd/system").is_dir();
    if service && super::host::local_has("systemd-run") {
        super::Launch::SystemdRun
    } else {
        super::Launch::Direct
    }
}

/// Reads `[actions]` (with its `[[actions.ssh]]` entries) from a parsed config document.
pub fn load(
    src: &Source,
    doc: &DeTable<'_>,
    diags: &mut Diagnostics,
    env: EnvLookup<'_>,
) -> ActionsConfig {
    let mut c = ActionsConfig::default();
    let Some(section) = doc.get("actions") else {
        // `launch` defaults to "auto" with or without the table (the packaged config has
        // none): a service restarted by a root alerter under systemd outlives the alerter.
        c.launch = auto_launch();
        return c;
    };
    let toml::de::DeValue::Table(t) = section.get_ref() else {
        diags.push(src.diag(
            Severity::Error,
            section.span().start,
            "[actions] must be a table",
        ));
        return c;
    };
    let mut o = Options::new(src, "actions", t, section.span().start, diags, env);
    let d = ActionsConfig::default();
    c.enabled = o.bool("enabled", d.enabled);
    c.dry_run = o.bool("dry_run", d.dry_run);
    c.scripts_dir = o
        .string("scripts_dir", &d.scripts_dir.to_string_lossy())
        .into();
    c.audit_log = o.string("audit_log", "").into();
    c.audit_max_bytes = o.size("audit_max_bytes", d.audit_max_bytes);
    c.audit_keep = o.int("audit_keep", d.audit_keep.into(), 1, 100) as u32;
    c.record = o.strings("record");
    c.local_hosts = o.strings("local_hosts");
    c.proc_root = o.string("proc_root", "/proc").into();
    c.passwd = o.string("passwd", "/etc/passwd").into();
    c.grace = o.duration("grace", d.grace);
    c.max_output_bytes = o.size("max_output_bytes", d.max_output_bytes as u64) as usize;
    c.launch = match o
        .choice("launch", "auto", &["auto", "systemd-run", "direct"])
        .as_str()
    {
        "systemd-run" => super::Launch::SystemdRun,
        "direct" => super::Launch::Direct,
        _ => auto_launch(),
    };
    c.record_influxdb = o.bool("record_influxdb", true);
    c.record_options = RecordOptions {
        url: o.string("record_url", ""),
        database: o.string("record_database", ""),
        measurement: o.string("record_measurement", "wk_actions"),
        username: o.string("record_username", ""),
        password: o.string("record_password", ""),
        token: o.string("record_token", ""),
    };
    if c.record_options.measurement.is_empty() {
        o.error_at("record_measurement", "must not be empty");
    }
    if !c.record_options.url.is_empty()
        && let Err(e) = crate::notify::http_url(&c.record_options.url)
    {
        o.error_at("record_url", e);
    }
    let has_ssh = o.has("ssh");
    o.finish();
    if has_ssh && let Some(ssh) = t.get("ssh") {
        for (i, (st, off)) in crate::notify::config::tables_of(ssh)
            .into_iter()
            .enumerate()
        {
            let mut o = Options::new(src, format!("actions.ssh.{i}"), st, off, diags, env);
            let host = o.string("host", "");
            if host.is_empty() {
                o.error_at(
                    "host",
                    "is required: the alert's host tag this entry is for",
                );
            }
            let address = o.opt_string("address").unwrap_or_else(|| host.clone());
            let user = o.string("user", "");
            if user.is_empty() {
                o.error_at("user", "is required: the remote user (key auth only)");
            }
            let key: PathBuf = o.string("key", "").into();
            if key.as_os_str().is_empty() {
                o.error_at("key", "is required: the private key file (no passwords)");
            } else if !key.is_file() {
                o.error_at("key", format!("ssh key {} does not exist", key.display()));
            }
            let known_hosts: PathBuf = o.string("known_hosts", "").into();
            if !known_hosts.as_os_str().is_empty() && !known_hosts.is_file() {
                o.error_at(
                    "known_hosts",
                    format!("known_hosts file {} does not exist", known_hosts.display()),
                );
            }
            let port = o.int("port", 22, 1, 65535) as u16;
            let connect_timeout = o.duration("connect_timeout", Duration::from_secs(10));
            let helper = o.string("helper", super::remote::DEFAULT_HELPER);
            if !helper.starts_with('/') {
                o.error_at(
                    "helper",
                    format!("{helper:?} must be an absolute path on the remote host"),
                );
            } else if helper.chars().any(char::is_control) {
                o.error_at("helper", "control characters are not allowed");
            }
            if c.ssh.iter().any(|s: &SshHost| s.host == host) {
                o.error_at("host", format!("{host:?} has two [[actions.ssh]] entries"));
            }
            o.finish();
            c.ssh.push(SshHost {
                host,
                address,
                user,
                port,
                key,
                known_hosts,
                connect_timeout,
                helper: helper.into(),
            });
        }
    }
    c
}

impl ActionsConfig {
    /// Resolves where `wk_actions` points go: `record_url` (with `record_database`, default
    /// the source's or `telegraf`, and the `record_*` credentials), else the source the rules
    /// query, with its database and credentials; nothing in stream mode without
    /// `record_url`, or with `record_influxdb = false`.
    pub fn resolve_record(&mut self, source: Option<&super::record::SourceDb>) {
        let o = &self.record_options;
        self.record_target = if !self.record_influxdb {
            None
        } else if !o.url.is_empty() {
            Some(super::record::RecordTarget {
                url: o.url.clone(),
                database: if o.database.is_empty() {
                    source.map_or_else(|| "telegraf".to_owned(), |s| s.database.clone())
                } else {
                    o.database.clone()
                },
                retention_policy: String::new(),
                measurement: o.measurement.clone(),
                username: o.username.clone(),
                password: o.password.clone(),
                token: o.token.clone(),
            })
        } else {
            source.map(|s| super::record::RecordTarget {
                url: s.url.clone(),
                database: if o.database.is_empty() {
                    s.database.clone()
                } else {
                    o.database.clone()
                },
                retention_policy: s.retention_policy.clone(),
                measurement: o.measurement.clone(),
                username: s.username.clone(),
                password: s.password.clone(),
                token: s.token.clone(),
            })
        };
    }

    /// Checks a rule's actions against this config: a literal `run_script` name must be an
    /// executable in `scripts_dir`. Errors carry the position of the offending value.
    pub fn validate_rule(
        &self,
        settings: &crate::model::RuleSettings,
    ) -> Result<(), (crate::model::Pos, String)> {
        for (i, a) in settings.actions.iter().enumerate() {
            if a.action == "run_script"
                && let Some(super::RawArg::One(name)) = a.args.get("name")
                && !name.contains("{{")
                && let Err(e) = super::run_script::resolve(&self.scripts_dir, name)
            {
                let pos = a.arg_pos.get("name").copied().unwrap_or(a.pos);
                return Err((pos, format!("rule(): actions[{i}]: name: {e}")));
            }
        }
        Ok(())
    }
}
