//! The HTTP side shared by every HTTP plugin (`influxdb`, `influxdb_v2`, `http_response`), as
//! Telegraf's plugins/common/http and common/tls: options (urls, timeout, headers,
//! content encoding, user agent, TLS), a lazily built blocking client (ureq + rustls), gzip,
//! secrets from files, URL building and random failover order.
//!
//! Blocking is deliberate: `Output::write` is synchronous and runs on tokio's blocking pool,
//! so a blocking client needs no runtime of its own (see README.md for the choice of ureq).

use std::io::Write;
use std::time::Duration;

use wk_core::options::{Options, SecretSource};

/// What can go wrong in the shared HTTP side: a URL refused at config load, a secret or TLS
/// file that cannot be read, a request that got no answer. Each plugin decides what it means
/// (a config error, a gather error, a batch to retry).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("{0:?}: this wk-agent was built without TLS (cargo feature \"tls\")")]
    NoTls(String),
    #[error("{0:?} is not a valid URL")]
    InvalidUrl(String),
    /// Telegraf's outputs also take unix:// and udp://; neither is implemented here.
    #[error("{0:?}: only http:// and https:// URLs are supported")]
    Scheme(String),
    #[error("reading secret file {path}: {source}")]
    SecretFile {
        path: String,
        source: std::io::Error,
    },
    /// A TLS option's file (`tls_ca`, `tls_cert`, `tls_key`: `what`) cannot be read or holds
    /// no usable PEM.
    #[error("{what} {path}: {detail}")]
    TlsFile {
        what: &'static str,
        path: String,
        detail: String,
    },
    #[error("gzip: {0}")]
    Gzip(std::io::Error),
    /// No answer (connect, TLS, timeout, a body too large or not UTF-8); the caller names the URL.
    #[error("{0}")]
    Request(ureq::Error),
    /// No answer from `url` (connect, TLS, timeout, a body too large or not UTF-8).
    #[error("{url}: {source}")]
    Transport { url: String, source: ureq::Error },
}

/// The HTTP options every InfluxDB output reads.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub urls: Vec<String>,
    pub timeout: Duration,
    pub headers: Vec<(String, String)>,
    pub gzip: bool,
    pub user_agent: String,
    pub tls: TlsOptions,
}

/// The whole-request timeout when none (or 0) is given, Telegraf's.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Our default `User-Agent` (Telegraf sends `Telegraf/<ver> Go/<gover>`).
pub fn default_user_agent() -> String {
    format!("wk-agent/{}", env!("CARGO_PKG_VERSION"))
}

/// Reads the HTTP options; `default_url` when no URL is given. `legacy_url`: the plugin also
/// takes the deprecated single `url` of old Telegraf configs (outputs.influxdb; Telegraf's
/// influxdb_v2 never had it), added to `urls`.
pub fn read_http_options(
    opts: &mut Options<'_, '_>,
    default_url: &str,
    legacy_url: bool,
) -> HttpSettings {
    let listed = opts.opt_strings("urls");
    let single = if legacy_url {
        opts.opt_string("url")
    } else {
        None
    };
    // As Telegraf: the default only when neither is given (`url` alone replaced it before
    // being appended to it, and the agent wrote to localhost too).
    let urls = match (listed, single) {
        (None, None) => vec![default_url.to_owned()],
        (listed, single) => listed.into_iter().flatten().chain(single).collect(),
    };
    if urls.is_empty() {
        opts.error_at("urls", "must name at least one URL");
    }
    for u in &urls {
        if let Err(e) = check_url(u) {
            opts.error_at("urls", e);
        }
    }
    // As Telegraf's influxdb output: 0 (`"0s"`, `""`) is the default, not "no limit".
    let timeout = Some(opts.duration("timeout", DEFAULT_TIMEOUT))
        .filter(|t| !t.is_zero())
        .unwrap_or(DEFAULT_TIMEOUT);
    let headers = opts.string_table("http_headers");
    let gzip = opts.choice("content_encoding", "gzip", &["gzip", "identity"]) == "gzip";
    let user_agent = opts.string("user_agent", &default_user_agent());
    let tls = read_tls_options(opts);
    opts.unsupported(&["http_proxy", "local_address"]);
    HttpSettings {
        urls,
        timeout,
        headers,
        gzip,
        user_agent,
        tls,
    }
}

