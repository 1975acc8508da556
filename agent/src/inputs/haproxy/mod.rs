//! `[[inputs.haproxy]]`: HAProxy's statistics (`show stat` CSV) per frontend, backend, server
//! and listener, read from stats sockets (unix or `tcp://`) or the HTTP stats page (`;csv`).
//! Telegraf's schema: one `haproxy` line per CSV row, `pxname`/`svname`/`type` as tags, a few
//! columns as strings, `lastsess` as int, every other numeric column as uint. See README.md.

use std::io::{Read, Write};
use std::time::Duration;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::common::http::{TlsOptions, get_page, read_tls_options, status_page_agent};
use crate::metric::FieldValue;
use crate::plugin::Accumulator;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "haproxy",
    description: "HAProxy statistics (show stat) per frontend, backend and server",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// What Telegraf asks when `servers` is empty.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:1936/haproxy?stats";

/// Telegraf's HTTP client: 3 s for the answer's head, 4 s in all.
const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(3);
const HTTP_TIMEOUT: Duration = Duration::from_secs(4);
/// Sockets: Telegraf waits forever; we bound each read and write.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(5);
/// A stats page larger than this is refused (thousands of servers are a few MiB).
const BODY_LIMIT: u64 = 64 << 20;

/// The `type` column's values, by number.
const TYPE_NAMES: [&str; 4] = ["frontend", "backend", "server", "listener"];

/// Telegraf's renames, undone by `keep_field_names = true`.
fn rename(column: &str) -> Option<&'static str> {
    Some(match column {
        "pxname" => "proxy",
        "svname" => "sv",
        "act" => "active_servers",
        "bck" => "backup_servers",
        "cli_abrt" => "cli_abort",
        "srv_abrt" => "srv_abort",
        "hrsp_1xx" => "http_response.1xx",
        "hrsp_2xx" => "http_response.2xx",
        "hrsp_3xx" => "http_response.3xx",
        "hrsp_4xx" => "http_response.4xx",
        "hrsp_5xx" => "http_response.5xx",
        "hrsp_other" => "http_response.other",
        _ => return None,
    })
}

/// The options, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub servers: Vec<String>,
    pub keep_field_names: bool,
    pub username: String,
    pub password: String,
    pub tls: TlsOptions,
}

fn read_settings(opts: &mut Options<'_, '_>) -> Settings {
    let mut servers = opts.strings("servers");
    if servers.is_empty() {
        servers.push(DEFAULT_SERVER.to_owned());
    }
    for s in &servers {
        if let Endpoint::Http(u) = Endpoint::of(s)
            && let Err(e) = crate::common::http::check_url(&u)
        {
            opts.error_at("servers", e);
        }
    }
    let keep_field_names = opts.bool("keep_field_names", false);
    let username = opts.string("username", "");
    let password = opts.string("password", "");
    let tls = read_tls_options(opts);
    Settings {
        servers,
        keep_field_names,
        username,
        password,
        tls,
    }
}

fn build(opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Haproxy {
        settings: read_settings(opts),
        agent: None,
    })
}

/// Where one `servers` entry is read from, as Telegraf decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The stats page; `;csv` is appended at gather.
    Http(String),
    /// `tcp://host:port`: a stats socket over TCP (the address, without `tcp://`).
    Tcp(String),
    /// A unix stats socket path or glob (`socket:` or any `x:` prefix dropped).
    Unix(String),
}

impl Endpoint {
    /// Telegraf: `http://`, `https://` and `tcp://` are taken as they are; anything else is a
    /// socket path whose text after the first `:` (if any) is the path.
    pub fn of(server: &str) -> Endpoint {
        if server.starts_with("http://") || server.starts_with("https://") {
            Endpoint::Http(server.to_owned())
        } else if let Some(addr) = server.strip_prefix("tcp://") {
            Endpoint::Tcp(addr.to_owned())
        } else {
            Endpoint::Unix(socket_path(server).to_owned())
        }
    }
}

/// Telegraf's `getSocketAddr`: the second `:`-separated part when there is one.
fn socket_path(s: &str) -> &str {
    let mut parts = s.split(':');
    let first = parts.next().unwrap_or("");
    parts.next().unwrap_or(first)
}

