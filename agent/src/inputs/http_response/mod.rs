//! `[[inputs.http_response]]`: one HTTP request per configured URL and interval, reporting
//! whether an answer came, how fast, with which status, and whether the body and status
//! matched what was asked. Blocking client: ureq 3 (+ rustls with the `tls` feature), like the
//! InfluxDB outputs. See README.md for the schema and the result codes.

use std::io::Read;
use std::time::{Duration, Instant};

use super::{BuildContext, GatherError, Input, InputSpec};
#[cfg(feature = "tls")]
use crate::common::http::tls_config;
use crate::common::http::{TlsOptions, read_tls_options};
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "http_response",
    description: "HTTP checks: response time, status code, body match per URL",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// Telegraf's default `response_body_max_size`.
pub const DEFAULT_BODY_MAX: u64 = 32 * 1024 * 1024;

/// Telegraf follows at most 10 redirects (Go's http.Client default) when asked to.
const MAX_REDIRECTS: u32 = 10;

/// The outcome of one check: Telegraf's `result` tag / `result_type` field and its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ResponseStringMismatch,
    BodyReadError,
    ConnectionFailed,
    Timeout,
    DnsError,
    ResponseStatusCodeMismatch,
}

impl Outcome {
    /// The `result` tag and `result_type` field.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ResponseStringMismatch => "response_string_mismatch",
            Outcome::BodyReadError => "body_read_error",
            Outcome::ConnectionFailed => "connection_failed",
            Outcome::Timeout => "timeout",
            Outcome::DnsError => "dns_error",
            Outcome::ResponseStatusCodeMismatch => "response_status_code_mismatch",
        }
    }

    /// The `result_code` field.
    pub fn code(self) -> i64 {
        match self {
            Outcome::Success => 0,
            Outcome::ResponseStringMismatch => 1,
            Outcome::BodyReadError => 2,
            Outcome::ConnectionFailed => 3,
            Outcome::Timeout => 4,
            Outcome::DnsError => 5,
            Outcome::ResponseStatusCodeMismatch => 6,
        }
    }
}

/// The options, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub urls: Vec<String>,
    pub timeout: Duration,
    pub method: String,
    pub follow_redirects: bool,
    pub body: Option<String>,
    /// Request headers in file order (a `Host` entry also sets the request host).
    pub headers: Vec<(String, String)>,
    pub basic_auth: Option<(String, String)>,
    pub token: Option<String>,
    /// `bearer_token` (deprecated in Telegraf for `token`): a file whose content, read at
    /// every check so a rotated token is picked up, is the Bearer token.
    pub bearer_token: Option<std::path::PathBuf>,
    /// 0 = disabled.
    pub status_code: u16,
    /// Regular expression the body must match (compiled at load, as Telegraf's Init does).
    pub string_match: Option<regex::bytes::Regex>,
    pub body_max: u64,
    /// Response body stored as this string field.
    pub body_field: Option<String>,
    /// Response header name -> tag name.
    pub header_tags: Vec<(String, String)>,
    pub http_proxy: Option<String>,
    pub tls: TlsOptions,
}

pub use crate::common::http::check_url;

