//! `[heartbeat]`: who watches the alerter. An alerter that crashed, hangs, or whose host is
//! gone pages nobody; an external dead man's switch (healthchecks.io, Uptime Kuma's push
//! monitor, Cronitor, Dead Man's Snitch, Opsgenie heartbeats) does, when the pings it expects
//! stop. The scheduler pings `url` every `interval` while the alerter is healthy, so a stuck
//! scheduler stops the pings too; while a built-in alert of `stop_on` fires (by default the
//! source does not answer, or none of the notifiers that tell of its health delivers: the
//! alerter cannot see, or cannot tell) it withholds them, and requests `fail_url` with the reason (until it answers), for services that
//! take an explicit failure. Prometheus users get the same from an always-firing "Watchdog"
//! alert routed to such a service.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use reqwest::header::HeaderMap;
use tracing::{info, warn};
use wk_core::options::Options;

/// The built-in alerts `stop_on` may name.
pub const STOPPABLE: [&str; 3] = ["wk_source", "wk_notifiers", "wk_rules"];

/// The `[heartbeat]` table.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    pub url: reqwest::Url,
    pub fail_url: Option<reqwest::Url>,
    /// GET (the default: every such service takes it) or POST (the status text as body).
    pub post: bool,
    pub interval: Duration,
    pub timeout: Duration,
    pub headers: HeaderMap,
    /// Built-in alerts that withhold the pings while they fire.
    pub stop_on: Vec<String>,
    client: reqwest::Client,
}

impl PartialEq for HeartbeatConfig {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.url,
            &self.fail_url,
            self.post,
            self.interval,
            self.timeout,
        ) == (&o.url, &o.fail_url, o.post, o.interval, o.timeout)
            && self.headers == o.headers
            && self.stop_on == o.stop_on
    }
}

impl HeartbeatConfig {
    /// Reads the table (`url` is required).
    pub fn read(o: &mut Options<'_, '_>) -> HeartbeatConfig {
        let text = o.string("url", "");
        let url = if text.is_empty() {
            Err(crate::notify::UrlError::Missing(
                "the dead man's switch's ping URL",
            ))
        } else {
            crate::notify::http_url(&text)
        };
        let url = crate::notify::url_option(o, "url", url);
        let fail_url = o.opt_string("fail_url").map(|t| {
            let u = crate::notify::http_url(&t);
            crate::notify::url_option(o, "fail_url", u)
        });
        let post = o.choice("method", "GET", &["GET", "POST"]) == "POST";
        let interval = o.duration("interval", Duration::from_secs(60));
        if interval < Duration::from_secs(1) {
            o.error_at("interval", "must be at least 1s");
        }
        let timeout = o.duration("timeout", Duration::from_secs(10));
        if timeout.is_zero() {
            o.error_at("timeout", "must be greater than 0");
        }
        let stop_on = o
            .opt_strings("stop_on")
            .unwrap_or_else(|| vec!["wk_source".into(), "wk_notifiers".into()]);
        for name in &stop_on {
            if !STOPPABLE.contains(&name.as_str()) {
                o.error_at(
                    "stop_on",
                    format!(
                        "{name:?} is not a built-in alert: use {}",
                        STOPPABLE.join(", ")
                    ),
                );
            }
        }
        let headers = crate::notify::header_table(o, "headers");
        let client = crate::notify::http_client(o);
        HeartbeatConfig {
            url,
            fail_url,
            post,
            interval,
            timeout,
            headers,
            stop_on,
            client,
        }
    }
}

impl HeartbeatConfig {
    /// The request to `url` (GET, or POST with `text`), with the headers and timeout.
    fn request(&self, url: reqwest::Url, text: String) -> reqwest::RequestBuilder {
        let req = if self.post {
            self.client.post(url).body(text)
        } else {
            self.client.get(url)
        };
        req.headers(self.headers.clone()).timeout(self.timeout)
    }

