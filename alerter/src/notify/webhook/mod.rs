//! `[[notifiers.webhook]]`: a JSON POST per event — the event itself, or Slack's or
//! Discord's incoming-webhook shape — with custom headers and an optional HMAC-SHA256
//! signature of the body.

use hmac::{Hmac, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName};
use serde_json::{Value as Json, json};
use sha2::Sha256;
use wk_core::options::Options;

use super::group::Notification;
use super::text::{fmt_value, slack_escape, truncate};
use super::{Notifier, NotifierSpec, NotifyError, SendFuture, secret};
use crate::model::{AlertEvent, Level};
use crate::template::{format_duration as fmt_duration, format_rfc3339 as rfc3339, kind_str};

/// Registry entry.
pub const SPEC: NotifierSpec = NotifierSpec {
    name: "webhook",
    description: "POST each event as JSON (the event, or Slack's or Discord's webhook format)",
    sample_config: include_str!("sample.conf"),
    build,
};

/// The signature header's default name; its value is `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Watchkeeper-Signature";

/// The body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The event as serialized (the same JSON as the log notifier's lines).
    Default,
    /// Slack incoming webhook: `{"text": ..., "attachments": [...]}`.
    Slack,
    /// Discord webhook: `{"content": ..., "embeds": [...]}`.
    Discord,
}

/// The webhook notifier.
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: reqwest::Url,
    format: Format,
    headers: HeaderMap,
    secret: Option<Vec<u8>>,
    signature_header: HeaderName,
    username: Option<String>,
    channel: Option<String>,
}

fn build(opts: &mut Options<'_, '_>) -> Box<dyn Notifier> {
    let url_text = opts.string("url", "");
    let url = if url_text.is_empty() {
        Err(super::UrlError::Missing("the URL to POST to"))
    } else {
        super::http_url(&url_text)
    };
    let url = super::url_option(opts, "url", url);
    let format = match opts
        .choice("format", "default", &["default", "slack", "discord"])
        .as_str()
    {
        "slack" => Format::Slack,
        "discord" => Format::Discord,
        _ => Format::Default,
    };
    let headers = super::header_table(opts, "headers");
    let secret = secret::read(opts, "secret", "secret_file").map(String::into_bytes);
    if secret.as_ref().is_some_and(Vec::is_empty) {
        opts.error_at("secret", "must not be empty");
    }
    let sig_name = opts.string("signature_header", SIGNATURE_HEADER);
    let signature_header = HeaderName::from_bytes(sig_name.as_bytes()).unwrap_or_else(|_| {
        opts.error_at(
            "signature_header",
            format!("invalid header name {sig_name:?}"),
        );
        HeaderName::from_static("x-watchkeeper-signature")
    });
    let username = opts.opt_string("username");
    let channel = opts.opt_string("channel");
    if channel.is_some() && format != Format::Slack {
        opts.error_at("channel", "is only used with format = \"slack\"");
    }
    let client = super::http_client(opts);
    Box::new(WebhookNotifier {
        client,
        url,
        format,
        headers,
        secret,
        signature_header,
        username,
        channel,
    })
}

impl WebhookNotifier {
    /// The JSON body for `event`.
    pub fn body(&self, event: &AlertEvent) -> Json {
        self.finish(match self.format {
            Format::Default => serde_json::to_value(event).unwrap_or(Json::Null),
            Format::Slack => slack_payload(event),
            Format::Discord => discord_payload(event),
        })
    }

    /// The JSON body of a grouped message (`group_by`).
    pub fn group_body(&self, n: &Notification) -> Json {
        self.finish(match self.format {
            Format::Default => group_payload(n),
            Format::Slack => slack_group_payload(n),
            Format::Discord => discord_group_payload(n),
        })
    }

    /// Adds the chat username and channel.
    fn finish(&self, mut body: Json) -> Json {
        if let Json::Object(map) = &mut body {
            if let (Some(u), Format::Slack | Format::Discord) = (&self.username, self.format) {
                map.insert("username".into(), json!(u));
            }
            if let (Some(c), Format::Slack) = (&self.channel, self.format) {
                map.insert("channel".into(), json!(c));
            }
        }
        body
    }