/// The stats page URL as requested: `;csv` appended (after a `/`) unless already there.
pub fn csv_url(url: &str) -> String {
    if url.ends_with(";csv") {
        url.to_owned()
    } else {
        format!("{url}/;csv")
    }
}

/// Splits user info out of a URL: (URL without it, `user:password` percent-decoded, the
/// authority's host[:port] — Telegraf's `server` tag).
pub fn split_userinfo(url: &str) -> (String, Option<(String, String)>, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((info, host)) => {
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            (
                format!("{scheme}://{host}{tail}"),
                Some((percent_decode(user), percent_decode(pass))),
                host.to_owned(),
            )
        }
        None => (url.to_owned(), None, authority.to_owned()),
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Expands a socket path glob (`*`, `?`, `[..]` within one path component) to the existing
/// paths, sorted; a path without glob characters, or a glob matching nothing, is returned
/// as it is (the connection then fails and says so, as in Telegraf).
pub fn expand_socket_glob(pattern: &str) -> Result<Vec<String>, String> {
    let meta = |c: &str| c.contains(['*', '?', '[']);
    if !meta(pattern) {
        return Ok(vec![pattern.to_owned()]);
    }
    let absolute = pattern.starts_with('/');
    let mut found: Vec<String> = vec![if absolute { "/".into() } else { String::new() }];
    for comp in pattern.split('/').filter(|c| !c.is_empty()) {
        let join = |base: &str, name: &str| {
            if base.is_empty() || base.ends_with('/') {
                format!("{base}{name}")
            } else {
                format!("{base}/{name}")
            }
        };
        let mut next = Vec::new();
        if meta(comp) {
            let glob = wk_core::glob::Glob::new(comp).map_err(|e| e.to_string())?;
            for base in &found {
                let dir = if base.is_empty() { "." } else { base.as_str() };
                let Ok(rd) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| glob.is_match(n))
                    .collect();
                names.sort();
                next.extend(names.iter().map(|n| join(base, n)));
            }
        } else {
            next = found
                .iter()
                .map(|b| join(b, comp))
                .filter(|p| std::fs::symlink_metadata(p).is_ok())
                .collect();
        }
        found = next;
        if found.is_empty() {
            break;
        }
    }
    if found.is_empty() {
        return Ok(vec![pattern.to_owned()]);
    }
    Ok(found)
}

/// One CSV row as a metric's tags and fields (without the `server` tag).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Row {
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
}

/// Reads `show stat` CSV as Telegraf does. Returns the rows read and, if the text went wrong
/// part way, the error (the rows before it are kept, as Telegraf keeps what it added).
pub fn parse_stat(text: &str, keep_field_names: bool) -> (Vec<Row>, Option<String>) {
    let mut reader = Csv::new(text);
    let mut headers = match reader.next_record() {
        None => return (vec![], Some("empty answer: no CSV header".into())),
        Some(Err(e)) => return (vec![], Some(e)),
        Some(Ok(h)) => h,
    };
    match headers[0].strip_prefix("# ") {
        Some(rest) if !rest.is_empty() => headers[0] = rest.to_owned(),
        _ => {
            return (
                vec![],
                Some("did not receive standard haproxy headers".into()),
            );
        }
    }
    let mut rows = Vec::new();
    while let Some(record) = reader.next_record() {
        let record = match record {
            Ok(r) => r,
            Err(e) => return (rows, Some(e)),
        };
        let mut row = Row::default();
        for (column, v) in headers.iter().zip(&record) {
            if v.is_empty() || column.is_empty() {
                continue;
            }
            let name = match rename(column) {
                Some(r) if !keep_field_names => r.to_owned(),
                _ => column.clone(),
            };
            match column.as_str() {
                "pxname" | "svname" => row.tags.push((name, v.clone())),
                "type" => match v.parse::<i64>() {
                    Ok(t) if (0..TYPE_NAMES.len() as i64).contains(&t) => {
                        row.tags.push((name, TYPE_NAMES[t as usize].to_owned()))
                    }
                    Ok(t) => return (rows, Some(format!("received unknown type value: {t}"))),
                    Err(_) => return (rows, Some(format!("unable to parse type value {v:?}"))),
                },
                // Longer forms of check_status and agent_status.
                "check_desc" | "agent_desc" => {}
                "status" | "check_status" | "last_chk" | "mode" | "tracked" | "agent_status"
                | "last_agt" | "addr" | "cookie" => {
                    row.fields.push((name, FieldValue::Str(v.clone())))
                }
                // -1 when there was no session yet.
                "lastsess" => {
                    if let Ok(i) = v.parse::<i64>() {
                        row.fields.push((name, FieldValue::Int(i)));
                    }
                }
                // Telegraf drops what is not an unsigned number (algo, negative values).
                _ => {
                    if let Ok(u) = v.parse::<u64>() {
                        row.fields.push((name, FieldValue::Uint(u)));
                    }
                }
            }
        }
        rows.push(row);
    }
    (rows, None)
}

