//! A small HTTP/1.1 GET client for the Docker Engine API over its unix socket (or plain TCP):
//! one connection per request with `Connection: close`, the answer read to its end within a
//! deadline, then split into status, headers and body (chunked or sized). The agent's HTTP
//! client (ureq) cannot dial unix sockets, and the API needs nothing more than this.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// An answer larger than this is refused (a `containers/json` of thousands of containers is a
/// few MiB).
pub const BODY_LIMIT: usize = 64 << 20;

/// Where the Docker API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///var/run/docker.sock`: the socket path.
    Unix(String),
    /// `tcp://host:port` (or `http://host:port`): plain HTTP.
    Tcp(String),
}

impl Endpoint {
    /// Reads Telegraf's `endpoint` option; `Err` for a scheme we cannot dial.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(format!("{s:?}: no socket path"));
            }
            Ok(Endpoint::Unix(path.to_owned()))
        } else if let Some(addr) = s
            .strip_prefix("tcp://")
            .or_else(|| s.strip_prefix("http://"))
        {
            let addr = addr.trim_end_matches('/');
            if addr.is_empty() {
                return Err(format!("{s:?}: no address"));
            }
            Ok(Endpoint::Tcp(addr.to_owned()))
        } else {
            Err(format!(
                "{s:?}: expected unix:///path/to/docker.sock or tcp://host:port"
            ))
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{p}"),
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// GETs `path` (with its query) and returns the body of a 2xx answer. Other statuses are
/// errors carrying the daemon's `message`.
pub fn get(endpoint: &Endpoint, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: engine-api-cli-1.0\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    let raw = match endpoint {
        Endpoint::Unix(p) => {
            let s = UnixStream::connect(p)
                .map_err(|e| format!("cannot connect to the Docker daemon at {endpoint}: {e}"))?;
            exchange(s, &request, deadline, |s, t| s.set_read_timeout(t))
        }
        Endpoint::Tcp(a) => {
            let addr = std::net::ToSocketAddrs::to_socket_addrs(a.as_str())
                .map_err(|e| format!("{endpoint}: {e}"))?
                .next()
                .ok_or_else(|| format!("{endpoint}: no address"))?;
            let s = std::net::TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("cannot connect to the Docker daemon at {endpoint}: {e}"))?;
            exchange(s, &request, deadline, |s, t| s.set_read_timeout(t))
        }
    }
    .map_err(|e| format!("GET {path} from {endpoint}: {e}"))?;
    let resp = parse_response(&raw).map_err(|e| format!("GET {path} from {endpoint}: {e}"))?;
    if !(200..300).contains(&resp.status) {
        let message = serde_json::from_slice::<serde_json::Value>(&resp.body)
            .ok()
            .and_then(|v| v.get("message")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).trim().to_owned());
        return Err(format!(
            "GET {path} from {endpoint}: status {}: {message}",
            resp.status
        ));
    }
    Ok(resp.body)
}

/// Writes the request, then reads until the peer closes, the limit or the deadline.
fn exchange<S: Read + Write>(
    mut s: S,
    request: &str,
    deadline: Instant,
    set_timeout: impl Fn(&S, Option<Duration>) -> std::io::Result<()>,
) -> Result<Vec<u8>, String> {
    let timed_out = || "timed out".to_owned();
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    set_timeout(&s, Some(left().ok_or_else(timed_out)?)).map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        set_timeout(&s, Some(left().ok_or_else(timed_out)?)).map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > BODY_LIMIT {
                    return Err(format!("answer larger than {BODY_LIMIT} bytes"));
                }
                // A sized body that is complete needs no wait for the close.
                if let Some(want) = complete_length(&out)
                    && out.len() >= want
                {
                    return Ok(out);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(timed_out());
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The whole answer's length when its head is in and says `Content-Length`.
fn complete_length(raw: &[u8]) -> Option<usize> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let len = head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    })?;
    Some(end + 4 + len)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Splits a raw HTTP/1.x answer into its status and body, undoing chunked encoding.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let end = find(raw, b"\r\n\r\n").ok_or("answer ended before its headers")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 answer: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let (mut chunked, mut length) = (false, None);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        } else if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {v:?}"))?,
            );
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| format!("body is {} bytes, Content-Length says {n}", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

/// Undoes `Transfer-Encoding: chunked` (hex sizes, extensions after `;` ignored, trailers
/// dropped).
pub fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n").ok_or("chunked body cut short")?;
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "bad chunk size line")?;
        let hex = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| format!("bad chunk size {hex:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let data = rest.get(..size).ok_or("chunked body cut short")?;
        out.extend_from_slice(data);
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or("chunk not followed by CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock"),
            Ok(Endpoint::Unix("/var/run/docker.sock".into()))
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375"),
            Ok(Endpoint::Tcp("127.0.0.1:2375".into()))
        );
        assert!(Endpoint::parse("npipe:////./pipe/docker_engine").is_err());
        assert!(Endpoint::parse("unix://").is_err());
    }

    #[test]
    fn sized_chunked_and_closed_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\nTrailer: t\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"{\"a\":1}");
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\nX: y\r\n\r\nno such").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"no such"[..]));
    }

    #[test]
    fn broken_answers_are_errors() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n").is_err());
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"5\r\nab").is_err());
        assert!(dechunk(b"2\r\nabXX0\r\n\r\n").is_err());
    }

    #[test]
    fn complete_length_from_the_head() {
        assert_eq!(
            complete_length(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n"),
            Some(41)
        );
        assert_eq!(complete_length(b"HTTP/1.1 200 OK\r\n"), None);
    }
}