/// Telegraf's common/tls client options (`tls_ca`, `tls_cert`, `tls_key`,
/// `insecure_skip_verify`), read the same way by every HTTP plugin. An empty path is no path,
/// as in Telegraf.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub insecure_skip_verify: bool,
}

/// Reads the TLS client options; the ones we do not implement warn when present.
pub fn read_tls_options(opts: &mut Options<'_, '_>) -> TlsOptions {
    let ca = opts.opt_string("tls_ca").filter(|s| !s.is_empty());
    let cert = opts.opt_string("tls_cert").filter(|s| !s.is_empty());
    let key = opts.opt_string("tls_key").filter(|s| !s.is_empty());
    if cert.is_some() != key.is_some() {
        opts.warn_at(
            "tls_cert",
            "tls_cert and tls_key work only together: no client certificate is sent (Telegraf ignores a lone one too)",
        );
    }
    let insecure_skip_verify = opts.bool("insecure_skip_verify", false);
    if cfg!(not(feature = "tls")) && (ca.is_some() || cert.is_some() || insecure_skip_verify) {
        opts.warn_at(
            "tls_ca",
            "this wk-agent was built without TLS (cargo feature \"tls\"); TLS options ignored",
        );
    }
    // tls_enable defaults to true; only "false" (plain HTTP to https:// URLs) is unsupported.
    if !opts.bool("tls_enable", true) {
        opts.warn_at(
            "tls_enable",
            "false is not implemented; https:// URLs use TLS",
        );
    }
    opts.unsupported(&[
        "tls_server_name",
        "tls_key_pwd",
        "tls_min_version",
        "tls_max_version",
        "tls_cipher_suites",
        "tls_renegotiation_method",
    ]);
    TlsOptions {
        ca,
        cert,
        key,
        insecure_skip_verify,
    }
}

/// A blocking client for GETting status pages: `total` bounds the whole request,
/// `response_header` the wait for the answer's head (Go's `ResponseHeaderTimeout`); redirects
/// are followed as Go's client does (10 at most); 4xx/5xx are answers, not errors.
pub fn status_page_agent(
    total: Duration,
    response_header: Duration,
    tls: &TlsOptions,
) -> Result<ureq::Agent, HttpError> {
    let builder = ureq::Agent::config_builder()
        .timeout_global(Some(total))
        .timeout_recv_response(Some(response_header))
        .http_status_as_error(false)
        .max_redirects(10)
        .user_agent(default_user_agent());
    #[cfg(feature = "tls")]
    let builder = builder.tls_config(tls_config(tls)?);
    #[cfg(not(feature = "tls"))]
    let _ = tls;
    Ok(ureq::Agent::new_with_config(builder.build()))
}

/// A status page as fetched: status code, reason phrase and body.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub reason: String,
    pub body: String,
}

/// GETs `url` (which must carry no user info) with optional Basic credentials; the body is
/// read up to `limit` bytes. `Err` is a transport problem (connect, TLS, timeout, a body
/// too large or not UTF-8).
pub fn get_page(
    agent: &ureq::Agent,
    url: &str,
    basic_auth: Option<(&str, &str)>,
    limit: u64,
) -> Result<Page, HttpError> {
    let mut req = agent.get(url);
    if let Some((u, p)) = basic_auth {
        req = req.header(
            "Authorization",
            format!("Basic {}", base64(format!("{u}:{p}").as_bytes())),
        );
    }
    let mut resp = req.call().map_err(HttpError::Request)?;
    let status = resp.status();
    let body = resp
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_string()
        .map_err(HttpError::Request)?;
    Ok(Page {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or("").to_owned(),
        body,
    })
}

/// Accepts `http://` and `https://` URLs (Telegraf also takes `unix://` and `udp://`).
pub fn check_url(u: &str) -> Result<(), HttpError> {
    check_url_text(u).map_err(|e| match e {
        HttpError::NoHost(v) => HttpError::NoHost(redact_url(&v)),
        HttpError::NoTls(v) => HttpError::NoTls(redact_url(&v)),
        HttpError::InvalidUrl(v) => HttpError::InvalidUrl(redact_url(&v)),
        HttpError::Scheme(v) => HttpError::Scheme(redact_url(&v)),
        other => other,
    })
}

