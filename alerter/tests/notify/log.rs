//! The log notifier writes one JSON line per event to a real file, created 0640.

use std::os::unix::fs::PermissionsExt;

use wk_alerter::model::{AlertEvent, EventKind, Level};
use wk_alerter::notify::Router;

use super::support::{event, plan, to};

#[tokio::test]
async fn appends_one_json_line_per_event_with_mode_0640() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.log");
    let router = Router::start(plan(&format!(
        "[[notifiers.log]]\nname = \"audit\"\nfile = {:?}\n",
        path.to_str().unwrap()
    )));
    let a = to(
        event("cpu", "web1", EventKind::Alert, Level::Critical),
        &["audit"],
    );
    let mut b = to(
        event("cpu", "web1", EventKind::Recovery, Level::Ok),
        &["audit"],
    );
    b.message = "line\nbreak \"quoted\"".into();
    router.dispatch(vec![a.clone(), b.clone()]);
    router.flush().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let back: Vec<AlertEvent> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(back, [a, b]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(router.stats().notifier("audit").unwrap().sent, 2);
}
