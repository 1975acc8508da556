//! The exec notifier with real processes: stdin JSON, environment, no interpolation of event
//! data, stderr in the error, and the whole process group killed on timeout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wk_alerter::model::{AlertEvent, EventKind, Level};
use wk_alerter::notify::{NotifyError, Router};

use super::support::{event, plan, to};
use crate::common::wait::poll_until_async;

/// A config with one exec notifier running `/bin/sh <script>`.
fn exec_config(dir: &Path, script: &str, extra: &str) -> String {
    let path = dir.join("notify.sh");
    std::fs::write(&path, script).unwrap();
    format!(
        "[[notifiers.exec]]\nname = \"run\"\ncommand = [\"/bin/sh\", {:?}]\n{extra}\n[notifiers.exec.env]\nOUT = {:?}\n",
        path.to_str().unwrap(),
        dir.to_str().unwrap()
    )
}

/// A router whose one notifier `run` is [`exec_config`]'s in a temp dir (the script's `$OUT`).
struct Exec {
    dir: tempfile::TempDir,
    router: Router,
}

impl Exec {
    fn start(script: &str, extra: &str) -> Exec {
        let dir = tempfile::tempdir().unwrap();
        let router = Router::start(plan(&exec_config(dir.path(), script, extra)));
        Exec { dir, router }
    }

    /// A script that saves its stdin for [`Exec::stdin`], then runs `then`; nothing of the
    /// alerter's environment is passed on (`inherit_env = false`).
    fn saving_stdin(then: &str) -> Exec {
        let script = format!("cat > \"$OUT/stdin.json\"\n{then}");
        Exec::start(&script, "inherit_env = false")
    }

    /// A script that first starts a background `sleep 300` (its pid in `$OUT/child.pid`), then
    /// runs `then`; `extra` are the notifier's options.
    fn with_child(then: &str, extra: &str) -> Exec {
        let script = format!("sleep 300 &\necho $! > \"$OUT/child.pid\"\n{then}");
        Exec::start(&script, extra)
    }

    /// Dispatches `events` and waits until the router has sent them; how long that took.
    async fn send(&self, events: Vec<AlertEvent>) -> Duration {
        let started = Instant::now();
        self.router.dispatch(events);
        self.router.flush().await;
        started.elapsed()
    }

    fn sent(&self) -> u64 {
        self.router.stats().notifier("run").unwrap().sent
    }

