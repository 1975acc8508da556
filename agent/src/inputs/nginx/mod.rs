//! `[[inputs.nginx]]`: nginx's `stub_status` page (connections and requests counters), one
//! `nginx` line per URL with Telegraf's tags (`server`, `port`) and uint fields. See README.md.

use std::time::Duration;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::common::http::{TlsOptions, get_page, read_tls_options, status_page_agent};
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "nginx",
    description: "nginx stub_status: connections and requests per URL",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// A stub_status page is a few hundred bytes; anything much larger is not one.
const BODY_LIMIT: u64 = 1 << 20;

/// The options, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The http(s) URLs to read (`http+unix` ones are dropped at build with a warning).
    pub urls: Vec<String>,
    /// The whole request (Telegraf's common HTTP `timeout`, 5 s).
    pub timeout: Duration,
    /// Waiting for the answer's head (`response_timeout`; under 1 s means 5 s).
    pub response_timeout: Duration,
    pub tls: TlsOptions,
}

fn read_settings(opts: &mut Options<'_, '_>) -> Settings {
    let mut urls = Vec::new();
    for u in opts.strings("urls") {
        let lower = u.to_ascii_lowercase();
        if lower.starts_with("http+unix://") || lower.starts_with("https+unix://") {
            opts.warn_at(
                "urls",
                format!("{u:?}: http+unix URLs are not implemented by wk-agent; skipped"),
            );
            continue;
        }
        match crate::common::http::check_url(&u) {
            Ok(()) => urls.push(u),
            Err(e) => opts.error_at("urls", e),
        }
    }
    let mut response_timeout = opts.duration("response_timeout", Duration::ZERO);
    // Telegraf's createHTTPClient: under a second (including unset) becomes 5 s.
    if response_timeout < Duration::from_secs(1) {
        response_timeout = Duration::from_secs(5);
    }
    let mut timeout = opts.duration("timeout", Duration::ZERO);
    if timeout.is_zero() {
        timeout = Duration::from_secs(5);
    }
    let tls = read_tls_options(opts);
    // Connection-pool tuning has no observable effect on one GET per interval.
    opts.accepted(&[
        "idle_conn_timeout",
        "max_idle_conn",
        "max_idle_conn_per_host",
    ]);
    opts.unsupported(&[
        "local_address",
        "use_system_proxy",
        "http_proxy_url",
        "client_id",
        "client_secret",
        "token_url",
        "audience",
        "scopes",
        "cookie_auth_url",
        "cookie_auth_method",
        "cookie_auth_username",
        "cookie_auth_password",
        "cookie_auth_headers",
        "cookie_auth_body",
        "cookie_auth_renewal",
    ]);
    Settings {
        urls,
        timeout,
        response_timeout,
        tls,
    }
}

fn build(opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Nginx {
        settings: read_settings(opts),
        agent: None,
    })
}

/// The seven counters of a stub_status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StubStatus {
    pub active: u64,
    pub accepts: u64,
    pub handled: u64,
    pub requests: u64,
    pub reading: u64,
    pub writing: u64,
    pub waiting: u64,
}

/// Reads a stub_status page as Telegraf does: the number after the first `:`, then (past the
/// `server accepts handled requests` line) the first three numbers of the next line (Tengine
/// adds a fourth, ignored), then the 2nd, 4th and 6th words of the `Reading:` line. Every
/// line must end with a newline.
pub fn parse_stub_status(text: &str) -> Result<StubStatus, String> {
    let (_, rest) = text
        .split_once(':')
        .ok_or("no \"Active connections:\" in the answer")?;
    let mut lines = rest.split_inclusive('\n');
    let mut line = |what: &str| -> Result<&str, String> {
        match lines.next() {
            Some(l) if l.ends_with('\n') => Ok(l),
            _ => Err(format!("the answer ends before the {what} line")),
        }
    };
    let num = |s: Option<&str>, what: &str| -> Result<u64, String> {
        let s = s.ok_or_else(|| format!("{what}: missing"))?;
        s.parse()
            .map_err(|_| format!("{what}: {s:?} is not an unsigned number"))
    };
    let active = num(Some(line("Active connections")?.trim()), "active")?;
    line("server accepts handled requests")?;
    let mut counts = line("counters")?.split_whitespace();
    let accepts = num(counts.next(), "accepts")?;
    let handled = num(counts.next(), "handled")?;
    let requests = num(counts.next(), "requests")?;
    let words: Vec<&str> = line("Reading/Writing/Waiting")?
        .split_whitespace()
        .collect();
    let reading = num(words.get(1).copied(), "reading")?;
    let writing = num(words.get(3).copied(), "writing")?;
    let waiting = num(words.get(5).copied(), "waiting")?;
    Ok(StubStatus {
        active,
        accepts,
        handled,
        requests,
        reading,
        writing,
        waiting,
    })
}

/// Telegraf's `server` and `port` tags of a URL: Go's `net.SplitHostPort` of the URL's host;
/// when it has no port, the whole host and the scheme's port (80, 443, else empty).
pub fn server_and_port(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some((h, p)) = split_host_port(host) {
        return (h.to_owned(), p.to_owned());
    }
    let port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => "",
    };
    (host.to_owned(), port.to_owned())
}

/// Go's `net.SplitHostPort`, `None` where it errors.
fn split_host_port(hostport: &str) -> Option<(&str, &str)> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return (!port.contains(':')).then_some((h, port));
    }
    let (h, p) = hostport.rsplit_once(':')?;
    (!h.contains(':')).then_some((h, p))
}

/// The input.
pub struct Nginx {
    pub settings: Settings,
    agent: Option<ureq::Agent>,
}

