//! The little HTTP/1.1 the stream receiver needs: request heads, bodies (Content-Length or
//! chunked, bounded), responses, query strings, Basic credentials. Hand-written because the
//! receiver answers five routes; every read is bounded and nothing here panics on any input.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest request head (request line + headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// A request line and its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// HTTP/1.1 (keep-alive by default) rather than 1.0.
    pub http11: bool,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first header of this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter of this name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection closed after this request.
    pub fn wants_close(&self) -> bool {
        let conn = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.http11 {
            conn.split(',').any(|t| t.trim() == "close")
        } else {
            !conn.split(',').any(|t| t.trim() == "keep-alive")
        }
    }
}

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed the connection (cleanly, between requests).
    Closed,
    /// Too large (head or body): 431 / 413.
    TooLarge,
    /// Not HTTP we understand: 400 with this message.
    Bad(String),
    /// I/O error mid-request (nothing to answer).
    Io(String),
}

/// Reads one request head. `Err(Closed)` at a clean end of stream before any byte.
pub async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Head, ReadError> {
    let mut lines: Vec<String> = Vec::new();
    let mut total = 0usize;
    loop {
        let mut buf = Vec::new();
        let limit = (MAX_HEAD + 1).saturating_sub(total) as u64;
        let n = (&mut *r)
            .take(limit)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|e| ReadError::Io(e.to_string()))?;
        if n == 0 {
            return Err(if total == 0 {
                ReadError::Closed
            } else {
                ReadError::Io("connection closed inside the request head".into())
            });
        }
        total += n;
        if !buf.ends_with(b"\n") {
            return Err(if total > MAX_HEAD {
                ReadError::TooLarge
            } else {
                ReadError::Io("connection closed inside the request head".into())
            });
        }
        let line = String::from_utf8_lossy(&buf)
            .trim_end_matches(['\r', '\n'])
            .to_owned();
        if line.is_empty() {
            // Blank lines before the request line are tolerated (RFC 9112 §2.2).
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(line);
    }
    let mut it = lines.into_iter();
    let request_line = it.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ReadError::Bad(format!(
            "malformed request line {:?}",
            truncate(&request_line, 100)
        )));
    };
    let http11 = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        v => {
            return Err(ReadError::Bad(format!(
                "unsupported version {:?}",
                truncate(v, 20)
            )));
        }
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, parse_query(q)),
        None => (target, Vec::new()),
    };
    let mut headers = Vec::new();
    for line in it {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Bad(format!(
                "malformed header line {:?}",
                truncate(&line, 100)
            )));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Ok(Head {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        http11,
        headers,
    })
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// The body framing of a request (no body = length 0).
pub fn framing(head: &Head) -> Result<Framing, ReadError> {
    if let Some(te) = head.header("transfer-encoding") {
        if te.eq_ignore_ascii_case("chunked") {
            return Ok(Framing::Chunked);
        }
        return Err(ReadError::Bad(format!(
            "unsupported Transfer-Encoding {:?}",
            truncate(te, 40)
        )));
    }
    match head.header("content-length") {
        None => Ok(Framing::Length(0)),
        Some(v) => v
            .parse::<u64>()
            .map(Framing::Length)
            .map_err(|_| ReadError::Bad(format!("bad Content-Length {:?}", truncate(v, 40)))),
    }
}

