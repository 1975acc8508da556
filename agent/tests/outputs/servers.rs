//! Real database servers for output tests: `influxd` (InfluxDB 1.x, Debian package `influxdb`)
//! and `victoria-metrics` (Debian package `victoria-metrics`), each on a free loopback port
//! with its data in a temp dir, started and awaited by polling their health endpoint, killed
//! on drop. A missing binary fails the test with a clear message, unless WK_SKIP_SERVERS=1.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use wk_core::testing::KillOnDrop;

/// How long a server may take to answer its health check.
const STARTUP: Duration = Duration::from_secs(30);

pub use wk_core::testing::{binary, free_port, free_ports};

/// A plain blocking HTTP client for the tests' own queries (loopback only: it accepts the
/// tests' self-signed certificates).
pub fn http() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .disable_verification(true)
        .build();
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .proxy(None)
        .tls_config(tls)
        .build();
    ureq::Agent::new_with_config(config)
}

/// GET `url`: (status, body), or None when nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    let mut r = http().get(url).call().ok()?;
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    Some((status, body))
}

/// Starts the server `cmd` (stdin closed, stdout and stderr appended to `log`) and waits
/// until `ready()`; one that exits first or is not ready within [`STARTUP`] fails the test
/// with its log.
pub fn start_server(cmd: &mut Command, log: &Path, ready: impl FnMut() -> bool) -> KillOnDrop {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup log"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut child = KillOnDrop(child);
    let what = cmd.get_program().to_string_lossy().into_owned();
    child.wait_ready(&what, STARTUP, ready, || {
        std::fs::read_to_string(log).unwrap_or_default()
    });
    child
}

/// Ready when `url` answers with status `want`.
fn answers(url: String, want: u16) -> impl FnMut() -> bool {
    move || get(&url).is_some_and(|(status, _)| status == want)
}

/// An `influxd` (1.x) with its own config, data and port.
pub struct Influxd {
    /// First, so that the server is killed before its directory is removed.
    child: Option<KillOnDrop>,
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    scheme: &'static str,
}

impl Influxd {
    /// Starts a fresh server; None when skipped (see [`binary`]).
    pub fn start() -> Option<Influxd> {
        Self::start_with("")
    }

    /// Starts a fresh server serving HTTPS with a new self-signed certificate for 127.0.0.1
    /// signed by a new test CA (made with the `openssl` command); returns it and the CA's path.
    pub fn start_tls() -> Option<(Influxd, PathBuf)> {
        let openssl = binary("openssl", "openssl")?;
        let certs = tempfile::tempdir().expect("tempdir").keep();
        let (ca, ca_key) = (certs.join("ca.pem"), certs.join("ca.key"));
        let (cert, key, csr) = (
            certs.join("cert.pem"),
            certs.join("key.pem"),
            certs.join("leaf.csr"),
        );
        let ext = certs.join("ext.cnf");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write ext.cnf");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let p = |p: &PathBuf| p.display().to_string();
        let steps: Vec<Vec<String>> = vec![
            [
                &["req", "-x509"][..],
                &ec,
                &["-days", "2", "-subj", "/CN=wk-test-ca"],
            ]
            .concat()
            .iter()
            .map(|s| s.to_string())
            .chain(["-keyout".into(), p(&ca_key), "-out".into(), p(&ca)])
            .collect(),
            [&["req"][..], &ec, &["-subj", "/CN=127.0.0.1"]]
                .concat()
                .iter()
                .map(|s| s.to_string())
                .chain(["-keyout".into(), p(&key), "-out".into(), p(&csr)])
                .collect(),
            ["x509", "-req", "-days", "2", "-CAcreateserial"]
                .iter()
                .map(|s| s.to_string())
                .chain([
                    "-in".into(),
                    p(&csr),
                    "-CA".into(),
                    p(&ca),
                    "-CAkey".into(),
                    p(&ca_key),
                    "-extfile".into(),
                    p(&ext),
                    "-out".into(),
                    p(&cert),
                ])
                .collect(),
        ];
        for args in steps {
            wk_core::testing::run_ok(Command::new(&openssl).args(&args).stdin(Stdio::null()));
        }
        let extra = format!(
            "  https-enabled = true\n  https-certificate = \"{}\"\n  https-private-key = \"{}\"",
            cert.display(),
            key.display()
        );
        let mut s = Self::prepare(&extra)?;
        s.scheme = "https";
        s.run();
        Some((s, ca))
    }

