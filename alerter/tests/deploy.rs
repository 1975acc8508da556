//! Config deployment from git, end to end (docs/deploy.md): a real git repository of the
//! alerter's config and rules, scripts/deploy-config.sh run every second as the shipped timer
//! runs it every minute, and the real wk-alerter running what it installs. A good push is
//! live within one pull interval; a bad push is refused, the running rules are kept and the
//! refusal is an alert (`wk_deploy` → deploy_refused.rhai); `git revert` rolls back.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::alerter::json_lines as events;
use crate::tools::on_path;
use wk_core::testing::{KillOnDrop, free_port, git, git_repo_and_clone, poll_until, run_ok};

const TOKEN: &str = "deploy-test-token";
/// The pull interval of this test (the shipped timer's is a minute).
const PULL: Duration = Duration::from_secs(1);

/// Each deploy run's exit status and stderr.
type Runs = Arc<Mutex<Vec<(Option<i32>, String)>>>;

fn commit(origin: &Path, msg: &str) {
    git(origin, &["add", "-A"]);
    git(origin, &["commit", "-qm", msg]);
}

/// A rule that is WARNING while the last deploy of the alerter went through: what the good
/// push adds, so the test sees it running.
const DEPLOYED_RULE: &str = r#"rule(#{ every: "1s", notify: ["ops-email"], message: "{{host}}: {{component}} deployed" });
fn check() {
    let r = query("wk_deploy").field("refused").range("1h").last().group_by("host", "component").run();
    for s in r { s.warn(s.value == 0); }
    r
}
"#;

struct Setup {
    checkout: PathBuf,
    etc: PathBuf,
    pidfile: PathBuf,
    port: u16,
}

impl Setup {
    /// One run of the deploy script, as the timer's service runs it.
    fn deploy(&self) -> std::process::Output {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/deploy-config.sh"))
            .args(["--repo", self.checkout.to_str().unwrap(), "--host", "web1"])
            .args(["--alerter", env!("CARGO_BIN_EXE_wk-alerter")])
            .arg("--alerter-config")
            .arg(self.etc.join("wk-alerter.conf"))
            .arg("--rules-dir")
            .arg(self.etc.join("rules"))
            .args(["--alerter-service", "wk-alerter-test-no-such-unit"])
            .args(if self.pidfile.exists() {
                vec![
                    "--alerter-pidfile".to_owned(),
                    self.pidfile.to_str().unwrap().to_owned(),
                ]
            } else {
                vec![]
            })
            .args([
                "--report-url",
                &format!("http://127.0.0.1:{}/write?db=telegraf", self.port),
            ])
            .env("WK_DEPLOY_REPORT_TOKEN", TOKEN)
            .env("WK_STREAM_TOKEN", TOKEN)
            .output()
            .unwrap()
    }
}