impl Nginx {
    fn agent(&mut self) -> Result<ureq::Agent, String> {
        if let Some(a) = &self.agent {
            return Ok(a.clone());
        }
        let s = &self.settings;
        let a =
            status_page_agent(s.timeout, s.response_timeout, &s.tls).map_err(|e| e.to_string())?;
        self.agent = Some(a.clone());
        Ok(a)
    }
}

fn fetch(agent: &ureq::Agent, url: &str) -> Result<StubStatus, String> {
    // A status page behind basic auth is configured as http://user:PW@host: not in logs.
    let shown = crate::common::http::redact_url(url);
    let page = get_page(agent, url, None, BODY_LIMIT).map_err(|e| {
        format!(
            "error making HTTP request to {shown:?}: {}",
            crate::common::http::redact_url(&e.to_string())
        )
    })?;
    if page.status != 200 {
        return Err(format!(
            "{shown} returned HTTP status {} {}",
            page.status, page.reason
        ));
    }
    parse_stub_status(&page.body).map_err(|e| format!("{shown}: {e}"))
}

impl Input for Nginx {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        if self.settings.urls.is_empty() {
            return Ok(());
        }
        let agent = self.agent().map_err(GatherError::Other)?;
        let urls = &self.settings.urls;
        // All URLs at once, as Telegraf's goroutines; lines in the order of `urls`.
        let answers: Vec<Result<StubStatus, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = urls
                .iter()
                .map(|u| {
                    let agent = &agent;
                    scope.spawn(move || fetch(agent, u))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("nginx reader panicked".into()))
                })
                .collect()
        });
        for (url, answer) in urls.iter().zip(answers) {
            match answer {
                Ok(st) => {
                    let (server, port) = server_and_port(url);
                    let mut m = acc.metric("nginx");
                    m.set_tag("server", server);
                    m.set_tag("port", port);
                    m.add_field("active", st.active);
                    m.add_field("accepts", st.accepts);
                    m.add_field("handled", st.handled);
                    m.add_field("requests", st.requests);
                    m.add_field("reading", st.reading);
                    m.add_field("writing", st.writing);
                    m.add_field("waiting", st.waiting);
                    acc.push(m);
                }
                Err(e) => acc.add_error(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status page behind basic auth (`http://user:PW@host`): the password is in no error.
    #[test]
    fn errors_do_not_show_the_password() {
        let tls = crate::common::http::TlsOptions::default();
        let agent = status_page_agent(
            std::time::Duration::from_secs(2),
            std::time::Duration::from_secs(2),
            &tls,
        )
        .unwrap();
        let port = wk_core::testing::free_port();
        let e = fetch(
            &agent,
            &format!("http://stats:hunter2@127.0.0.1:{port}/status"),
        )
        .unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("stats:***@"), "{e}");
    }

    /// Telegraf's nginx_test.go answers (leading newline included).
    const NGINX: &str = "\nActive connections: 585\nserver accepts handled requests\n 85340 85340 35085\nReading: 4 Writing: 135 Waiting: 446\n";
    const TENGINE: &str = "\nActive connections: 403\nserver accepts handled requests request_time\n 853 8533 3502 1546565864\nReading: 8 Writing: 125 Waiting: 946\n";

    #[test]
    fn telegrafs_nginx_and_tengine_samples() {
        assert_eq!(
            parse_stub_status(NGINX),
            Ok(StubStatus {
                active: 585,
                accepts: 85340,
                handled: 85340,
                requests: 35085,
                reading: 4,
                writing: 135,
                waiting: 446,
            })
        );
        assert_eq!(
            parse_stub_status(TENGINE),
            Ok(StubStatus {
                active: 403,
                accepts: 853,
                handled: 8533,
                requests: 3502,
                reading: 8,
                writing: 125,
                waiting: 946,
            })
        );
    }

    #[test]
    fn nginx_1_22_verbatim() {
        // nginx's own spacing: a space before each newline.
        let page = "Active connections: 1 \nserver accepts handled requests\n 7 7 9 \nReading: 0 Writing: 1 Waiting: 0 \n";
        let st = parse_stub_status(page).unwrap();
        assert_eq!(
            (st.active, st.accepts, st.requests, st.writing),
            (1, 7, 9, 1)
        );
    }

    #[test]
    fn truncated_or_garbled_pages_are_errors() {
        assert!(parse_stub_status("").is_err());
        assert!(parse_stub_status("<html>not found</html>").is_err());
        // No final newline: Telegraf's ReadString fails too.
        assert!(
            parse_stub_status(
                "Active connections: 1\nserver accepts handled requests\n 1 1 1\nReading: 0 Writing: 1 Waiting: 0"
            )
            .is_err()
        );
        assert!(
            parse_stub_status(
                "Active connections: 1\nserver accepts handled requests\n 1 1\nReading: 0 Writing: 1 Waiting: 0\n"
            )
            .is_err()
        );
        assert!(
            parse_stub_status(
                "Active connections: -1\nserver accepts handled requests\n 1 1 1\nReading: 0 Writing: 1 Waiting: 0\n"
            )
            .is_err()
        );
    }

    #[test]
    fn tags_as_telegraf_splits_hosts() {
        let t = |u: &str| server_and_port(u);
        assert_eq!(
            t("http://localhost/status"),
            ("localhost".into(), "80".into())
        );
        assert_eq!(
            t("http://localhost:8080/status"),
            ("localhost".into(), "8080".into())
        );
        assert_eq!(t("https://web1"), ("web1".into(), "443".into()));
        assert_eq!(t("http://[::1]:81/s"), ("::1".into(), "81".into()));
        assert_eq!(t("http://[::1]/s"), ("[::1]".into(), "80".into()));
        assert_eq!(t("http://u:p@h:1/s"), ("h".into(), "1".into()));
    }
}
