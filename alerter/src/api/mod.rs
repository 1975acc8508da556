//! The status page and the JSON API (docs/api.md), served by the alerter's one HTTP listener:
//! the stream receiver's in stream mode, `[http] listen` in query mode (the same server code,
//! [`crate::stream::Receiver`], without the write routes).
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /` | the status page (HTML, no JavaScript, refreshes itself) |
//! | `GET /api/v1/status` | counts: rules, firing, pending, silenced, … |
//! | `GET /api/v1/alerts` | alerts not OK now |
//! | `GET /api/v1/rules` | rule files, versions, last evaluation |
//! | `GET`/`POST /api/v1/silences`, `DELETE /api/v1/silences/ID`, `POST /api/v1/silences/ID/expire` | silences made at run time (the state dir's `silences.json`) |
//! | `GET /api/v1/notifications` | recent notifications and their delivery |
//! | `GET /api/v1/actions` | recent recovery actions |
//! | `GET /metrics` | the alerter's own counters, Prometheus text format |
//!
//! Access: a request with the token (the `[stream]` or `[http]` one, sent as the stream
//! receiver takes it) may do everything. Without it, on a loopback listener, a request whose
//! `Host` is a loopback name (a web page cannot reach it by DNS rebinding) and that no proxy
//! forwarded (no `Forwarded`, `X-Forwarded-For` or `X-Real-IP`) may read; it may change
//! things (silences) only with `loopback_writes_without_token = true` or when no token is
//! configured: a reverse proxy on the same host makes every request loopback. Elsewhere reads
//! need the token too unless `read_only_without_token = true`. Form posts from another origin
//! are refused (CSRF).

pub mod board;
pub mod client;
pub mod html;
pub mod metrics;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::Deserialize;
use serde_json::{Value as Json, json};
use tokio::sync::mpsc;

use crate::actions::engine::Engine;
use crate::notify::Router;
use crate::notify::silence_store as store;
pub use crate::stream::Access;
use crate::stream::http::{Head, Response};
use crate::template::format_rfc3339 as rfc3339;
use board::Board;

/// Largest request body the API reads (a silence).
pub const MAX_BODY: u64 = 64 * 1024;

/// The API's state: the board the scheduler publishes, the router and engine it reads, the
/// silence store it writes.
pub struct Api {
    board: Arc<Board>,
    router: Router,
    engine: Engine,
    state_dir: PathBuf,
    /// Asks the scheduler to rescan (it re-reads silences and re-notifies after an expiry).
    rescan: mpsc::UnboundedSender<crate::config::Reload>,
    open: std::sync::RwLock<Openness>,
    /// One writer of silences.json at a time.
    silences: Mutex<()>,
    /// The stream receiver's counters (stream mode), for `/metrics`.
    stream_stats: OnceLock<Arc<crate::stream::Stats>>,
}

/// Whether `path` is the API's (the rest is the stream receiver's).
pub fn is_api_path(path: &str) -> bool {
    path == "/" || path == "/metrics" || path.starts_with("/api/v1/")
}

impl crate::stream::Routes for Api {
    fn serves(&self, path: &str) -> bool {
        is_api_path(path)
    }
    fn access(&self, head: &Head, loopback: bool, token: bool) -> Access {
        Api::access(self, head, loopback, token)
    }
    fn max_body(&self) -> u64 {
        MAX_BODY
    }
    fn handle(&self, head: &Head, body: &[u8], access: Access) -> Response {
        Api::handle(self, head, body, access)
    }
    fn stream_stats(&self, stats: Arc<crate::stream::Stats>) {
        self.set_stream_stats(stats);
    }
}

/// What the API serves without the token (see the module's access rules).
#[derive(Debug, Clone, Copy, Default)]
pub struct Openness {
    /// Off loopback: reads without the token.
    pub read_only_without_token: bool,
    /// On loopback (not proxied): changes without the token.
    pub loopback_writes: bool,
}

/// Whether a `Host` header names this machine by a loopback name or address.
pub fn loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host else {
        // HTTP/1.0 clients without Host: not a browser.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A silence as the API takes it (JSON body or form fields).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    pub matchers: Vec<String>,
    /// How long from `starts` (or now), e.g. `2h`.
    #[serde(default)]
    pub duration: Option<String>,
    /// RFC 3339 end; instead of `duration`.
    #[serde(default)]
    pub ends: Option<String>,
    /// RFC 3339 start; default now.
    #[serde(default)]
    pub starts: Option<String>,
    pub comment: String,
    #[serde(default)]
    pub created_by: Option<String>,
}

fn json_response(status: u16, v: &Json) -> Response {
    Response::new(status, v.to_string()).header("cache-control", "no-store")
}

fn error(status: u16, msg: impl std::fmt::Display) -> Response {
    json_response(status, &json!({ "error": msg.to_string() }))
}

fn time_json(ns: i64) -> Json {
    if ns > 0 {
        Json::String(rfc3339(ns))
    } else {
        Json::Null
    }
}

/// A stored silence as the API shows it.
pub fn silence_json(s: &store::Stored, now: i64) -> Json {
    let state = if s.ends <= now {
        "expired"
    } else if s.starts.is_some_and(|t| t > now) {
        "pending"
    } else {
        "active"
    };
    json!({
        "id": s.id,
        "matchers": s.matchers,
        "starts": time_json(s.starts.unwrap_or(s.created)),
        "ends": time_json(s.ends),
        "comment": s.comment,
        "created_by": s.by,
        "created": time_json(s.created),
        "state": state,
    })
}

impl Api {
    /// The API over `board`, `router` and `engine`; `rescan` reaches the scheduler.
    pub fn new(
        board: Arc<Board>,
        router: Router,
        engine: Engine,
        state_dir: PathBuf,
        rescan: mpsc::UnboundedSender<crate::config::Reload>,
        open: Openness,
    ) -> Api {
        Api {
            board,
            router,
            engine,
            state_dir,
            rescan,
            open: std::sync::RwLock::new(open),
            silences: Mutex::new(()),
            stream_stats: OnceLock::new(),
        }
    }

    /// What is served without the token from now on (a reload).
    pub fn set_open(&self, open: Openness) {
        *self
            .open
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = open;
    }

    /// Shows the stream receiver's counters in `/metrics`.
    pub fn set_stream_stats(&self, stats: Arc<crate::stream::Stats>) {
        let _ = self.stream_stats.set(stats);
    }

    /// The board (tests, the server's log line).
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// What a request may do: `loopback` is whether the listener is on loopback, `token`
    /// whether the request carries the token.
    pub fn access(&self, head: &Head, loopback: bool, token: bool) -> Access {
        let reading = matches!(head.method.as_str(), "GET" | "HEAD");
        // A proxy on this host forwards what anyone sent it: not a local user.
        let proxied = ["forwarded", "x-forwarded-for", "x-real-ip"]
            .iter()
            .any(|h| head.header(h).is_some());
        let local = loopback && !proxied && loopback_host(head.header("host"));
        let open = *self
            .open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if token || (local && open.loopback_writes) {
            Access::Full
        } else if reading && (local || open.read_only_without_token) {
            Access::Read
        } else {
            Access::Denied
        }
    }

    /// Answers one request (its body read already, at most [`MAX_BODY`]).
    pub fn handle(&self, head: &Head, body: &[u8], access: Access) -> Response {
        let method = head.method.as_str();
        let reading = matches!(method, "GET" | "HEAD");
        if access == Access::Denied || (!reading && access != Access::Full) {
            let msg = if reading {
                "authorization failed: send the token (Authorization: Bearer TOKEN, or Basic \
                 with the token as password)"
            } else {
                "changes need the token (without it, only reading is allowed here)"
            };
            return error(401, msg).header("www-authenticate", "Basic realm=\"wk-alerter\"");
        }
        let now = crate::clock::now_ns();
        let path = head.path.as_str();
        match (method, path) {
            ("GET" | "HEAD", "/") => {
                Response::new(200, self.page(head, now, access == Access::Full))
                    .typed("text/html; charset=utf-8")
                    .header("cache-control", "no-store")
                    // Not in a frame of another page (a disguised click on its buttons), no script
                    // or anything fetched (the page has none), forms only to itself, and the
                    // `?p=TOKEN` of its address sent nowhere.
                    .header("x-frame-options", "DENY")
                    .header(
                        "content-security-policy",
                        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                     frame-ancestors 'none'; base-uri 'none'",
                    )
                    .header("x-content-type-options", "nosniff")
                    .header("referrer-policy", "no-referrer")
            }
            ("GET" | "HEAD", "/api/v1/status") => json_response(200, &self.status_json(now)),
            ("GET" | "HEAD", "/api/v1/alerts") => json_response(200, &self.alerts_json(now)),
            ("GET" | "HEAD", "/api/v1/rules") => json_response(200, &self.rules_json()),
            ("GET" | "HEAD", "/api/v1/notifications") => {
                json_response(200, &json!({ "notifications": self.notifications_json() }))
            }
            ("GET" | "HEAD", "/api/v1/actions") => {
                json_response(200, &json!({ "actions": self.actions_json() }))
            }
            ("GET" | "HEAD", "/metrics") => Response::new(200, self.metrics(now))
                .typed("text/plain; version=0.0.4; charset=utf-8"),
            ("GET" | "HEAD", "/api/v1/silences") => match store::load(&self.state_dir) {
                Ok(all) => json_response(
                    200,
                    &json!({ "silences": all.iter().map(|s| silence_json(s, now)).collect::<Vec<_>>() }),
                ),
                Err(e) => error(500, e),
            },
            ("POST", "/api/v1/silences") => self.create_silence(head, body, now),
            (m, p) if p.starts_with("/api/v1/silences/") => {
                let rest = &p["/api/v1/silences/".len()..];
                match (m, rest.strip_suffix("/expire")) {
                    ("DELETE", None) => self.expire_silence(head, rest, now),
                    ("POST", Some(id)) => self.expire_silence(head, id, now),
                    _ => error(
                        405,
                        "DELETE /api/v1/silences/ID or POST /api/v1/silences/ID/expire",
                    ),
                }
            }
            (_, "/" | "/metrics" | "/api/v1/status" | "/api/v1/alerts" | "/api/v1/rules")
            | (_, "/api/v1/notifications" | "/api/v1/actions" | "/api/v1/silences") => {
                error(405, "method not allowed")
            }
            _ => error(404, "not found (see docs/api.md)"),
        }
    }

    /// Whether a request is a form post (the page's, no JavaScript), answered by a redirect.
    fn is_form(head: &Head) -> bool {
        head.header("content-type")
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"))
    }

    /// Refuses a form post sent by a page of another origin (CSRF): browsers send `Origin`.
    fn cross_site(head: &Head) -> bool {
        let (Some(origin), Some(host)) = (head.header("origin"), head.header("host")) else {
            return head.header("sec-fetch-site") == Some("cross-site");
        };
        let origin_host = origin
            .split_once("://")
            .map_or(origin, |(_, rest)| rest)
            .trim_end_matches('/');
        !origin_host.eq_ignore_ascii_case(host)
    }

    /// Checks a change request: never from a page of another origin (a body-less POST is a
    /// "simple" request browsers send cross-site without asking); JSON
    /// (`application/json`) or a form.
    fn change_allowed(head: &Head) -> Result<bool, Response> {
        if Self::cross_site(head) {
            return Err(error(403, "request from a page of another origin refused"));
        }
        if Self::is_form(head) {
            return Ok(true);
        }
        match head.header("content-type") {
            Some(t) if t.starts_with("application/json") => Ok(false),
            // No body at all (DELETE, or POST …/expire from curl).
            None if head.method != "POST" || head.path.ends_with("/expire") => Ok(false),
            _ => Err(error(
                415,
                "send JSON (Content-Type: application/json) or a form",
            )),
        }
    }

    /// After a change: back to the page for a form (keeping a `?p=` token), else `ok`.
    fn done(head: &Head, form: bool, ok: Response) -> Response {
        if form {
            Response::new(303, "").header("location", format!("/{}", html::token_query(head)))
        } else {
            ok
        }
    }

    fn create_silence(&self, head: &Head, body: &[u8], now: i64) -> Response {
        let form = match Self::change_allowed(head) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let new: NewSilence = if form {
            let mut n = NewSilence::default();
            for (k, v) in crate::stream::http::parse_query(&String::from_utf8_lossy(body)) {
                let v = v.trim().to_owned();
                match k.as_str() {
                    "matchers" => n
                        .matchers
                        .extend(crate::notify::silence::split_matchers(&v)),
                    "matcher" if !v.is_empty() => n.matchers.push(v),
                    "duration" if !v.is_empty() => n.duration = Some(v),
                    "ends" if !v.is_empty() => n.ends = Some(v),
                    "starts" if !v.is_empty() => n.starts = Some(v),
                    "comment" => n.comment = v,
                    "created_by" if !v.is_empty() => n.created_by = Some(v),
                    _ => {}
                }
            }
            n
        } else {
            match serde_json::from_slice(body) {
                Ok(n) => n,
                Err(e) => return error(400, format!("invalid silence: {e}")),
            }
        };
        match self.add(&new, form, now) {
            Ok(s) => Self::done(head, form, json_response(200, &silence_json(&s, now))),
            Err((status, e)) => error(status, e),
        }
    }

    fn add(&self, n: &NewSilence, form: bool, now: i64) -> Result<store::Stored, (u16, String)> {
        use crate::notify::text::parse_rfc3339;
        if n.comment.trim().is_empty() {
            return Err((400, "a comment is required: why, and who asked".into()));
        }
        let starts = n
            .starts
            .as_deref()
            .map(|t| parse_rfc3339(t).map_err(|e| (400, format!("starts: {e}"))))
            .transpose()?;
        let ends = match (&n.duration, &n.ends) {
            (Some(d), None) => {
                let d = wk_core::values::parse_duration(d)
                    .map_err(|e| (400, format!("duration: {e}")))?;
                starts
                    .unwrap_or(now)
                    .saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            }
            (None, Some(t)) => parse_rfc3339(t).map_err(|e| (400, format!("ends: {e}")))?,
            _ => {
                return Err((
                    400,
                    "give either duration (e.g. \"2h\") or ends (RFC 3339)".into(),
                ));
            }
        };
        let by = n
            .created_by
            .clone()
            .unwrap_or_else(|| if form { "status page" } else { "api" }.to_owned());
        let s = {
            let _one = self.silences.lock().unwrap_or_else(PoisonError::into_inner);
            store::add(
                &self.state_dir,
                &n.matchers,
                starts,
                ends,
                &n.comment,
                &by,
                now,
            )
            .map_err(|e| (if e.is_bad_request() { 400 } else { 500 }, e.to_string()))?
        };
        tracing::info!(id = %s.id, matchers = %s.matchers.join(","), by = %s.by, "silence added through the API");
        self.apply_silences();
        Ok(s)
    }

    fn expire_silence(&self, head: &Head, id: &str, now: i64) -> Response {
        let form = match Self::change_allowed(head) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let r = {
            let _one = self.silences.lock().unwrap_or_else(PoisonError::into_inner);
            store::expire(&self.state_dir, id, now)
        };
        match r {
            Ok(s) => {
                tracing::info!(id = %s.id, "silence expired through the API");
                self.apply_silences();
                Self::done(head, form, json_response(200, &silence_json(&s, now)))
            }
            Err(e @ store::SilenceError::NotFound { .. }) => error(404, e.to_string()),
            Err(e) => error(500, e.to_string()),
        }
    }

    /// The router sees a change at once; the scheduler's rescan re-notifies what an expired
    /// silence muted.
    fn apply_silences(&self) {
        match crate::notify::silence_store::router_silences(&self.state_dir) {
            Ok(s) => self.router.set_run_silences(s),
            Err(e) => tracing::warn!("cannot re-read the silences: {e}"),
        }
        let _ = self.rescan.send(None);
    }

    fn status_json(&self, now: i64) -> Json {
        let b = self.board.get();
        json!({
            // The silence command checks it talks to the alerter of its config.
            "state_dir": std::fs::canonicalize(&self.state_dir)
                .unwrap_or_else(|_| self.state_dir.clone()),
            "started": time_json(b.started),
            "source": b.source,
            "counts": b.counts(&self.router, now),
            "url": self.board.url(),
            "heartbeat": b.heartbeat.as_ref().map(|h| json!({
                "state": h.state,
                "withheld": h.withheld,
                "last_ok": time_json(h.last_ok_ns),
            })),
        })
    }

    fn alerts_json(&self, now: i64) -> Json {
        let b = self.board.get();
        let alerts: Vec<Json> = b
            .alerts()
            .map(|a| alert_json(&self.router, a, now))
            .collect();
        json!({ "alerts": alerts })
    }

    fn rules_json(&self) -> Json {
        let b = self.board.get();
        let rules: Vec<Json> = b
            .rules
            .values()
            .map(|r| {
                json_with(
                    r,
                    [
                        ("last_evaluation", time_json(r.last_evaluation_ns)),
                        ("loaded", time_json(r.loaded_ns)),
                    ],
                )
            })
            .collect();
        json!({ "rules": rules })
    }

    fn notifications_json(&self) -> Vec<Json> {
        self.router
            .history()
            .iter()
            .rev()
            .map(|d| {
                json_with(
                    d,
                    [("time", time_json(d.time)), ("done", time_json(d.done))],
                )
            })
            .collect()
    }

    fn actions_json(&self) -> Vec<Json> {
        self.engine
            .results()
            .iter()
            .rev()
            .map(|r| {
                let recover = if r.recovered && r.verified_ns > 0 && r.fault_ns > 0 {
                    json!((r.verified_ns - r.fault_ns) / 1_000_000)
                } else {
                    Json::Null
                };
                json_with(
                    r,
                    [
                        ("time", time_json(r.started_ns)),
                        ("time_to_recover_ms", recover),
                    ],
                )
            })
            .collect()
    }
}

/// `item` as JSON with the `extra` keys set over its own (times as the API writes them).
fn json_with<T: serde::Serialize, const N: usize>(item: &T, extra: [(&str, Json); N]) -> Json {
    let mut v = serde_json::to_value(item).unwrap_or(Json::Null);
    for (k, x) in extra {
        v[k] = x;
    }
    v
}

/// One alert as the API shows it.
pub fn alert_json(router: &Router, a: &crate::state::Current, now: i64) -> Json {
    let e = &a.event;
    let muted = board::muted(router, a, now);
    let state = if a.pending {
        "pending"
    } else {
        match e.kind {
            crate::model::EventKind::NoData => "no_data",
            crate::model::EventKind::Error => "error",
            _ => "firing",
        }
    };
    json!({
        "rule": e.rule,
        "id": e.id,
        "state": state,
        "level": e.level.as_str(),
        "since": time_json(a.since.unwrap_or(0)),
        "value": e.fields.get("value").map(|v| serde_json::to_value(v).unwrap_or(Json::Null)),
        "message": e.message,
        "tags": e.tags,
        "flapping": a.flapping,
        "silenced": matches!(muted, Some(("silenced", _))),
        "inhibited": matches!(muted, Some(("inhibited", _))),
        "muted_by": muted.map(|(_, why)| why),
    })
}