    /// One ping now (`wk-alerter notifiers test`): whether the service answered 2xx.
    pub async fn ping_once(&self) -> Result<(), String> {
        let req = self.request(self.url.clone(), "wk-alerter test ping".into());
        answered(req.send().await)
    }
}

/// A ping's outcome: a 2xx answer, or why not (without the URL: it is the secret, as
/// healthchecks.io's ping URL is).
fn answered(r: reqwest::Result<reqwest::Response>) -> Result<(), String> {
    match r {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("HTTP {}", r.status())),
        Err(e) => Err(wk_core::diag::error_chain(&e.without_url())),
    }
}

/// The pinger, driven by the scheduler.
pub struct Heartbeat {
    cfg: HeartbeatConfig,
    next: tokio::time::Instant,
    /// A ping is on its way (the next waits rather than pile up behind a slow service).
    in_flight: Arc<AtomicBool>,
    /// The last pings failed (logged once, and once when they get through again).
    failing: Arc<AtomicBool>,
    /// Why the pings are withheld; empty while they are sent.
    withheld: Vec<String>,
    /// When a ping was last answered with 2xx (ns; 0: never).
    last_ok_ns: Arc<AtomicI64>,
    /// The `fail_url` request of the current withheld spell got a 2xx answer (it is asked
    /// again at each beat until then: the network trouble that withholds the pings may well
    /// have eaten the first).
    fail_told: Arc<AtomicBool>,
    /// A `fail_url` request is on its way.
    fail_in_flight: Arc<AtomicBool>,
}

/// What the status API says of the heartbeat.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HeartbeatView {
    /// `pinging`, `withheld` (a `stop_on` alert fires) or `failing` (the last ping did not
    /// get a 2xx answer).
    pub state: &'static str,
    /// Why it is withheld: the firing alerts' messages.
    pub withheld: Vec<String>,
    /// When a ping was last answered (ns; 0: never).
    #[serde(skip)]
    pub last_ok_ns: i64,
}

impl Heartbeat {
    /// The first ping goes at once: a start is news to the service.
    pub fn new(cfg: HeartbeatConfig) -> Heartbeat {
        Heartbeat {
            cfg,
            next: tokio::time::Instant::now(),
            in_flight: Arc::default(),
            failing: Arc::default(),
            withheld: Vec::new(),
            last_ok_ns: Arc::default(),
            fail_told: Arc::default(),
            fail_in_flight: Arc::default(),
        }
    }

    /// Its state now, for the status API.
    pub fn view(&self) -> HeartbeatView {
        let state = if !self.withheld.is_empty() {
            "withheld"
        } else if self.failing.load(Ordering::Acquire) {
            "failing"
        } else {
            "pinging"
        };
        HeartbeatView {
            state,
            withheld: self.withheld.clone(),
            last_ok_ns: self.last_ok_ns.load(Ordering::Acquire),
        }
    }

    pub fn config(&self) -> &HeartbeatConfig {
        &self.cfg
    }

    /// When [`Heartbeat::beat`] is due.
    pub fn due(&self) -> tokio::time::Instant {
        self.next
    }

    /// Pings, unless `problems` (the firing built-in alerts of `stop_on`, as their messages)
    /// withhold it; while they do, requests `fail_url` with them, at each beat until it is
    /// answered with 2xx.
    pub fn beat(&mut self, problems: Vec<String>) {
        self.next = tokio::time::Instant::now() + self.cfg.interval;
        if !problems.is_empty() {
            if self.withheld.is_empty() {
                warn!(
                    "heartbeat withheld while {}: the dead man's switch will page",
                    problems.join("; ")
                );
                self.fail_told.store(false, Ordering::Release);
            }
            if let Some(u) = &self.cfg.fail_url
                && !self.fail_told.load(Ordering::Acquire)
                && !self.fail_in_flight.swap(true, Ordering::AcqRel)
            {
                self.send(u.clone(), problems.join("\n"), "fail_url");
            }
            self.withheld = problems;
            return;
        }
        if !self.withheld.is_empty() {
            info!("heartbeat resumes");
            self.withheld.clear();
        }
        if self.in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        self.send(self.cfg.url.clone(), "wk-alerter is up".into(), "url");
    }

