//! Where the host's /proc, /sys and root are: a value passed down from the config, so that the
//! agent can watch its host from a container and tests can run on fixture trees.

use std::path::{Path, PathBuf};

use crate::error::GatherError;

/// The roots every input reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub etc: PathBuf,
    pub var: PathBuf,
    pub run: PathBuf,
    pub dev: PathBuf,
    /// Prefix under which the host's mount points are visible (`HOST_MOUNT_PREFIX`), "" when
    /// the agent runs on the host itself.
    pub mount_prefix: PathBuf,
    /// True when `proc` was set explicitly: as in Telegraf, `net` then skips the interface
    /// up/loopback checks, which would look at the agent's own network namespace.
    pub proc_overridden: bool,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc: "/proc".into(),
            sys: "/sys".into(),
            etc: "/etc".into(),
            var: "/var".into(),
            run: "/run".into(),
            dev: "/dev".into(),
            mount_prefix: PathBuf::new(),
            proc_overridden: false,
        }
    }
}

impl HostPaths {
    /// The defaults overridden by Telegraf's environment variables (`HOST_PROC`, `HOST_SYS`,
    /// `HOST_ETC`, `HOST_VAR`, `HOST_RUN`, `HOST_DEV`, `HOST_MOUNT_PREFIX`), read once at start.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut p = HostPaths::default();
        p.set_roots(|name| {
            env(&format!("HOST_{}", name.to_ascii_uppercase())).filter(|v| !v.is_empty())
        });
        p
    }

    /// Sets each root that `value` gives a path for, asked by name: `proc`, `sys`, `etc`,
    /// `var`, `run`, `dev`, `mount_prefix` (the `HOST_<NAME>` variables, the `[agent]
    /// host_<name>` keys). Setting `proc` marks it overridden.
    pub fn set_roots(&mut self, mut value: impl FnMut(&str) -> Option<String>) {
        for (name, slot) in [
            ("proc", &mut self.proc),
            ("sys", &mut self.sys),
            ("etc", &mut self.etc),
            ("var", &mut self.var),
            ("run", &mut self.run),
            ("dev", &mut self.dev),
            ("mount_prefix", &mut self.mount_prefix),
        ] {
            if let Some(v) = value(name) {
                *slot = PathBuf::from(v);
                self.proc_overridden |= name == "proc";
            }
        }
    }

    /// A fixture tree: `root/proc`, `root/sys`, … with no mount prefix.
    pub fn under(root: &Path) -> Self {
        HostPaths {
            proc: root.join("proc"),
            sys: root.join("sys"),
            etc: root.join("etc"),
            var: root.join("var"),
            run: root.join("run"),
            dev: root.join("dev"),
            mount_prefix: PathBuf::new(),
            proc_overridden: true,
        }
    }

    /// A path under /proc.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }

    /// A path under /sys.
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }

    /// Reads a file under /proc into a string.
    pub fn read_proc(&self, rel: &str) -> Result<String, GatherError> {
        read_to_string(&self.proc(rel))
    }

    /// Reads a file under /proc and parses it; the parser's `(line, message)` becomes
    /// [`GatherError::malformed`] naming the file and line.
    pub fn parse_proc<T>(
        &self,
        rel: &str,
        parse: impl FnOnce(&str) -> Result<T, (usize, String)>,
    ) -> Result<T, GatherError> {
        let path = self.proc(rel);
        let text = read_to_string(&path)?;
        parse(&text).map_err(|(line, msg)| GatherError::malformed(&path, line, msg))
    }

    /// Reads a file under /sys into a string.
    pub fn read_sys(&self, rel: &str) -> Result<String, GatherError> {
        read_to_string(&self.sys(rel))
    }

    /// Where a host mount point is visible to the agent.
    pub fn mount_path(&self, mount_point: &str) -> PathBuf {
        if self.mount_prefix.as_os_str().is_empty() {
            PathBuf::from(mount_point)
        } else {
            self.mount_prefix.join(mount_point.trim_start_matches('/'))
        }
    }
}

/// Reads a whole file; the error names the path (io errors alone do not).
pub fn read_to_string(path: &Path) -> Result<String, GatherError> {
    std::fs::read_to_string(path).map_err(|e| GatherError::io(path, e))
}

/// [`read_to_string`], with `None` for a file that does not exist (inputs that skip what
/// this kernel lacks, as Telegraf's do).
pub fn read_if_exists(path: &Path) -> Result<Option<String>, GatherError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(GatherError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_defaults() {
        let env = |k: &str| match k {
            "HOST_PROC" => Some("/host/proc".to_owned()),
            "HOST_MOUNT_PREFIX" => Some("/hostfs".to_owned()),
            "HOST_SYS" => Some(String::new()),
            _ => None,
        };
        let p = HostPaths::from_env(&env);
        assert_eq!(p.proc, PathBuf::from("/host/proc"));
        assert!(p.proc_overridden);
        assert_eq!(p.sys, PathBuf::from("/sys"));
        assert_eq!(p.mount_path("/var/lib"), PathBuf::from("/hostfs/var/lib"));
        assert_eq!(
            HostPaths::default().mount_path("/var/lib"),
            PathBuf::from("/var/lib")
        );
    }
}