fn read_settings(opts: &mut Options<'_, '_>) -> Settings {
    let urls = opts
        .opt_strings("urls")
        .unwrap_or_else(|| vec!["http://localhost".to_owned()]);
    for u in &urls {
        if let Err(e) = check_url(u) {
            opts.error_at("urls", e);
        }
    }
    let mut timeout = opts.duration("response_timeout", Duration::from_secs(5));
    // Telegraf's Init: anything under a second (including unset/0) becomes 5 s.
    if timeout < Duration::from_secs(1) {
        timeout = Duration::from_secs(5);
    }
    let method = opts.string("method", "GET");
    if method.is_empty() || ureq::http::Method::from_bytes(method.as_bytes()).is_err() {
        opts.error_at("method", format!("{method:?} is not a valid HTTP method"));
    }
    let follow_redirects = opts.bool("follow_redirects", false);
    let body = opts.opt_string("body").filter(|b| !b.is_empty());
    let headers = opts.string_table("headers");
    for (k, v) in &headers {
        if ureq::http::HeaderName::from_bytes(k.as_bytes()).is_err()
            || ureq::http::HeaderValue::from_str(v).is_err()
        {
            opts.error_at("headers", format!("invalid header {k:?} = {v:?}"));
        }
    }
    let username = opts.string("username", "");
    let password = opts.string("password", "");
    let basic_auth = (!username.is_empty() && !password.is_empty()).then_some((username, password));
    let token = opts.opt_string("token").filter(|t| !t.is_empty());
    let bearer_token = opts
        .opt_string("bearer_token")
        .filter(|t| !t.is_empty())
        .map(std::path::PathBuf::from);
    if bearer_token.is_some() {
        opts.warn_at(
            "bearer_token",
            "is deprecated (as in Telegraf): use token = \"${TOKEN}\" or a secret file through the environment",
        );
    }
    let status_code = opts.int("response_status_code", 0, 0, 999) as u16;
    // A Go RE2 pattern: the regex crate's syntax is RE2's (no look-around, no back-references).
    let string_match = opts
        .opt_string("response_string_match")
        .filter(|s| !s.is_empty())
        .and_then(|p| match regex::bytes::Regex::new(&p) {
            Ok(re) => Some(re),
            Err(e) => {
                opts.error_at(
                    "response_string_match",
                    format!("{p:?} is not a valid regular expression: {e}"),
                );
                None
            }
        });
    let mut body_max = opts.size("response_body_max_size", DEFAULT_BODY_MAX);
    // Telegraf replaces 0 by the default at gather.
    if body_max == 0 {
        body_max = DEFAULT_BODY_MAX;
    }
    let body_field = opts
        .opt_string("response_body_field")
        .filter(|s| !s.is_empty());
    let header_tags = opts.string_table("http_header_tags");
    let http_proxy = opts.opt_string("http_proxy").filter(|s| !s.is_empty());
    if let Some(p) = &http_proxy
        && let Err(e) = ureq::Proxy::new(p)
    {
        let shown = crate::common::http::redact_url(p);
        opts.error_at("http_proxy", format!("{shown:?}: {e}"));
    }
    let tls = read_tls_options(opts);
    opts.unsupported(&[
        "body_form",
        "interface",
        "cookie_auth_url",
        "cookie_auth_method",
        "cookie_auth_username",
        "cookie_auth_password",
        "cookie_auth_body",
        "cookie_auth_headers",
        "cookie_auth_renewal",
    ]);
    Settings {
        urls,
        timeout,
        method,
        follow_redirects,
        body,
        headers,
        basic_auth,
        token,
        bearer_token,
        status_code,
        string_match,
        body_max,
        body_field,
        header_tags,
        http_proxy,
        tls,
    }
}

fn build(opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(HttpResponse::new(read_settings(opts)))
}

/// The input: settings plus a client built on first gather (TLS files are read then).
pub struct HttpResponse {
    pub settings: Settings,
    agent: Option<ureq::Agent>,
}

pub use crate::common::http::default_user_agent;

/// How a transport error (no response) maps to Telegraf's results: timeouts first, then
/// name resolution, everything else is `connection_failed`.
pub fn classify_error(e: &ureq::Error) -> Outcome {
    match e {
        ureq::Error::Timeout(_) => Outcome::Timeout,
        ureq::Error::HostNotFound => Outcome::DnsError,
        ureq::Error::Io(io) => classify_io(io),
        _ => Outcome::ConnectionFailed,
    }
}

fn classify_io(io: &std::io::Error) -> Outcome {
    use std::io::ErrorKind;
    match io.kind() {
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
        // std reports getaddrinfo failures (what Go calls a *net.DNSError) only by message.
        _ if io.to_string().contains("failed to lookup address") => Outcome::DnsError,
        _ => Outcome::ConnectionFailed,
    }
}