/// `text` for logs and messages with the secrets of every URL in it masked: a password in
/// its user info (`http://user:PW@host`) and the values of credential query parameters
/// (`p`, `password`, `token`) become `***`. Safe on any text (an error message that quotes
/// a URL, or none).
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        // A URL ends where a character it cannot hold unescaped starts.
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`'))
            .unwrap_or(after.len());
        let (url, tail) = after.split_at(end);
        out.push_str(&redact_one(url));
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// What follows `scheme://` in one URL, its secrets masked.
fn redact_one(rest: &str) -> String {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _))
                        if ["p", "password", "token"]
                            .contains(&k.to_ascii_lowercase().as_str()) =>
                    {
                        format!("{k}=***")
                    }
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{authority}{tail}")
}

fn check_url_text(u: &str) -> Result<(), HttpError> {
    let lower = u.to_ascii_lowercase();
    if let Some(rest) = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"))
    {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(HttpError::NoHost(u.to_owned()));
        }
        if cfg!(not(feature = "tls")) && lower.starts_with("https://") {
            return Err(HttpError::NoTls(u.to_owned()));
        }
        if u.parse::<ureq::http::Uri>().is_err() {
            return Err(HttpError::InvalidUrl(u.to_owned()));
        }
        return Ok(());
    }
    Err(HttpError::Scheme(u.to_owned()))
}

/// Reads a secret either from its option (with `${ENV}` already substituted) or from a file
/// option (wk-agent's addition so secrets stay out of configs kept in git). The file is read
/// at each write (builds do no I/O; a rotated secret is picked up without a reload);
/// surrounding whitespace is trimmed.
#[derive(Debug, Clone)]
pub enum Secret {
    None,
    Value(String),
    File(String),
}

impl Secret {
    /// Reads `key` and `file_key` (at most one may be set).
    pub fn read(opts: &mut Options<'_, '_>, key: &str, file_key: &str) -> Secret {
        match opts.secret_source(key, file_key) {
            Some(SecretSource::Inline(v)) => Secret::Value(v),
            Some(SecretSource::File(f)) => Secret::File(f),
            None => Secret::None,
        }
    }

    /// The secret's value ("" when unset).
    pub fn get(&self) -> Result<String, HttpError> {
        match self {
            Secret::None => Ok(String::new()),
            Secret::Value(v) => Ok(v.clone()),
            Secret::File(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_owned())
                .map_err(|source| HttpError::SecretFile {
                    path: path.clone(),
                    source,
                }),
        }
    }
}

/// One HTTP answer, body read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    /// `Retry-After` when present (see [`parse_retry_after`]).
    pub retry_after: Option<Duration>,
    /// `X-Influx-Error`, when present.
    pub influx_error: Option<String>,
}

/// A blocking client built on first use (reading TLS files then, not at config load).
pub struct Client {
    pub settings: HttpSettings,
    agent: Option<ureq::Agent>,
}

impl Client {
    pub fn new(settings: HttpSettings) -> Self {
        Client {
            settings,
            agent: None,
        }
    }

    fn agent(&mut self) -> Result<&ureq::Agent, HttpError> {
        let agent = match self.agent.take() {
            Some(a) => a,
            None => {
                let builder = ureq::Agent::config_builder()
                    .timeout_global(Some(self.settings.timeout))
                    .http_status_as_error(false)
                    .user_agent(self.settings.user_agent.as_str())
                    .max_redirects(0);
                #[cfg(feature = "tls")]
                let builder = builder.tls_config(tls_config(&self.settings.tls)?);
                ureq::Agent::new_with_config(builder.build())
            }
        };
        Ok(self.agent.insert(agent))
    }