    fn send(&self, url: reqwest::Url, text: String, which: &'static str) {
        let req = self.cfg.request(url, text);
        let (in_flight, failing) = (self.in_flight.clone(), self.failing.clone());
        let last_ok = self.last_ok_ns.clone();
        let (fail_told, fail_in_flight) = (self.fail_told.clone(), self.fail_in_flight.clone());
        tokio::spawn(async move {
            let result = answered(req.send().await);
            if which == "url" {
                in_flight.store(false, Ordering::Release);
            } else {
                fail_told.store(result.is_ok(), Ordering::Release);
                fail_in_flight.store(false, Ordering::Release);
            }
            match result {
                Ok(()) => {
                    if which == "url" {
                        last_ok.store(crate::clock::now_ns(), Ordering::Release);
                    }
                    if failing.swap(false, Ordering::AcqRel) {
                        info!("heartbeat {which} answers again");
                    }
                }
                Err(e) => {
                    if !failing.swap(true, Ordering::AcqRel) {
                        warn!("heartbeat {which} failed (the dead man's switch may page): {e}");
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> HeartbeatConfig {
        config_text(&format!("[heartbeat]\n  url = \"{url}\"\n"))
    }

    fn config_text(text: &str) -> HeartbeatConfig {
        let (c, said) = wk_core::testing::read_table(text, HeartbeatConfig::read);
        assert!(said.is_empty(), "{said:?}");
        c
    }

    /// `fail_url` is asked again at each beat of a withheld spell until it answers 2xx (the
    /// trouble that withholds the pings may have eaten the first request), then not again.
    #[tokio::test]
    async fn fail_url_is_retried_until_it_answers() {
        let port = wk_core::testing::free_port();
        let mut h = Heartbeat::new(config_text(&format!(
            "[heartbeat]\n  url = \"http://127.0.0.1:1/ping\"\n  fail_url = \"http://127.0.0.1:{port}/fail\"\n"
        )));
        let problem = || vec!["query source x does not answer".to_owned()];
        let settled = |h: &Heartbeat| !h.fail_in_flight.load(Ordering::Acquire);
        h.beat(problem());
        for _ in 0..250 {
            if settled(&h) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(settled(&h) && !h.fail_told.load(Ordering::Acquire));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = requests.clone();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                n.fetch_add(1, Ordering::AcqRel);
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            }
        });
        h.beat(problem());
        for _ in 0..250 {
            if h.fail_told.load(Ordering::Acquire) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            h.fail_told.load(Ordering::Acquire),
            "the second beat told it"
        );
        h.beat(problem());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(requests.load(Ordering::Acquire), 1, "once told, not again");
    }

    /// The view says what the pings do: failing when the service does not answer, withheld
    /// (with why) while a stop_on alert fires, and the withheld reasons go when it stops.
    #[tokio::test]
    async fn the_view_follows_the_pings() {
        let port = wk_core::testing::free_port();
        let mut h = Heartbeat::new(config(&format!("http://127.0.0.1:{port}/ping")));
        assert_eq!(h.view().state, "pinging");
        h.beat(Vec::new());
        for _ in 0..100 {
            if h.view().state == "failing" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(h.view().state, "failing", "nothing listens on the port");
        assert_eq!(h.view().last_ok_ns, 0);
        h.beat(vec!["query source x does not answer".into()]);
        let v = h.view();
        assert_eq!((v.state, v.withheld.len()), ("withheld", 1));
        assert!(
            h.due() > tokio::time::Instant::now(),
            "the next beat an interval on"
        );
    }
}