/// What a received response amounts to, given the body read (`Ok(bytes)` or the bytes read
/// before the failure). Returns the outcome, the `response_string_match` and
/// `response_status_code_match` field values (when they are set), in Telegraf's order: a body
/// read error wins; then the string match; then the status code (which, failing, overrides a
/// string mismatch).
pub fn judge(
    status: u16,
    body: Result<&[u8], &[u8]>,
    body_max: u64,
    string_match: Option<&regex::bytes::Regex>,
    want_status: u16,
    body_field: bool,
) -> (Outcome, Option<i64>, Option<i64>) {
    let bytes = match body {
        Ok(b) if b.len() as u64 <= body_max => b,
        _ => return (Outcome::BodyReadError, string_match.map(|_| 0), None),
    };
    if body_field && std::str::from_utf8(bytes).is_err() {
        return (Outcome::BodyReadError, string_match.map(|_| 0), None);
    }
    let mut outcome = Outcome::Success;
    let mut string_field = None;
    if let Some(re) = string_match {
        if re.is_match(bytes) {
            string_field = Some(1);
        } else {
            string_field = Some(0);
            outcome = Outcome::ResponseStringMismatch;
        }
    }
    let mut status_field = None;
    if want_status > 0 {
        if status == want_status {
            status_field = Some(1);
        } else {
            status_field = Some(0);
            outcome = Outcome::ResponseStatusCodeMismatch;
        }
    }
    (outcome, string_field, status_field)
}

/// The proxy Go's `http.ProxyFromEnvironment` would use for a URL with this scheme and host:
/// `HTTPS_PROXY`/`https_proxy` for https, `HTTP_PROXY`/`http_proxy` for http (upper case
/// first), never for `localhost` or a loopback IP, nor for hosts matched by `NO_PROXY`/
/// `no_proxy` (`*`, an exact host or IP, or a domain: `example.com`, `.example.com` and
/// `*.example.com` all match subdomains; the bare form also the domain itself). A value
/// without a scheme gets `http://`. Not done: CIDR entries and per-port entries (matched on
/// the host only).
pub fn env_proxy(https: bool, host: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let get = |a: &str, b: &str| {
        env(a)
            .filter(|v| !v.is_empty())
            .or_else(|| env(b).filter(|v| !v.is_empty()))
    };
    let proxy = if https {
        get("HTTPS_PROXY", "https_proxy")
    } else {
        get("HTTP_PROXY", "http_proxy")
    }?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    {
        return None;
    }
    let no_proxy = get("NO_PROXY", "no_proxy").unwrap_or_default();
    for entry in no_proxy.split(',') {
        let mut e = entry.trim().to_ascii_lowercase();
        if e.is_empty() {
            continue;
        }
        if e == "*" {
            return None;
        }
        // Drop a port (host:port, [v6]:port); a bare IPv6 address has several colons.
        if let Some((h, p)) = e.rsplit_once(':')
            && (!h.contains(':') || h.ends_with(']'))
            && p.chars().all(|c| c.is_ascii_digit())
        {
            e = h.to_owned();
        }
        let e = e.trim_start_matches('[').trim_end_matches(']');
        if let Some(domain) = e.strip_prefix("*.").or_else(|| e.strip_prefix('.')) {
            if host.ends_with(&format!(".{domain}")) {
                return None;
            }
        } else if host == e || host.ends_with(&format!(".{e}")) {
            return None;
        }
    }
    Some(if proxy.contains("://") {
        proxy
    } else {
        format!("http://{proxy}")
    })
}

impl HttpResponse {
    pub fn new(settings: Settings) -> Self {
        HttpResponse {
            settings,
            agent: None,
        }
    }

    fn agent(&mut self) -> Result<ureq::Agent, GatherError> {
        if let Some(a) = &self.agent {
            return Ok(a.clone());
        }
        let s = &self.settings;
        // The environment's proxies are chosen per URL (see `env_proxy`).
        let proxy = match &s.http_proxy {
            // Validated at build.
            Some(p) => Some(
                ureq::Proxy::new(p).map_err(|e| GatherError::Other(format!("http_proxy: {e}")))?,
            ),
            None => None,
        };
        let builder = ureq::Agent::config_builder()
            .timeout_global(Some(s.timeout))
            .http_status_as_error(false)
            // Redirects are followed here, as Go's client does (see `redirect`).
            .max_redirects(0)
            // Telegraf disables keep-alives: a fresh connection per check.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .allow_non_standard_methods(true)
            .user_agent(ureq::config::AutoHeaderValue::None)
            .accept(ureq::config::AutoHeaderValue::None)
            .proxy(proxy);
        #[cfg(feature = "tls")]
        let builder = builder.tls_config(tls_config(&s.tls)?);
        let agent = ureq::Agent::new_with_config(builder.build());
        self.agent = Some(agent.clone());
        Ok(agent)
    }