    /// POSTs `body` (gzipped here when configured) to `url` with the configured and the
    /// given headers. `Err` is a transport problem (connect, TLS, timeout).
    pub fn post(
        &mut self,
        url: &str,
        content_type: &str,
        body: &[u8],
        extra_headers: &[(&str, String)],
        compress: bool,
    ) -> Result<Reply, HttpError> {
        let gzip = compress && self.settings.gzip;
        let payload;
        let body = if gzip {
            payload = gzip_bytes(body).map_err(HttpError::Gzip)?;
            &payload[..]
        } else {
            body
        };
        let headers = request_headers(content_type, gzip, extra_headers, &self.settings.headers);
        let agent = self.agent()?;
        let mut req = agent.post(url);
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let mut resp = req.send(body).map_err(|source| HttpError::Transport {
            url: redact_url(url),
            source,
        })?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let retry_after = header("Retry-After").map(|v| parse_retry_after(&v));
        let influx_error = header("X-Influx-Error");
        // Error bodies are short; a failure to read one only loses the message.
        let body = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        Ok(Reply {
            status,
            body,
            retry_after,
            influx_error,
        })
    }
}

/// The headers of a request, one per name: ours, then each of `http_headers` replacing the
/// one of the same name (Go's `Header.Set`, as Telegraf: an `Authorization` in `http_headers`
/// wins over `username`/`password` and `token`), except `Content-Encoding` when we gzip the
/// body (it must say what the body is, as Telegraf's influxdb output sets it last).
fn request_headers(
    content_type: &str,
    gzip: bool,
    extra: &[(&str, String)],
    configured: &[(String, String)],
) -> Vec<(String, String)> {
    let mut out = vec![("Content-Type".to_owned(), content_type.to_owned())];
    out.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    for (k, v) in configured {
        if gzip && k.eq_ignore_ascii_case("content-encoding") {
            continue;
        }
        out.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        out.push((k.clone(), v.clone()));
    }
    if gzip {
        out.push(("Content-Encoding".to_owned(), "gzip".to_owned()));
    }
    out
}

#[cfg(feature = "tls")]
fn tls_file(what: &'static str, path: &str, detail: impl std::fmt::Display) -> HttpError {
    HttpError::TlsFile {
        what,
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

#[cfg(feature = "tls")]
fn read_file(what: &'static str, path: &str) -> Result<Vec<u8>, HttpError> {
    std::fs::read(path).map_err(|e| tls_file(what, path, e))
}

#[cfg(feature = "tls")]
fn pem_certs(
    what: &'static str,
    path: &str,
    pem: &[u8],
) -> Result<Vec<ureq::tls::Certificate<'static>>, HttpError> {
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c),
            Ok(_) => {}
            Err(e) => return Err(tls_file(what, path, e)),
        }
    }
    if certs.is_empty() {
        return Err(tls_file(what, path, "no PEM certificate found"));
    }
    Ok(certs)
}

/// The client TLS configuration of [`TlsOptions`], its PEM files read.
#[cfg(feature = "tls")]
pub fn tls_config(tls: &TlsOptions) -> Result<ureq::tls::TlsConfig, HttpError> {
    use std::sync::Arc;
    use ureq::tls::{ClientCert, PrivateKey, RootCerts, TlsConfig};
    let mut b = TlsConfig::builder().disable_verification(tls.insecure_skip_verify);
    if let Some(ca) = &tls.ca {
        let certs = pem_certs("tls_ca", ca, &read_file("tls_ca", ca)?)?;
        b = b.root_certs(RootCerts::Specific(Arc::new(certs)));
    }
    if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
        let chain = pem_certs("tls_cert", cert, &read_file("tls_cert", cert)?)?;
        let key_pem = read_file("tls_key", key)?;
        let key = PrivateKey::from_pem(&key_pem).map_err(|e| tls_file("tls_key", key, e))?;
        b = b.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
    }
    Ok(b.build())
}

/// Gzips `data` (flate2's pure-Rust zlib-rs backend, default level).
pub fn gzip_bytes(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::default(),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// `base` + `path` (joined with exactly one `/`) + a query string from `params`, values
/// percent-encoded.
pub fn join_url(base: &str, path: &str, params: &[(&str, &str)]) -> String {
    let mut u = base.trim_end_matches('/').to_owned();
    u.push('/');
    u.push_str(path.trim_start_matches('/'));
    for (i, (k, v)) in params.iter().enumerate() {
        u.push(if i == 0 { '?' } else { '&' });
        u.push_str(k);
        u.push('=');
        u.push_str(&percent_encode(v));
    }
    u
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (for HTTP Basic auth).
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The indices `0..n` in a random order (failover order of the URLs, new at each write).
pub fn shuffled(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    fastrand::shuffle(&mut v);
    v
}

/// The first line of a server message, shortened for logs.
pub fn short(msg: &str) -> String {
    let msg = msg.trim();
    if msg.len() <= 500 {
        return msg.to_owned();
    }
    let mut end = 500;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &msg[..end])
}

/// A `Retry-After` value as Telegraf 1.39 reads it: seconds, fractions allowed (`1.5`); one
/// it cannot read (an HTTP date among them) waits 10 s; a negative one, none.
pub fn parse_retry_after(v: &str) -> Duration {
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() => Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX),
        _ => Duration::from_secs(10),
    }
}