#[test]
fn a_good_push_is_live_within_one_pull_and_a_bad_one_is_refused_and_alerted() {
    for tool in ["git", "curl"] {
        if !on_path(tool) {
            wk_core::skip!("{tool} is not installed (Debian package {tool})");
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let (origin, checkout) = (tmp.path().join("origin"), tmp.path().join("checkout"));
    let alerts = tmp.path().join("alerts.jsonl");
    let port = free_port();
    let etc = tmp.path().join("etc");
    // Whether the log notifier writes an event of `rule` at `level` within `secs` seconds.
    let event_within = |rule: &str, level: &str, secs: u64| {
        poll_until(Duration::from_secs(secs), || {
            events(&alerts)
                .iter()
                .any(|e| e["rule"] == rule && e["level"] == level)
        })
    };

    // The repository: the alerter's config (its token from the environment, not git) and
    // the shipped deploy_refused rule, evaluated every second here.
    fs::create_dir_all(origin.join("alerter/rules")).unwrap();
    fs::write(
        origin.join("alerter/wk-alerter.conf"),
        format!(
            "[alerter]\n  rules_dir = {:?}\n  state_dir = {:?}\n  reload_interval = \"1h\"\n  rule_errors_notify = [\"ops-email\"]\n\
             [stream]\n  listen = \"127.0.0.1:{port}\"\n  token = \"${{WK_STREAM_TOKEN}}\"\n\
             [[notifiers.log]]\n  name = \"ops-email\"\n  file = {:?}\n",
            etc.join("rules").to_str().unwrap(),
            tmp.path().join("state").to_str().unwrap(),
            alerts.to_str().unwrap(),
        ),
    )
    .unwrap();
    let shipped = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules/deploy_refused.rhai"),
    )
    .unwrap();
    assert!(shipped.contains("every: \"10s\""));
    fs::write(
        origin.join("alerter/rules/deploy_refused.rhai"),
        shipped.replace("every: \"10s\"", "every: \"1s\""),
    )
    .unwrap();
    git_repo_and_clone(&origin, "v1", &checkout);
    let s = Setup {
        checkout,
        etc: etc.clone(),
        pidfile: tmp.path().join("alerter.pid"),
        port,
    };

    // First deploy, the alerter not running yet (the report fails: a warning only).
    let out = s.deploy();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(etc.join("rules/deploy_refused.rhai").exists());

    let log = tmp.path().join("alerter.log");
    let mut alerter = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_wk-alerter"))
            .arg("--config")
            .arg(etc.join("wk-alerter.conf"))
            .env("WK_STREAM_TOKEN", TOKEN)
            .env_remove("WK_LOG")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let read_log = || fs::read_to_string(&log).unwrap_or_default();
    alerter.wait_ready(
        "wk-alerter",
        Duration::from_secs(20),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        read_log,
    );
    fs::write(&s.pidfile, alerter.id().to_string()).unwrap();

    // The timer: a deploy every PULL, each run's status and stderr kept.
    let stop = Arc::new(AtomicBool::new(false));
    let runs: Runs = Arc::default();
    let timer = {
        let (stop, runs) = (stop.clone(), runs.clone());
        let s = Setup {
            checkout: s.checkout.clone(),
            etc: s.etc.clone(),
            pidfile: s.pidfile.clone(),
            port,
        };
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = s.deploy();
                runs.lock().unwrap().push((
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                ));
                std::thread::sleep(PULL);
            }
        })
    };

    // A good push: the new rule is installed, loaded (SIGHUP) and running within one pull
    // interval (plus the deploy's own run time).
    fs::write(origin.join("alerter/rules/deployed.rhai"), DEPLOYED_RULE).unwrap();
    commit(&origin, "add the deployed rule");
    let pushed = Instant::now();
    assert!(
        poll_until(Duration::from_secs(20), || read_log()
            .contains("rule=deployed")),
        "the pushed rule was never loaded; log:\n{}\nruns: {:?}",
        read_log(),
        runs.lock().unwrap()
    );
    let live_after = pushed.elapsed();
    assert!(
        live_after < PULL + Duration::from_secs(4),
        "live after {live_after:?}, the pull interval is {PULL:?}"
    );
    assert!(
        event_within("deployed", "WARNING", 10),
        "the pushed rule does not run: {:?}",
        events(&alerts)
    );

    // A bad push: refused with the error's place, the running rule kept, and an alert.
    fs::write(
        origin.join("alerter/rules/deployed.rhai"),
        "rule(#{ every: \"1s\" });\nfn check() { let x = ; }\n",
    )
    .unwrap();
    commit(&origin, "break the deployed rule");
    assert!(
        event_within("deploy_refused", "CRITICAL", 20),
        "no alert for the refused push: {:?}\nruns: {:?}",
        events(&alerts),
        runs.lock().unwrap()
    );
    let refused = runs
        .lock()
        .unwrap()
        .iter()
        .find(|(code, _)| *code == Some(2))
        .cloned()
        .expect("a deploy run exited 2");
    assert!(
        refused.1.contains("INVALID") && refused.1.contains("alerter/rules/deployed.rhai:2:"),
        "{}",
        refused.1
    );
    assert_eq!(
        fs::read_to_string(etc.join("rules/deployed.rhai")).unwrap(),
        DEPLOYED_RULE
    );
    let message = events(&alerts)
        .into_iter()
        .find(|e| e["rule"] == "deploy_refused")
        .unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("web1: the alerter config pushed to git was REFUSED"),
        "{message}"
    );
    assert!(alerter.try_wait().unwrap().is_none(), "the alerter died");
    assert!(
        !read_log().contains("deployed.rhai:2"),
        "the broken rule reached the alerter"
    );

    // Rollback: revert the bad commit; the next pull deploys and the alert recovers.
    git(&origin, &["revert", "--no-edit", "HEAD"]);
    assert!(
        event_within("deploy_refused", "OK", 20),
        "the refusal alert did not recover after the revert: {:?}",
        events(&alerts)
    );

    stop.store(true, Ordering::Relaxed);
    timer.join().unwrap();
    run_ok(Command::new("kill").args(["-TERM", &alerter.id().to_string()]));
    assert!(alerter.wait().unwrap().success());
}
