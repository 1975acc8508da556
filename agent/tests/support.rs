//! What several modules of this test binary share: a config file in a temporary directory,
//! the config the daemon tests run, and the agent binary with signals to send it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A config file, `telegraf.conf`, in a temporary directory removed on drop; files the test
/// needs beside it go in the same directory.
pub struct Conf {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Conf {
    /// The directory, with no config written yet.
    pub fn empty() -> Conf {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("telegraf.conf");
        Conf { dir, path }
    }

    /// Writes (or rewrites) the config.
    pub fn write(&self, text: impl AsRef<[u8]>) {
        std::fs::write(&self.path, text).unwrap();
    }

    /// A path in the config's directory.
    pub fn beside(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The config's path as a command-line argument.
    pub fn arg(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// A config file holding `text`.
pub fn conf(text: impl AsRef<[u8]>) -> Conf {
    let c = Conf::empty();
    c.write(text);
    c
}

/// The daemon tests' config: cpu gathered and flushed every second to the file `out`, every
/// metric tagged `version = "<version>"` so that a test can tell which config wrote it.
pub fn daemon_config(out: &Path, version: &str) -> String {
    format!(
        "[global_tags]\n  version = \"{version}\"\n[agent]\n  interval = \"1s\"\n  flush_interval = \"1s\"\n\
         [[inputs.cpu]]\n  percpu = false\n[[outputs.file]]\n  files = [{out:?}]\n"
    )
}

/// The wk-agent binary of this build, without a `WK_LOG` from the environment.
pub fn agent() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wk-agent"));
    c.env_remove("WK_LOG");
    c
}

/// The agent running as a daemon on `config`, its stdout discarded.
pub fn daemon(config: &Path, stderr: Stdio) -> Child {
    agent()
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start wk-agent")
}

/// Sends `sig` to `child`.
pub fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with the pid of a child we own.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}
