//! `restart_container`: inspects the container first (`docker inspect`: status, exit code —
//! 137 is SIGKILL, "out of memory" when docker says OOMKilled or the code is 137 —, the
//! error), names the holder of the port when the error or the logs say "address already in
//! use", then `docker restart -- <name>`; on failure the last log lines. Docker also takes a
//! prefix of a container's ID for its name: the container inspected must be named exactly
//! `name` (or have it as its full ID), else the action is refused (a tag value `a` must not
//! restart whichever container's ID starts with `a`).

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

/// argv of the state query: the container's ID, name and state as one JSON object.
pub fn inspect_argv(name: &str) -> Vec<&str> {
    vec![
        "docker",
        "inspect",
        "--type",
        "container",
        "--format",
        r#"{"Id":{{json .Id}},"Name":{{json .Name}},"State":{{json .State}}}"#,
        "--",
        name,
    ]
}

/// What `docker inspect` says of the container a name resolved to.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Inspected {
    pub id: String,
    /// `/web`: docker keeps the leading `/`.
    pub name: String,
    pub state: State,
}

impl Inspected {
    /// Parses [`inspect_argv`]'s output (`None` when it is not such an object).
    pub fn parse(text: &str) -> Option<Inspected> {
        serde_json::from_str(text.trim()).ok()
    }

    /// Why the container is not the one `arg` names exactly (docker resolved an ID prefix):
    /// `None` when its name or full ID is `arg`.
    pub fn not_named(&self, arg: &str) -> Option<String> {
        let name = self.name.strip_prefix('/').unwrap_or(&self.name);
        (name != arg && self.id != arg).then(|| {
            format!(
                "refused: docker resolved {arg:?} to container {name:?} (ID {}), not to a container of that name or ID",
                self.id
            )
        })
    }
}

/// argv of the restart.
pub fn restart_argv(name: &str) -> Vec<&str> {
    vec!["docker", "restart", "--", name]
}

/// argv of the log excerpt.
pub fn logs_argv(name: &str) -> Vec<&str> {
    vec!["docker", "logs", "--tail", "20", "--", name]
}

/// A container's state (`.State` in `docker inspect`).
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
            let found = Inspected::parse(&inspect.stdout);
            if let Some(why) = found.as_ref().and_then(|c| c.not_named(n)) {
                d.commands.push(inspect.argv);
                d.refuse(why);
                return d;
            }
            let state = found.map(|c| c.state);
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
            match Inspected::parse(&inspect.stdout) {
                Some(c) => match c.not_named(&self.name) {
                    Some(why) => Probe {
                        after: why,
                        healthy: Some(false),
                        ..Probe::default()
                    },
                    None => Probe {
                        after: c.state.describe(),
                        healthy: Some(c.state.running),
                        ..Probe::default()
                    },
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
        let s = Inspected::parse(include_str!("testdata/inspect_oom.json"))
            .unwrap()
            .state;
        assert!(!s.running);
        assert_eq!(
            s.describe(),
            "exited (exit code 137: out of memory (SIGKILL))"
        );
    }

    #[test]
    fn address_in_use_names_the_port() {
        let s = Inspected::parse(include_str!("testdata/inspect_addr_in_use.json"))
            .unwrap()
            .state;
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

    /// Docker resolves a unique ID prefix as a name: a tag value `3f` inspected container
    /// `web` (ID 3f2a…), and its restart would have restarted `web`.
    #[test]
    fn a_container_found_by_id_prefix_is_refused() {
        let c = Inspected::parse(include_str!("testdata/inspect_addr_in_use.json")).unwrap();
        assert_eq!(c.name, "/web");
        assert_eq!(c.not_named("web"), None);
        assert_eq!(c.not_named(&c.id.clone()), None);
        for prefix in ["3", "3f2a", &c.id[..12]] {
            let why = c.not_named(prefix).expect(prefix);
            assert!(why.contains("resolved") && why.contains("\"web\""), "{why}");
        }
        assert!(
            c.not_named("/web").is_some(),
            "the name, not docker's spelling of it"
        );
    }

    #[test]
    fn argv_ends_options_before_the_name() {
        assert_eq!(restart_argv("db"), ["docker", "restart", "--", "db"]);
        assert_eq!(inspect_argv("db")[6..], ["--", "db"]);
    }
}
