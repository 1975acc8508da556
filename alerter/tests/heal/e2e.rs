//! Self-healing end to end (issue 9, "How it is verified"): the real wk-alerter binary with
//! a real influxd and aiosmtpd, faults injected into real processes, recovery observed from
//! outside (HTTP answers, /proc, `ss`, the supervisor's log, the emails).
//!
//! Where the agent is the real wk-agent (`http_response` every second) it is started; the
//! CLOSE_WAIT scenario writes `procstat_tcp` points itself (counted with `ss`) until the
//! agent's procstat input lands, and the payload and budget scenarios write their points
//! directly (the tag values are the point).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::close_wait;
use super::payloads::Payloads;
use super::rules::{self, http_input, restart_web};
use super::squatter::Squatter;
use super::sshd::Sshd;
use super::stack::{Stack, lp_tag};
use super::supervisor::Supervisor;
use super::{alive, listeners};
use crate::common::wait::{poll_until, wait_for};

const T: Duration = Duration::from_secs(30);

/// [`rules::http_rule`] every second over the last 5 s.
fn http_rule(actions: &str) -> String {
    rules::http_rule("1s", "5s", actions)
}

/// A stack of default servers running `rule` (file `name`); None when they are missing.
fn stack_with(name: &str, rule: &str) -> Option<Stack> {
    let st = Stack::new("", "")?;
    st.rule(name, rule);
    Some(st)
}