    async fn post(&self, body: Json) -> Result<(), NotifyError> {
        let body = serde_json::to_vec(&body)
            .map_err(|e| NotifyError::Permanent(format!("cannot serialize the body: {e}")))?;
        let mut req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(secret) = &self.secret {
            req = req.header(self.signature_header.clone(), signature(secret, &body));
        }
        super::http_verdict(req.body(body).send().await, "POST", 200).await
    }
}

impl Notifier for WebhookNotifier {
    fn send<'a>(&'a self, event: &'a AlertEvent) -> SendFuture<'a> {
        Box::pin(self.post(self.body(event)))
    }

    fn sends_group_whole(&self) -> bool {
        true
    }

    fn send_group<'a>(&'a self, group: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.post(self.group_body(group)))
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// (label, value) facts shown as fields in chat messages.
fn facts(e: &AlertEvent) -> Vec<(String, String)> {
    let mut v = vec![
        (
            "Level".to_owned(),
            format!("{} (was {})", e.level, e.previous_level),
        ),
        ("Event".to_owned(), kind_str(e.kind).to_owned()),
        ("Duration".to_owned(), fmt_duration(e.duration)),
    ];
    v.extend(e.tags.iter().map(|(k, val)| (k.clone(), val.clone())));
    v.extend(
        e.fields
            .iter()
            .map(|(k, val)| (k.clone(), fmt_value(val, None))),
    );
    v
}

/// Slack's attachment color for a level.
pub fn slack_color(level: Level) -> &'static str {
    match level {
        Level::Critical => "danger",
        Level::Warning => "warning",
        Level::Info => "#439FE0",
        Level::Ok => "good",
    }
}

/// Discord's embed color (0xRRGGBB) for a level.
pub fn discord_color(level: Level) -> u32 {
    match level {
        Level::Critical => 0xE74C3C,
        Level::Warning => 0xF1C40F,
        Level::Info => 0x3498DB,
        Level::Ok => 0x2ECC71,
    }
}

/// Slack incoming-webhook payload: the message, and the facts as attachment fields (the
/// details, meant for email bodies, would repeat them). Text from the event is escaped so that tag values cannot
/// mention `<!channel>` or forge links.
pub fn slack_payload(e: &AlertEvent) -> Json {
    let fields: Vec<Json> = facts(e)
        .into_iter()
        .map(|(k, v)| json!({"title": slack_escape(&k), "value": slack_escape(&v), "short": true}))
        .collect();
    let attachment = json!({
        "fallback": slack_escape(&e.message),
        "color": slack_color(e.level),
        "title": slack_escape(&e.id),
        "fields": fields,
        "footer": format!("wk-alerter · rule {}", slack_escape(&e.rule)),
        "ts": e.time.div_euclid(1_000_000_000),
    });
    json!({
        "text": truncate(&slack_escape(&e.message), 3000),
        "attachments": [attachment],
    })
}

/// Discord's limit on the characters of one embed: title, fields' names and values, footer.
const DISCORD_EMBED_TOTAL: usize = 6000;