    /// Starts a fresh server with extra lines in its `[http]` section.
    pub fn start_with(http_extra: &str) -> Option<Influxd> {
        let mut s = Self::prepare(http_extra)?;
        s.run();
        Some(s)
    }

    fn prepare(http_extra: &str) -> Option<Influxd> {
        let bin = binary("influxd", "influxdb")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let [port, rpc] = free_ports::<2>();
        let d = dir.path().display();
        let conf = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"

[meta]
  dir = "{d}/meta"
  logging-enabled = false

[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false

[retention]
  enabled = false

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
{http_extra}

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false
"#
        );
        std::fs::write(dir.path().join("influxdb.conf"), conf).expect("write influxdb.conf");
        Some(Influxd {
            child: None,
            dir,
            bin,
            port,
            scheme: "http",
        })
    }

    fn run(&mut self) {
        let child = start_server(
            Command::new(&self.bin)
                .arg("-config")
                .arg(self.dir.path().join("influxdb.conf"))
                .env("HOME", self.dir.path()),
            &self.dir.path().join("influxd.log"),
            answers(format!("{}/ping", self.url()), 204),
        );
        self.child = Some(child);
    }

    /// Kills the server (the outage starts).
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }

    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// Runs InfluxQL `q` (POST /query, ns epochs) and returns the parsed JSON.
    pub fn query(&self, db: &str, q: &str) -> serde_json::Value {
        self.query_as("", "", db, q)
    }

    /// [`Influxd::query`] with credentials (`u`/`p` parameters) when `user` is not empty.
    pub fn query_as(&self, user: &str, password: &str, db: &str, q: &str) -> serde_json::Value {
        let url = format!("{}/query", self.url());
        let form = [("db", db), ("q", q), ("epoch", "ns")];
        let mut req = http().post(&url);
        if !user.is_empty() {
            let cred = wk_agent::common::http::base64(format!("{user}:{password}").as_bytes());
            req = req.header("Authorization", format!("Basic {cred}"));
        }
        let mut r = req
            .send_form(form)
            .unwrap_or_else(|e| panic!("query {q:?}: {e}"));
        let body = r.body_mut().read_to_string().expect("query body");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        if let Some(err) = v["error"].as_str().or(v["results"][0]["error"].as_str()) {
            panic!("query {q:?} failed: {err}");
        }
        v
    }

    /// The rows of the first series of `q`'s answer, as column name -> value maps.
    pub fn rows(&self, db: &str, q: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        let v = self.query(db, q);
        let mut out = Vec::new();
        for series in v["results"][0]["series"].as_array().into_iter().flatten() {
            let cols: Vec<String> = series["columns"]
                .as_array()
                .expect("columns")
                .iter()
                .map(|c| c.as_str().unwrap_or_default().to_owned())
                .collect();
            for row in series["values"].as_array().into_iter().flatten() {
                let row = row.as_array().expect("row");
                out.push(cols.iter().cloned().zip(row.iter().cloned()).collect());
            }
        }
        out
    }

    /// `SHOW FIELD KEYS FROM m`: field name -> InfluxDB type (float, integer, string, boolean).
    pub fn field_types(&self, db: &str, measurement: &str) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .rows(db, &format!("SHOW FIELD KEYS FROM \"{measurement}\""))
            .into_iter()
            .map(|r| {
                (
                    r["fieldKey"].as_str().unwrap_or_default().to_owned(),
                    r["fieldType"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Writes raw line protocol (to set up a series before a test).
    pub fn write_raw(&self, db: &str, lines: &str) -> u16 {
        let url = format!("{}/write?db={db}", self.url());
        let mut r = http().post(&url).send(lines).expect("write");
        let _ = r.body_mut().read_to_string();
        r.status().as_u16()
    }
}

/// The array `key` of an export line, each element read by `read`.
fn column<T>(
    line: &serde_json::Value,
    key: &str,
    read: fn(&serde_json::Value) -> Option<T>,
) -> Vec<T> {
    line[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} array in {line}"))
        .iter()
        .map(|x| read(x).unwrap_or_else(|| panic!("{key}: {x} is not a number")))
        .collect()
}

/// A single-node VictoriaMetrics.
pub struct VictoriaMetrics {
    /// First, so that the server is killed before its data is removed.
    _child: KillOnDrop,
    /// Holds the data until the server is dropped.
    _dir: tempfile::TempDir,
    pub port: u16,
}

impl VictoriaMetrics {
    pub fn start() -> Option<VictoriaMetrics> {
        Self::start_with(&[])
    }

    /// Starts one with extra command-line flags.
    pub fn start_with(flags: &[&str]) -> Option<VictoriaMetrics> {
        let bin = binary("victoria-metrics", "victoria-metrics")?;
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = start_server(
            Command::new(bin)
                .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!(
                    "-storageDataPath={}",
                    dir.path().join("data").display()
                ))
                .arg("-loggerLevel=ERROR")
                .args(flags),
            &dir.path().join("vm.log"),
            answers(format!("http://127.0.0.1:{port}/health"), 200),
        );
        Some(VictoriaMetrics {
            _child: child,
            _dir: dir,
            port,
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's process id (the alerter's vmalert bench reads its CPU time).
    #[allow(dead_code)]
    pub fn pid(&self) -> u32 {
        self._child.0.id()
    }

    /// Every sample of the series matching `selector` (via /api/v1/export, after a forced
    /// flush): one (labels, values, timestamps_ms) per series, sorted by metric name.
    pub fn export(&self, selector: &str) -> Vec<(serde_json::Value, Vec<f64>, Vec<i64>)> {
        let _ = get(&format!("{}/internal/force_flush", self.url()));
        let url = format!(
            "{}/api/v1/export?match[]={}",
            self.url(),
            wk_agent::common::http::percent_encode(selector)
        );
        let (status, body) = get(&url).expect("export answers");
        assert_eq!(status, 200, "{body}");
        let mut out = Vec::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).expect("export line");
            let values = column(&v, "values", serde_json::Value::as_f64);
            let ts = column(&v, "timestamps", serde_json::Value::as_i64);
            out.push((v["metric"].clone(), values, ts));
        }
        out.sort_by(|a, b| {
            a.0["__name__"]
                .to_string()
                .cmp(&b.0["__name__"].to_string())
        });
        out
    }

    /// Polls [`VictoriaMetrics::export`] until it holds `samples` samples in total (data
    /// becomes searchable shortly after the write), or gives up after 10 s.
    pub fn export_until(
        &self,
        selector: &str,
        samples: usize,
    ) -> Vec<(serde_json::Value, Vec<f64>, Vec<i64>)> {
        let start = Instant::now();
        loop {
            let got = self.export(selector);
            let n: usize = got.iter().map(|s| s.1.len()).sum();
            if n >= samples || start.elapsed() > Duration::from_secs(10) {
                return got;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// What a [`LimitProxy`] saw: (request body bytes, status answered).
pub type ProxyLog = std::sync::Arc<std::sync::Mutex<Vec<(usize, u16)>>>;

/// A reverse proxy in front of a real server that refuses bodies over `limit` bytes with
/// HTTP 413, as nginx's `client_max_body_size` does, and forwards the others.
pub struct LimitProxy {
    pub port: u16,
    pub log: ProxyLog,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LimitProxy {
    pub fn start(upstream: String, limit: usize) -> LimitProxy {
        use std::sync::atomic::AtomicBool;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let log: ProxyLog = Default::default();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (log2, stop2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                if let Ok(c) = conn {
                    let _ = proxy_one(c, &upstream, limit, &log2);
                }
            }
        });
        LimitProxy { port, log, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for LimitProxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn proxy_one(
    mut c: std::net::TcpStream,
    upstream: &str,
    limit: usize,
    log: &ProxyLog,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
    let mut headers = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            let (k, v) = (k.trim().to_owned(), v.trim().to_owned());
            if k.eq_ignore_ascii_case("content-length") {
                len = v.parse().unwrap_or(0);
            }
            if ["content-type", "content-encoding", "authorization"]
                .contains(&k.to_ascii_lowercase().as_str())
            {
                headers.push((k, v));
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let (status, answer) = if len > limit {
        (413, String::new())
    } else {
        let mut req = http().post(format!("{upstream}{path}"));
        for (k, v) in &headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send(&body[..]) {
            Ok(mut resp) => (
                resp.status().as_u16(),
                resp.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(e) => (502, e.to_string()),
        }
    };
    if let Ok(mut l) = log.lock() {
        l.push((len, status));
    }
    write!(
        c,
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )?;
    c.flush()
}