    fn request(&self, url: &str) -> Result<ureq::http::Request<Vec<u8>>, String> {
        let s = &self.settings;
        let file_token = match (&s.token, &s.bearer_token) {
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("bearer_token {}: {e}", path.display()))?
                    .trim_matches(['\n', '\r'])
                    .to_owned(),
            ),
            _ => None,
        };
        let mut b = ureq::http::Request::builder()
            .method(s.method.as_str())
            .uri(url);
        let has = |name: &str| s.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !has("User-Agent") {
            b = b.header("User-Agent", default_user_agent());
        }
        if !has("Connection") {
            b = b.header("Connection", "close");
        }
        if let Some(t) = s.token.as_ref().or(file_token.as_ref()) {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        for (k, v) in &s.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        if let Some((u, p)) = &s.basic_auth {
            let cred = crate::common::http::base64(format!("{u}:{p}").as_bytes());
            // Go's SetBasicAuth replaces any Authorization set before.
            if let Some(h) = b.headers_mut() {
                h.remove("Authorization");
            }
            b = b.header("Authorization", format!("Basic {cred}"));
        }
        let body = s.body.clone().unwrap_or_default().into_bytes();
        b.body(body).map_err(|e| e.to_string())
    }

    /// Checks one URL.
    /// Sends one request (the first or a redirect's) with what is left of `timeout`.
    fn send(
        &self,
        agent: &ureq::Agent,
        hop: &Hop,
        left: Duration,
    ) -> Result<Result<ureq::http::Response<ureq::Body>, ureq::Error>, GatherError> {
        // Without http_proxy, Go's ProxyFromEnvironment rules, per URL.
        let proxy = if self.settings.http_proxy.is_none() {
            let https = hop.uri.scheme_str() == Some("https");
            let host = hop.uri.host().unwrap_or("");
            match env_proxy(https, host, &|k| std::env::var(k).ok()) {
                Some(p) => Some(ureq::Proxy::new(&p).map_err(|e| {
                    GatherError::Other(format!(
                        "{}: proxy from the environment {:?}: {e}",
                        redact(&hop.uri.to_string()),
                        redact(&p)
                    ))
                })?),
                None => None,
            }
        } else {
            None
        };
        let mut b = ureq::http::Request::builder()
            .method(hop.method.clone())
            .uri(hop.uri.clone());
        if let Some(h) = b.headers_mut() {
            *h = hop.headers.clone();
        }
        let bad = |e: ureq::http::Error| {
            GatherError::Other(format!("{}: {e}", redact(&hop.uri.to_string())))
        };
        Ok(match &hop.body {
            Some(body) => run_with(agent, b.body(body.clone()).map_err(bad)?, left, proxy),
            None => run_with(agent, b.body(()).map_err(bad)?, left, proxy),
        })
    }

    fn check(&mut self, url: &str, acc: &mut Accumulator) -> Result<(), GatherError> {
        let agent = self.agent()?;
        let req = self
            .request(url)
            .map_err(|e| GatherError::Other(format!("{}: {e}", redact(url))))?;
        let s = &self.settings;
        let mut m = acc.metric("http_response");
        m.set_tag("server", url);
        m.set_tag("method", s.method.as_str());
        let (parts, body) = req.into_parts();
        let first = Hop {
            method: parts.method,
            uri: parts.uri,
            headers: parts.headers,
            body: s.body.is_some().then_some(body),
        };
        let start = Instant::now();
        let mut hop = first.clone();
        let mut redirects = 0;
        let sent = loop {
            let left = s.timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                break Err(ureq::Error::Timeout(ureq::Timeout::Global));
            }
            let resp = match self.send(&agent, &hop, left)? {
                Ok(r) => r,
                Err(e) => break Err(e),
            };
            // Go's client: no (or an empty) Location returns the 3xx as it is; one that
            // does not parse is an error (connection_failed).
            let location = resp
                .headers()
                .get("location")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .filter(|l| !l.is_empty());
            let next = match location {
                Some(loc) if s.follow_redirects => {
                    match redirect(&first, &hop, resp.status().as_u16(), &loc) {
                        Ok(next) => next,
                        Err(e) => break Err(ureq::Error::BadUri(e)),
                    }
                }
                _ => None,
            };
            let Some(next) = next else {
                break Ok(resp);
            };
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                break Err(ureq::Error::TooManyRedirects);
            }
            hop = next;
        };
        let mut resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let outcome = classify_error(&e);
                tracing::debug!(
                    "http_response: network error while polling {}: {}",
                    redact(url),
                    redact(&e.to_string())
                );
                set_result(&mut m, outcome);
                acc.push(m);
                return Ok(());
            }
        };
        let response_time = start.elapsed().as_secs_f64();
        let status = resp.status().as_u16();
        for (header, tag) in &s.header_tags {
            if let Some(v) = resp.headers().get(header.as_str())
                && let Ok(v) = v.to_str()
            {
                m.set_tag(tag.clone(), v);
            }
        }
        m.set_tag("status_code", status.to_string());
        m.add_field("response_time", response_time);
        m.add_field("http_response_code", i64::from(status));
        let mut buf = Vec::new();
        let read = resp
            .body_mut()
            .as_reader()
            .take(s.body_max.saturating_add(1))
            .read_to_end(&mut buf);
        if let Err(e) = &read {
            tracing::debug!("http_response: failed to read body of {}: {e}", redact(url));
        }
        let body = match read {
            Ok(_) => Ok(&buf[..]),
            Err(_) => Err(&buf[..]),
        };
        let (outcome, string_field, status_field) = judge(
            status,
            body,
            s.body_max,
            s.string_match.as_ref(),
            s.status_code,
            s.body_field.is_some(),
        );
        if outcome != Outcome::BodyReadError
            && let Some(f) = &s.body_field
        {
            // judge() checked the UTF-8.
            m.add_field(f.clone(), String::from_utf8_lossy(&buf).into_owned());
        }
        m.add_field("content_length", buf.len() as i64);
        if let Some(v) = string_field {
            m.add_field("response_string_match", v);
        }
        if let Some(v) = status_field {
            m.add_field("response_status_code_match", v);
        }
        set_result(&mut m, outcome);
        acc.push(m);
        Ok(())
    }
}

