//! `systemd_units` against this host's systemd, when `systemctl is-system-running` answers
//! with a state of a running manager; skipped (counted) otherwise. The oracle is `systemctl
//! show` of each reported unit's LoadState, ActiveState and SubState.

use std::process::Command;

use super::gather_with_errors;

fn system_state() -> Option<String> {
    let out = Command::new("systemctl")
        .arg("is-system-running")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn unit_states_match_systemctl_show() {
    let state = system_state();
    let running = matches!(
        state.as_deref(),
        Some("running" | "degraded" | "maintenance" | "starting" | "initializing" | "stopping")
    );
    let (metrics, errors) =
        gather_with_errors("[[inputs.systemd_units]]\n  pattern = \"systemd-*\"\n");
    if !running {
        // Without a manager the gather fails and says why; it never reports nothing silently.
        assert!(
            metrics.is_empty() && !errors.is_empty(),
            "{metrics:?} {errors:?}"
        );
        wk_core::skip_platform!("systemd is not running here (is-system-running: {state:?})");
    }
    assert!(errors.is_empty(), "{errors:?}");
    assert!(!metrics.is_empty(), "no systemd-* services");
    for m in metrics.iter().take(10) {
        let name = m.tag("name").unwrap();
        let out = Command::new("systemctl")
            .args([
                "show",
                "-p",
                "LoadState",
                "-p",
                "ActiveState",
                "-p",
                "SubState",
                "--",
                name,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        for (key, tag) in [
            ("LoadState", "load"),
            ("ActiveState", "active"),
            ("SubState", "sub"),
        ] {
            let want = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap();
            // A unit can change state between the two reads; services here are settled.
            assert_eq!(m.tag(tag), Some(want), "{name} {key}");
        }
    }
}
