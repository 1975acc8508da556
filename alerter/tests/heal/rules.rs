//! The rules and agent inputs of the healing scenarios, shared by the end-to-end tests and
//! `benches/heal.rs`: the web server checked by `http_response`, the CLOSE_WAIT server
//! counted by `procstat_tcp`, and the recovery actions spliced into them.

use super::supervisor::Supervisor;

/// The http_response rule evaluated `every`, over the last `range`, notifying `ops` and `log`,
/// with `actions` (Rhai maps) spliced in: critical while the last check of a server failed.
pub fn http_rule(every: &str, range: &str, actions: &str) -> String {
    format!(
        r#"
rule(#{{
    every: "{every}",
    notify: ["ops", "log"],
    message: "{{{{host}}}}: {{{{server}}}} result {{{{value}}}} is {{{{level}}}}",
    actions: [{actions}],
}});

fn check() {{
    let c = query("http_response").field("result_code").range("{range}").last()
               .group_by("host", "server").run();
    for s in c {{
        s.crit(s.value != 0.0);
    }}
    c
}}
"#
    )
}

/// The agent's `http_response` input checking `web`. `response_timeout` at Telegraf's floor
/// (anything under 1 s becomes 5 s): a port that accepts and never answers (the squatter)
/// costs one second before the check fails.
pub fn http_input(web: &Supervisor) -> String {
    format!(
        "[[inputs.http_response]]\n  urls = [\"{}\"]\n  response_timeout = \"1s\"\n",
        web.url()
    )
}

/// A `restart_process` action for `web` (stopped by its command line, started by its `ctl`),
/// with the action options `options` (guard, settle, verify…).
pub fn restart_web(web: &Supervisor, options: &str) -> String {
    format!(
        r#"#{{ action: "restart_process", pattern: "http.server {port}", start: [{ctl:?}, "start"],
            port: {port}, {options} }}"#,
        port = web.port,
        ctl = web.ctl().display().to_string(),
    )
}

/// The CLOSE_WAIT rule evaluated `every` over the last `range`, notifying `notify` (a Rhai
/// array): critical when a process holds more than 3 CLOSE_WAIT sockets, then restarts it
/// through `server`'s ctl, with the action options `options`.
pub fn close_wait_rule(
    every: &str,
    range: &str,
    notify: &str,
    server: &Supervisor,
    options: &str,
) -> String {
    format!(
        r#"
rule(#{{
    every: "{every}",
    notify: {notify},
    message: "{{{{host}}}}: pid {{{{pid}}}} holds {{{{value}}}} CLOSE_WAIT sockets",
    actions: [#{{ action: "restart_process", pid: "{{{{pid}}}}", name: "python3", start: [{ctl:?}, "start"],
                  port: {port}, {options} }}],
}});

fn check() {{
    let c = query("procstat_tcp").field("tcp_close_wait").range("{range}").last()
               .group_by("host", "pid").run();
    for s in c {{
        s.crit(s.value > 3.0);
    }}
    c
}}
"#,
        ctl = server.ctl().display().to_string(),
        port = server.port,
    )
}