/// One request of a check: the configured one, or where a redirect sent it.
#[derive(Clone)]
struct Hop {
    method: ureq::http::Method,
    uri: ureq::http::Uri,
    headers: ureq::http::HeaderMap,
    body: Option<Vec<u8>>,
}

fn run_with<B: ureq::AsSendBody>(
    agent: &ureq::Agent,
    req: ureq::http::Request<B>,
    left: Duration,
    proxy: Option<ureq::Proxy>,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    use ureq::RequestExt;
    let c = req.with_agent(agent).configure().timeout_global(Some(left));
    match proxy {
        Some(p) => c.proxy(Some(p)).run(),
        None => c.run(),
    }
}

/// The request a redirect leads to, by Go's client rules; `Ok(None)`: not a redirect to
/// follow (not 301/302/303/307/308); `Err`: a Location that does not resolve to an http(s)
/// URL.
/// - 301, 302, 303: GET (HEAD stays HEAD), without the body;
/// - 307, 308: the same method with the same body (a POST is sent again, as Go does for a
///   body it can re-read);
/// - headers are kept, except that `Authorization`, `Cookie` and `WWW-Authenticate` go only
///   to the first request's host or its subdomains, and a `Host` header only follows a
///   Location without a scheme (`/path`, `page`, `//host/path`).
fn redirect(first: &Hop, prev: &Hop, status: u16, location: &str) -> Result<Option<Hop>, String> {
    let (method, body) = match status {
        301..=303 => {
            let keep = prev.method == ureq::http::Method::HEAD;
            let m = if keep {
                prev.method.clone()
            } else {
                ureq::http::Method::GET
            };
            (m, None)
        }
        307 | 308 => (prev.method.clone(), prev.body.clone()),
        _ => return Ok(None),
    };
    let (uri, absolute) = resolve_location(&prev.uri, location)?;
    let mut headers = prev.headers.clone();
    headers.remove(ureq::http::header::CONTENT_LENGTH);
    if body.is_none() {
        headers.remove(ureq::http::header::CONTENT_TYPE);
    }
    if absolute {
        headers.remove(ureq::http::header::HOST);
    }
    let from = first.uri.host().unwrap_or("").to_ascii_lowercase();
    let to = uri.host().unwrap_or("").to_ascii_lowercase();
    if to != from && !to.ends_with(&format!(".{from}")) {
        for h in ["authorization", "www-authenticate", "cookie", "cookie2"] {
            headers.remove(h);
        }
    }
    Ok(Some(Hop {
        method,
        uri,
        headers,
        body,
    }))
}

