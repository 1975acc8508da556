//! The HTTP side of the stream receiver that is ours: the request head as the routes see it,
//! the answer, query strings and Basic credentials. The HTTP/1.1 protocol itself (framing,
//! chunked bodies, keep-alive, `Expect: 100-continue`, header limits) is hyper's.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderName, HeaderValue};

/// What the routes need of a request head.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub headers: hyper::HeaderMap,
}

impl Head {
    /// The head of a hyper request.
    pub fn new(parts: &hyper::http::request::Parts) -> Head {
        Head {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().map(parse_query).unwrap_or_default(),
            headers: parts.headers.clone(),
        }
    }

    /// The first header of this name, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The first query parameter of this name.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// An answer: a status and a body (InfluxDB's JSON error or result, or a status page).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
    /// Close the connection after it.
    pub close: bool,
    /// `Content-Type` of the body (JSON unless set).
    pub content_type: &'static str,
    /// Extra headers (`Location`, `WWW-Authenticate`, `Cache-Control`).
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            body: body.into(),
            close: false,
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    pub fn closing(mut self) -> Response {
        self.close = true;
        self
    }

    /// The same answer with another `Content-Type`.
    pub fn typed(mut self, content_type: &'static str) -> Response {
        self.content_type = content_type;
        self
    }

    /// The same answer with one more header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The hyper response (hyper leaves out the body of answers to HEAD).
    pub fn into_hyper(self) -> hyper::Response<Full<Bytes>> {
        let no_body = self.status == 204;
        let mut r = hyper::Response::new(Full::new(if no_body {
            Bytes::new()
        } else {
            Bytes::from(self.body)
        }));
        *r.status_mut() = hyper::StatusCode::from_u16(self.status)
            .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        let h = r.headers_mut();
        h.insert(
            HeaderName::from_static("x-influxdb-version"),
            HeaderValue::from_static("wk-alerter-stream"),
        );
        if !no_body {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        if self.close {
            // hyper closes the connection after an answer that says so.
            h.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// `a=1&b=x%20y` → pairs, percent- and `+`-decoded (form encoding; invalid escapes are kept
/// as written, invalid UTF-8 replaced).
pub fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The password of an HTTP Basic credential (`base64(user:password)`), if it is one.
pub fn basic_password(credential: &str) -> Option<String> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    // Padding optional: some clients leave it out.
    const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let decoded = STANDARD_ANY_PAD.decode(credential.trim()).ok()?;
    let text = String::from_utf8_lossy(&decoded);
    text.split_once(':').map(|(_, p)| p.to_owned())
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
        let one = |s: &str| parse_query(&format!("k={s}"))[0].1.clone();
        assert_eq!(one("%"), "%");
        assert_eq!(one("%4"), "%4");
        assert_eq!(one("%zz1"), "%zz1");
        assert_eq!(one("a%41"), "aA");
        assert_eq!(one("%ff"), "\u{fffd}");
    }

    #[test]
    fn basic_credentials() {
        assert_eq!(basic_password("d2s6c2VjcmV0").as_deref(), Some("secret"));
        // "wk:a:b" keeps the colon in the password; padding is optional.
        assert_eq!(basic_password("d2s6YTpi").as_deref(), Some("a:b"));
        assert_eq!(basic_password("Zm9vOg==").as_deref(), Some(""));
        assert_eq!(basic_password("Zm9vOg").as_deref(), Some(""));
        assert_eq!(basic_password("Zm9vYg=="), None, "no colon");
        assert_eq!(basic_password("a b"), None);
        assert_eq!(basic_password("!!!"), None);
    }

    #[test]
    fn truncate_on_char_boundary() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hé", 5), "hé");
    }
}
