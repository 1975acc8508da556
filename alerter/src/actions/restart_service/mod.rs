//! `restart_service`: `systemctl restart -- <unit>`, with the unit's state before and after
//! from `systemctl show` and, when it fails, the last journal lines
//! (`journalctl -u <unit> -n 20 --no-pager`).

use super::{Action, ArgKind, ArgSpec, Args, BoxFuture, Ctx, Done, Probe, last_lines};

/// Registry entry.
pub const SPEC: super::ActionSpec = super::ActionSpec::new(
    "restart_service",
    "systemctl restart a unit; state before/after from systemctl show; journal lines on failure",
    &[ArgSpec::required("unit", ArgKind::Unit)],
    build,
);

fn build(a: &Args) -> Box<dyn Action> {
    Box::new(RestartService {
        unit: a.get("unit").unwrap_or_default().to_owned(),
    })
}

/// The action.
pub struct RestartService {
    pub unit: String,
}

/// The properties read from `systemctl show`.
pub const PROPS: &str = "ActiveState,SubState,Result,ExecMainStatus,MainPID,NRestarts";

/// argv of the state query.
pub fn show_argv(unit: &str) -> Vec<&str> {
    vec!["systemctl", "show", "--no-pager", "-p", PROPS, "--", unit]
}

/// argv of the restart.
pub fn restart_argv(unit: &str) -> Vec<&str> {
    vec!["systemctl", "restart", "--", unit]
}

/// argv of the journal excerpt.
pub fn journal_argv(unit: &str) -> Vec<&str> {
    vec!["journalctl", "--no-pager", "-n", "20", "-u", unit]
}

/// Parses `Key=Value` lines of `systemctl show` into a short summary
/// ("active/running, result success, main pid 42") and whether the unit is active.
pub fn parse_show(text: &str) -> (String, bool) {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    let (active, sub) = (get("ActiveState"), get("SubState"));
    if active.is_empty() {
        return ("state unknown".into(), false);
    }
    let mut s = format!("{active}/{sub}");
    for (k, label) in [
        ("Result", "result"),
        ("ExecMainStatus", "exit status"),
        ("MainPID", "main pid"),
        ("NRestarts", "restarts"),
    ] {
        let v = get(k);
        if !v.is_empty() && v != "0" || k == "Result" && !v.is_empty() {
            s.push_str(&format!(", {label} {v}"));
        }
    }
    (s, active == "active")
}

impl Action for RestartService {
    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Done> {
        Box::pin(async move {
            let u = self.unit.as_str();
            let mut d = Done::default();
            let show = ctx.cmd(&show_argv(u)).await;
            d.before = if show.ok() {
                parse_show(&show.stdout).0
            } else {
                format!("systemctl show failed: {}", show.excerpt(300))
            };
            let r = ctx.cmd(&restart_argv(u)).await;
            d.main_command(&r);
            d.did = format!("systemctl restart {u}: {}", r.outcome("ok"));
            if !r.ok() {
                let j = ctx.cmd(&journal_argv(u)).await;
                let mut err = r.excerpt(ctx.max_output);
                if j.ok() {
                    err.push_str("\njournal:\n");
                    err.push_str(&last_lines(&j.stdout, 20));
                }
                d.stderr = err;
            }
            d
        })
    }

    fn target(&self) -> Option<String> {
        // systemctl reads a name without a type as a service (only services are taken).
        let unit = self.unit.strip_suffix(".service").unwrap_or(&self.unit);
        Some(format!("{unit}.service"))
    }

    fn probe<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Probe> {
        Box::pin(async move {
            let show = ctx.cmd(&show_argv(&self.unit)).await;
            let (after, active) = if show.ok() {
                parse_show(&show.stdout)
            } else {
                (show.excerpt(300), false)
            };
            Probe {
                after,
                healthy: Some(active),
                ..Probe::default()
            }
        })
    }

    fn plan(&self) -> Vec<String> {
        vec![restart_argv(&self.unit).join(" ")]
    }

    fn refuse(&self, ctx: &Ctx) -> Option<String> {
        if ctx.host != super::Host::Local {
            return None;
        }
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| wk_core::systemd::service_of_cgroup(&t));
        own_unit(&self.unit, own.as_deref())
    }
}

/// Why restarting `unit` on this host is refused: it is the alerter's own service (`own`,
/// from its cgroup) or the packaged `wk-alerter.service`. The restart would kill the
/// alerter in the middle of the action, with nobody left to verify or report it.
pub fn own_unit(unit: &str, own: Option<&str>) -> Option<String> {
    let full = wk_core::systemd::full_unit_name(unit);
    (own == Some(full.as_str()) || full == "wk-alerter.service").then(|| {
        format!(
            "refused to restart {full}: it is the alerter's own service, which would die in the middle of the action (restart it by hand, or from an alerter on another host)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_systemctl_show() {
        let (s, up) = parse_show(include_str!("testdata/show_active.txt"));
        assert!(up);
        assert_eq!(
            s,
            "active/running, result success, main pid 1234, restarts 2"
        );
        let (s, up) = parse_show(include_str!("testdata/show_failed.txt"));
        assert!(!up);
        assert_eq!(s, "failed/failed, result exit-code, exit status 1");
        assert_eq!(parse_show("").0, "state unknown");
    }

    #[test]
    fn argv_puts_the_unit_after_double_dash() {
        assert_eq!(
            restart_argv("nginx.service"),
            ["systemctl", "restart", "--", "nginx.service"]
        );
        assert_eq!(show_argv("a").last(), Some(&"a"));
    }

    #[test]
    fn the_alerters_own_service_is_refused() {
        let own = Some("wk-alerter-prod.service");
        assert!(own_unit("wk-alerter-prod", own).is_some());
        assert!(own_unit("wk-alerter-prod.service", own).is_some());
        assert!(own_unit("wk-alerter", None).is_some());
        assert!(own_unit("nginx", own).is_none());
        assert!(own_unit("wk-agent.service", own).is_none());
    }
}