/// A CSV reader with Go `encoding/csv`'s defaults: `,` separated, `"` quoting with `""` for
/// a quote, `\r\n` read as `\n`, empty lines skipped, every record as long as the first.
struct Csv<'a> {
    rest: &'a str,
    line: usize,
    width: Option<usize>,
}

impl<'a> Csv<'a> {
    fn new(text: &'a str) -> Self {
        Csv {
            rest: text,
            line: 0,
            width: None,
        }
    }

    fn next_record(&mut self) -> Option<Result<Vec<String>, String>> {
        // Skip empty lines.
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let trimmed = self
                .rest
                .strip_prefix("\r\n")
                .or_else(|| self.rest.strip_prefix('\n'));
            match trimmed {
                Some(t) => {
                    self.rest = t;
                    self.line += 1;
                }
                None => break,
            }
        }
        self.line += 1;
        let start_line = self.line;
        let mut record = Vec::new();
        let mut chars = self.rest.char_indices().peekable();
        let mut field = String::new();
        let mut consumed = self.rest.len();
        loop {
            // At the start of a field.
            if chars.peek().map(|&(_, c)| c) == Some('"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            return Some(Err(format!(
                                "record on line {start_line}: extraneous or missing \" in quoted-field"
                            )));
                        }
                        Some((_, '"')) => match chars.peek().map(|&(_, c)| c) {
                            Some('"') => {
                                chars.next();
                                field.push('"');
                            }
                            None | Some(',') | Some('\n') | Some('\r') => break,
                            Some(_) => {
                                return Some(Err(format!(
                                    "record on line {}: extraneous or missing \" in quoted-field",
                                    self.line
                                )));
                            }
                        },
                        Some((_, '\n')) => {
                            self.line += 1;
                            field.push('\n');
                        }
                        Some((_, c)) => field.push(c),
                    }
                }
            }
            // Unquoted part up to the separator or the end of the line.
            let mut end_of_record = true;
            while let Some((i, c)) = chars.next() {
                match c {
                    ',' => {
                        end_of_record = false;
                        break;
                    }
                    '\n' => {
                        consumed = i + 1;
                        break;
                    }
                    '\r' if chars.peek().map(|&(_, c)| c) == Some('\n') => {}
                    '"' => {
                        return Some(Err(format!(
                            "record on line {}: bare \" in non-quoted-field",
                            self.line
                        )));
                    }
                    c => field.push(c),
                }
            }
            record.push(std::mem::take(&mut field));
            if end_of_record {
                break;
            }
        }
        self.rest = &self.rest[consumed..];
        match self.width {
            None => self.width = Some(record.len()),
            Some(w) if w != record.len() => {
                return Some(Err(format!(
                    "record on line {start_line}: wrong number of fields"
                )));
            }
            Some(_) => {}
        }
        Some(Ok(record))
    }
}

/// The input.
pub struct Haproxy {
    pub settings: Settings,
    agent: Option<ureq::Agent>,
}

/// What one endpoint answered: its `server` tag and the CSV text.
type Answer = Result<(String, String), String>;

impl Haproxy {
    fn agent(&mut self) -> Result<ureq::Agent, String> {
        if let Some(a) = &self.agent {
            return Ok(a.clone());
        }
        let a = status_page_agent(HTTP_TIMEOUT, HTTP_HEADER_TIMEOUT, &self.settings.tls)
            .map_err(|e| e.to_string())?;
        self.agent = Some(a.clone());
        Ok(a)
    }

