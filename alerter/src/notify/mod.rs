//! Notifications: alert events in, messages out.
//!
//! - [`Notifier`]: the small contract every notifier implements (one event in, `Ok` or a
//!   retryable / permanent [`NotifyError`] out).
//! - [`REGISTRY`]: every notifier kind, one line each; one folder per kind (`log/`, `email/`,
//!   `webhook/`, `exec/`, `influxdb/`) with its code, `README.md` and `sample.conf`. The kind is
//!   the folder name and the config table: `[[notifiers.<kind>]]`.
//! - [`running`]: the wrapper with the options every notifier shares (`name`, `timeout`,
//!   `retries`, `backoff`, `send_recoveries`, `min_level`, `queue_size`, grouping).
//! - [`config`]: reading the `[[notifiers.*]]` and `[[silences]]` tables into a [`NotifyPlan`].
//! - [`group`]: grouping (`group_by`, `group_wait`, `group_interval`): events gathered per
//!   group into one [`Notification`].
//! - [`router`]: [`Router`] fans events out to per-notifier queues and tasks (timeouts,
//!   retries with backoff, isolation), after [`silence`]s and [`inhibit`]ion.
//! - [`outbox`]: what the notifiers have not delivered, kept in the state directory across
//!   restarts.
//! - [`text`]: HTML and Slack escaping, RFC 3339 parsing (templates are `crate::template`).

use std::future::Future;
use std::pin::Pin;

use wk_core::options::Options;

use crate::model::AlertEvent;

pub mod config;
pub mod email;
pub mod exec;
pub mod group;
pub mod influxdb;
pub mod inhibit;
pub mod log;
pub mod outbox;
pub mod router;
pub mod running;
pub mod secret;
pub mod silence;
pub mod silence_store;
pub mod text;
pub mod webhook;

pub use config::{NotifyPlan, UnknownNotifiers, load, load_str};
pub use group::{Grouping, Notification};
pub use router::{NotifierStats, Router, RouterStats};
pub use running::{NotifierSettings, RunningNotifier};
pub use silence::Silence;

/// What [`Notifier::send`] returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), NotifyError>> + Send + 'a>>;

/// A notifier: built from validated options (config errors only, no network there), then
/// handed one event at a time by its own task. Timeouts, retries and queueing are the
/// router's business, not the notifier's; a send may be cancelled (dropped) at any await.
pub trait Notifier: Send + Sync {
    /// Delivers one event.
    fn send<'a>(&'a self, event: &'a AlertEvent) -> SendFuture<'a>;

    /// Whether [`Notifier::send_group`] sends a group as one message (email, chat webhooks);
    /// the default sends its events one by one.
    fn sends_group_whole(&self) -> bool {
        false
    }

    /// Delivers one grouped message (notifiers with `group_by`). The default sends what is
    /// new since the group's previous message, one event after another (records such as
    /// `influxdb` and `log` stay one per event, and `exec` runs once per event: the group
    /// decides when, and an instance still firing unchanged is not sent again); notifiers
    /// that speak to people override it and list the whole group.
    fn send_group<'a>(&'a self, group: &'a Notification) -> SendFuture<'a> {
        Box::pin(async move {
            for e in group.news() {
                self.send(e).await?;
            }
            Ok(())
        })
    }
}

/// How many sends a group message takes, each given the notifier's `timeout`: one per
/// event for the default [`Notifier::send_group`] (records), one for notifiers that send the
/// group as one message.
pub fn group_sends(notifier: &dyn Notifier, group: &Notification) -> u32 {
    if notifier.sends_group_whole() {
        1
    } else {
        u32::try_from(group.news().count())
            .unwrap_or(u32::MAX)
            .clamp(1, 1000)
    }
}

/// Why an event was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// Worth trying again (connection refused, timeout, HTTP 5xx or 429, SMTP 4xx).
    #[error("{0}")]
    Retryable(String),
    /// Trying again would fail the same way (HTTP 4xx, SMTP 5xx, program not found).
    #[error("{0}")]
    Permanent(String),
}