    /// `file` in the script's `$OUT`.
    fn out(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// The event the script saved from its stdin to `$OUT/stdin.json`.
    fn stdin(&self) -> AlertEvent {
        serde_json::from_slice(&std::fs::read(self.out("stdin.json")).unwrap()).unwrap()
    }

    /// The pid the script wrote to `$OUT/file`.
    fn pid(&self, file: &str) -> i32 {
        let text = std::fs::read_to_string(self.out(file)).unwrap();
        text.trim().parse().unwrap()
    }
}

#[tokio::test]
async fn gets_the_event_on_stdin_and_in_the_environment_never_in_argv() {
    let x = Exec::saving_stdin("env | sort > \"$OUT/env\"\necho \"$@\" > \"$OUT/argv\"\n");
    let [mut e] = alert();
    let (pwned, pwned2) = (x.out("pwned"), x.out("pwned2"));
    let evil = format!("$(touch {}); `touch {}`", pwned.display(), pwned2.display());
    e.tags.insert("host".into(), evil.clone());
    e.tags.insert("dc-name.x".into(), "eu".into());
    e.category = Some("system".into());
    x.send(vec![e.clone()]).await;
    assert_eq!(x.sent(), 1);

    assert_eq!(x.stdin(), e);
    let env = std::fs::read_to_string(x.out("env")).unwrap();
    // inherit_env = false: nothing of the alerter's environment (HOME, CARGO_*, ...).
    assert!(
        !env.lines()
            .any(|l| l.starts_with("HOME=") || l.starts_with("CARGO")),
        "{env}"
    );
    assert!(
        env.lines().any(|l| l.starts_with("PATH=/usr/local/sbin:")),
        "{env}"
    );
    for want in [
        "WK_ALERT_ID=cpu:host=web1".to_owned(),
        "WK_ALERT_RULE=cpu".to_owned(),
        "WK_ALERT_LEVEL=CRITICAL".to_owned(),
        "WK_ALERT_PREVIOUS_LEVEL=OK".to_owned(),
        "WK_ALERT_KIND=alert".to_owned(),
        "WK_ALERT_MESSAGE=web1: cpu is CRITICAL".to_owned(),
        "WK_ALERT_TIME=1795000000000000000".to_owned(),
        "WK_ALERT_DURATION_SECS=65".to_owned(),
        "WK_ALERT_CATEGORY=system".to_owned(),
        "WK_TAG_DC_NAME_X=eu".to_owned(),
        format!("WK_TAG_HOST={evil}"),
    ] {
        assert!(env.lines().any(|l| l == want), "{want:?} not in:\n{env}");
    }
    assert_eq!(std::fs::read_to_string(x.out("argv")).unwrap(), "\n");
    assert!(!pwned.exists() && !pwned2.exists());
}

/// Regression: a tag value over 128 KiB made every exec fail (E2BIG: the kernel refuses one
/// environment string that long). Variables are cut; stdin still has the whole event.
#[tokio::test]
async fn a_huge_tag_value_is_cut_in_the_environment_and_whole_on_stdin() {
    let x = Exec::saving_stdin("printf %s \"$WK_TAG_BIG\" > \"$OUT/big\"\n");
    let [mut e] = alert();
    let big = "é".repeat(100_000); // 200 KB
    e.tags.insert("big".into(), big.clone());
    x.send(vec![e]).await;
    assert_eq!(x.sent(), 1, "the program ran");
    assert_eq!(x.stdin().tags["big"], big);
    let cut = std::fs::read_to_string(x.out("big")).unwrap();
    assert!(
        cut.len() <= wk_alerter::notify::exec::MAX_ENV_VALUE,
        "{}",
        cut.len()
    );
    assert!(cut.ends_with('…') && big.starts_with(cut.trim_end_matches('…')));
}

#[tokio::test]
async fn failures_carry_stderr_and_say_whether_to_retry() {
    let dir = tempfile::tempdir().unwrap();
    let p = plan(&exec_config(
        dir.path(),
        "cat > /dev/null\necho 'paging API said: 401' >&2\nexit 3\n",
        "",
    ));
    let e = event("cpu", "web1", EventKind::Alert, Level::Critical);
    let err = p.notifiers[0].notifier.send(&e).await.unwrap_err();
    assert_eq!(
        err,
        NotifyError::Retryable("\"/bin/sh\" exited with status 3: paging API said: 401".into())
    );
    let p = plan("[[notifiers.exec]]\nname = \"x\"\ncommand = [\"/nonexistent/page\"]\n");
    let err = p.notifiers[0].notifier.send(&e).await.unwrap_err();
    assert!(
        matches!(&err, NotifyError::Permanent(m) if m.starts_with("cannot run \"/nonexistent/page\"")),
        "{err:?}"
    );
}

/// True while `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Waits up to 5 s for every pid to be gone; true when they are.
async fn all_gone(pids: &[i32]) -> bool {
    let (within, pause) = (Duration::from_secs(5), Duration::from_millis(20));
    poll_until_async(within, pause, || !pids.iter().any(|p| running(*p))).await
}

/// One critical alert for the `run` notifier.
fn alert() -> [AlertEvent; 1] {
    [to(
        event("cpu", "web1", EventKind::Alert, Level::Critical),
        &["run"],
    )]
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let x = Exec::with_child(
        "echo $$ > \"$OUT/main.pid\"\nsleep 300\n",
        "timeout = \"500ms\"\nretries = 0\ngive_up_after = \"0s\"\n",
    );
    let took = x.send(alert().into()).await;
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let st = x.router.stats();
    let st = st.notifier("run").unwrap();
    assert_eq!((st.timeouts, st.failed), (1, 1));

    let (main, child) = (x.pid("main.pid"), x.pid("child.pid"));
    assert!(
        all_gone(&[main, child]).await,
        "the program {main} or its background child {child} survived its timeout"
    );
}

#[tokio::test]
async fn leftovers_of_a_finished_program_do_not_hold_it_open() {
    // Exits at once but leaves a child holding stdout/stderr open.
    let x = Exec::with_child("exit 0\n", "timeout = \"20s\"\n");
    let took = x.send(alert().into()).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(x.sent(), 1);
    assert!(all_gone(&[x.pid("child.pid")]).await);
}

/// Regression: a helper started in a session of its own (`setsid`, as the README advises for
/// long-lived helpers) kept the output pipes open: the run waited for them until its
/// timeout, was reported as timed out and sent again.
#[tokio::test]
async fn a_helper_in_its_own_session_does_not_hold_the_program_open() {
    let x = Exec::start(
        "setsid sleep 300 &\necho $! > \"$OUT/helper.pid\"\necho sent\n",
        "timeout = \"20s\"\n",
    );
    let took = x.send(alert().into()).await;
    let helper = x.pid("helper.pid");
    let _ = std::process::Command::new("kill")
        .arg(helper.to_string())
        .status();
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(x.sent(), 1);
}

/// Regression: with `group_by`, a group message runs the program once per event, and the
/// whole message had one `timeout`: three events of 0.4 s each against a 1 s timeout
/// always timed out, and were sent again and again.
#[tokio::test]
async fn a_group_message_gives_each_run_of_the_program_the_timeout() {
    let x = Exec::start(
        "sleep 0.4\necho run >> \"$OUT/runs\"\n",
        "timeout = \"1s\"\nretries = 0\ngroup_by = [\"rule\"]\ngroup_wait = \"100ms\"\n",
    );
    let fire = |h: &str| to(event("cpu", h, EventKind::Alert, Level::Critical), &["run"]);
    x.router.dispatch(vec![fire("a"), fire("b"), fire("c")]);
    let runs = x.out("runs");
    let (within, pause) = (Duration::from_secs(20), Duration::from_millis(50));
    let lines = || std::fs::read_to_string(&runs).map_or(0, |t| t.lines().count());
    // Delivered, or timed out (then retried without end: no flush).
    let settled = || {
        let st = x.router.stats();
        let st = st.notifier("run").unwrap();
        st.sent >= 3 || st.timeouts > 0
    };
    assert!(
        poll_until_async(within, pause, settled).await,
        "{} runs",
        lines()
    );
    let st = x.router.stats();
    let st = st.notifier("run").unwrap();
    assert_eq!((st.timeouts, st.failed, lines()), (0, 0, 3), "{st:?}");
}

#[tokio::test]
async fn shutdown_cancels_a_running_program_and_kills_its_group() {
    let x = Exec::with_child(
        "echo $$ > \"$OUT/main.tmp\"\nmv \"$OUT/main.tmp\" \"$OUT/main.pid\"\nsleep 300\n",
        "timeout = \"1h\"\n",
    );
    x.router.dispatch(alert().into());
    let main_pid = x.out("main.pid");
    let (within, pause) = (Duration::from_secs(10), Duration::from_millis(10));
    let started = poll_until_async(within, pause, || main_pid.exists()).await;
    assert!(started, "the program did not start");
    let started = Instant::now();
    x.router.shutdown(Duration::from_millis(200)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let (main, child) = (x.pid("main.pid"), x.pid("child.pid"));
    assert!(
        all_gone(&[main, child]).await,
        "{main} or {child} survived shutdown"
    );
}

/// The alerter turns transparent huge pages off for itself (`memory::tune`); the programs
/// its notifiers run get the system's policy back (the flag survives exec otherwise).
#[tokio::test]
async fn the_program_does_not_inherit_the_alerters_huge_page_setting() {
    let x = Exec::start("grep THP_enabled /proc/self/status > \"$OUT/thp\"\n", "");
    // As `wk-alerter run` sets it (the flag is the whole test process's; no other test reads it).
    rustix::thread::disable_transparent_huge_pages(true).unwrap();
    x.send(alert().to_vec()).await;
    rustix::thread::disable_transparent_huge_pages(false).unwrap();
    assert_eq!(x.sent(), 1);
    let thp = std::fs::read_to_string(x.out("thp")).unwrap();
    assert_eq!(thp.trim_end(), "THP_enabled:\t1");
}