/// Waits until the agent's first http_response point is stored.
fn wait_checked(st: &Stack) {
    wait_for("a successful http_response point", T, || {
        st.db()
            .http(
                "GET",
                "/query?db=wk&q=SELECT+count(*)+FROM+http_response",
                "",
            )
            .is_ok_and(|(_, b)| b.contains("result_code"))
    });
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Prints the report's timeline (the figures the test run shows).
fn show(what: &str, r: &Value) {
    let f = &r["fields"];
    eprintln!(
        "{what}: detection {} ms, action {} ms, verified recovery {} ms",
        f["detection_ms"], f["action_ms"], f["recovery_ms"]
    );
}

#[test]
fn killed_web_server_is_restarted_and_one_email_reports_the_recovery() {
    let web = Supervisor::web();
    let first = web.start();
    let guard = r#"max_attempts: 3, window: "10m", cooldown: "2s", settle: "1s", verify: "probe""#;
    let rule = http_rule(&restart_web(&web, guard));
    let Some(mut st) = stack_with("web.rhai", &rule) else {
        return;
    };
    st.start_agent("web1", &http_input(&web));
    st.start_alerter();
    // The healthy service is seen first (no alert, no action).
    wait_checked(&st);

    let fault = Instant::now();
    web.kill();
    assert!(!alive(first));
    wait_for("the web server to answer again", T, || {
        web.pid().is_some() && web.answers_http()
    });
    let back = fault.elapsed();
    let second = web.pid().unwrap();
    assert_ne!(second, first);
    wait_for("the action report", T, || !st.reports().is_empty());
    let r = st.reports().remove(0);
    show("web killed", &r);
    eprintln!("web killed: answering again {back:?} after the kill (test's clock)");
    assert!(s(&r["message"]).contains("recovered"), "{r}");
    assert_eq!(r["fields"]["recovered"], true, "{r}");
    let body = s(&r["details"]);
    assert!(body.contains("result: RECOVERED"), "{body}");
    assert!(body.contains("timeline: fault → detection"), "{body}");
    // The fault is dated by the first failing point, not by the alert it raised.
    assert!(r["fields"]["detection_ms"].as_i64().unwrap_or(0) > 0, "{r}");
    assert!(body.contains(&format!("pid {second}")), "{body}");
    assert_eq!(web.starts(), 2, "one start by the test, one by the action");

    // ONE email for the whole incident: the alert (held back while the engine acted) and
    // its recovery (announced by the report) are in the report, not sent on their own.
    wait_for("the rule's own recovery", T, || {
        st.logs().contains("kind=Recovery")
    });
    std::thread::sleep(Duration::from_secs(2));
    let mails = st.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}\n{}", st.logs());
    let mail = &mails[0];
    assert!(mail.subject.contains("restart_process"), "{mail:?}");
    assert!(mail.subject.contains("recovered"), "{mail:?}");
    assert!(mail.body.contains("RECOVERED"), "{mail:?}");
    assert!(mail.body.contains("timeline"), "{mail:?}");
    assert_eq!(st.events().len(), 1, "{:#?}", st.events());
    eprintln!(
        "web killed: {} emails in all: {:?}",
        mails.len(),
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    assert_eq!(web.starts(), 2, "no further restart: {}", st.logs());
}

#[test]
fn a_squatter_on_the_port_is_named_stopped_and_the_service_started() {
    let web = Supervisor::web();
    let Some(mut st) = Stack::new("", "") else {
        return;
    };
    let squatter = Squatter::start(web.port);
    let (ok, out) = web.ctl_run("start");
    assert!(!ok && out.contains("Address already in use"), "{out}");
    let free = format!(
        r#"#{{ action: "free_port", port: {}, settle: "1s" }}"#,
        web.port
    );
    let restart = restart_web(
        &web,
        r#"max_attempts: 3, window: "10m", cooldown: "2s", settle: "1s", verify: "probe""#,
    );
    st.rule("web.rhai", &http_rule(&format!("{free}, {restart}")));
    st.start_agent("web1", &http_input(&web));
    st.start_alerter();

    wait_for("the web server to answer", T, || {
        web.pid().is_some() && web.answers_http()
    });
    assert!(!squatter.alive());
    assert_eq!(listeners(web.port)[0].pid, web.pid().unwrap());
    wait_for("the action report", T, || !st.reports().is_empty());
    let r = st.reports().remove(0);
    show("squatter", &r);
    let body = s(&r["details"]);
    assert!(
        body.contains(&format!("pid {}", squatter.pid()))
            && body.contains("/usr/bin/python3")
            && body.contains(&format!("(user {})", squatter.user())),
        "the squatter is not named: {body}"
    );
    assert!(body.contains("exited after SIGTERM"), "{body}");
    assert_eq!(
        squatter.exit_status().and_then(|s| {
            use std::os::unix::process::ExitStatusExt;
            s.signal()
        }),
        Some(libc::SIGTERM)
    );
    assert!(s(&r["message"]).contains("recovered"), "{r}\n{}", st.logs());
}

#[test]
fn a_service_that_never_comes_back_gets_n_attempts_then_one_page_across_a_restart() {
    let web = Supervisor::web();
    web.set_broken(true);
    let Some(mut st) = Stack::new("", "") else {
        return;
    };
    let server = format!("http://127.0.0.1:{}/", web.port);
    let fail = format!(
        "http_response,host=web1,server={} result_code=3i",
        lp_tag(&server)
    );
    let ok = format!(
        "http_response,host=web1,server={} result_code=0i",
        lp_tag(&server)
    );
    st.rule(
        "web.rhai",
        &http_rule(&restart_web(
            &web,
            r#"max_attempts: 2, window: "10m", cooldown: "3s", settle: "1s", verify: "probe""#,
        )),
    );
    let feeding = Arc::new(AtomicBool::new(true));
    let current = Arc::new(std::sync::Mutex::new(fail.clone()));
    let feeder = {
        let (feeding, current) = (feeding.clone(), current.clone());
        let url = st.db().url.clone();
        std::thread::spawn(move || {
            let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
            while feeding.load(Ordering::SeqCst) {
                let line = current.lock().unwrap().clone();
                let _ = write_lp(port, &line);
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    st.start_alerter();
    wait_for("the first attempt", T, || {
        web.starts() == 1 && !st.reports().is_empty()
    });
    st.stop_alerter();
    let first = st.reports().remove(0);
    assert_eq!(first["fields"]["attempt"], 1, "{first}");

    // Restarted: the budget is not reset. The alert clears and fires again meanwhile.
    st.start_alerter();
    *current.lock().unwrap() = ok.clone();
    wait_for("the recovery event", T, || {
        st.events()
            .iter()
            .any(|e| e["rule"] == "web" && e["kind"] == "recovery")
    });
    *current.lock().unwrap() = fail.clone();
    wait_for("the page", T, || {
        st.reports()
            .iter()
            .any(|r| r["fields"]["status"] == "gave_up")
    });
    std::thread::sleep(Duration::from_secs(5));
    feeding.store(false, Ordering::SeqCst);
    feeder.join().unwrap();
    let reports = st.reports();
    let pages = reports
        .iter()
        .filter(|r| r["fields"]["status"] == "gave_up")
        .count();
    assert_eq!(pages, 1, "{reports:#?}");
    assert_eq!(
        web.starts(),
        2,
        "max_attempts 2 across the restart: {reports:#?}\n{}",
        st.logs()
    );
    let page = reports
        .iter()
        .find(|r| r["fields"]["status"] == "gave_up")
        .unwrap();
    assert!(s(&page["details"]).contains("please look"), "{page}");
    assert!(!web.answers_http());
}

fn write_lp(port: u16, line: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        s,
        "POST /write?db=wk HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{line}",
        line.len()
    )?;
    let mut b = Vec::new();
    s.read_to_end(&mut b)?;
    Ok(())
}

#[test]
fn injection_payloads_in_tags_are_refused_and_nothing_else_runs() {
    let web = Supervisor::web();
    let p = Payloads::new();
    let Some(mut st) = Stack::new(
        &format!("  scripts_dir = {:?}", web.bin_dir().display().to_string()),
        "",
    ) else {
        return;
    };
    st.rule(
        "svc.rhai",
        r#"
rule(#{
    every: "1s",
    notify: ["log"],
    message: "{{host}}: {{service}} is {{level}}",
    actions: [
        #{ action: "run_script", name: "ctl", args: ["{{service}}"], settle: "0s", cooldown: "1h" },
        #{ action: "restart_process", pattern: "{{service}}", dry_run: true },
    ],
});

fn check() {
    let c = query("svc").field("down").range("1h").last().group_by("host", "service").run();
    for s in c {
        s.crit(s.value > 0.0);
    }
    c
}
"#,
    );
    let mut lines = vec!["svc,host=web1,service=status down=1i".to_owned()];
    for (_, v) in p.all() {
        if v.contains('\n') {
            continue; // line protocol cannot carry a newline in a tag (tested below)
        }
        lines.push(format!("svc,host=web1,service={} down=1i", lp_tag(&v)));
    }
    st.write(&lines.join("\n"));
    st.start_alerter();
    let n = lines.len();
    wait_for("a report per series", T, || st.reports().len() >= n);
    std::thread::sleep(Duration::from_secs(2));
    assert!(!p.injected(), "an injection ran");
    // The benign value did reach the script, as one argument; nothing else did.
    assert_eq!(web.calls(), vec![vec!["status".to_owned()]]);
    let audit = st.audit();
    for (name, v) in p.all() {
        if v.contains('\n') {
            continue;
        }
        let refused: Vec<_> = audit
            .iter()
            .filter(|a| s(&a["stderr"]).contains("refused") && a["status"] == "refused")
            .filter(|a| {
                s(&a["alert_id"]).contains(&v) || s(&a["stderr"]).contains(&format!("{v:?}"))
            })
            .collect();
        assert!(
            refused.len() >= 2,
            "{name}: {v:?} not refused by both actions: {audit:#?}"
        );
    }

    // A newline cannot come through line protocol; through the rule it is refused too.
    use wk_alerter::actions::{ActionRule, RawArg};
    let rule = ActionRule {
        action: "run_script".into(),
        args: [
            ("name".to_owned(), RawArg::One("ctl".into())),
            ("args".to_owned(), RawArg::List(vec!["{{service}}".into()])),
        ]
        .into(),
        ..ActionRule::default()
    };
    let (_, newline) = p
        .shell()
        .into_iter()
        .find(|(n, _)| *n == "newline")
        .unwrap();
    use wk_alerter::model::{AlertEvent, Level};
    let e = AlertEvent {
        rule: "svc".into(),
        id: "svc:host=web1".into(),
        level: Level::Critical,
        tags: [("service".to_owned(), newline)].into(),
        ..Default::default()
    };
    let err = rule.render(&e).unwrap_err();
    assert!(
        err.contains("refused") && err.contains("control characters"),
        "{err}"
    );
}

#[test]
fn the_same_restart_over_ssh_through_a_real_sshd() {
    let Some(sshd) = Sshd::start() else { return };
    let web = Supervisor::web();
    let first = web.start();
    let ssh = format!(
        "[[actions.ssh]]\n  host = \"remote1\"\n  address = \"127.0.0.1\"\n  user = \"{}\"\n  key = {:?}\n  known_hosts = {:?}\n  port = {}\n",
        sshd.user,
        sshd.key.display().to_string(),
        sshd.known_hosts.display().to_string(),
        sshd.port
    );
    let Some(mut st) = Stack::new(
        &format!("  scripts_dir = {:?}", web.bin_dir().display().to_string()),
        &ssh,
    ) else {
        return;
    };
    st.rule(
        "web.rhai",
        &http_rule(
            r#"#{ action: "run_script", name: "ctl", args: ["start"], max_attempts: 3,
                  window: "10m", cooldown: "2s", settle: "3s" }"#,
        ),
    );
    st.start_agent("remote1", &http_input(&web));
    st.start_alerter();
    wait_checked(&st);
    web.kill();
    wait_for("the web server to answer again", T, || {
        web.pid().is_some() && web.answers_http()
    });
    assert_ne!(web.pid(), Some(first));
    assert!(
        sshd.log().contains("Accepted publickey"),
        "not through sshd: {}",
        sshd.log()
    );
    assert_eq!(web.calls(), vec![vec!["start".to_owned()]]);
    wait_for("the action report", T, || !st.reports().is_empty());
    let r = st.reports().remove(0);
    show("over ssh", &r);
    let audit = st.audit();
    assert!(
        audit
            .iter()
            .any(|a| s(&a["ran_on"]) == format!("{}@127.0.0.1:{}", sshd.user, sshd.port)),
        "{audit:#?}"
    );
    let recovered = poll_until(T, || {
        st.reports()
            .iter()
            .any(|r| r["fields"]["recovered"] == true)
    });
    assert!(recovered, "{:#?}\n{}", st.reports(), st.logs());
}

#[test]
fn a_close_wait_pile_up_restarts_the_owning_process_named_in_the_report() {
    let server = Supervisor::close_wait();
    let first = server.start();
    let options = r#"cooldown: "5s", settle: "1s", verify: "probe""#;
    let rule = rules::close_wait_rule("1s", "3s", r#"["log"]"#, &server, options);
    let Some(mut st) = stack_with("close_wait.rhai", &rule) else {
        return;
    };
    // Stand-in for the agent's procstat input: the server's CLOSE_WAIT count from `ss`.
    let feeding = Arc::new(AtomicBool::new(true));
    let server = Arc::new(server);
    let feeder = {
        let (feeding, server) = (feeding.clone(), server.clone());
        let port: u16 = st.db().port;
        std::thread::spawn(move || {
            while feeding.load(Ordering::SeqCst) {
                if let Some(pid) = server.pid() {
                    let n = close_wait::close_wait(server.port, pid);
                    let _ = write_lp(
                        port,
                        &format!(
                            "procstat_tcp,host=web1,pid={pid},process_name=python3 tcp_close_wait={n}i"
                        ),
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    st.start_alerter();
    close_wait::open_and_close(server.port, first, 6);
    wait_for("6 CLOSE_WAIT sockets", T, || {
        close_wait::close_wait(server.port, first) == 6
    });
    wait_for("the owner to be restarted", T, || {
        server.pid().is_some_and(|p| p != first)
    });
    let second = server.pid().unwrap();
    assert!(!alive(first));
    assert_eq!(close_wait::close_wait(server.port, first), 0);
    assert_eq!(close_wait::close_wait(server.port, second), 0);
    wait_for("the action report", T, || !st.reports().is_empty());
    feeding.store(false, Ordering::SeqCst);
    feeder.join().unwrap();
    let r = st.reports().remove(0);
    show("close_wait", &r);
    let body = s(&r["details"]);
    assert!(
        body.contains(&format!("pid {first}")) && body.contains("/usr/bin/python3"),
        "the owner is not named: {body}"
    );
    assert!(s(&r["message"]).contains("recovered"), "{r}\n{}", st.logs());
}
