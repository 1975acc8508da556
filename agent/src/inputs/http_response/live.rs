//! `http_response` against real HTTP servers: tiny hand-written servers on 127.0.0.1:0 in a
//! thread (std TcpListener, literal responses), so every request the input sends is seen by
//! the test and every answer is exactly known. No mocks: the input's real client does real
//! TCP. Also a refused port, a listener that never answers, and an unresolvable name.

use super::{gather, gather_one};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use super::int;
use wk_agent::metric::{FieldValue, Metric};
use wk_core::testing::free_port;

/// Reads one request (head and a Content-Length body).
fn read_request(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).to_string()
}

/// Handles every connection with `handle`, forever (the thread dies with the test process).
/// Returns the base URL and what `handle` returned for each connection.
fn serve_with<T: Send + 'static>(
    handle: impl Fn(&mut TcpStream) -> T + Send + 'static,
) -> (String, Receiver<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let _ = tx.send(handle(&mut s));
        }
    });
    (format!("http://127.0.0.1:{port}"), rx)
}

/// Answers every request with `answer(request)`; the receiver gets the requests.
fn serve(answer: fn(&str) -> String) -> (String, Receiver<String>) {
    serve_with(move |s| {
        let req = read_request(s);
        let _ = s.write_all(answer(&req).as_bytes());
        req
    })
}

fn reply(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn hello(_req: &str) -> String {
    reply("200 OK", "X-Backend: b1\r\n", "hello, world: status ok")
}

fn conf(url: &str, extra: &str) -> String {
    format!("[[inputs.http_response]]\n  urls = [\"{url}\"]\n{extra}")
}

fn string(m: &Metric, key: &str) -> String {
    match m.field(key) {
        Some(FieldValue::Str(v)) => v.clone(),
        other => panic!("{key}: {other:?} in {m:?}"),
    }
}

/// Checks the result tag, result_type and result_code together.
fn assert_result(m: &Metric, name: &str, code: i64) {
    assert_eq!(m.tag("result"), Some(name), "{m:?}");
    assert_eq!(string(m, "result_type"), name);
    assert_eq!(int(m, "result_code"), code);
}

/// The fields of a response that arrived, with the response time bounded by the wall time.
fn assert_response(m: &Metric, status: i64, len: usize, wall: Duration) {
    assert_eq!(m.tag("status_code"), Some(status.to_string().as_str()));
    assert_eq!(int(m, "http_response_code"), status);
    assert_eq!(int(m, "content_length"), len as i64);
    match m.field("response_time") {
        Some(FieldValue::Float(t)) => assert!(*t > 0.0 && *t <= wall.as_secs_f64(), "{t}"),
        other => panic!("response_time: {other:?}"),
    }
}

fn timed(conf: &str) -> (Metric, Duration) {
    let t = Instant::now();
    let m = gather_one(conf);
    (m, t.elapsed())
}

#[test]
fn ok_with_body_match() {
    let (url, rx) = serve(hello);
    let (m, wall) = timed(&conf(
        &format!("{url}/health"),
        "  response_string_match = \"status ok\"\n",
    ));
    assert_eq!(m.name, "http_response");
    assert_eq!(m.tag("server"), Some(format!("{url}/health").as_str()));
    assert_eq!(m.tag("method"), Some("GET"));
    assert_response(&m, 200, "hello, world: status ok".len(), wall);
    assert_eq!(int(&m, "response_string_match"), 1);
    assert!(m.field("response_status_code_match").is_none());
    assert_result(&m, "success", 0);
    let req = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(req.starts_with("GET /health HTTP/1.1\r\n"), "{req}");
    let lower = req.to_ascii_lowercase();
    let ua = format!("user-agent: wk-agent/{}\r\n", env!("CARGO_PKG_VERSION"));
    assert!(lower.contains(&ua), "{req}");
    // Keep-alives disabled, as Telegraf.
    assert!(lower.contains("connection: close\r\n"), "{req}");
    assert!(!lower.contains("authorization:"), "{req}");
}

#[test]
fn body_mismatch() {
    let (url, _rx) = serve(hello);
    let (m, wall) = timed(&conf(&url, "  response_string_match = \"status down\"\n"));
    assert_response(&m, 200, 23, wall);
    assert_eq!(int(&m, "response_string_match"), 0);
    assert_result(&m, "response_string_mismatch", 1);
}

fn five_hundred(_req: &str) -> String {
    reply("500 Internal Server Error", "", "boom")
}

#[test]
fn http_500_is_still_success() {
    let (url, _rx) = serve(five_hundred);
    let (m, wall) = timed(&conf(&url, ""));
    assert_response(&m, 500, 4, wall);
    assert_result(&m, "success", 0);
    assert!(m.field("response_string_match").is_none());
}

#[test]
fn status_code_match_and_mismatch() {
    let (url, _rx) = serve(five_hundred);
    let m = gather_one(&conf(&url, "  response_status_code = 200\n"));
    assert_eq!(int(&m, "response_status_code_match"), 0);
    assert_result(&m, "response_status_code_mismatch", 6);
    let m = gather_one(&conf(&url, "  response_status_code = 500\n"));
    assert_eq!(int(&m, "response_status_code_match"), 1);
    assert_result(&m, "success", 0);
    // Both checks failing: the status code result wins (it is set last in Telegraf).
    let m = gather_one(&conf(
        &url,
        "  response_status_code = 200\n  response_string_match = \"nope\"\n",
    ));
    assert_eq!(int(&m, "response_string_match"), 0);
    assert_eq!(int(&m, "response_status_code_match"), 0);
    assert_result(&m, "response_status_code_mismatch", 6);
}

#[test]
fn body_larger_than_max_is_body_read_error() {
    let (url, _rx) = serve(hello);
    let m = gather_one(&conf(
        &url,
        "  response_body_max_size = 5\n  response_string_match = \"hello\"\n",
    ));
    assert_eq!(int(&m, "http_response_code"), 200);
    // Telegraf reads max+1 bytes to detect the overflow and reports what it read.
    assert_eq!(int(&m, "content_length"), 6);
    assert_eq!(int(&m, "response_string_match"), 0);
    assert_result(&m, "body_read_error", 2);
}

#[test]
fn connection_refused() {
    let port = free_port();
    let m = gather_one(&conf(&format!("http://127.0.0.1:{port}/"), ""));
    assert_result(&m, "connection_failed", 3);
    assert!(m.field("response_time").is_none());
    assert!(m.field("http_response_code").is_none());
    assert!(m.tag("status_code").is_none());
}

#[test]
fn no_answer_is_timeout() {
    // Listening but never accepting: the kernel completes the handshake, nobody answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (m, wall) = timed(&conf(
        &format!("http://127.0.0.1:{port}/"),
        "  response_timeout = \"1s\"\n",
    ));
    drop(l);
    assert_result(&m, "timeout", 4);
    assert!(m.field("response_time").is_none());
    assert!(m.tag("status_code").is_none());
    assert!(
        wall >= Duration::from_millis(900) && wall < Duration::from_secs(4),
        "{wall:?}"
    );
}

