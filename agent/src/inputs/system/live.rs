//! `system` against /proc, `sysinfo(2)` (what Telegraf uses for uptime), `nproc --all` and
//! `lscpu`, read before and after our gather where the value can move.

use super::gather;
use std::process::Command;

use wk_agent::metric::FieldValue;

fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap()
        .split_whitespace()
        .take(3)
        .map(|v| v.parse().unwrap())
        .collect()
}

fn sysinfo_uptime() -> u64 {
    // SAFETY: sysinfo only writes into the struct we pass.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::sysinfo(&mut si) }, 0);
    si.uptime as u64
}

fn cmd(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).unwrap())
}

#[test]
fn system_matches_proc_sysinfo_and_nproc() {
    let load0 = loadavg();
    let up0 = sysinfo_uptime();
    let lines = gather("[[inputs.system]]\n");
    let up1 = sysinfo_uptime();
    let load1 = loadavg();
    assert_eq!(lines.len(), 3, "legacy: gauge, counter, untyped");
    let (gauge, counter, text) = (&lines[0], &lines[1], &lines[2]);

    for (i, key) in ["load1", "load5", "load15"].iter().enumerate() {
        let Some(FieldValue::Float(v)) = gauge.field(key) else {
            panic!("{key} missing")
        };
        assert!(
            *v == load0[i] || *v == load1[i],
            "{key}: {v} is neither {} nor {}",
            load0[i],
            load1[i]
        );
    }

    let nproc: i64 = cmd("nproc", &["--all"]).unwrap().trim().parse().unwrap();
    assert_eq!(gauge.field("n_cpus"), Some(&FieldValue::Int(nproc)));

    if let Some(out) = cmd("lscpu", &["-b", "-p=Core,Socket"]) {
        let cores: std::collections::HashSet<&str> =
            out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            gauge.field("n_physical_cpus"),
            Some(&FieldValue::Int(cores.len() as i64))
        );
    }

    let Some(FieldValue::Uint(up)) = counter.field("uptime") else {
        panic!("uptime missing")
    };
    // The kernel's sysinfo(2) rounds uptime up to the next second (any nanoseconds count as
    // one), /proc/uptime does not: one second apart at most.
    assert!(
        up0.saturating_sub(1) <= *up && *up <= up1,
        "uptime {up} not within sysinfo's {}..={up1}",
        up0.saturating_sub(1)
    );
    let Some(FieldValue::Str(f)) = text.field("uptime_format") else {
        panic!("uptime_format missing")
    };
    assert!(f.ends_with(&format!("{:02}", (up / 60) % 60)), "{f}");

    // Users: only when this host keeps utmp at all.
    let has_utmp = std::path::Path::new("/var/run/utmp").exists();
    assert_eq!(gauge.field("n_users").is_some(), has_utmp);
}

#[test]
fn os_group_matches_uname() {
    let lines = gather("[[inputs.system]]\n  include = [\"os\"]\n");
    assert_eq!(lines.len(), 1);
    let s = |k: &str| match lines[0].field(k) {
        Some(FieldValue::Str(v)) => v.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(s("os"), "linux");
    assert_eq!(s("kernel_version"), cmd("uname", &["-r"]).unwrap().trim());
    assert_eq!(s("arch"), cmd("uname", &["-m"]).unwrap().trim());
}