/// `location` resolved against `base` as RFC 3986 §5.2 (and Go's `URL.ResolveReference`)
/// resolve a reference: with a scheme it stands alone; `//host/p` takes the base's scheme;
/// `/p` the base's authority; `?q` the base's path; `p` is merged with the base's
/// directory; dot segments are removed; the fragment is never sent. Bytes a URI may not
/// hold (spaces, non-ASCII) are percent-encoded, as Go does. Also says whether the
/// Location had a scheme.
fn resolve_location(
    base: &ureq::http::Uri,
    location: &str,
) -> Result<(ureq::http::Uri, bool), String> {
    let bad = |why: String| format!("failed to follow the redirect to {location:?}: {why}");
    let loc = escape_loose(location.split('#').next().unwrap_or_default());
    let absolute = has_scheme(&loc);
    let target = if absolute {
        loc
    } else {
        let scheme = base.scheme_str().unwrap_or("http");
        if let Some(rest) = loc.strip_prefix("//") {
            format!("{scheme}://{rest}")
        } else {
            let authority = base
                .authority()
                .ok_or_else(|| bad("the request had no host".into()))?;
            let (path, query) = match loc.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (loc.as_str(), None),
            };
            let (path, query) = if path.is_empty() {
                (base.path().to_owned(), query.or(base.query()))
            } else if path.starts_with('/') {
                (remove_dot_segments(path), query)
            } else {
                let b = base.path();
                let dir = &b[..b.rfind('/').map_or(0, |i| i + 1)];
                let dir = if dir.is_empty() { "/" } else { dir };
                (remove_dot_segments(&format!("{dir}{path}")), query)
            };
            match query {
                Some(q) => format!("{scheme}://{authority}{path}?{q}"),
                None => format!("{scheme}://{authority}{path}"),
            }
        }
    };
    let uri: ureq::http::Uri = target.parse().map_err(|e| bad(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        other => {
            return Err(bad(format!(
                "unsupported protocol scheme {:?}",
                other.unwrap_or_default()
            )));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("no host".into()));
    }
    Ok((uri, absolute))
}

/// Whether a URI reference starts with a scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`).
fn has_scheme(r: &str) -> bool {
    let end = r
        .find(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c)))
        .unwrap_or(r.len());
    end > 0 && r.as_bytes()[0].is_ascii_alphabetic() && r[end..].starts_with(':')
}