#[test]
fn unresolvable_host_is_dns_error() {
    // RFC 6761: .invalid never resolves, with or without network.
    let m = gather_one(&conf("http://nonexistent.invalid/", ""));
    assert_result(&m, "dns_error", 5);
    assert!(m.field("response_time").is_none());
}

fn redirecting(req: &str) -> String {
    if req.starts_with("GET /old ") {
        reply("302 Found", "Location: /new\r\n", "moved")
    } else if req.starts_with("GET /new ") {
        reply("200 OK", "", "landed here")
    } else {
        reply("404 Not Found", "", "")
    }
}

#[test]
fn redirect_not_followed_by_default() {
    let (url, _rx) = serve(redirecting);
    let (m, wall) = timed(&conf(&format!("{url}/old"), ""));
    assert_response(&m, 302, 5, wall);
    assert_result(&m, "success", 0);
}

#[test]
fn redirect_followed_when_asked() {
    let (url, rx) = serve(redirecting);
    let (m, wall) = timed(&conf(
        &format!("{url}/old"),
        "  follow_redirects = true\n  response_string_match = \"landed\"\n",
    ));
    assert_response(&m, 200, 11, wall);
    assert_eq!(int(&m, "response_string_match"), 1);
    assert_result(&m, "success", 0);
    // The server tag stays the configured URL.
    assert_eq!(m.tag("server"), Some(format!("{url}/old").as_str()));
    let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(first.starts_with("GET /old "), "{first}");
    assert!(second.starts_with("GET /new "), "{second}");
}

/// 307 keeps the method and the body; the Location is absolute to `localhost` (another host
/// name than the configured 127.0.0.1) for `/away`.
fn redirecting_post(req: &str) -> String {
    let port = req
        .lines()
        .find_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: ")))
        .and_then(|h| h.trim().rsplit_once(':'))
        .map(|(_, p)| p.to_owned())
        .unwrap_or_default();
    if req.starts_with("POST /form ") {
        reply("307 Temporary Redirect", "Location: /landing\r\n", "")
    } else if req.starts_with("GET /old ") {
        reply("302 Found", "Location: /new\r\n", "")
    } else if req.starts_with("GET /away ") {
        let to = format!("Location: http://localhost:{port}/new\r\n");
        reply("302 Found", &to, "")
    } else {
        reply("200 OK", "", "landed")
    }
}

