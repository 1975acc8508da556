//! The harness itself: each piece starts, is observable from outside, and stops.

use std::process::Command;
use std::time::Duration;

use super::close_wait;
use super::payloads::Payloads;
use super::squatter::Squatter;
use super::sshd::{SSH, Sshd};
use super::supervisor::{Supervisor, http_status};
use super::{alive, listeners};
use crate::common::wait::wait_for;

const T: Duration = Duration::from_secs(10);

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
        + String::from_utf8_lossy(&out.stderr).as_ref()
}

#[test]
fn sshd_runs_argv_with_the_test_key_and_stops_on_drop() {
    let Some(sshd) = Sshd::start() else { return };
    let out = sshd.run(&["echo", "two words", "it's"]);
    assert!(out.status.success(), "{}\n{}", text(&out), sshd.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "two words it's\n");
    let out = sshd.run(&["id", "-un"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), sshd.user);

    // known_hosts is checked: with an empty one BatchMode refuses rather than asking.
    let empty = sshd.dir().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    // ssh takes the first value of an option, so the override goes first.
    let out = Command::new(SSH)
        .args(["-o", &format!("UserKnownHostsFile={}", empty.display())])
        .args(sshd.ssh_options())
        .args([&sshd.destination(), "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", text(&out));
    assert!(
        text(&out).contains("Host key verification failed"),
        "{}",
        text(&out)
    );

    let (pid, port) = (sshd.pid(), sshd.port);
    drop(sshd);
    assert!(!alive(pid), "sshd {pid} still runs");
    assert!(listeners(port).is_empty());
}

#[test]
fn supervised_web_server_dies_and_its_ctl_script_brings_it_back() {
    let web = Supervisor::web();
    let first = web.start();
    assert!(web.answers_http());
    assert_eq!(listeners(web.port)[0].pid, first);

    web.kill();
    assert!(!alive(first));
    assert_eq!(web.pid(), None);
    assert!(!web.answers_http());
    assert_eq!(http_status(web.port, "/"), None);

    let (ok, out) = web.ctl_run("start");
    assert!(ok, "{out}");
    let second = web.pid().expect("running again");
    assert_ne!(second, first);
    assert!(out.contains(&format!("started pid {second}")), "{out}");
    assert!(web.answers_http());
    let (ok, out) = web.ctl_run("status");
    assert!(ok && out.contains(&second.to_string()), "{out}");
    let (ok, out) = web.ctl_run("restart");
    assert!(ok, "{out}");
    assert_ne!(web.pid(), Some(second));
    assert_eq!(web.starts(), 3);

    // Anything else is refused, and logged as the argv it came with.
    let out = Command::new(web.ctl())
        .args(["start; touch x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        web.calls().last().unwrap(),
        &vec!["start; touch x".to_owned()]
    );

    // A broken service fails to start, with its reason.
    web.kill();
    web.set_broken(true);
    let (ok, out) = web.ctl_run("start");
    assert!(!ok && out.contains("broken config"), "{out}");
    assert!(!web.answers_http());

    let port = web.port;
    web.set_broken(false);
    let pid = web.start();
    drop(web);
    assert!(!alive(pid));
    assert!(listeners(port).is_empty());
}

#[test]
fn a_squatter_keeps_the_service_from_starting_until_it_is_gone() {
    let web = Supervisor::web();
    let squatter = Squatter::start(web.port);
    assert!(squatter.alive());
    assert_eq!(squatter.user(), super::sshd::current_user());
    assert!(
        squatter
            .command()
            .starts_with("/usr/bin/python3 -c \nimport socket"),
        "{}",
        squatter.command()
    );
    let holders = listeners(web.port);
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].pid, squatter.pid());

    let (ok, out) = web.ctl_run("start");
    assert!(!ok, "started despite the squatter: {out}");
    assert!(out.contains("Address already in use"), "{out}");
    assert_eq!(web.pid(), None);

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(squatter.pid(), libc::SIGTERM) };
    // Reaped, not only a zombie (`alive()` is false as soon as /proc shows it dead, a moment
    // before the thread waiting for it has its status).
    wait_for("the squatter to exit", T, || {
        squatter.exit_status().is_some()
    });
    assert!(!squatter.alive());
    let (ok, out) = web.ctl_run("start");
    assert!(ok, "{out}");
    assert!(web.answers_http());
}

#[test]
fn close_wait_sockets_pile_up_on_the_server_pid_and_go_with_a_restart() {
    let server = Supervisor::close_wait();
    let pid = server.start();
    close_wait::open_and_close(server.port, pid, 5);
    wait_for("5 CLOSE_WAIT sockets on the server's pid", T, || {
        close_wait::close_wait(server.port, pid) == 5
    });
    close_wait::open_and_close(server.port, pid, 3);
    wait_for("8 CLOSE_WAIT sockets", T, || {
        close_wait::close_wait(server.port, pid) == 8
    });

    let (ok, out) = server.ctl_run("restart");
    assert!(ok, "{out}");
    let new = server.pid().unwrap();
    assert_ne!(new, pid);
    assert_eq!(close_wait::close_wait(server.port, pid), 0);
    assert_eq!(close_wait::close_wait(server.port, new), 0);
}

/// Positive controls: each payload does create the marker when a shell (or an option parser)
/// sees it — so a test asserting "marker absent" can fail — and is inert as one argv element.
#[test]
fn injection_payloads_are_live_through_a_shell_and_inert_as_argv() {
    let p = Payloads::new();
    for (name, value) in p.shell() {
        p.reset();
        let out = Command::new("/bin/sh")
            .args(["-c", &format!("echo {value}")])
            .output()
            .unwrap();
        assert!(
            p.injected(),
            "{name}: the shell did not run it: {}",
            text(&out)
        );
        p.reset();
        Command::new("echo").arg(&value).output().unwrap();
        assert!(!p.injected(), "{name} ran as an argv element");
    }
    let [(_, dashes), (_, ssh_opt)] = <[_; 2]>::try_from(p.options()).unwrap();
    p.reset();
    Command::new("sort")
        .args([&dashes, "/dev/null"])
        .output()
        .unwrap();
    assert!(p.injected(), "sort did not take --output from the value");
    p.reset();
    // After `--` it is an operand (a file name that does not exist), not an option.
    let out = Command::new("sort")
        .args(["--", &dashes, "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success() && !p.injected());
    Command::new(SSH)
        .args([
            "-F",
            "/dev/null",
            "-o",
            "BatchMode=yes",
            &ssh_opt,
            "x@127.0.0.1",
            "true",
        ])
        .output()
        .unwrap();
    assert!(p.injected(), "ssh did not take the option from the value");
    p.reset();
}

/// Through the real sshd: ssh hands the remote shell one string, so unquoted argv is
/// injectable there even when the local side never used a shell; quoted, it is inert.
#[test]
fn over_ssh_only_quoted_argv_is_inert() {
    let Some(sshd) = Sshd::start() else { return };
    let p = Payloads::new();
    for (name, value) in p.shell() {
        p.reset();
        let out = sshd.run_unquoted(&["echo", &value]);
        assert!(
            p.injected(),
            "{name}: unquoted did not inject: {}",
            text(&out)
        );
        p.reset();
        let out = sshd.run(&["echo", &value]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{value}\n"));
        assert!(!p.injected(), "{name} ran through the quoted argv");
    }
}