/// A tiny HTTP server for the outputs' tests: one thread on 127.0.0.1:0, one request per
/// connection (each answer closes it), every request line recorded (lowercased) before it is
/// answered with `answer(request line)` = (status line, body).
#[cfg(test)]
pub(crate) fn test_server(
    answer: fn(&str) -> (&'static str, &'static str),
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let head_end = loop {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break Some(i + 4);
                }
            };
            let Some(head_end) = head_end else { continue };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + len {
                let n = s.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let line = head.lines().next().unwrap_or("").to_owned();
            let (status, body) = answer(&line);
            log.lock().expect("lock").push(line);
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes());
        }
    });
    (url, seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_as_telegraf_reads_it() {
        assert_eq!(parse_retry_after("7"), Duration::from_secs(7));
        assert_eq!(parse_retry_after(" 1.5 "), Duration::from_millis(1500));
        assert_eq!(parse_retry_after("-3"), Duration::ZERO);
        for unreadable in ["Wed, 21 Oct 2026 07:28:00 GMT", "soon", "", "NaN", "inf"] {
            assert_eq!(
                parse_retry_after(unreadable),
                Duration::from_secs(10),
                "{unreadable}"
            );
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
            ("user:pä ss", "dXNlcjpww6Qgc3M="),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i}");
        }
    }

    #[test]
    fn urls_join_with_one_slash_and_encoded_params() {
        assert_eq!(
            join_url(
                "http://h:8086/",
                "/write",
                &[("db", "my db"), ("rp", "a&b")]
            ),
            "http://h:8086/write?db=my%20db&rp=a%26b"
        );
        assert_eq!(
            join_url("https://h/prefix", "api/v2/write", &[]),
            "https://h/prefix/api/v2/write"
        );
    }

    #[test]
    fn only_http_urls_are_accepted() {
        for ok in ["http://127.0.0.1:8086", "http://127.0.0.1:8080/health?x=1"] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            check_url("HTTPS://influx.example.com").is_ok(),
            cfg!(feature = "tls")
        );
        for bad in [
            "udp://127.0.0.1:8089",
            "unix:///var/run/influxdb.sock",
            "ftp://host",
            "localhost:8086",
            "http://",
            "http:///x",
            "http://bad host/",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        // Credentials never reach a message.
        for (u, shown) in [
            (
                "http://admin:s3cret@db:8086/write?db=x",
                "http://admin:***@db:8086/write?db=x",
            ),
            (
                "http://db:8086/write?db=x&p=s3cret&u=a",
                "http://db:8086/write?db=x&p=***&u=a",
            ),
            ("https://tok@db/x", "https://tok@db/x"),
            ("http://db:8086", "http://db:8086"),
            (
                "GET \"http://a:b@h1/x\" failed; proxy http://c:d@h2: refused",
                "GET \"http://a:***@h1/x\" failed; proxy http://c:***@h2: refused",
            ),
            (
                "Connection refused: user:x@y (os error 111)",
                "Connection refused: user:x@y (os error 111)",
            ),
        ] {
            assert_eq!(redact_url(u), shown);
        }
        let e = check_url("http://admin:s3cret@bad host/")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
    }

    /// The URLs a plugin table gives (`legacy`: it takes `url`), and the diagnostics.
    fn urls_of(table: &str, legacy: bool) -> (Vec<String>, Vec<String>) {
        wk_core::testing::read_table(&format!("[x]\n{table}"), |o| {
            read_http_options(o, "http://localhost:8086", legacy).urls
        })
    }

    /// As Telegraf: the deprecated `url` replaces the default (it was added to it, so the
    /// agent also wrote to localhost); with `urls` it is one more; influxdb_v2 never had it.
    #[test]
    fn the_legacy_url_replaces_the_default() {
        let one = "  url = \"http://db1:8086\"\n";
        assert_eq!(urls_of(one, true).0, ["http://db1:8086"]);
        let both = "  urls = [\"http://db2:8086\"]\n  url = \"http://db1:8086\"\n";
        assert_eq!(
            urls_of(both, true).0,
            ["http://db2:8086", "http://db1:8086"]
        );
        assert_eq!(urls_of("", true).0, ["http://localhost:8086"]);
        let (urls, said) = urls_of(one, false);
        assert_eq!(urls, ["http://localhost:8086"]);
        assert!(
            said.iter().any(|m| m.contains("unknown option \"url\"")),
            "{said:?}"
        );
    }

    /// Regression: `timeout = "0s"` was a load error; Telegraf's influxdb output takes 0 as
    /// its default of 5 s.
    #[test]
    fn a_zero_timeout_is_the_default() {
        for (value, want) in [("\"0s\"", 5), ("0", 5), ("\"\"", 5), ("\"2s\"", 2)] {
            let (timeout, said) =
                wk_core::testing::read_table(&format!("[x]\n  timeout = {value}\n"), |o| {
                    read_http_options(o, "http://localhost:8086", false).timeout
                });
            assert_eq!(timeout, Duration::from_secs(want), "{value}");
            assert!(said.is_empty(), "{value}: {said:?}");
        }
    }

    /// One request read off `listener`, answered 204: its head, lowercased.
    fn one_request_head(listener: std::net::TcpListener) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            use std::io::{BufRead, BufReader};
            let Ok((mut conn, _)) = listener.accept() else {
                return String::new();
            };
            let mut head = String::new();
            let mut reader = BufReader::new(conn.try_clone().expect("clone the connection"));
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                head.push_str(&line.to_ascii_lowercase());
                line.clear();
            }
            let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            head
        })
    }

    /// Regression: `http_headers` were added next to ours, so `username`/`password` plus an
    /// `Authorization` entry sent two Authorization headers; as Telegraf (Go's Header.Set),
    /// the configured one replaces ours, and only once.
    #[test]
    fn http_headers_replace_ours_of_the_same_name() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/write", listener.local_addr().expect("addr"));
        let server = one_request_head(listener);
        let mut client = Client::new(HttpSettings {
            urls: vec![url.clone()],
            timeout: Duration::from_secs(5),
            headers: vec![
                ("authorization".into(), "Bearer from-headers".into()),
                ("User-Agent".into(), "custom/1".into()),
                ("Content-Encoding".into(), "identity".into()),
                ("X-Tenant".into(), "a".into()),
            ],
            gzip: true,
            user_agent: default_user_agent(),
            tls: TlsOptions::default(),
        });
        let basic = [("Authorization", "Basic dTpw".to_owned())];
        let reply = client
            .post(
                &url,
                "text/plain; charset=utf-8",
                b"m v=1 1\n",
                &basic,
                true,
            )
            .expect("an answer");
        assert_eq!(reply.status, 204);
        let head = server.join().expect("server thread");
        let values = |name: &str| -> Vec<&str> {
            head.lines()
                .filter_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .map(str::trim)
                .collect()
        };
        assert_eq!(values("authorization"), ["bearer from-headers"], "{head}");
        assert_eq!(values("user-agent"), ["custom/1"], "{head}");
        // The body is gzip whatever the headers say.
        assert_eq!(values("content-encoding"), ["gzip"], "{head}");
        assert_eq!(values("x-tenant"), ["a"], "{head}");
        assert_eq!(
            values("content-type"),
            ["text/plain; charset=utf-8"],
            "{head}"
        );
    }

    #[test]
    fn shuffle_is_a_permutation() {
        for n in 0..6 {
            let mut v = shuffled(n);
            v.sort_unstable();
            assert_eq!(v, (0..n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let data = b"cpu,host=a usage_idle=99.5 1\n".repeat(50);
        let z = gzip_bytes(&data).unwrap();
        assert!(z.len() < data.len());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&z[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
    }
}