/// Discord webhook payload: the message, and one embed with the facts as fields, within
/// Discord's limits (content 2000, title 256, 25 fields of name 256 / value 1024, 6000
/// characters in all: facts that do not fit are counted in a last field); mentions are
/// disabled so tag values cannot ping `@everyone`.
pub fn discord_payload(e: &AlertEvent) -> Json {
    let nonempty = |s: String| if s.is_empty() { "-".to_owned() } else { s };
    let title = truncate(&e.id, 256);
    let footer = truncate(&format!("wk-alerter · rule {}", e.rule), 2048);
    let facts = facts(e);
    // Room for a last field saying how many did not fit.
    let mut left = DISCORD_EMBED_TOTAL
        .saturating_sub(title.chars().count() + footer.chars().count())
        .saturating_sub(64);
    let mut fields: Vec<Json> = Vec::new();
    for (k, v) in &facts {
        let (name, value) = (
            truncate(&nonempty(k.clone()), 256),
            truncate(&nonempty(v.clone()), 1024),
        );
        let size = name.chars().count() + value.chars().count();
        if fields.len() == 24 || size > left {
            break;
        }
        left -= size;
        fields.push(json!({"name": name, "value": value, "inline": true}));
    }
    if fields.len() < facts.len() {
        let more = facts.len() - fields.len();
        fields.push(json!({
            "name": "…",
            "value": format!("{more} more not shown (Discord's embed limits)"),
            "inline": false,
        }));
    }
    let embed = json!({
        "title": title,
        "color": discord_color(e.level),
        "fields": fields,
        "timestamp": rfc3339(e.time),
        "footer": {"text": footer},
    });
    json!({
        "content": truncate(&e.message, 2000),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    })
}

/// Chat messages list at most this many instances of a group (then "and N more").
const MAX_CHAT_LINES: usize = 20;

/// The default body of a grouped message: the group, its status, and the events (each as
/// the ungrouped body) under `firing`, `resolved` and `reports`.
pub fn group_payload(n: &Notification) -> Json {
    let list = |v: &[std::sync::Arc<AlertEvent>]| -> Vec<Json> {
        v.iter()
            .map(|e| serde_json::to_value(&**e).unwrap_or(Json::Null))
            .collect()
    };
    json!({
        "group": n.labels,
        "group_key": n.key(),
        "status": n.status(),
        "level": n.level(),
        "firing": list(&n.firing),
        "resolved": list(&n.resolved),
        "reports": list(&n.reports),
    })
}

/// `[FIRING:2] rule=cpu` and one line per event (at most [`MAX_CHAT_LINES`]).
fn group_lines(n: &Notification, escape: fn(&str) -> String) -> String {
    let mut s = escape(&format!("[{}] {}", n.status(), n.key()));
    for e in n.events().take(MAX_CHAT_LINES) {
        s.push_str(&format!("\n• {} {}", e.level, escape(&e.message)));
    }
    if n.len() > MAX_CHAT_LINES {
        s.push_str(&format!("\n… and {} more", n.len() - MAX_CHAT_LINES));
    }
    s
}

/// A grouped message for Slack: the status line and one line per instance.
pub fn slack_group_payload(n: &Notification) -> Json {
    json!({
        "text": truncate(&group_lines(n, slack_escape), 3000),
        "attachments": [{"color": slack_color(n.level()), "footer": "wk-alerter"}],
    })
}

/// A grouped message for Discord: the status line and one line per instance.
pub fn discord_group_payload(n: &Notification) -> Json {
    json!({
        "content": truncate(&group_lines(n, str::to_owned), 2000),
        "allowed_mentions": {"parse": []},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: each field was cut to Discord's limits but not their sum, so an event
    /// with a few long values (command lines) made an embed over 6000 characters, which
    /// Discord refuses with a 400: the message was lost.
    #[test]
    fn a_discord_embed_stays_within_6000_characters() {
        let mut e = AlertEvent {
            rule: "r".into(),
            id: "r:x".into(),
            message: "m".into(),
            ..AlertEvent::default()
        };
        for i in 0..30 {
            e.tags.insert(format!("tag{i:02}"), "v".repeat(900));
        }
        let p = discord_payload(&e);
        let embed = &p["embeds"][0];
        let chars = |v: &Json| v.as_str().unwrap().chars().count();
        let fields = embed["fields"].as_array().unwrap();
        let total = chars(&embed["title"])
            + chars(&embed["footer"]["text"])
            + fields
                .iter()
                .map(|f| chars(&f["name"]) + chars(&f["value"]))
                .sum::<usize>();
        assert!(total <= 6000, "{total}");
        assert!(fields.len() <= 25);
        let last = fields.last().unwrap()["value"].as_str().unwrap();
        assert!(last.contains("more not shown"), "{last}");
    }

    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
