//! The exec notifier with real processes: stdin JSON, environment, no interpolation of event
//! data, stderr in the error, and the whole process group killed on timeout.

use std::path::Path;
use std::time::{Duration, Instant};

use wk_alerter::model::{AlertEvent, EventKind, Level};
use wk_alerter::notify::{NotifyError, Router};

use super::support::{event, plan, to};

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

#[tokio::test]
async fn gets_the_event_on_stdin_and_in_the_environment_never_in_argv() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = exec_config(
        dir.path(),
        "cat > \"$OUT/stdin.json\"\nenv | sort > \"$OUT/env\"\necho \"$@\" > \"$OUT/argv\"\n",
        "inherit_env = false",
    );
    let router = Router::start(plan(&cfg));
    let mut e = to(
        event("cpu", "web1", EventKind::Alert, Level::Critical),
        &["run"],
    );
    let evil = format!(
        "$(touch {}/pwned); `touch {}/pwned2`",
        dir.path().display(),
        dir.path().display()
    );
    e.tags.insert("host".into(), evil.clone());
    e.tags.insert("dc-name.x".into(), "eu".into());
    e.category = Some("system".into());
    router.dispatch(vec![e.clone()]);
    router.flush().await;
    assert_eq!(router.stats().notifier("run").unwrap().sent, 1);

    let stdin: AlertEvent =
        serde_json::from_slice(&std::fs::read(dir.path().join("stdin.json")).unwrap()).unwrap();
    assert_eq!(stdin, e);
    let env = std::fs::read_to_string(dir.path().join("env")).unwrap();
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
    assert_eq!(
        std::fs::read_to_string(dir.path().join("argv")).unwrap(),
        "\n"
    );
    assert!(!dir.path().join("pwned").exists() && !dir.path().join("pwned2").exists());
}

/// Regression: a tag value over 128 KiB made every exec fail (E2BIG: the kernel refuses one
/// environment string that long). Variables are cut; stdin still has the whole event.
#[tokio::test]
async fn a_huge_tag_value_is_cut_in_the_environment_and_whole_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = exec_config(
        dir.path(),
        "cat > \"$OUT/stdin.json\"\nprintf %s \"$WK_TAG_BIG\" > \"$OUT/big\"\n",
        "inherit_env = false",
    );
    let router = Router::start(plan(&cfg));
    let mut e = to(
        event("cpu", "web1", EventKind::Alert, Level::Critical),
        &["run"],
    );
    let big = "é".repeat(100_000); // 200 KB
    e.tags.insert("big".into(), big.clone());
    router.dispatch(vec![e.clone()]);
    router.flush().await;
    assert_eq!(
        router.stats().notifier("run").unwrap().sent,
        1,
        "the program ran"
    );
    let stdin: AlertEvent =
        serde_json::from_slice(&std::fs::read(dir.path().join("stdin.json")).unwrap()).unwrap();
    assert_eq!(stdin.tags["big"], big);
    let cut = std::fs::read_to_string(dir.path().join("big")).unwrap();
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

/// The pid a test script wrote to `dir/file`.
fn pid_in(dir: &Path, file: &str) -> i32 {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Waits up to 5 s for every pid to be gone; true when they are.
async fn all_gone(pids: &[i32]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| running(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !pids.iter().any(|p| running(*p))
}

/// One critical alert for the `run` notifier.
fn alert() -> Vec<AlertEvent> {
    vec![to(
        event("cpu", "web1", EventKind::Alert, Level::Critical),
        &["run"],
    )]
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = exec_config(
        dir.path(),
        "sleep 300 &\necho $! > \"$OUT/child.pid\"\necho $$ > \"$OUT/main.pid\"\nsleep 300\n",
        "timeout = \"500ms\"\nretries = 0\n",
    );
    let router = Router::start(plan(&cfg));
    let started = Instant::now();
    router.dispatch(alert());
    router.flush().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let st = router.stats();
    let st = st.notifier("run").unwrap();
    assert_eq!((st.timeouts, st.failed), (1, 1));

    let (main, child) = (
        pid_in(dir.path(), "main.pid"),
        pid_in(dir.path(), "child.pid"),
    );
    assert!(
        all_gone(&[main, child]).await,
        "the program {main} or its background child {child} survived its timeout"
    );
}

#[tokio::test]
async fn leftovers_of_a_finished_program_do_not_hold_it_open() {
    let dir = tempfile::tempdir().unwrap();
    // Exits at once but leaves a child holding stdout/stderr open.
    let cfg = exec_config(
        dir.path(),
        "sleep 300 &\necho $! > \"$OUT/child.pid\"\nexit 0\n",
        "timeout = \"20s\"\n",
    );
    let router = Router::start(plan(&cfg));
    let started = Instant::now();
    router.dispatch(alert());
    router.flush().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(router.stats().notifier("run").unwrap().sent, 1);
    assert!(all_gone(&[pid_in(dir.path(), "child.pid")]).await);
}

#[tokio::test]
async fn shutdown_cancels_a_running_program_and_kills_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = exec_config(
        dir.path(),
        "sleep 300 &\necho $! > \"$OUT/child.pid\"\necho $$ > \"$OUT/main.tmp\"\nmv \"$OUT/main.tmp\" \"$OUT/main.pid\"\nsleep 300\n",
        "timeout = \"1h\"\n",
    );
    let router = Router::start(plan(&cfg));
    router.dispatch(alert());
    let main_pid = dir.path().join("main.pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !main_pid.exists() {
        assert!(Instant::now() < deadline, "the program did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    router.shutdown(Duration::from_millis(200)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let (main, child) = (
        pid_in(dir.path(), "main.pid"),
        pid_in(dir.path(), "child.pid"),
    );
    assert!(
        all_gone(&[main, child]).await,
        "{main} or {child} survived shutdown"
    );
}