/// `s` with the bytes a URI cannot hold percent-encoded (controls, space, non-ASCII and
/// `"<>\^`{|}`); `%` and the reserved characters are kept as they are.
fn escape_loose(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b <= b' ' || b >= 0x7f || br#""<>\^`{|}"#.contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// RFC 3986 §5.2.4 for an absolute path: `.` and `..` segments resolved.
fn remove_dot_segments(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// A URL for logs: its password and credential parameters masked (the `server` tag keeps
/// the URL as configured, as Telegraf's does).
fn redact(url: &str) -> String {
    crate::common::http::redact_url(url)
}

fn set_result(m: &mut crate::metric::Metric, outcome: Outcome) {
    m.set_tag("result", outcome.name());
    m.add_field("result_type", outcome.name());
    m.add_field("result_code", outcome.code());
}

impl Input for HttpResponse {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let urls = self.settings.urls.clone();
        for url in &urls {
            // One URL's problem (a TLS file, a bad request) does not hide the others.
            if let Err(e) = self.check(url, acc) {
                acc.add_error(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_as_go_resolves_them() {
        let base: ureq::http::Uri = "http://h:8080/a/b/c?x=1".parse().unwrap();
        let cases = [
            ("https://o/p", "https://o/p", true),
            ("/d?y=2", "http://h:8080/d?y=2", false),
            (
                "/d?next=http://o/x",
                "http://h:8080/d?next=http://o/x",
                false,
            ),
            ("d", "http://h:8080/a/b/d", false),
            ("../d", "http://h:8080/a/d", false),
            ("./", "http://h:8080/a/b/", false),
            ("../../../../d", "http://h:8080/d", false),
            ("?q=1", "http://h:8080/a/b/c?q=1", false),
            ("#frag", "http://h:8080/a/b/c?x=1", false),
            ("d#frag", "http://h:8080/a/b/d", false),
            ("//o:81/p", "http://o:81/p", false),
            ("/a b/é", "http://h:8080/a%20b/%C3%A9", false),
            ("HTTP://O/P", "http://O/P", true),
        ];
        for (loc, want, abs) in cases {
            let (uri, absolute) = resolve_location(&base, loc).unwrap();
            assert_eq!((uri.to_string().as_str(), absolute), (want, abs), "{loc}");
        }
        for loc in ["ftp://o/p", "mailto:x@y", "http://", "http://[::1"] {
            assert!(resolve_location(&base, loc).is_err(), "{loc}");
        }
    }

    #[test]
    fn a_host_header_follows_a_location_without_a_scheme() {
        let mut headers = ureq::http::HeaderMap::new();
        headers.insert("host", "site.example".parse().unwrap());
        let first = Hop {
            method: ureq::http::Method::GET,
            uri: "http://10.0.0.1/".parse().unwrap(),
            headers,
            body: None,
        };
        for (loc, kept) in [
            ("/x", true),
            ("//10.0.0.1/x", true),
            ("http://10.0.0.1/x", false),
        ] {
            let next = redirect(&first, &first, 302, loc).unwrap().unwrap();
            assert_eq!(next.headers.contains_key("host"), kept, "{loc}");
        }
        assert!(redirect(&first, &first, 304, "/x").unwrap().is_none());
        assert!(redirect(&first, &first, 302, "gopher://x/").is_err());
    }

    fn re(p: &str) -> regex::bytes::Regex {
        regex::bytes::Regex::new(p).unwrap()
    }

    #[test]
    fn result_codes_are_telegrafs() {
        let all = [
            (Outcome::Success, "success", 0),
            (
                Outcome::ResponseStringMismatch,
                "response_string_mismatch",
                1,
            ),
            (Outcome::BodyReadError, "body_read_error", 2),
            (Outcome::ConnectionFailed, "connection_failed", 3),
            (Outcome::Timeout, "timeout", 4),
            (Outcome::DnsError, "dns_error", 5),
            (
                Outcome::ResponseStatusCodeMismatch,
                "response_status_code_mismatch",
                6,
            ),
        ];
        for (o, name, code) in all {
            assert_eq!((o.name(), o.code()), (name, code));
        }
    }

    #[test]
    fn judge_plain_success_even_for_500() {
        assert_eq!(
            judge(500, Ok(b"oops"), 100, None, 0, false),
            (Outcome::Success, None, None)
        );
    }

    #[test]
    fn judge_string_match_and_mismatch() {
        assert_eq!(
            judge(200, Ok(b"hello world"), 100, Some(&re("lo w")), 0, false),
            (Outcome::Success, Some(1), None)
        );
        assert_eq!(
            judge(200, Ok(b"hello world"), 100, Some(&re("bye")), 0, false),
            (Outcome::ResponseStringMismatch, Some(0), None)
        );
    }

    #[test]
    fn judge_status_mismatch_overrides_string_mismatch() {
        assert_eq!(
            judge(404, Ok(b"x"), 100, Some(&re("y")), 200, false),
            (Outcome::ResponseStatusCodeMismatch, Some(0), Some(0))
        );
        assert_eq!(
            judge(200, Ok(b"x"), 100, Some(&re("y")), 200, false),
            (Outcome::ResponseStringMismatch, Some(0), Some(1))
        );
    }

    #[test]
    fn judge_body_errors() {
        // Too large: more than body_max bytes were read.
        assert_eq!(
            judge(200, Ok(b"12345"), 4, Some(&re("1")), 200, false),
            (Outcome::BodyReadError, Some(0), None)
        );
        assert_eq!(
            judge(200, Ok(b"1234"), 4, None, 0, false),
            (Outcome::Success, None, None)
        );
        // Read failure.
        assert_eq!(
            judge(200, Err(b"12"), 4, None, 200, false),
            (Outcome::BodyReadError, None, None)
        );
        // Non-UTF-8 body for response_body_field.
        assert_eq!(
            judge(200, Ok(&[0xff, 0xfe]), 4, None, 0, true),
            (Outcome::BodyReadError, None, None)
        );
        assert_eq!(
            judge(200, Ok(&[0xff, 0xfe]), 4, None, 0, false),
            (Outcome::Success, None, None)
        );
    }

    #[test]
    fn proxies_from_the_environment() {
        let env = |k: &str| match k {
            "HTTP_PROXY" => Some("proxy.lan:3128".to_owned()),
            "https_proxy" => Some("http://sproxy.lan:3129".to_owned()),
            "no_proxy" => Some("internal.lan, .corp.example, *.dev.example,10.1.2.3:80".to_owned()),
            _ => None,
        };
        let p = |https, host| env_proxy(https, host, &env);
        assert_eq!(
            p(false, "example.com").as_deref(),
            Some("http://proxy.lan:3128")
        );
        assert_eq!(
            p(true, "example.com").as_deref(),
            Some("http://sproxy.lan:3129")
        );
        assert_eq!(p(false, "localhost"), None);
        assert_eq!(p(false, "127.0.0.1"), None);
        assert_eq!(p(false, "[::1]"), None);
        assert_eq!(p(false, "internal.lan"), None);
        assert_eq!(p(false, "a.internal.lan"), None);
        assert_eq!(p(false, "x.corp.example"), None);
        assert_eq!(
            p(false, "corp.example").as_deref(),
            Some("http://proxy.lan:3128")
        );
        assert_eq!(p(false, "y.dev.example"), None);
        assert_eq!(p(false, "10.1.2.3"), None);
        assert_eq!(
            p(false, "notinternal.lan").as_deref(),
            Some("http://proxy.lan:3128")
        );
        assert_eq!(env_proxy(false, "example.com", &|_| None), None);
        let all = |k: &str| match k {
            "no_proxy" => Some("*".to_owned()),
            "HTTP_PROXY" => Some("p:1".to_owned()),
            _ => None,
        };
        assert_eq!(env_proxy(false, "example.com", &all), None);
    }

    /// `response_string_match` is a regular expression, as in Telegraf: `^OK$` matches a body
    /// that is exactly "OK" (it never matched as a substring).
    #[test]
    fn string_match_is_a_regex() {
        let m = |p: &str, body: &[u8]| {
            let re = re(p);
            judge(200, Ok(body), 100, Some(&re), 0, false).1
        };
        assert_eq!(m("^OK$", b"OK"), Some(1));
        assert_eq!(m("^OK$", b"NOT OK"), Some(0));
        assert_eq!(m(r#""status":\s*"up""#, br#"{"status": "up"}"#), Some(1));
        assert_eq!(
            m("lo w", b"hello world"),
            Some(1),
            "a plain string still matches"
        );
        assert_eq!(m("a.c", b"abc"), Some(1));
    }

    #[test]
    fn errors_classified() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            classify_error(&ureq::Error::HostNotFound),
            Outcome::DnsError
        );
        assert_eq!(
            classify_error(&ureq::Error::ConnectionFailed),
            Outcome::ConnectionFailed
        );
        assert_eq!(
            classify_error(&ureq::Error::Io(Error::from(ErrorKind::ConnectionRefused))),
            Outcome::ConnectionFailed
        );
        assert_eq!(
            classify_error(&ureq::Error::Io(Error::from(ErrorKind::TimedOut))),
            Outcome::Timeout
        );
        assert_eq!(
            classify_error(&ureq::Error::Io(Error::other(
                "failed to lookup address information: Name or service not known"
            ))),
            Outcome::DnsError
        );
        assert_eq!(
            classify_error(&ureq::Error::TooManyRedirects),
            Outcome::ConnectionFailed
        );
    }
}