impl NotifyError {
    /// True for [`NotifyError::Retryable`].
    pub fn is_retryable(&self) -> bool {
        matches!(self, NotifyError::Retryable(_))
    }
}

/// A constructor from options; errors go to the options' diagnostics (file:line:column).
pub type BuildFn = fn(&mut Options<'_, '_>) -> Box<dyn Notifier>;

/// One registry entry.
pub struct NotifierSpec {
    /// `[[notifiers.<name>]]`, the folder name.
    pub name: &'static str,
    /// One line saying what the notifier does.
    pub description: &'static str,
    /// The notifier's `sample.conf`.
    pub sample_config: &'static str,
    /// Builds the notifier from its kind-specific options (the shared ones are read first by
    /// [`RunningNotifier::build`]).
    pub build: BuildFn,
}

/// Every notifier kind, one line each.
pub static REGISTRY: &[NotifierSpec] = &[
    email::SPEC,
    exec::SPEC,
    influxdb::SPEC,
    log::SPEC,
    webhook::SPEC,
];

/// The registry entry of a notifier kind.
pub fn find(kind: &str) -> Option<&'static NotifierSpec> {
    REGISTRY.iter().find(|s| s.name == kind)
}

/// Why a notifier's (or the action recorder's) URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("invalid URL {text:?}: {reason}")]
    Invalid { text: String, reason: String },
    #[error("scheme {0:?} is not supported: use http or https")]
    Scheme(String),
    /// No URL where one is needed; says what it is for.
    #[error("is required: {0}")]
    Missing(&'static str),
}

/// The URL a notifier's `key` option gave, or, after reporting why it is refused, a
/// placeholder: the config has an error then and never loads, so it is never used.
pub(crate) fn url_option(
    opts: &mut Options<'_, '_>,
    key: &str,
    url: Result<reqwest::Url, UrlError>,
) -> reqwest::Url {
    url.unwrap_or_else(|e| {
        opts.error_at(key, e);
        reqwest::Url::parse("http://invalid.invalid/").expect("a constant valid URL")
    })
}

/// `text` as an `http` or `https` URL.
pub fn http_url(text: &str) -> Result<reqwest::Url, UrlError> {
    let u = reqwest::Url::parse(text).map_err(|e| UrlError::Invalid {
        text: text.to_owned(),
        reason: e.to_string(),
    })?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(UrlError::Scheme(u.scheme().to_owned()));
    }
    Ok(u)
}

/// The table `key` of header names and values (secrets from `${ENV}`), values marked
/// sensitive so that they never show in debug output.
pub(crate) fn header_table(opts: &mut Options<'_, '_>, key: &str) -> reqwest::header::HeaderMap {
    use reqwest::header::{HeaderName, HeaderValue};
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in opts.string_table(key) {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(&v),
        ) {
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(true);
                headers.insert(name, value);
            }
            _ => opts.error_at(key, format!("invalid header {k:?}")),
        }
    }
    headers
}

/// The HTTP client of the notifiers that POST (webhook, influxdb); a set-up failure is a
/// config error at the notifier's `url`.
pub(crate) fn http_client(opts: &mut Options<'_, '_>) -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("wk-alerter/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|e| {
            opts.error_at("url", format!("cannot set up the HTTP client: {e}"));
            reqwest::Client::new()
        })
}

/// The verdict on an HTTP notifier's answer: `Ok` on 2xx; 5xx, 429 and 408 are worth
/// retrying; any other status is permanent. `what` starts the message ("InfluxDB write").
pub(crate) async fn http_verdict(
    sent: Result<reqwest::Response, reqwest::Error>,
    what: &str,
    max_body: usize,
) -> Result<(), NotifyError> {
    // Without the URL: it may carry a token (Slack and Discord put it in the path).
    let resp = sent.map_err(|e| {
        let e = wk_core::diag::error_chain(&e.without_url());
        NotifyError::Retryable(format!("{what} failed: {e}"))
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let msg = format!(
        "{what}: HTTP {status}: {}",
        text::truncate(text.trim(), max_body)
    );
    if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
        Err(NotifyError::Retryable(msg))
    } else {
        Err(NotifyError::Permanent(msg))
    }
}
