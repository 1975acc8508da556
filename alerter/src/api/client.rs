//! `wk-alerter silence add|list|expire`: through the running alerter's API when it answers
//! (it applies the change at once), else straight in the state dir (the alerter reads it
//! when it starts, or within `reload_interval`).

use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::config::Config;
use crate::notify::silence_store::{self as store, Stored};
use crate::notify::text::parse_rfc3339;
use crate::template::format_rfc3339 as rfc3339;

/// What the command asks.
#[derive(Debug, Clone)]
pub enum SilenceRequest {
    Add {
        matchers: Vec<String>,
        starts: Option<i64>,
        ends: i64,
        comment: String,
        by: String,
    },
    List {
        all: bool,
    },
    Expire {
        id: String,
    },
}

/// The API's URL and token for this config: `[http] url`, else from the listener (stream or
/// `[http] listen`, a wildcard address read as loopback); `None` when nothing is served.
pub fn endpoint(cfg: &Config) -> Option<(String, String)> {
    if !cfg.http.url.is_empty() {
        let token = crate::config::api_token(&cfg.stream, &cfg.http).to_owned();
        return Some((cfg.http.url.trim_end_matches('/').to_owned(), token));
    }
    let (listen, token, tls) = match &cfg.stream {
        Some(s) => (s.listen.clone(), s.token.clone(), s.tls_cert.is_some()),
        None => (
            cfg.http.listen.clone(),
            cfg.http.token.clone(),
            cfg.http.tls_cert.is_some(),
        ),
    };
    let mut addr: std::net::SocketAddr = listen.parse().ok()?;
    if addr.port() == 0 {
        // Any free port: only the alerter's log says which (set [http] url).
        return None;
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let scheme = if tls { "https" } else { "http" };
    Some((format!("{scheme}://{addr}"), token))
}

/// Runs the request; returns what to print, and a note when the alerter did not answer and
/// the state dir was used.
pub fn silence(
    cfg: &Config,
    req: &SilenceRequest,
    now: i64,
) -> Result<(String, Option<String>), String> {
    if let Some((url, token)) = endpoint(cfg) {
        match through_api(&url, &token, &cfg.settings.state_dir, req, now)? {
            Answer::Done(out) => return Ok((out, None)),
            Answer::NeedsToken => {
                let note = format!(
                    "wk-alerter at {url} takes changes only with a token, and none is \
                     configured: written in the state dir {} (the alerter reads it within \
                     reload_interval)",
                    cfg.settings.state_dir.display()
                );
                return Ok((
                    in_state_dir(cfg, req, now).map_err(|e| e.to_string())?,
                    Some(note),
                ));
            }
            Answer::Down => {
                let note = format!(
                    "wk-alerter does not answer at {url}: using the state dir {} (the alerter \
                     reads it when it starts)",
                    cfg.settings.state_dir.display()
                );
                return Ok((
                    in_state_dir(cfg, req, now).map_err(|e| e.to_string())?,
                    Some(note),
                ));
            }
        }
    }
    Ok((
        in_state_dir(cfg, req, now).map_err(|e| e.to_string())?,
        None,
    ))
}

fn list_text(all: &[Stored], show_all: bool, now: i64) -> String {
    all.iter()
        .filter(|s| show_all || s.ends > now)
        .map(|s| s.describe(now))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The request done on the state dir.
pub fn in_state_dir(
    cfg: &Config,
    req: &SilenceRequest,
    now: i64,
) -> Result<String, store::SilenceError> {
    let dir = &cfg.settings.state_dir;
    match req {
        SilenceRequest::Add {
            matchers,
            starts,
            ends,
            comment,
            by,
        } => store::add(dir, matchers, *starts, *ends, comment, by, now).map(|s| s.id),
        SilenceRequest::List { all } => store::load(dir).map(|v| list_text(&v, *all, now)),
        SilenceRequest::Expire { id } => store::expire(dir, id, now).map(|s| s.describe(now)),
    }
}

/// A silence as the API shows it, back into the stored form (to print it the same way).
fn stored(v: &Json) -> Option<Stored> {
    let time = |k: &str| v[k].as_str().and_then(|t| parse_rfc3339(t).ok());
    Some(Stored {
        id: v["id"].as_str()?.to_owned(),
        matchers: v["matchers"]
            .as_array()?
            .iter()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect(),
        starts: time("starts"),
        ends: time("ends")?,
        comment: v["comment"].as_str().unwrap_or_default().to_owned(),
        created: time("created").unwrap_or(0),
        by: v["created_by"].as_str().unwrap_or_default().to_owned(),
    })
}

/// `Ok(None)`: nothing listens at `url` (the alerter is down).
fn through_api(
    url: &str,
    token: &str,
    state_dir: &std::path::Path,
    req: &SilenceRequest,
    now: i64,
) -> Result<Answer, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| e.to_string())?;
        let with_token = |r: reqwest::RequestBuilder| {
            if token.is_empty() {
                r
            } else {
                r.bearer_auth(token)
            }
        };
        // Another alerter may hold the address (two on one host): only the one whose state
        // dir is this config's may take the request.
        let status = match with_token(client.get(format!("{url}/api/v1/status")))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Ok(Answer::Down),
            Err(e) => return Err(format!("{url}: {e}")),
        };
        if !status.status().is_success() {
            return Err(format!("{url}/api/v1/status: {}", status.status()));
        }
        let status: Json = status
            .json()
            .await
            .map_err(|e| format!("{url}: unreadable answer: {e}"))?;
        let theirs = status["state_dir"].as_str().unwrap_or_default();
        if let Ok(ours) = std::fs::canonicalize(state_dir)
            && std::path::Path::new(theirs) != ours
        {
            return Err(format!(
                "the alerter at {url} keeps its state in {theirs}, not in {} (this config's): \
                 set [http] url to this alerter's address",
                ours.display()
            ));
        }
        let request = match req {
            SilenceRequest::Add {
                matchers,
                starts,
                ends,
                comment,
                by,
            } => client.post(format!("{url}/api/v1/silences")).json(&json!({
                "matchers": matchers,
                "starts": starts.map(rfc3339),
                "ends": rfc3339(*ends),
                "comment": comment,
                "created_by": by,
            })),
            SilenceRequest::List { .. } => client.get(format!("{url}/api/v1/silences")),
            SilenceRequest::Expire { id } => client.delete(format!("{url}/api/v1/silences/{id}")),
        };
        let resp = match with_token(request).send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() => return Ok(Answer::Down),
            Err(e) => return Err(format!("{url}: {e}")),
        };
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED && token.is_empty() {
            return Ok(Answer::NeedsToken);
        }
        let body: Json = resp
            .json()
            .await
            .map_err(|e| format!("{url}: unreadable answer ({status}): {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{url}: {status}: {}",
                body["error"].as_str().unwrap_or("")
            ));
        }
        // The server's times are whole seconds of its clock: judge them after its answer.
        let now = now.max(crate::clock::now_ns());
        let out = match req {
            SilenceRequest::Add { .. } => body["id"].as_str().unwrap_or_default().to_owned(),
            SilenceRequest::List { all } => {
                let v: Vec<Stored> = body["silences"]
                    .as_array()
                    .map(|a| a.iter().filter_map(stored).collect())
                    .unwrap_or_default();
                list_text(&v, *all, now)
            }
            SilenceRequest::Expire { .. } => {
                stored(&body).map(|s| s.describe(now)).unwrap_or_default()
            }
        };
        Ok(Answer::Done(out))
    })
}

/// How the API took a request.
enum Answer {
    /// What to print.
    Done(String),
    /// It does not answer.
    Down,
    /// It wants a token for changes, and the config has none.
    NeedsToken,
}