/// Redirects as Go's client follows them (Telegraf): a POST answered 307 is sent again with
/// its body (it stopped at the 307); credentials follow a redirect on the same host (they
/// were dropped) and never go to another host.
#[test]
fn redirects_keep_the_body_on_307_and_credentials_on_the_same_host() {
    let (url, rx) = serve(redirecting_post);
    let m = gather_one(&conf(
        &format!("{url}/form"),
        "  method = \"POST\"\n  body = \"a=1\"\n  follow_redirects = true\n",
    ));
    assert_eq!(int(&m, "http_response_code"), 200, "{m:?}");
    let first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(first.starts_with("POST /form "), "{first}");
    assert!(second.starts_with("POST /landing "), "{second}");
    assert!(second.ends_with("\r\n\r\na=1"), "{second}");
    for (path, kept) in [("/old", true), ("/away", false)] {
        let m = gather_one(&conf(
            &format!("{url}{path}"),
            "  follow_redirects = true\n  username = \"u\"\n  password = \"p\"\n",
        ));
        assert_eq!(int(&m, "http_response_code"), 200, "{m:?}");
        let _first = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let second = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(second.starts_with("GET /new "), "{second}");
        let auth = second.to_ascii_lowercase().contains("authorization:");
        assert_eq!(auth, kept, "{path}: {second}");
    }
}

fn echo_ok(_req: &str) -> String {
    reply("201 Created", "", "")
}

#[test]
fn basic_auth_headers_and_body_are_sent() {
    let (url, rx) = serve(echo_ok);
    let m = gather_one(&conf(
        &format!("{url}/submit"),
        "  method = \"POST\"\n  username = \"user\"\n  password = \"pass\"\n  body = '{\"a\":1}'\n\
         [inputs.http_response.headers]\n  Host = \"example.test\"\n  X-Probe = \"yes\"\n  User-Agent = \"custom/1\"\n",
    ));
    assert_eq!(m.tag("method"), Some("POST"));
    assert_eq!(int(&m, "http_response_code"), 201);
    assert_eq!(int(&m, "content_length"), 0);
    assert_result(&m, "success", 0);
    let req = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(req.starts_with("POST /submit HTTP/1.1\r\n"), "{req}");
    let lower = req.to_ascii_lowercase();
    // base64("user:pass")
    assert!(
        lower.contains("authorization: basic dxnlcjpwyxnz\r\n"),
        "{req}"
    );
    assert!(req.contains("Basic dXNlcjpwYXNz\r\n"), "{req}");
    assert!(lower.contains("host: example.test\r\n"), "{req}");
    assert!(lower.contains("x-probe: yes\r\n"), "{req}");
    assert!(lower.contains("user-agent: custom/1\r\n"), "{req}");
    assert!(!lower.contains("wk-agent"), "{req}");
    assert!(req.ends_with("\r\n\r\n{\"a\":1}"), "{req}");
}

#[test]
fn bearer_token_and_no_basic_auth_without_password() {
    let (url, rx) = serve(echo_ok);
    let m = gather_one(&conf(&url, "  token = \"t0k\"\n  username = \"user\"\n"));
    assert_result(&m, "success", 0);
    let req = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(req.contains("Bearer t0k\r\n"), "{req}");
    assert!(!req.to_ascii_lowercase().contains("basic"), "{req}");

    // `bearer_token` (deprecated): the file's content, read at each check, without its
    // trailing newline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "fr0m-file\n").unwrap();
    let m = gather_one(&conf(
        &url,
        &format!("  bearer_token = {:?}\n", file.display().to_string()),
    ));
    assert_result(&m, "success", 0);
    let req = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        req.to_ascii_lowercase()
            .contains("authorization: bearer fr0m-file\r\n"),
        "{req}"
    );
}

/// Like Go's transport, wk-agent asks for gzip and decodes it: the body is matched and
/// counted decoded (`content_length` is the decoded size, as in Telegraf).
#[test]
fn gzip_answers_are_decoded() {
    use std::io::Write as _;
    let body = "status ok, ".repeat(100);
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(body.as_bytes()).unwrap();
    let gz = enc.finish().unwrap();
    let (url, rx) = serve_with(move |s| {
        let req = read_request(s);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            gz.len()
        );
        let _ = s.write_all(head.as_bytes());
        let _ = s.write_all(&gz);
        req
    });
    let m = gather_one(&conf(
        &url,
        "  response_string_match = '^(status ok, )+$'\n",
    ));
    assert_result(&m, "success", 0);
    assert_eq!(int(&m, "response_string_match"), 1);
    assert_eq!(int(&m, "content_length"), body.len() as i64);
    let req = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        req.to_ascii_lowercase().contains("accept-encoding: gzip"),
        "{req}"
    );
}