/// Reads a body of this framing, at most `max` bytes (`TooLarge` beyond).
pub async fn read_body<R: AsyncBufRead + Unpin>(
    r: &mut R,
    framing: Framing,
    max: u64,
) -> Result<Vec<u8>, ReadError> {
    let io = |e: std::io::Error| ReadError::Io(e.to_string());
    match framing {
        Framing::Length(n) => {
            if n > max {
                return Err(ReadError::TooLarge);
            }
            let mut body = Vec::new();
            let got = (&mut *r).take(n).read_to_end(&mut body).await.map_err(io)?;
            if (got as u64) < n {
                return Err(ReadError::Io("connection closed inside the body".into()));
            }
            Ok(body)
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            loop {
                let mut line = Vec::new();
                (&mut *r)
                    .take(1024)
                    .read_until(b'\n', &mut line)
                    .await
                    .map_err(io)?;
                let text = String::from_utf8_lossy(&line);
                let size_hex = text.trim().split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(size_hex, 16).map_err(|_| {
                    ReadError::Bad(format!("bad chunk size {:?}", truncate(size_hex, 20)))
                })?;
                if size == 0 {
                    // Trailers, up to the blank line.
                    loop {
                        let mut t = Vec::new();
                        let n = (&mut *r)
                            .take(MAX_HEAD as u64)
                            .read_until(b'\n', &mut t)
                            .await
                            .map_err(io)?;
                        if n == 0 || t == b"\r\n" || t == b"\n" {
                            return Ok(body);
                        }
                    }
                }
                if body.len() as u64 + size > max {
                    return Err(ReadError::TooLarge);
                }
                let got = (&mut *r)
                    .take(size)
                    .read_to_end(&mut body)
                    .await
                    .map_err(io)?;
                if (got as u64) < size {
                    return Err(ReadError::Io("connection closed inside a chunk".into()));
                }
                let mut crlf = Vec::new();
                (&mut *r)
                    .take(2)
                    .read_until(b'\n', &mut crlf)
                    .await
                    .map_err(io)?;
            }
        }
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// Close the connection after it.
    pub close: bool,
}

impl Response {
    pub fn new(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            body: body.into(),
            close: false,
        }
    }

    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Writes a response; `head_only` for HEAD requests.
pub async fn write_response<W: AsyncWrite + Unpin>(
    w: &mut W,
    resp: &Response,
    head_only: bool,
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nX-Influxdb-Version: wk-alerter-stream\r\n",
        resp.status,
        reason(resp.status)
    );
    if resp.status != 204 {
        out.push_str("Content-Type: application/json\r\n");
        out.push_str(&format!("Content-Length: {}\r\n", resp.body.len()));
    }
    if resp.close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    if resp.status != 204 && !head_only {
        out.push_str(&resp.body);
    }
    w.write_all(out.as_bytes()).await?;
    w.flush().await
}

/// `a=1&b=x%20y` → pairs, percent- and `+`-decoded.
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// Percent-decoding with `+` as space (form encoding); invalid escapes are kept as written.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Standard base64 (padding optional); `None` when not base64.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// At most `n` characters of `s` (on a character boundary).
pub fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_percent_decoding() {
        assert_eq!(
            parse_query("db=telegraf&q=CREATE+DATABASE+%22t%22&p=a%2Fb&x"),
            vec![
                ("db".into(), "telegraf".into()),
                ("q".into(), "CREATE DATABASE \"t\"".into()),
                ("p".into(), "a/b".into()),
                ("x".into(), String::new()),
            ]
        );
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%zz1"), "%zz1");
        assert_eq!(percent_decode("a%41"), "aA");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
    }

    #[test]
    fn base64_vectors() {
        assert_eq!(base64_decode("d2s6c2VjcmV0").unwrap(), b"wk:secret");
        assert_eq!(base64_decode("Zm9vYg==").unwrap(), b"foob");
        assert_eq!(base64_decode("Zm9vYmE=").unwrap(), b"fooba");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn truncate_on_char_boundary() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hé", 5), "hé");
    }

    #[tokio::test]
    async fn heads_and_bodies() {
        let raw = b"\r\nPOST /write?db=x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET /ping HTTP/1.0\r\n\r\n";
        let mut r = tokio::io::BufReader::new(&raw[..]);
        let h = read_head(&mut r).await.unwrap();
        assert_eq!(h.method, "POST");
        assert_eq!(h.path, "/write");
        assert_eq!(h.param("db"), Some("x"));
        assert_eq!(h.header("host"), Some("a"));
        assert!(!h.wants_close());
        let body = read_body(&mut r, framing(&h).unwrap(), 10).await.unwrap();
        assert_eq!(body, b"abc");
        let h = read_head(&mut r).await.unwrap();
        assert!(h.wants_close());
        assert_eq!(read_head(&mut r).await, Err(ReadError::Closed));

        let raw = b"4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\nT: v\r\n\r\n";
        let mut r = tokio::io::BufReader::new(&raw[..]);
        let body = read_body(&mut r, Framing::Chunked, 10).await.unwrap();
        assert_eq!(body, b"abcdef");
        let mut r = tokio::io::BufReader::new(&raw[..]);
        assert_eq!(
            read_body(&mut r, Framing::Chunked, 5).await,
            Err(ReadError::TooLarge)
        );
        let mut r = tokio::io::BufReader::new(&b"abc"[..]);
        assert_eq!(
            read_body(&mut r, Framing::Length(4), 3).await,
            Err(ReadError::TooLarge)
        );
        let mut r = tokio::io::BufReader::new(&b"abc"[..]);
        assert!(matches!(
            read_body(&mut r, Framing::Length(4), 10).await,
            Err(ReadError::Io(_))
        ));
        let big = vec![b'a'; MAX_HEAD + 10];
        let mut r = tokio::io::BufReader::new(&big[..]);
        assert_eq!(read_head(&mut r).await, Err(ReadError::TooLarge));
        let mut r = tokio::io::BufReader::new(&b"GET /\r\n\r\n"[..]);
        assert!(matches!(read_head(&mut r).await, Err(ReadError::Bad(_))));
    }
}
