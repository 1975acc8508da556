//! `run_script`: runs an operator script from the allowlisted `scripts_dir` (`[actions]`),
//! with typed word arguments, as argv. The name may not leave the directory (no `/`, no
//! leading `.`; the resolved path must lie inside the directory) and the script must be an
//! executable file — checked when the rule loads for a literal name, and before every run,
//! which runs the resolved path (a symlink's target, as checked). Over ssh the same path is
//! run on the remote host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Action, ArgKind, ArgSpec, Args, BoxFuture, Ctx, Done, Host, Probe};

/// Registry entry.
pub const SPEC: super::ActionSpec = super::ActionSpec::new(
    "run_script",
    "Run an operator script from the allowlisted scripts_dir with typed word arguments",
    &[
        ArgSpec::required("name", ArgKind::Script),
        ArgSpec::optional("args", ArgKind::Words),
    ],
    build,
);

fn build(a: &Args) -> Box<dyn Action> {
    Box::new(RunScript {
        name: a.get("name").unwrap_or_default().to_owned(),
        args: a.list("args").to_vec(),
    })
}

/// The action.
pub struct RunScript {
    pub name: String,
    pub args: Vec<String>,
}

/// The script's canonical path if `name` is an executable file inside `dir`: the path that was
/// checked is the one run (a symlink in `dir` swapped after the check changes nothing).
pub fn resolve(dir: &Path, name: &str) -> Result<PathBuf, String> {
    super::args::check(ArgKind::Script, name)?;
    let canon_dir = dir
        .canonicalize()
        .map_err(|e| format!("scripts_dir {}: {e}", dir.display()))?;
    let p = canon_dir.join(name);
    let canon = p.canonicalize().map_err(|_| {
        format!(
            "script {name:?} is not in the allowlisted directory {}",
            dir.display()
        )
    })?;
    if !canon.starts_with(&canon_dir) {
        return Err(format!(
            "script {name:?} resolves outside {}",
            dir.display()
        ));
    }
    let meta = std::fs::metadata(&canon).map_err(|e| format!("{}: {e}", canon.display()))?;
    use std::os::unix::fs::PermissionsExt;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("{} is not an executable file", canon.display()));
    }
    Ok(canon)
}

impl Action for RunScript {
    fn run<'a>(&'a self, ctx: &'a Ctx) -> BoxFuture<'a, Done> {
        Box::pin(async move {
            let mut d = Done::default();
            let path = if ctx.host == Host::Local {
                match resolve(&ctx.scripts_dir, &self.name) {
                    Ok(p) => p,
                    Err(e) => {
                        d.stderr = e;
                        d.did = "nothing: the script is not allowed".into();
                        return d;
                    }
                }
            } else {
                ctx.scripts_dir.join(&self.name)
            };
            let mut argv = vec![path.display().to_string()];
            argv.extend(self.args.iter().cloned());
            let o = if ctx.host == Host::Local && ctx.launch == super::Launch::SystemdRun {
                // Outside the alerter's sandbox: a script that drops caches needs a
                // writable /proc/sys, one that restarts things its own capabilities.
                // systemd stops it at the timeout; the client waits for that stop.
                let unit = super::host::unit_name(&format!("script-{}", self.name));
                let limit = super::host::UnitLimit {
                    run: ctx.timeout,
                    grace: ctx.grace,
                };
                let argv = super::host::systemd_run(&unit, &argv, Some(limit));
                let o = super::host::run(&ctx.host, &argv, limit.client_timeout(), ctx.max_output)
                    .await;
                if o.error.as_deref().is_some_and(|e| e.contains("timed out")) {
                    // systemd did not stop it in time: the unit, not only the client.
                    let stop = ["systemctl", "kill", "--signal=SIGKILL", &unit].map(String::from);
                    let _ = super::host::run(&ctx.host, &stop, Duration::from_secs(10), 4096).await;
                }
                o
            } else {
                let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
                ctx.cmd(&refs).await
            };
            d.main_command(&o);
            d.before = String::new();
            d.did = format!(
                "ran {} {}: {}",
                self.name,
                self.args.join(" "),
                o.outcome("exit status 0")
            );
            let unit = ctx.host == Host::Local && ctx.launch == super::Launch::SystemdRun;
            if unit && !o.ok() && o.took >= ctx.timeout {
                d.did.push_str(&format!(
                    " (it ran into its timeout of {}: systemd stopped its unit)",
                    crate::template::format_duration(ctx.timeout)
                ));
            }
            let out = o.stdout.trim();
            if !out.is_empty() {
                d.before = super::last_lines(out, 20);
            }
            if !o.ok() {
                d.stderr = o.excerpt(ctx.max_output);
            }
            d
        })
    }

    fn probe<'a>(&'a self, _ctx: &'a Ctx) -> BoxFuture<'a, Probe> {
        Box::pin(async { Probe::default() })
    }

    fn plan(&self) -> Vec<String> {
        vec![
            format!("<scripts_dir>/{} {}", self.name, self.args.join(" "))
                .trim_end()
                .to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_executables_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("fix.sh");
        std::fs::write(&s, "#!/bin/sh\necho fixed \"$@\"\n").unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("plain.txt"), "x").unwrap();
        assert!(resolve(dir.path(), "fix.sh").is_ok());
        assert!(
            resolve(dir.path(), "plain.txt")
                .unwrap_err()
                .contains("not an executable")
        );
        assert!(
            resolve(dir.path(), "missing.sh")
                .unwrap_err()
                .contains("not in the allowlisted")
        );
        assert!(resolve(dir.path(), "../etc/passwd").is_err());
        std::os::unix::fs::symlink("/bin/sh", dir.path().join("sh")).unwrap();
        assert!(resolve(dir.path(), "sh").unwrap_err().contains("outside"));
    }

    /// The path run is the one checked: returning the name's own path let a symlink in
    /// `scripts_dir`, swapped between the check and the run, point anywhere.
    #[test]
    fn resolve_returns_the_checked_canonical_path_not_the_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let s = dir.path().join("fix.sh");
        std::fs::write(&s, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("fix.sh", dir.path().join("alias.sh")).unwrap();
        assert_eq!(
            resolve(dir.path(), "alias.sh").unwrap(),
            s.canonicalize().unwrap()
        );
    }
}
