//! scripts/deploy-config.sh against a real git repository and a running agent: a good change is
//! installed and reloaded; a broken one is refused, leaving the agent on the old config.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{agent, daemon_config as config, signal};
use wk_core::testing::{git, git_repo_and_clone, poll_until as wait_for, run_ok};

struct Deploy {
    checkout: PathBuf,
    target: PathBuf,
    pidfile: PathBuf,
}

impl Deploy {
    /// The script's command line.
    fn command(&self, with_pidfile: bool) -> Command {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/deploy-config.sh");
        let mut c = Command::new("bash");
        c.arg(script)
            .args(["--repo", self.checkout.to_str().unwrap(), "--host", "web1"])
            .args([
                "--target",
                self.target.to_str().unwrap(),
                "--agent",
                env!("CARGO_BIN_EXE_wk-agent"),
            ])
            .args(["--service", "wk-agent-test-no-such-unit"]);
        if with_pidfile {
            c.args(["--pidfile", self.pidfile.to_str().unwrap()]);
        }
        c
    }
}

#[test]
fn deploy_applies_good_changes_and_refuses_broken_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (origin, checkout) = (tmp.path().join("origin"), tmp.path().join("checkout"));
    let metrics = tmp.path().join("metrics.lp");
    fs::create_dir_all(&origin).unwrap();
    fs::write(origin.join("web1.conf"), config(&metrics, "v1")).unwrap();
    git_repo_and_clone(&origin, "v1", &checkout);
    let d = Deploy {
        checkout,
        target: tmp.path().join("etc/wk-agent.conf"),
        pidfile: tmp.path().join("agent.pid"),
    };

    // First install, agent not running yet.
    run_ok(&mut d.command(false));
    assert_eq!(
        fs::read_to_string(&d.target).unwrap(),
        config(&metrics, "v1")
    );

    let mut agent = agent()
        .args([
            "--config",
            d.target.to_str().unwrap(),
            "--pidfile",
            d.pidfile.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read = || fs::read_to_string(&metrics).unwrap_or_default();
    assert!(wait_for(Duration::from_secs(10), || read()
        .contains("version=v1")
        && d.pidfile.exists()));

    // A good change: installed and reloaded.
    fs::write(origin.join("web1.conf"), config(&metrics, "v2")).unwrap();
    git(&origin, &["commit", "-qam", "v2"]);
    let out = run_ok(&mut d.command(true));
    assert!(String::from_utf8_lossy(&out.stdout).contains("sent SIGHUP"));
    assert!(
        wait_for(Duration::from_secs(10), || read().contains("version=v2")),
        "agent did not reload"
    );

    // A broken change: refused with the agent's reason, nothing installed, agent unchanged.
    fs::write(
        origin.join("web1.conf"),
        "[agent]\n  interval = \"ten seconds\"\n[[inputs.cpu]]\n",
    )
    .unwrap();
    git(&origin, &["commit", "-qam", "broken"]);
    let out = d.command(true).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("INVALID")
            && err.contains("web1.conf:2:14: error: [agent] interval: invalid duration"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&d.target).unwrap(),
        config(&metrics, "v2")
    );
    let len = read().len();
    assert!(
        wait_for(Duration::from_secs(10), || read().len() > len),
        "agent stopped writing"
    );
    assert!(agent.try_wait().unwrap().is_none(), "agent died");
    assert!(read()[len..].contains("version=v2"));

    // No outputs: `--test` alone accepts that, the daemon does not (it would exit 2 at its
    // next start and stay down): refused.
    fs::write(origin.join("web1.conf"), "[[inputs.cpu]]\n").unwrap();
    git(&origin, &["commit", "-qam", "no outputs"]);
    let out = d.command(true).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("INVALID") && err.contains("no outputs found"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(&d.target).unwrap(),
        config(&metrics, "v2")
    );

    // Deploying the same commit again changes nothing.
    let out = d.command(true).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "the broken head is still refused"
    );

    signal(&agent, libc::SIGTERM);
    assert!(agent.wait().unwrap().success());
}