#[test]
fn header_tags_and_body_field() {
    let (url, _rx) = serve(hello);
    let m = gather_one(&conf(
        &url,
        "  response_body_field = \"body\"\n  http_header_tags = {\"X-Backend\" = \"backend\"}\n",
    ));
    assert_eq!(m.tag("backend"), Some("b1"));
    assert_eq!(string(&m, "body"), "hello, world: status ok");
    assert_result(&m, "success", 0);
}

#[test]
fn one_line_per_url_in_order() {
    let (a, _ra) = serve(hello);
    let (b, _rb) = serve(five_hundred);
    let ms = gather(&format!(
        "[[inputs.http_response]]\n  urls = [\"{a}/x\", \"{b}/y\"]\n"
    ));
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[0].tag("server"), Some(format!("{a}/x").as_str()));
    assert_eq!(int(&ms[0], "http_response_code"), 200);
    assert_eq!(ms[1].tag("server"), Some(format!("{b}/y").as_str()));
    assert_eq!(int(&ms[1], "http_response_code"), 500);
}

/// `response_string_match` is a regular expression, as in Telegraf: anchors and classes
/// work against a real answer, and a pattern that does not compile is a config error.
#[test]
fn string_match_is_a_regex_and_a_bad_one_is_a_config_error() {
    let (url, _rx) = serve(hello);
    let m = &gather(&conf(
        &url,
        "  response_string_match = '^hel+o, \\w+: status (ok|up)$'\n",
    ))[0];
    assert_eq!(int(m, "response_string_match"), 1);
    let m = &gather(&conf(&url, "  response_string_match = '^status ok'\n"))[0];
    assert_eq!(
        int(m, "response_string_match"),
        0,
        "anchored: no match mid-body"
    );

    let Err(e) = super::try_plan(
        "[[inputs.http_response]]\n  response_string_match = \"(unclosed\"\n  interface = \"eth0\"\n",
    ) else {
        panic!("a bad regex loaded")
    };
    let errors: Vec<String> = e.errors.iter().map(|d| d.to_string()).collect();
    assert!(
        errors.iter().any(|w| w.contains("telegraf.conf:2:")
            && w.contains("response_string_match")
            && w.contains("not a valid regular expression")),
        "{errors:?}"
    );
    // Options wk-agent does not implement warn.
    let plan = super::plan("[[inputs.http_response]]\n  interface = \"eth0\"\n");
    let warnings: Vec<String> = plan.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("interface") && w.contains("does not implement")),
        "{warnings:?}"
    );
}

/// TLS: a self-signed certificate for 127.0.0.1 is trusted through `tls_ca`, rejected
/// without it (connection_failed, as a Go x509 error is), accepted with insecure_skip_verify.
#[cfg(feature = "tls")]
#[test]
fn https_with_tls_ca_and_insecure_skip_verify() {
    use std::process::{Command, Stdio};
    if Command::new("openssl").arg("version").output().is_err() {
        wk_core::skip!("no openssl binary (Debian package openssl)");
    }
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let port = free_port();
    let _server = wk_core::testing::KillOnDrop(
        Command::new("openssl")
            .args(["s_server", "-www", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Ready when it accepts a connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("https://127.0.0.1:{port}/");
    let m = gather_one(&conf(&url, &format!("  tls_ca = \"{}\"\n", cert.display())));
    assert_eq!(int(&m, "http_response_code"), 200);
    assert_result(&m, "success", 0);
    let m = gather_one(&conf(&url, ""));
    assert_result(&m, "connection_failed", 3);
    assert!(m.tag("status_code").is_none());
    let m = gather_one(&conf(&url, "  insecure_skip_verify = true\n"));
    assert_eq!(int(&m, "http_response_code"), 200);
    assert_result(&m, "success", 0);
}

/// A CONNECT proxy on 127.0.0.1 that answers the tunnelled request itself.
fn connect_proxy() -> (String, Receiver<(String, String)>) {
    serve_with(|s| {
        let connect = read_request(s);
        let _ = s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
        let inner = read_request(s);
        let _ = s.write_all(reply("200 OK", "", "via proxy").as_bytes());
        (connect, inner)
    })
}

#[test]
fn http_proxy_option_tunnels_through_the_proxy() {
    // The name cannot resolve: only the proxy can answer.
    let (proxy, rx) = connect_proxy();
    let m = gather_one(&conf(
        "http://nonexistent.invalid/page",
        &format!("  http_proxy = \"{proxy}\"\n  response_string_match = \"via proxy\"\n"),
    ));
    assert_eq!(int(&m, "http_response_code"), 200);
    assert_eq!(int(&m, "response_string_match"), 1);
    assert_result(&m, "success", 0);
    let (connect, inner) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        connect.starts_with("CONNECT nonexistent.invalid:80 HTTP/1.1\r\n"),
        "{connect}"
    );
    assert!(inner.starts_with("GET /page HTTP/1.1\r\n"), "{inner}");
}
