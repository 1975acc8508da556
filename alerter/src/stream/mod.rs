//! Stream mode: the alerter receives line protocol writes, as InfluxDB would, and keeps the
//! points in a bounded, compressed in-memory window ([`MemorySource`]) that the rules query,
//! saved to the state directory every `snapshot_interval` and at shutdown and loaded at start
//! ([`save_window`], [`load_window`]). For a single
//! host or a trial with no database: the agent's `[[outputs.influxdb]]` (or
//! `[[outputs.influxdb_v2]]`) points at this endpoint, exactly as Telegraf can write to
//! Kapacitor.
//!
//! Endpoints (HTTP/1.1 served by hyper, keep-alive; HTTPS with `tls_cert`/`tls_key`):
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /write` (InfluxDB v1), `POST /api/v2/write` (v2) | 204; line protocol body, gzip when `Content-Encoding: gzip`, `precision=` honoured; `db`/`bucket` ignored (one window) |
//! | `POST /query` with only `CREATE DATABASE` statements | 200 `{"results":[{"statement_id":0}]}` |
//! | any other `/query` | 400: stream mode answers no queries |
//! | `GET`/`HEAD /ping` | 204 (no token needed, as InfluxDB) |
//! | `GET /health` | 200 `{"status":"pass"}` (no token needed) |
//! | `/`, `/api/v1/…`, `/metrics` | the status page and API ([`Routes`], docs/api.md): no token on a loopback listener |
//!
//! Every other request needs the token: `Authorization: Token <t>` or `Bearer <t>`, Basic with
//! the token as password (any user name), or the `p=` query parameter; else 401 with InfluxDB's
//! JSON error, decided on the head: the body of a refused request is never read. Bodies larger
//! than `max_body_size` (also after decompression) get 413.
//!
//! Malformed lines: the good lines of the body are kept and the answer is 400 with InfluxDB 1.x's
//! partial-write text (`partial write: unable to parse '<line>': <why> … dropped=N`), so the
//! agent counts exactly the bad lines as rejected and does not retry the batch. At most ten
//! bad lines are quoted; the others are counted in `dropped=`, with the points refused for
//! being more than `max_future` ahead.
//!
//! Modules: [`conns`] decides which connections are served (pending ones give way), [`intake`]
//! turns a streamed body into points within the window's bounds, [`http`] is the request head
//! and answer as the routes see them. The threat model is in docs/security.md.

pub mod conns;
pub mod http;
pub mod intake;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::source::MemorySource;
use conns::{Admission, Ticket};
use http::{Head, Response};
use intake::{ChannelReader, Stop};
pub use intake::{Ingest, Intake, ingest};

/// How long a connection may sit idle between requests, or take to send a body.
/// The `[stream]` table: the alerter receives line protocol writes (InfluxDB v1 `/write` and
/// v2 `/api/v2/write`) and keeps the points in memory instead of querying a database.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSettings {
    /// Address to listen on (`host:port`).
    pub listen: String,
    /// The secret every request must carry (Token/Bearer header, Basic password or `p=`).
    pub token: String,
    /// How much data is kept: points older than now − window are forgotten.
    pub window: Duration,
    /// At most this many points are held; beyond it the oldest are dropped and counted.
    pub max_points: usize,
    /// Largest request body accepted (after gzip decompression too); larger → 413.
    pub max_body_size: u64,
    /// How long a connection may go without a request carrying the token (from accept, or
    /// from its last request) before it is closed.
    pub header_timeout: Duration,
    /// Connections open at once from one peer address.
    pub max_connections_per_ip: usize,
    /// Points dated more than this ahead of the receiver's clock are refused.
    pub max_future: Duration,
    /// At most this many bytes (estimated) are held; beyond it the oldest points are dropped.
    pub max_bytes: u64,
    /// Longest string field value accepted; a line with a longer one is refused.
    pub max_string_size: u64,
    /// PEM certificate chain and private key: the receiver speaks HTTPS when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// How often the window is saved to `state_dir` (and at shutdown), so that a restart
    /// keeps it; zero: never (the window lives in memory only).
    pub snapshot_interval: Duration,
}

/// Shortest token accepted: guessing one of 16 random characters is out of reach.
pub const MIN_TOKEN_LEN: usize = 16;

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            listen: "127.0.0.1:8186".into(),
            token: String::new(),
            window: Duration::from_secs(3600),
            max_points: 100_000,
            max_body_size: 32 * 1024 * 1024,
            header_timeout: Duration::from_secs(5),
            max_connections_per_ip: 32,
            max_future: Duration::from_secs(600),
            max_bytes: 256 * 1024 * 1024,
            max_string_size: 64 * 1024,
            tls_cert: None,
            tls_key: None,
            snapshot_interval: Duration::from_secs(60),
        }
    }
}

const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection has to finish once the receiver stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// After answering and closing its side, the receiver reads and discards at most this much
/// of what the client still sends, for at most [`LINGER_TIME`], so that the client reads the
/// answer (a 401 to an upload) instead of a connection reset (Apache's lingering close).
const LINGER_BYTES: usize = 256 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);
/// Bad lines quoted in a partial-write answer.
const QUOTED_ERRORS: usize = 10;
/// Largest `/query` body read (a form with a `CREATE DATABASE` statement).
const MAX_QUERY_BODY: u64 = 64 * 1024;
/// Connections served at once; beyond it new ones get 503 and are closed (a file descriptor
/// bound, far above what agents need: each keeps one connection per output).
pub const MAX_CONNECTIONS: usize = 512;
/// Connections without the token yet, of [`MAX_CONNECTIONS`] (the rest is kept for writers
/// that have it; see [`conns`]).
pub const MAX_PENDING: usize = MAX_CONNECTIONS / 2;

/// What a request for the extra [`Routes`] may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything (loopback, or the token).
    Full,
    /// Reads only (`read_only_without_token`).
    Read,
    /// Nothing: 401.
    Denied,
}

/// More routes served by the same listener: the status page and API ([`crate::api`]),
/// which this server knows only through this contract.
pub trait Routes: Send + Sync {
    /// Whether `path` is one of these routes.
    fn serves(&self, path: &str) -> bool;
    /// What the request may do: `loopback` says the listener is on loopback, `token` that
    /// the request carries the token.
    fn access(&self, head: &Head, loopback: bool, token: bool) -> Access;
    /// Largest body read for a change.
    fn max_body(&self) -> u64;
    /// The answer (the body already read when access is [`Access::Full`]).
    fn handle(&self, head: &Head, body: &[u8], access: Access) -> Response;
    /// The receiver's counters, in stream mode.
    fn stream_stats(&self, stats: Arc<Stats>);
}

/// Counters of the receiver (for logs and tests).
#[derive(Debug, Default)]
pub struct Stats {
    /// Write requests that stored at least their good lines.
    pub writes: AtomicU64,
    /// Points stored.
    pub points: AtomicU64,
    /// Lines refused as malformed.
    pub rejected_lines: AtomicU64,
    /// Requests refused for a missing or wrong token.
    pub unauthorized: AtomicU64,
    /// Points refused for a time more than `max_future` ahead.
    pub future_points: AtomicU64,
    /// Request body bytes read (only requests that carry the token have their body read).
    pub body_bytes: AtomicU64,
}

impl Shared {
    /// The digest of the token in force now.
    fn token(&self) -> [u8; 32] {
        *self
            .token_digest
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

struct Shared {
    auth_log: AuthFailures,
    /// Where writes go; `None`: query mode, the server only serves the API.
    store: Option<Arc<MemorySource>>,
    /// The status page and API, when served here.
    api: Option<Arc<dyn Routes>>,
    /// The listener is on a loopback address (the API needs no token then).
    loopback: bool,
    /// SHA-256 of the token: candidates are hashed too, so the compare leaks not even the
    /// token's length. Replaced by a reload ([`Receiver::set_token`]).
    token_digest: std::sync::RwLock<[u8; 32]>,
    max_points: usize,
    max_bytes: usize,
    max_string: usize,
    max_body: u64,
    header_timeout: Duration,
    window_ns: i64,
    max_future_ns: i64,
    stats: Arc<Stats>,
}

/// A running receiver; dropping it stops accepting connections and pruning, and asks the open
/// connections to finish their request and close.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stats: Arc<Stats>,
    admission: Arc<Admission>,
    tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Receiver {
    /// Binds `settings.listen` and serves writes into `store`, pruning it to `settings.window`
    /// (and `max_points`) in the background. Must be called inside a tokio runtime.
    pub async fn start(
        settings: &StreamSettings,
        store: Arc<MemorySource>,
    ) -> std::io::Result<Receiver> {
        Receiver::start_with(settings, Some(store), None).await
    }

    /// The alerter's one HTTP server: with a `store`, the stream receiver; with an `api`, the
    /// status page and API too (query mode: the API alone, `settings` giving the listener,
    /// token and TLS).
    pub async fn start_with(
        settings: &StreamSettings,
        store: Option<Arc<MemorySource>>,
        api: Option<Arc<dyn Routes>>,
    ) -> std::io::Result<Receiver> {
        let listener = TcpListener::bind(&settings.listen).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        if let Some(api) = &api
            && store.is_some()
        {
            api.stream_stats(stats.clone());
        }
        let shared = Arc::new(Shared {
            auth_log: AuthFailures::default(),
            store: store.clone(),
            api,
            loopback: addr.ip().is_loopback(),
            token_digest: std::sync::RwLock::new(digest(settings.token.as_bytes())),
            max_points: settings.max_points,
            max_bytes: usize::try_from(settings.max_bytes).unwrap_or(usize::MAX),
            max_string: usize::try_from(settings.max_string_size).unwrap_or(usize::MAX),
            max_body: settings.max_body_size,
            header_timeout: settings.header_timeout,
            window_ns: nanos(settings.window),
            max_future_ns: nanos(settings.max_future),
            stats: stats.clone(),
        });
        let (stop, stopped) = watch::channel(false);
        let admission = Admission::new(conns::Limits {
            max_total: MAX_CONNECTIONS,
            max_pending: MAX_PENDING,
            per_ip: settings.max_connections_per_ip,
        });
        let tls = match (&settings.tls_cert, &settings.tls_key) {
            (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
            _ => None,
        };
        let admit = admission.clone();
        let served = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((conn, peer)) => {
                        let Some(ticket) = admit.admit(peer.ip()) else {
                            tokio::spawn(refuse(conn, "too many connections"));
                            continue;
                        };
                        let shared = shared.clone();
                        let stopped = stopped.clone();
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            let _ = conn.set_nodelay(true);
                            let Some(tls) = tls else {
                                serve(conn, peer, shared, stopped, ticket).await;
                                return;
                            };
                            // The handshake counts against the header timeout, and gives way
                            // like any pending connection.
                            let handshake =
                                tokio::time::timeout(shared.header_timeout, tls.accept(conn));
                            let conn = tokio::select! {
                                r = handshake => match r {
                                    Ok(Ok(c)) => c,
                                    Ok(Err(e)) => {
                                        debug!(%peer, "stream: TLS handshake failed: {e}");
                                        return;
                                    }
                                    Err(_) => return,
                                },
                                _ = ticket.evicted.notified() => return,
                            };
                            serve(conn, peer, shared, stopped, ticket).await;
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        warn!("stream: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        let mut tasks = vec![accept];
        if let Some(store) = store {
            tasks.push(tokio::spawn(prune_loop(
                store,
                settings.window,
                settings.max_points,
            )));
        }
        Ok(Receiver {
            addr,
            shared: served,
            stats,
            admission,
            tasks,
            stop,
        })
    }

    /// Replaces the token (a reload): from the next request on only the new one is taken,
    /// on connections already open too.
    pub fn set_token(&self, token: &str) {
        *self
            .shared
            .token_digest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = digest(token.as_bytes());
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The receiver's counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Stops as dropping does, then waits for the open connections to finish what they are
    /// doing (at most [`SHUTDOWN_GRACE`] and a second): a write acknowledged by then is in the
    /// store, for the window's last save.
    pub async fn shutdown(self) {
        self.stop();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE + Duration::from_secs(1);
        while self.admission.open() != (0, 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Connections open now: (pending, authenticated), and how many pending ones were closed
    /// to make room since the start.
    pub fn connections(&self) -> (usize, usize, u64) {
        let (p, a) = self.admission.open();
        (p, a, self.admission.evicted.load(Ordering::Relaxed))
    }
}

impl Receiver {
    /// Stops accepting and pruning, and asks the open connections to finish and close.
    fn stop(&self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.stop.send(true);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The TLS side of the receiver, from PEM files (a certificate chain and its private key).
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: {e}", what.display()),
        )
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, &e))?;
    if certs.is_empty() {
        return Err(bad(cert, &"no certificate in the file"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(cert, &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| bad(key, &e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Answers 503 on a connection that is not served, without reading from it.
async fn refuse(conn: TcpStream, why: &str) {
    let body = format!("{{\"error\":{}}}", json_string(why));
    let text = format!(
        "HTTP/1.1 503 Service Unavailable\r\nX-Influxdb-Version: wk-alerter-stream\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut conn = conn;
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.write_all(text.as_bytes())).await;
}

/// The window's snapshot in the state directory.
pub const WINDOW_FILE: &str = "stream-window.snap";

/// The window saved by the last run. A missing file is an empty window; so is an unreadable
/// or damaged one, with a warning (a damaged file is kept aside as `….corrupt`, so that the
/// next snapshot does not erase the evidence).
pub fn load_window(path: &Path) -> MemorySource {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return MemorySource::new(),
        Err(e) => {
            warn!(
                "stream: cannot read the saved window {}: {e}; starting with an empty window",
                path.display()
            );
            return MemorySource::new();
        }
    };
    match MemorySource::from_snapshot(&bytes) {
        Ok(store) => {
            info!(
                points = store.len(),
                series = store.series_count(),
                "stream: window restored from {}",
                path.display()
            );
            store
        }
        Err(e) => {
            let kept = crate::state::set_aside(path);
            warn!(
                "stream: the saved window {} is unusable ({e}); starting with an empty window (the file {kept})",
                path.display()
            );
            MemorySource::new()
        }
    }
}

/// Writes the window to `path` (atomically: a crash leaves the previous snapshot). Returns
/// the bytes written. Blocking: call it off the async threads.
pub fn save_window(store: &MemorySource, path: &Path) -> Result<usize, String> {
    // One save at a time (the periodic one may still run when the last one starts): they
    // share the temporary file.
    static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SAVING.lock().unwrap_or_else(|e| e.into_inner());
    let bytes = store.snapshot();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    crate::state::write_atomic(path, &bytes).map_err(|(p, e)| format!("{}: {e}", p.display()))?;
    Ok(bytes.len())
}

/// Saves the window every `every`, on the blocking pool. A failure is logged once until a
/// save succeeds again.
pub async fn snapshot_loop(store: Arc<MemorySource>, path: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: nothing new to save yet.
    tick.tick().await;
    let mut failing = false;
    loop {
        tick.tick().await;
        let (s, p) = (store.clone(), path.clone());
        match tokio::task::spawn_blocking(move || save_window(&s, &p)).await {
            Ok(Ok(bytes)) => {
                if failing {
                    info!(
                        "stream: window snapshots written again ({})",
                        path.display()
                    );
                }
                failing = false;
                debug!(bytes, "stream: window saved");
            }
            Ok(Err(e)) => {
                if !failing {
                    warn!("stream: cannot save the window (a restart would lose it): {e}");
                }
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Forgets points older than the window, and reports points dropped for `max_points`.
async fn prune_loop(store: Arc<MemorySource>, window: Duration, max_points: usize) {
    let every = (window / 10).clamp(Duration::from_millis(100), Duration::from_secs(10));
    let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = 0;
    loop {
        tick.tick().await;
        let now = crate::clock::now_ns();
        let pruned = store.prune_before(now.saturating_sub(window_ns));
        if pruned > 0 {
            debug!(
                pruned,
                held = store.len(),
                "stream: points older than the window forgotten"
            );
        }
        let dropped = store.dropped();
        if dropped > reported {
            warn!(
                dropped = dropped - reported,
                total = dropped,
                max_points,
                "stream: max_points reached, oldest points dropped (raise max_points or shorten window)"
            );
            reported = dropped;
        }
    }
}

/// Serves one connection with hyper until it closes, is closed to make room, stays without
/// the token past the header timeout, or the receiver stops.
async fn serve<I>(
    io: I,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    ticket: Arc<Ticket>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = shared.header_timeout;
    let t = ticket.clone();
    let svc = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let ticket = t.clone();
        // Boxed: the connection must be Unpin to be polled without shutting the socket down.
        Box::pin(async move {
            let resp = handle(req, peer, &shared, &ticket).await;
            Ok::<_, Infallible>(resp.into_hyper())
        })
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(IO_TIMEOUT)
        .keep_alive(true);
    let mut conn = builder.serve_connection(TokioIo::new(io), svc);
    let pending_deadline = tokio::time::sleep(header_timeout);
    tokio::pin!(pending_deadline);
    let done = loop {
        tokio::select! {
            done = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => break done,
            // Closed to make room: dropped at once.
            _ = ticket.evicted.notified() => return,
            _ = &mut pending_deadline, if !ticket.is_authenticated() => {
                // Authenticated since the select began: the branch is off from now on.
                if ticket.is_authenticated() {
                    continue;
                }
                let next = ticket.last_request() + header_timeout;
                if next <= std::time::Instant::now() {
                    debug!(%peer, "stream: no request with the token within header_timeout, closed");
                    return;
                }
                pending_deadline.as_mut().reset(next.into());
            }
            _ = stop_requested(&mut stopped) => {
                std::pin::Pin::new(&mut conn).graceful_shutdown();
                let finish = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx));
                break tokio::time::timeout(SHUTDOWN_GRACE, finish).await.unwrap_or(Ok(()));
            }
        }
    };
    if done.is_ok() {
        linger(conn.into_parts().io.into_inner()).await;
    }
}

/// Returns once the receiver is asked to stop (or is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Closes our side, then discards what the client still sends (bounded) before the socket is
/// dropped: closing with unread data makes the kernel reset the connection, and the client
/// may lose the answer.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(mut io: I) {
    let _ = tokio::time::timeout(LINGER_TIME, async {
        if io.shutdown().await.is_err() {
            return;
        }
        let mut scratch = [0u8; 8192];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Answers one request (its body is read only once the token is checked).
async fn handle(
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
    ticket: &Ticket,
) -> Response {
    ticket.request_seen();
    let (parts, body) = req.into_parts();
    let head = Head::new(&parts);
    let resp = route(&head, body, shared, ticket, peer).await;
    if resp.status >= 400 {
        debug!(%peer, method = %head.method, path = %head.path, status = resp.status, "stream: {}", resp.body);
    }
    resp
}

async fn route(
    head: &Head,
    body: Incoming,
    shared: &Shared,
    ticket: &Ticket,
    peer: SocketAddr,
) -> Response {
    let v2 = head.path.starts_with("/api/v2/");
    let method = head.method.as_str();
    if let Some(api) = &shared.api
        && api.serves(&head.path)
    {
        return serve_api(api, head, body, shared, ticket, peer).await;
    }
    if shared.store.is_none() && head.path != "/ping" && head.path != "/health" {
        return error_v1(404, "path not found (see docs/api.md)");
    }
    match head.path.as_str() {
        "/ping" => match method {
            "GET" | "HEAD" => Response::new(204, ""),
            _ => method_not_allowed(v2),
        },
        "/health" => match method {
            "GET" | "HEAD" => Response::new(
                200,
                r#"{"name":"wk-alerter","message":"ready for writes","status":"pass"}"#,
            ),
            _ => method_not_allowed(v2),
        },
        "/write" | "/api/v2/write" | "/query" => {
            if !authorized(head, &shared.token()) {
                shared.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = shared.auth_log.failed(peer.ip(), std::time::Instant::now()) {
                    warn!(
                        peer = %peer.ip(),
                        refused = n,
                        "stream: requests without a valid token refused (logged at most once a minute per peer)"
                    );
                }
                // Decided on the head: the body is never read, so the connection cannot be
                // reused when one follows (hyper drops what it already buffered, at most one
                // read buffer).
                return if has_body(head) {
                    unauthorized(v2).closing()
                } else {
                    unauthorized(v2)
                };
            }
            ticket.authenticate();
            match (head.path.as_str(), method) {
                ("/query", "GET" | "POST") => match read_body(body, MAX_QUERY_BODY, shared).await {
                    Ok(b) => query(head, &b),
                    Err(resp) => resp,
                },
                ("/query", _) => method_not_allowed(v2),
                (_, "POST") => {
                    if declared_length(head).is_some_and(|n| n > shared.max_body) {
                        // The body is not read: the connection cannot be reused.
                        return too_large(v2, shared.max_body).closing();
                    }
                    write(head, body, shared, v2).await
                }
                _ => method_not_allowed(v2),
            }
        }
        _ => {
            if v2 {
                error_v2(404, "path not found (stream mode answers /api/v2/write)")
            } else {
                error_v1(
                    404,
                    "path not found (stream mode answers /write, /query, /ping)",
                )
            }
        }
    }
}

/// A request for the status page or API: access decided on the head (loopback listener, the
/// token, `read_only_without_token`), then the body read (bounded) for changes.
async fn serve_api(
    api: &Arc<dyn Routes>,
    head: &Head,
    body: Incoming,
    shared: &Shared,
    ticket: &Ticket,
    peer: SocketAddr,
) -> Response {
    let token = authorized(head, &shared.token());
    let access = api.access(head, shared.loopback, token);
    if token {
        ticket.authenticate();
    }
    if access == Access::Denied {
        shared.stats.unauthorized.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = shared.auth_log.failed(peer.ip(), std::time::Instant::now()) {
            warn!(
                peer = %peer.ip(),
                refused = n,
                "api: requests without a valid token refused (logged at most once a minute per peer)"
            );
        }
    }
    let reading = matches!(head.method.as_str(), "GET" | "HEAD");
    let bytes = if reading || access != Access::Full {
        Vec::new()
    } else {
        match read_body(body, api.max_body(), shared).await {
            Ok(b) => b,
            Err(resp) => return resp,
        }
    };
    // Off the two async workers: changes write silences.json (a lock, fsync) and the page
    // reads it.
    let (api_owned, owned) = (api.clone(), head.clone());
    let resp = tokio::task::spawn_blocking(move || api_owned.handle(&owned, &bytes, access))
        .await
        .unwrap_or_else(|e| error_v1(500, &format!("the request failed: {e}")));
    if !reading && access != Access::Full && has_body(head) {
        // The body was not read: the connection cannot be reused.
        return resp.closing();
    }
    resp
}

/// Failed authentications per peer, logged at most once a minute per peer with the count.
#[derive(Debug, Default)]
struct AuthFailures(
    std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (std::time::Instant, u64)>>,
);

impl AuthFailures {
    const EVERY: Duration = Duration::from_secs(60);
    /// Peers remembered; beyond it the ones quiet for a minute are forgotten.
    const PEERS: usize = 4096;

    /// Records a failure; returns the count to log (this one and those not logged yet) when
    /// a line is due.
    fn failed(&self, ip: std::net::IpAddr, now: std::time::Instant) -> Option<u64> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= Self::PEERS && !m.contains_key(&ip) {
            m.retain(|_, (at, _)| now.duration_since(*at) < Self::EVERY);
            if m.len() >= Self::PEERS {
                // Still full (a flood from many addresses): count, do not log.
                return None;
            }
        }
        match m.get_mut(&ip) {
            Some((at, pending)) if now.duration_since(*at) < Self::EVERY => {
                *pending += 1;
                None
            }
            Some((at, pending)) => {
                let n = *pending + 1;
                *at = now;
                *pending = 0;
                Some(n)
            }
            None => {
                m.insert(ip, (now, 0));
                Some(1)
            }
        }
    }
}

/// Whether a body follows the head.
fn has_body(head: &Head) -> bool {
    head.header("transfer-encoding").is_some() || declared_length(head).is_some_and(|n| n > 0)
}

/// The `Content-Length` of a request, when it has one.
fn declared_length(head: &Head) -> Option<u64> {
    head.header("content-length")?.trim().parse().ok()
}

/// Reads a whole body of at most `max` bytes within [`IO_TIMEOUT`]; the error is the answer.
async fn read_body(mut body: Incoming, max: u64, shared: &Shared) -> Result<Vec<u8>, Response> {
    let read = async {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| error_v1(400, &format!("bad body: {e}")).closing())?;
            if let Ok(data) = frame.into_data() {
                shared
                    .stats
                    .body_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if out.len() as u64 + data.len() as u64 > max {
                    return Err(error_v1(413, "body too large").closing());
                }
                out.extend_from_slice(&data);
            }
        }
        Ok(out)
    };
    match tokio::time::timeout(IO_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(error_v1(408, "request body not received in time").closing()),
    }
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

fn digest(b: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(b).into()
}

/// True when the request carries the token.
fn authorized(head: &Head, token_digest: &[u8; 32]) -> bool {
    let mut given: Vec<String> = Vec::new();
    if let Some(auth) = head.header("authorization") {
        let (scheme, rest) = auth.split_once(' ').unwrap_or((auth, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
            given.push(rest.to_owned());
        } else if scheme.eq_ignore_ascii_case("basic")
            && let Some(password) = http::basic_password(rest)
        {
            given.push(password);
        }
    }
    if let Some(p) = head.param("p") {
        given.push(p.to_owned());
    }
    // Every candidate is compared (no early exit on the first), each in constant time; an
    // empty candidate never matches.
    given
        .iter()
        .fold(subtle::Choice::from(0), |ok, g| {
            ok | (digest(g.as_bytes()).ct_eq(token_digest)
                & subtle::Choice::from(u8::from(!g.is_empty())))
        })
        .into()
}

/// `/query`: only `CREATE DATABASE` (what the agent sends before its first write) is answered.
fn query(head: &Head, body: &[u8]) -> Response {
    let mut q = head.param("q").map(str::to_owned);
    if q.is_none() {
        let form = String::from_utf8_lossy(body);
        q = http::parse_query(form.trim())
            .into_iter()
            .find(|(k, _)| k == "q")
            .map(|(_, v)| v);
    }
    let Some(q) = q else {
        return error_v1(400, "missing required parameter \"q\"");
    };
    let statements: Vec<&str> = q
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let create = |s: &str| {
        let words: Vec<&str> = s.split_whitespace().take(2).collect();
        words.len() == 2
            && words[0].eq_ignore_ascii_case("create")
            && words[1].eq_ignore_ascii_case("database")
    };
    if !statements.is_empty() && statements.iter().all(|s| create(s)) {
        let results: Vec<String> = (0..statements.len())
            .map(|i| format!("{{\"statement_id\":{i}}}"))
            .collect();
        return Response::new(200, format!("{{\"results\":[{}]}}", results.join(",")));
    }
    error_v1(
        400,
        "wk-alerter stream mode answers no queries (it only receives writes; CREATE DATABASE is accepted and ignored)",
    )
}

/// A time precision as nanoseconds per unit.
fn precision(head: &Head, v2: bool) -> Result<i64, String> {
    let p = head.param("precision").unwrap_or("");
    let ns = match p {
        "" | "n" | "ns" => 1,
        "u" | "us" | "µ" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" if !v2 => 60_000_000_000,
        "h" if !v2 => 3_600_000_000_000,
        other => return Err(format!("invalid precision {:?}", http::truncate(other, 10))),
    };
    Ok(ns)
}

async fn write(head: &Head, body: Incoming, shared: &Shared, v2: bool) -> Response {
    let err = |status, msg: &str| {
        if v2 {
            error_v2(status, msg)
        } else {
            error_v1(status, msg)
        }
    };
    // Answers decided before the body is read: hyper drops what it already buffered of the
    // body and keeps the connection when that was all of it, else closes it.
    let unit = match precision(head, v2) {
        Ok(u) => u,
        Err(e) => return err(400, &e),
    };
    let gzip = match head
        .header("content-encoding")
        .map(|e| e.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "identity") => false,
        Some("gzip") => true,
        Some(other) => {
            return err(
                415,
                &format!(
                    "unsupported Content-Encoding {:?} (gzip or identity)",
                    http::truncate(other, 20)
                ),
            );
        }
    };
    let now = crate::clock::now_ns();
    let intake = Intake {
        unit,
        now,
        max_time: now.saturating_add(shared.max_future_ns),
        window_start: now.saturating_sub(shared.window_ns),
        max_string: shared.max_string,
        max_points: shared.max_points,
        max_bytes: shared.max_bytes,
        max_body: shared.max_body,
    };
    let Some(store) = shared.store.clone() else {
        return err(404, "this listener receives no writes (query mode)");
    };
    // Decompression and parsing are CPU work: on the blocking pool, fed chunk by chunk.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let parse = tokio::task::spawn_blocking(move || {
        intake::ingest_reader(ChannelReader::new(rx), gzip, &intake, &store)
    });
    let complete = pump(body, tx, shared).await;
    let (outcome, stop) = match parse.await {
        Ok(r) => r,
        Err(e) => return err(500, &format!("write failed: {e}")).closing(),
    };
    let stats = &shared.stats;
    stats
        .points
        .fetch_add(outcome.written as u64, Ordering::Relaxed);
    if outcome.written > 0 {
        stats.writes.fetch_add(1, Ordering::Relaxed);
    }
    stats
        .rejected_lines
        .fetch_add(outcome.bad as u64, Ordering::Relaxed);
    stats
        .future_points
        .fetch_add(outcome.future as u64, Ordering::Relaxed);
    // A body not read to its end leaves the connection unusable.
    let done = |r: Response| if complete { r } else { r.closing() };
    match stop {
        None => {}
        Some(Stop::TooLarge) => return done(too_large(v2, shared.max_body)),
        Some(Stop::Gzip(e)) => return done(err(400, &format!("invalid gzip body: {e}"))),
        Some(Stop::TimedOut) => return err(408, "request body not received in time").closing(),
        Some(Stop::Aborted(e)) => return err(400, &format!("bad body: {e}")).closing(),
    }
    match refusal(&outcome) {
        None => done(Response::new(204, "")),
        Some(msg) => done(err(400, &msg)),
    }
}

/// Feeds the body to the parser, within [`IO_TIMEOUT`] and `max_body`; true when it was read
/// to its end.
async fn pump(
    mut body: Incoming,
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    shared: &Shared,
) -> bool {
    use std::io::{Error, ErrorKind};
    let deadline = tokio::time::Instant::now() + IO_TIMEOUT;
    let mut total: u64 = 0;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(None) => return true,
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => {
                let _ = tx
                    .send(Err(Error::new(ErrorKind::ConnectionAborted, e)))
                    .await;
                return false;
            }
            Err(_) => {
                let _ = tx.send(Err(ErrorKind::TimedOut.into())).await;
                return false;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        shared
            .stats
            .body_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        total += data.len() as u64;
        if total > shared.max_body {
            let _ = tx.send(Err(ErrorKind::FileTooLarge.into())).await;
            return false;
        }
        if tx.send(Ok(data)).await.is_err() {
            // The parser stopped (gzip error, size): the rest is not read.
            return false;
        }
    }
}

/// InfluxDB 1.x's answer to a write that refused lines: "partial write: <parse errors>
/// dropped=N" when some points were stored, the parse errors alone when none was, and
/// "partial write: points beyond retention policy dropped=N" for points refused by time.
/// wk-agent's influxdb output counts the quoted lines plus `dropped=` as rejected.
fn refusal(o: &Ingest) -> Option<String> {
    if o.bad == 0 && o.future == 0 {
        return None;
    }
    let unlisted = o.bad - o.errors.len();
    let mut msg = o.errors.join("\n");
    if o.future > 0 {
        if !msg.is_empty() {
            msg.push('\n');
        }
        msg += "points beyond retention policy (more than max_future ahead)";
    }
    if o.written > 0 || o.future > 0 {
        msg = format!("partial write: {msg}");
    }
    if unlisted + o.future > 0 {
        msg = format!("{msg} dropped={}", unlisted + o.future);
    }
    Some(msg)
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// InfluxDB 1.x's error body.
fn error_v1(status: u16, msg: &str) -> Response {
    Response::new(status, format!("{{\"error\":{}}}", json_string(msg)))
}

/// InfluxDB 2.x's error body.
fn error_v2(status: u16, msg: &str) -> Response {
    let code = match status {
        401 => "unauthorized",
        404 => "not found",
        405 => "method not allowed",
        413 => "request too large",
        415 => "unsupported media type",
        500 => "internal error",
        _ => "invalid",
    };
    Response::new(
        status,
        format!(
            "{{\"code\":{},\"message\":{}}}",
            json_string(code),
            json_string(msg)
        ),
    )
}

fn unauthorized(v2: bool) -> Response {
    if v2 {
        error_v2(401, "unauthorized access")
    } else {
        error_v1(401, "authorization failed")
    }
}

fn too_large(v2: bool, max: u64) -> Response {
    let msg = format!("request body larger than the limit of {max} bytes (max_body_size)");
    if v2 {
        error_v2(413, &msg)
    } else {
        error_v1(413, &msg)
    }
}

fn method_not_allowed(v2: bool) -> Response {
    if v2 {
        error_v2(405, "method not allowed")
    } else {
        error_v1(405, "method not allowed")
    }
}

/// Logs where the receiver listens (used by `wk-alerter run`).
pub fn log_listening(r: &Receiver, settings: &StreamSettings) {
    info!(
        listen = %r.local_addr(),
        window = ?settings.window,
        max_points = settings.max_points,
        "stream mode: receiving line protocol at {}://{}/write (InfluxDB v1) and /api/v2/write (v2)",
        if settings.tls_cert.is_some() { "https" } else { "http" },
        r.local_addr()
    );
    if !r.local_addr().ip().is_loopback() && settings.tls_cert.is_none() {
        warn!(
            listen = %r.local_addr(),
            "stream: listening off loopback over plain HTTP: the token and the data travel in clear (set tls_cert and tls_key)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(auth: Option<&str>, query: &str) -> Head {
        let mut headers = hyper::HeaderMap::new();
        if let Some(a) = auth {
            headers.insert("authorization", a.parse().unwrap());
        }
        Head {
            method: "POST".into(),
            path: "/write".into(),
            query: http::parse_query(query),
            headers,
        }
    }

    #[test]
    fn token_in_every_place_influx_clients_put_it() {
        let t = &digest(b"s3cret");
        assert!(authorized(&head(Some("Token s3cret"), ""), t));
        assert!(authorized(&head(Some("bearer s3cret"), ""), t));
        // Basic wk:s3cret
        assert!(authorized(&head(Some("Basic d2s6czNjcmV0"), ""), t));
        assert!(authorized(&head(None, "u=x&p=s3cret"), t));
        assert!(!authorized(&head(None, ""), t));
        assert!(!authorized(&head(Some("Token s3cre"), ""), t));
        assert!(!authorized(&head(Some("Basic !!!"), ""), t));
        assert!(!authorized(&head(Some("Token "), ""), &digest(b"")));
        assert!(!authorized(&head(None, "p="), &digest(b"")));
    }

    #[test]
    fn failed_auth_is_logged_once_a_minute_per_peer_with_the_count() {
        let log = AuthFailures::default();
        let t0 = std::time::Instant::now();
        let a = std::net::IpAddr::from([10, 0, 0, 1]);
        let b = std::net::IpAddr::from([10, 0, 0, 2]);
        assert_eq!(log.failed(a, t0), Some(1));
        assert_eq!(log.failed(b, t0), Some(1), "per peer");
        for s in 1..60 {
            assert_eq!(log.failed(a, t0 + Duration::from_secs(s)), None);
        }
        // The next line carries the 59 not logged and this one.
        assert_eq!(log.failed(a, t0 + Duration::from_secs(60)), Some(60));
        assert_eq!(log.failed(a, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn create_database_only() {
        let mut h = head(None, "q=CREATE+DATABASE+%22telegraf%22");
        assert_eq!(query(&h, b"").status, 200);
        h.query.clear();
        let r = query(&h, b"q=CREATE%20DATABASE%20%22x%22");
        assert_eq!(r.body, r#"{"results":[{"statement_id":0}]}"#);
        let r = query(&h, b"q=SELECT+*+FROM+cpu");
        assert_eq!(r.status, 400);
        assert!(r.body.contains("answers no queries"), "{}", r.body);
        assert_eq!(query(&h, b"").status, 400);
    }
}