    fn fetch_http(&self, agent: &ureq::Agent, url: &str) -> Answer {
        let (url, info, host) = split_userinfo(&csv_url(url));
        let s = &self.settings;
        let auth = if !s.username.is_empty() || !s.password.is_empty() {
            Some((s.username.as_str(), s.password.as_str()))
        } else {
            info.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
        };
        let page = get_page(agent, &url, auth, BODY_LIMIT)
            .map_err(|e| format!("unable to connect to haproxy server {url:?}: {e}"))?;
        if page.status != 200 {
            return Err(format!(
                "unable to get valid stat result from {url:?}, http response code : {}",
                page.status
            ));
        }
        Ok((host, page.body))
    }
}

/// Sends `show stat` to a stats socket and reads the answer to its end.
fn fetch_socket(network: &str, address: &str) -> Answer {
    fn talk(mut s: impl Read + Write) -> std::io::Result<String> {
        s.write_all(b"show stat\n")?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
    let connect_err =
        |e: std::io::Error| format!("could not connect to '{network}://{address}': {e}");
    let text = if network == "tcp" {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(address)
            .map_err(connect_err)?
            .next()
            .ok_or_else(|| format!("could not connect to 'tcp://{address}': no address"))?;
        let s = std::net::TcpStream::connect_timeout(&addr, SOCKET_TIMEOUT).map_err(connect_err)?;
        s.set_read_timeout(Some(SOCKET_TIMEOUT)).ok();
        s.set_write_timeout(Some(SOCKET_TIMEOUT)).ok();
        talk(s)
    } else {
        let s = std::os::unix::net::UnixStream::connect(address).map_err(connect_err)?;
        s.set_read_timeout(Some(SOCKET_TIMEOUT)).ok();
        s.set_write_timeout(Some(SOCKET_TIMEOUT)).ok();
        talk(s)
    }
    .map_err(|e| format!("reading stats from '{network}://{address}': {e}"))?;
    Ok((address.to_owned(), text))
}

impl Input for Haproxy {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let mut endpoints = Vec::new();
        for server in &self.settings.servers {
            match Endpoint::of(server) {
                Endpoint::Unix(pattern) => {
                    for path in expand_socket_glob(&pattern).map_err(GatherError::Other)? {
                        endpoints.push(Endpoint::Unix(path));
                    }
                }
                e => endpoints.push(e),
            }
        }
        let agent = if endpoints.iter().any(|e| matches!(e, Endpoint::Http(_))) {
            Some(self.agent().map_err(GatherError::Other)?)
        } else {
            None
        };
        // Every endpoint at once (as Telegraf's goroutines), so one slow HAProxy does not
        // delay the others; lines come out in the order of `servers`.
        let this = &*self;
        let answers: Vec<(Answer, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = endpoints
                .iter()
                .map(|e| {
                    let agent = agent.as_ref();
                    scope.spawn(move || match e {
                        Endpoint::Http(u) => match agent {
                            Some(a) => (this.fetch_http(a, u), true),
                            None => (Err("no HTTP client".into()), true),
                        },
                        Endpoint::Tcp(a) => (fetch_socket("tcp", a), false),
                        Endpoint::Unix(p) => (fetch_socket("unix", p), false),
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| (Err("stats reader panicked".into()), false))
                })
                .collect()
        });
        for (answer, http) in answers {
            let (server, text) = match answer {
                Ok(a) => a,
                Err(e) => {
                    acc.add_error(e);
                    continue;
                }
            };
            let (rows, err) = parse_stat(&text, self.settings.keep_field_names);
            for row in rows {
                let mut m = acc.metric("haproxy");
                m.set_tag("server", server.clone());
                for (k, v) in row.tags {
                    m.set_tag(k, v);
                }
                for (k, v) in row.fields {
                    m.add_field(k, v);
                }
                acc.push(m);
            }
            if let Some(e) = err {
                acc.add_error(if http {
                    format!("unable to parse stat result from {server:?}: {e}")
                } else {
                    format!("{server}: {e}")
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = include_str!("testdata/sample_output.csv");

    fn row<'a>(rows: &'a [Row], proxy: &str, sv: &str) -> &'a Row {
        rows.iter()
            .find(|r| {
                r.tags.iter().any(|(k, v)| k == "proxy" && v == proxy)
                    && r.tags.iter().any(|(k, v)| k == "sv" && v == sv)
            })
            .unwrap_or_else(|| panic!("no row {proxy}/{sv}"))
    }

    fn u(v: u64) -> FieldValue {
        FieldValue::Uint(v)
    }
    fn s(v: &str) -> FieldValue {
        FieldValue::Str(v.into())
    }

    /// Telegraf's haproxy_test.go expected fields for git/www, with their types.
    fn telegraf_git_www() -> Vec<(&'static str, FieldValue)> {
        vec![
            ("active_servers", u(1)),
            ("backup_servers", u(0)),
            ("bin", u(5228218)),
            ("bout", u(303747244)),
            ("check_code", u(200)),
            ("check_duration", u(3)),
            ("check_fall", u(3)),
            ("check_health", u(4)),
            ("check_rise", u(2)),
            ("check_status", s("L7OK")),
            ("chkdown", u(84)),
            ("chkfail", u(559)),
            ("cli_abort", u(690)),
            ("ctime", u(1)),
            ("downtime", u(3352)),
            ("dresp", u(0)),
            ("econ", u(0)),
            ("eresp", u(21)),
            ("http_response.1xx", u(0)),
            ("http_response.2xx", u(5668)),
            ("http_response.3xx", u(8710)),
            ("http_response.4xx", u(140)),
            ("http_response.5xx", u(0)),
            ("http_response.other", u(0)),
            ("iid", u(4)),
            ("last_chk", s("OK")),
            ("lastchg", u(1036557)),
            ("lastsess", FieldValue::Int(1342)),
            ("lbtot", u(9481)),
            ("mode", s("http")),
            ("pid", u(1)),
            ("qcur", u(0)),
            ("qmax", u(0)),
            ("qtime", u(1268)),
            ("rate", u(0)),
            ("rate_max", u(2)),
            ("rtime", u(2908)),
            ("sid", u(1)),
            ("scur", u(0)),
            ("slim", u(2)),
            ("smax", u(2)),
            ("srv_abort", u(0)),
            ("status", s("UP")),
            ("stot", u(14539)),
            ("ttime", u(4500)),
            ("weight", u(1)),
            ("wredis", u(0)),
            ("wretr", u(0)),
        ]
    }

    #[test]
    fn telegraf_sample_output_gives_telegrafs_fields_and_types() {
        let (rows, err) = parse_stat(SAMPLE, false);
        assert_eq!(err, None);
        assert_eq!(rows.len(), 13);
        let r = row(&rows, "git", "www");
        assert!(r.tags.contains(&("type".into(), "server".into())));
        let mut want: Vec<(String, FieldValue)> = telegraf_git_www()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let mut got = r.fields.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
    }

    #[test]
    fn row_types_and_frontend_fields() {
        let (rows, _) = parse_stat(SAMPLE, false);
        let types: Vec<&str> = rows
            .iter()
            .map(|r| r.tags.iter().find(|(k, _)| k == "type").unwrap().1.as_str())
            .collect();
        assert_eq!(&types[..2], &["frontend", "listener"]);
        assert_eq!(types[8], "backend");
        let fe = row(&rows, "http-in", "FRONTEND");
        let f = |k: &str| {
            fe.fields
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(f("status"), Some(s("OPEN")));
        assert_eq!(f("stot"), Some(u(2639994)));
        assert_eq!(f("bout"), Some(u(65937668635)));
        assert_eq!(f("req_tot"), Some(u(2754255)));
        assert_eq!(f("conn_tot"), Some(u(2649922)));
        // Empty cells give no field.
        assert_eq!(f("qcur"), None);
        // lastsess -1 (no session yet) is an int.
        let bck = row(&rows, "git", "bck");
        assert!(
            bck.fields
                .contains(&("lastsess".into(), FieldValue::Int(-1)))
        );
    }

    #[test]
    fn keep_field_names_keeps_haproxys_names() {
        let (rows, err) = parse_stat(SAMPLE, true);
        assert_eq!(err, None);
        let r = rows
            .iter()
            .find(|r| {
                r.tags.contains(&("pxname".into(), "git".into()))
                    && r.tags.contains(&("svname".into(), "www".into()))
            })
            .unwrap();
        let names: Vec<&str> = r.fields.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "act",
            "bck",
            "cli_abrt",
            "srv_abrt",
            "hrsp_1xx",
            "hrsp_2xx",
            "hrsp_other",
        ] {
            assert!(names.contains(&k), "{k}: {names:?}");
        }
        assert!(!names.iter().any(|k| k.starts_with("http_response")));
        assert!(!names.contains(&"active_servers"));
    }

    #[test]
    fn strings_descriptions_and_non_numbers() {
        let csv = "# pxname,svname,type,status,check_desc,agent_desc,algo,addr,cookie,tracked,qtime,\n\
                   be,s1,2,UP,Layer7 check passed,x,roundrobin,127.0.0.1:80,c1,be/s2,-1,\n";
        let (rows, err) = parse_stat(csv, false);
        assert_eq!(err, None);
        assert_eq!(
            rows[0].fields,
            vec![
                ("status".into(), s("UP")),
                ("addr".into(), s("127.0.0.1:80")),
                ("cookie".into(), s("c1")),
                ("tracked".into(), s("be/s2")),
            ]
        );
    }

    #[test]
    fn bad_headers_and_types_are_errors_keeping_earlier_rows() {
        assert_eq!(
            parse_stat("pxname,svname\n", false).1.as_deref(),
            Some("did not receive standard haproxy headers")
        );
        assert!(parse_stat("", false).1.is_some());
        let (rows, err) = parse_stat("# pxname,type\na,0\nb,7\nc,1\n", false);
        assert_eq!(rows.len(), 1);
        assert_eq!(err.as_deref(), Some("received unknown type value: 7"));
        let (_, err) = parse_stat("# pxname,type\na,x\n", false);
        assert_eq!(err.as_deref(), Some("unable to parse type value \"x\""));
        let (rows, err) = parse_stat("# pxname,type\na,0\nb\n", false);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            err.as_deref(),
            Some("record on line 3: wrong number of fields")
        );
    }

    #[test]
    fn csv_quotes_crlf_and_blank_lines() {
        let csv = "# pxname,svname,status,\r\n\r\n\"a,b\",\"s\"\"1\",UP,\r\n\n";
        let (rows, err) = parse_stat(csv, true);
        assert_eq!(err, None);
        assert_eq!(
            rows[0].tags,
            vec![
                ("pxname".into(), "a,b".into()),
                ("svname".into(), "s\"1".into())
            ]
        );
        assert!(parse_stat("# pxname\na\"b\n", false).1.is_some());
    }

    #[test]
    fn endpoints_as_telegraf_reads_them() {
        assert_eq!(
            Endpoint::of("http://h:1936/haproxy?stats"),
            Endpoint::Http("http://h:1936/haproxy?stats".into())
        );
        assert_eq!(
            Endpoint::of("tcp://127.0.0.1:1936"),
            Endpoint::Tcp("127.0.0.1:1936".into())
        );
        assert_eq!(
            Endpoint::of("socket:/run/haproxy/admin.sock"),
            Endpoint::Unix("/run/haproxy/admin.sock".into())
        );
        assert_eq!(
            Endpoint::of("/run/haproxy/*.sock"),
            Endpoint::Unix("/run/haproxy/*.sock".into())
        );
    }

    #[test]
    fn csv_suffix_and_user_info() {
        assert_eq!(
            csv_url("http://127.0.0.1:1936/haproxy?stats"),
            "http://127.0.0.1:1936/haproxy?stats/;csv"
        );
        assert_eq!(csv_url("http://h/stats;csv"), "http://h/stats;csv");
        assert_eq!(
            split_userinfo("http://user:p%40ss@h:8080/stats/;csv"),
            (
                "http://h:8080/stats/;csv".into(),
                Some(("user".into(), "p@ss".into())),
                "h:8080".into()
            )
        );
        assert_eq!(
            split_userinfo("https://h/;csv"),
            ("https://h/;csv".into(), None, "h".into())
        );
    }

    #[test]
    fn socket_globs_expand_to_existing_paths() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["a.sock", "b.sock", "c.txt"] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        let d = dir.path().display();
        assert_eq!(
            expand_socket_glob(&format!("{d}/*.sock")).unwrap(),
            vec![format!("{d}/a.sock"), format!("{d}/b.sock")]
        );
        assert_eq!(
            expand_socket_glob(&format!("{d}/*.none")).unwrap(),
            vec![format!("{d}/*.none")]
        );
        assert_eq!(
            expand_socket_glob("/run/x.sock").unwrap(),
            vec!["/run/x.sock".to_owned()]
        );
    }
}
