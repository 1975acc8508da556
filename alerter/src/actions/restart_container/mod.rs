//! `restart_container`: inspects the container first (`docker inspect`: status, exit code —
//! 137 is SIGKILL, "out of memory" when docker says OOMKilled or the code is 137 —, the
//! error), names the holder of the port when the error or the logs say "address already in
//! use", then `docker restart -- <name>`; on failure the last log lines.

use super::{
    Action, ArgKind, ArgSpec, Args, BoxFuture, Ctx, Done, Host, Probe, describe_process, last_lines,
};

/// Registry entry.
pub const SPEC: super::ActionSpec = super::ActionSpec::new(
    "restart_container",
    "docker inspect (exit 137 → out of memory; address in use → who holds the port), then docker restart",
    &[ArgSpec::required("name", ArgKind::Container)],
    build,
);

fn build(a: &Args) -> Box<dyn Action> {
    Box::new(RestartContainer {
        name: a.get("name").unwrap_or_default().to_owned(),
    })
}

/// The action.
pub struct RestartContainer {
    pub name: String,
}

/// argv of the state query.
pub fn inspect_argv(name: &str) -> Vec<&str> {
    vec![
        "docker",
        "inspect",
        "--type",
        "container",
        "--format",
        "{{json .State}}",
        "--",
        name,
    ]
}

/// argv of the restart.
pub fn restart_argv(name: &str) -> Vec<&str> {
    vec!["docker", "restart", "--", name]
}

/// argv of the log excerpt.
pub fn logs_argv(name: &str) -> Vec<&str> {
    vec!["docker", "logs", "--tail", "20", "--", name]
}

/// A container's state, from `docker inspect --format '{{json .State}}'`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct State {
    pub status: String,
    pub running: bool,
    pub exit_code: i64,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub error: String,
}

impl State {
    /// Parses the JSON (`None` when it is not a state object).
    pub fn parse(text: &str) -> Option<State> {
        serde_json::from_str(text.trim()).ok()
    }

    /// "exited (exit code 137: out of memory (SIGKILL))", "running".
    pub fn describe(&self) -> String {
        let mut s = self.status.clone();
        if !self.running && (self.exit_code != 0 || self.status == "exited") {
            s.push_str(&format!(" (exit code {}", self.exit_code));
            if self.oom_killed || self.exit_code == 137 {
                s.push_str(": out of memory (SIGKILL)");
            } else if self.exit_code == 128 {
                s.push_str(": could not start");
            }
            s.push(')');
        }
        if !self.error.is_empty() {
            s.push_str(&format!(", error: {}", self.error));
        }
        s
    }
}

/// The port of an "address already in use" message (`…0.0.0.0:8080: bind: address already
/// in use`).
pub fn port_in_use(text: &str) -> Option<u16> {
    let line = text
        .lines()
        .find(|l| l.contains("address already in use"))?;
    let before = &line[..line.find("address already in use")?];
    before
        .split_whitespace()
        .filter_map(|w| w.trim_end_matches(':').rsplit_once(':'))
        .filter_map(|(_, p)| p.parse::<u16>().ok())
        .rfind(|p| *p > 0)
}

impl Action for RestartContainer {
    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Done> {
        Box::pin(async move {
            let n = self.name.as_str();
            let mut d = Done::default();
            let inspect = ctx.cmd(&inspect_argv(n)).await;
            let state = State::parse(&inspect.stdout);
            d.before = match &state {
                Some(s) => s.describe(),
                None => format!("docker inspect failed: {}", inspect.excerpt(300)),
            };
            let mut evidence = state.as_ref().map(|s| s.error.clone()).unwrap_or_default();
            if state.as_ref().is_some_and(|s| !s.running) {
                let logs = ctx.cmd(&logs_argv(n)).await;
                evidence.push('\n');
                evidence.push_str(&logs.stdout);
                evidence.push_str(&logs.stderr);
            }
            if let Some(port) = port_in_use(&evidence) {
                let holders = if ctx.host == Host::Local {
                    let users = wk_core::procs::user_names(&ctx.passwd);
                    wk_core::procs::tcp_port_holders(&ctx.proc_root, port)
                        .iter()
                        .map(|p| describe_process(p, &users))
                        .collect::<Vec<_>>()
                        .join("; ")
                } else {
                    String::new()
                };
                d.before.push_str(&format!(
                    "; port {port} already in use{}",
                    if holders.is_empty() {
                        String::new()
                    } else {
                        format!(" by {holders}")
                    }
                ));
            }
            let r = ctx.cmd(&restart_argv(n)).await;
            d.main_command(&r);
            d.did = format!("docker restart {n}: {}", r.outcome("ok"));
            if !r.ok() {
                let logs = ctx.cmd(&logs_argv(n)).await;
                d.stderr = format!(
                    "{}\nlogs:\n{}",
                    r.excerpt(ctx.max_output),
                    last_lines(&format!("{}{}", logs.stdout, logs.stderr), 20)
                );
            }
            d
        })
    }

    fn probe<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Probe> {
        Box::pin(async move {
            let inspect = ctx.cmd(&inspect_argv(&self.name)).await;
            match State::parse(&inspect.stdout) {
                Some(s) => Probe {
                    after: s.describe(),
                    healthy: Some(s.running),
                    ..Probe::default()
                },
                None => Probe {
                    after: inspect.excerpt(300),
                    healthy: Some(false),
                    ..Probe::default()
                },
            }
        })
    }

    fn plan(&self) -> Vec<String> {
        vec![
            inspect_argv(&self.name).join(" "),
            restart_argv(&self.name).join(" "),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_137_says_out_of_memory() {
        let s = State::parse(include_str!("testdata/inspect_oom.json")).unwrap();
        assert!(!s.running);
        assert_eq!(
            s.describe(),
            "exited (exit code 137: out of memory (SIGKILL))"
        );
    }

    #[test]
    fn address_in_use_names_the_port() {
        let s = State::parse(include_str!("testdata/inspect_addr_in_use.json")).unwrap();
        assert_eq!(port_in_use(&s.error), Some(8080));
        assert!(
            s.describe().contains("exit code 128: could not start"),
            "{}",
            s.describe()
        );
        assert_eq!(
            port_in_use("listen tcp 127.0.0.1:5432: bind: address already in use"),
            Some(5432)
        );
        assert_eq!(port_in_use("nothing here"), None);
    }

    #[test]
    fn argv_ends_options_before_the_name() {
        assert_eq!(restart_argv("db"), ["docker", "restart", "--", "db"]);
        assert_eq!(inspect_argv("db")[6..], ["--", "db"]);
    }
}
