//! `[[notifiers.email]]`: one email per event over SMTP (lettre), plain text with an HTML
//! alternative.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use wk_core::options::Options;

use super::group::Notification;
use super::text::{fmt_value, html_escape, truncate};
use super::{Notifier, NotifierSpec, NotifyError, SendFuture, secret};
use crate::model::{AlertEvent, Value};
use crate::template::{
    Template, TemplateData, format_duration as fmt_duration, format_rfc3339 as rfc3339, kind_str,
};

/// Registry entry.
pub const SPEC: NotifierSpec = NotifierSpec {
    name: "email",
    description: "Send each event as an email over SMTP (STARTTLS, TLS or plain)",
    sample_config: include_str!("sample.conf"),
    build,
};

/// Longest subject line we send; longer ones are cut.
const MAX_SUBJECT_CHARS: usize = 200;

/// The subject of a grouped message (`group_by`): `[FIRING:28 RESOLVED:2] rule=cpu_high`.
pub const DEFAULT_GROUP_SUBJECT: &str = "[{{status}}] {{group_key}}";

/// The email notifier.
pub struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `None` only when the config had an error (and did not load).
    from: Option<Mailbox>,
    to: Vec<Mailbox>,
    subject: Template,
    group_subject: Template,
}

fn build(opts: &mut Options<'_, '_>) -> Box<dyn Notifier> {
    let host = opts.string("host", "");
    if host.is_empty() {
        opts.error_at("host", "is required: the SMTP server's host name");
    }
    let tls = opts.choice("tls", "starttls", &["starttls", "tls", "none"]);
    let default_port = match tls.as_str() {
        "tls" => 465,
        "none" => 25,
        _ => 587,
    };
    let port = opts.int("port", default_port, 1, 65535) as u16;
    let insecure = opts.bool("insecure_skip_verify", false);
    let username = opts.opt_string("username");
    let password = secret::read(opts, "password", "password_file");
    let has_secret = opts.has("password") || opts.has("password_file");
    match (&username, &password) {
        (Some(_), None) if !has_secret => opts.error_at(
            "password",
            "is required with `username` (or `password_file`)",
        ),
        (None, Some(_)) => opts.error_at("username", "is required with a password"),
        _ => {}
    }
    let from = match opts.opt_string("from") {
        Some(f) => parse_mailbox(opts, "from", &f),
        None => {
            opts.error_at("from", "is required: the sender address");
            None
        }
    };
    let to_list = opts.strings("to");
    if to_list.is_empty() {
        opts.error_at("to", "is required: a list of recipient addresses");
    }
    let to: Vec<Mailbox> = to_list
        .iter()
        .filter_map(|t| parse_mailbox(opts, "to", t))
        .collect();
    let subject_text = opts.string("subject", "{{message}}");
    let subject = Template::parse(&subject_text).unwrap_or_else(|e| {
        opts.error_at("subject", format!("invalid template {subject_text:?}: {e}"));
        Template::literal(&subject_text)
    });
    let group_text = opts.string("group_subject", DEFAULT_GROUP_SUBJECT);
    let group_subject = Template::parse(&group_text).unwrap_or_else(|e| {
        opts.error_at(
            "group_subject",
            format!("invalid template {group_text:?}: {e}"),
        );
        Template::literal(&group_text)
    });

    let mut builder =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host.clone()).port(port);
    if tls != "none" && !host.is_empty() {
        match TlsParameters::builder(host.clone())
            .dangerous_accept_invalid_certs(insecure)
            .dangerous_accept_invalid_hostnames(insecure)
            .build()
        {
            Ok(params) => {
                builder = builder.tls(if tls == "tls" {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                });
            }
            Err(e) => opts.error_at("tls", format!("cannot set up TLS: {e}")),
        }
    } else {
        builder = builder.tls(Tls::None);
    }
    if let (Some(u), Some(p)) = (username, password) {
        builder = builder.credentials(Credentials::new(u, p));
    }
    Box::new(EmailNotifier {
        transport: builder.build(),
        from,
        to,
        subject,
        group_subject,
    })
}

fn parse_mailbox(opts: &mut Options<'_, '_>, key: &str, s: &str) -> Option<Mailbox> {
    match s.parse::<Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            opts.error_at(key, format!("invalid address {s:?}: {e}"));
            None
        }
    }
}

impl EmailNotifier {
    /// Builds the message for `event` (public for tests and `check`).
    pub fn message(&self, event: &AlertEvent) -> Result<Message, NotifyError> {
        let data = TemplateData {
            id: Some(&event.id),
            message: Some(&event.message),
            kind: Some(event.kind),
            level: event.level,
            previous_level: event.previous_level,
            duration: event.duration,
            time_ns: event.time,
            ..TemplateData::new(&event.rule, &event.tags, &event.fields)
        };
        self.build(
            &self.subject.render(&data),
            plain_body(event),
            html_body(event),
        )
    }

    /// Builds the one message of a group (public for tests and `check`): the subject from
    /// `group_subject`, the body listing every instance.
    pub fn group_message(&self, n: &Notification) -> Result<Message, NotifyError> {
        let fields: crate::model::Fields = [
            ("status", Value::Str(n.status())),
            ("firing", Value::Int(n.firing.len() as i64)),
            ("resolved", Value::Int(n.resolved.len() as i64)),
            ("reports", Value::Int(n.reports.len() as i64)),
            ("group_key", Value::Str(n.key())),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let rule = n.labels.get("rule").map_or("", String::as_str);
        let data = TemplateData {
            level: n.level(),
            ..TemplateData::new(rule, &n.labels, &fields)
        };
        self.build(
            &self.group_subject.render(&data),
            group_plain_body(n),
            group_html_body(n),
        )
    }

    fn build(&self, subject: &str, plain: String, html: String) -> Result<Message, NotifyError> {
        let mut subject: String = subject
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        if subject.chars().count() > MAX_SUBJECT_CHARS {
            subject = truncate(&subject, MAX_SUBJECT_CHARS);
        }
        let from = self
            .from
            .clone()
            .ok_or_else(|| NotifyError::Permanent("no sender address configured".into()))?;
        let mut b = Message::builder().from(from).subject(subject);
        for to in &self.to {
            b = b.to(to.clone());
        }
        b.multipart(MultiPart::alternative_plain_html(plain, html))
            .map_err(|e| NotifyError::Permanent(format!("cannot build the message: {e}")))
    }

    async fn deliver(&self, msg: Result<Message, NotifyError>) -> Result<(), NotifyError> {
        let msg = msg?;
        // Formatted once: the fallback sends the same bytes.
        let bytes = msg.formatted();
        match self.transport.send_raw(msg.envelope(), &bytes).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() && self.to.len() > 1 => {
                self.deliver_each(&msg, &bytes, e).await
            }
            Err(e) if e.is_permanent() => {
                Err(NotifyError::Permanent(format!("SMTP server refused: {e}")))
            }
            Err(e) => Err(NotifyError::Retryable(format!("SMTP: {e}"))),
        }
    }

    /// A message to several recipients refused for good may be refused for one of them (an
    /// address that no longer exists: the server answers 550 to its RCPT, and the whole
    /// transaction fails): each recipient then gets it in a transaction of its own, the
    /// message counts as delivered when one did, and the refused addresses are logged. Not
    /// tried again: a refusal for good stays one, and a retry would send the others twice.
    async fn deliver_each(
        &self,
        msg: &Message,
        bytes: &[u8],
        first: lettre::transport::smtp::Error,
    ) -> Result<(), NotifyError> {
        let from = msg.envelope().from().cloned();
        let mut refused = Vec::new();
        let mut for_now = Vec::new();
        for to in &self.to {
            let sent = match lettre::address::Envelope::new(from.clone(), vec![to.email.clone()]) {
                Ok(envelope) => (self.transport.send_raw(&envelope, bytes).await).map(|_| ()),
                Err(e) => {
                    refused.push(format!("{}: {e}", to.email));
                    continue;
                }
            };
            match sent {
                Ok(()) => {}
                Err(e) if e.is_permanent() => refused.push(format!("{}: {e}", to.email)),
                Err(e) => for_now.push(format!("{}: {e}", to.email)),
            }
        }
        if !for_now.is_empty() {
            // Tried again whole: those who got it may get it twice, rather than some never.
            return Err(NotifyError::Retryable(format!(
                "SMTP: not delivered for now to {}",
                for_now.join("; ")
            )));
        }
        if refused.len() == self.to.len() {
            return Err(NotifyError::Permanent(format!(
                "SMTP server refused: {first}"
            )));
        }
        tracing::warn!(
            "email delivered to {} of {} recipients; refused: {}",
            self.to.len() - refused.len(),
            self.to.len(),
            refused.join("; ")
        );
        Ok(())
    }
}

impl Notifier for EmailNotifier {
    fn send<'a>(&'a self, event: &'a AlertEvent) -> SendFuture<'a> {
        Box::pin(self.deliver(self.message(event)))
    }

    fn sends_group_whole(&self) -> bool {
        true
    }

    fn send_group<'a>(&'a self, group: &'a Notification) -> SendFuture<'a> {
        Box::pin(self.deliver(self.group_message(group)))
    }
}

/// The facts of an event as (label, value) rows, shared by both bodies.
fn summary(e: &AlertEvent) -> Vec<(&'static str, String)> {
    let mut rows = vec![
        ("Alert", e.id.clone()),
        ("Rule", e.rule.clone()),
        (
            "Level",
            format!("{} (was {})", e.level.as_str(), e.previous_level.as_str()),
        ),
        ("Event", kind_str(e.kind).to_owned()),
        ("Time", rfc3339(e.time)),
        ("Duration", fmt_duration(e.duration)),
    ];
    if let Some(c) = &e.category {
        rows.push(("Category", c.clone()));
    }
    rows
}

/// The plain-text body: the rendered details (Kapacitor's email body; the rules' default
/// details template already lists rule, id, level, duration, time, tags and fields), or, for an
/// event without details, the message followed by those facts.
pub fn plain_body(e: &AlertEvent) -> String {
    if !e.details.is_empty() {
        let mut s = e.details.clone();
        if !s.ends_with('\n') {
            s.push('\n');
        }
        return s;
    }
    let mut s = String::new();
    s.push_str(&e.message);
    s.push_str("\n\n");
    for (k, v) in summary(e) {
        s.push_str(&format!("{:<10}{v}\n", format!("{k}:")));
    }
    if !e.tags.is_empty() {
        s.push_str("\nTags:\n");
        for (k, v) in &e.tags {
            s.push_str(&format!("  {k} = {v}\n"));
        }
    }
    if !e.fields.is_empty() {
        s.push_str("\nFields:\n");
        for (k, v) in &e.fields {
            s.push_str(&format!("  {k} = {}\n", fmt_value(v, None)));
        }
    }
    s
}

/// One line per event of a group: level, message, id, since when / for how long.
fn group_line(e: &AlertEvent) -> String {
    let when = if e.kind == crate::model::EventKind::Recovery {
        format!(
            "resolved {}, after {}",
            rfc3339(e.time),
            fmt_duration(e.duration)
        )
    } else {
        format!("{}, for {}", rfc3339(e.time), fmt_duration(e.duration))
    };
    format!("{:<9}{}  [{}; {when}]", e.level.as_str(), e.message, e.id)
}

/// The sections of a grouped message: (title, events).
fn group_sections(n: &Notification) -> [(&'static str, &[std::sync::Arc<AlertEvent>]); 3] {
    [
        ("Firing", &n.firing),
        ("Resolved", &n.resolved),
        ("Action reports", &n.reports),
    ]
}

/// The plain-text body of a grouped message: a line per instance under Firing, Resolved and
/// Action reports, then each event's own body.
pub fn group_plain_body(n: &Notification) -> String {
    let mut s = format!("{} {}\n", n.status(), n.key());
    for (title, events) in group_sections(n) {
        if events.is_empty() {
            continue;
        }
        s.push_str(&format!("\n{title} ({}):\n", events.len()));
        for e in events {
            s.push_str(&format!("  {}\n", group_line(e)));
        }
    }
    for e in n.events() {
        s.push_str(&format!("\n--- {} ({})\n", e.id, e.level.as_str()));
        s.push_str(&plain_body(e));
    }
    s
}

/// The HTML body of a grouped message: a table per section, then each event's details.
pub fn group_html_body(n: &Notification) -> String {
    let mut s = String::from("<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n");
    s.push_str(&format!(
        "<h2 style=\"color: {}\">{} {}</h2>\n",
        level_color(n.level()),
        html_escape(&n.status()),
        html_escape(&n.key())
    ));
    for (title, events) in group_sections(n) {
        if events.is_empty() {
            continue;
        }
        s.push_str(&format!(
            "<h3>{} ({})</h3>\n<table cellpadding=\"3\">\n<tr><th align=\"left\">Level</th><th align=\"left\">Message</th><th align=\"left\">Alert</th><th align=\"left\">Time</th><th align=\"left\">Duration</th></tr>\n",
            html_escape(title),
            events.len()
        ));
        for e in events {
            s.push_str(&format!(
                "<tr><td style=\"color: {}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                level_color(e.level),
                e.level.as_str(),
                html_escape(&e.message),
                html_escape(&e.id),
                rfc3339(e.time),
                fmt_duration(e.duration)
            ));
        }
        s.push_str("</table>\n");
    }
    for e in n.events() {
        let text = if e.details.is_empty() {
            plain_body(e)
        } else {
            e.details.clone()
        };
        s.push_str(&format!(
            "<h4>{}</h4>\n<pre style=\"white-space: pre-wrap\">{}</pre>\n",
            html_escape(&e.id),
            html_escape(&text)
        ));
    }
    s.push_str("</body></html>\n");
    s
}

fn level_color(l: crate::model::Level) -> &'static str {
    match l {
        crate::model::Level::Critical => "#d50000",
        crate::model::Level::Warning => "#f1a500",
        crate::model::Level::Info => "#3498db",
        crate::model::Level::Ok => "#2e9e5b",
    }
}

/// The HTML body: the message as a heading colored by level, then the same content as the
/// plain part; every value is escaped (tag values come from monitored hosts).
pub fn html_body(e: &AlertEvent) -> String {
    let color = level_color(e.level);
    let mut s = String::from("<!DOCTYPE html>\n<html><body style=\"font-family: sans-serif\">\n");
    s.push_str(&format!(
        "<h2 style=\"color: {color}\">{}</h2>\n",
        html_escape(&e.message)
    ));
    if !e.details.is_empty() {
        s.push_str(&format!(
            "<pre style=\"white-space: pre-wrap\">{}</pre>\n",
            html_escape(&e.details)
        ));
        s.push_str("</body></html>\n");
        return s;
    }
    let table = |title: &str, rows: Vec<(String, String)>| {
        let mut t = format!(
            "<h3>{}</h3>\n<table cellpadding=\"3\">\n",
            html_escape(title)
        );
        for (k, v) in rows {
            t.push_str(&format!(
                "<tr><th align=\"left\">{}</th><td>{}</td></tr>\n",
                html_escape(&k),
                html_escape(&v)
            ));
        }
        t.push_str("</table>\n");
        t
    };
    s.push_str(&table(
        "Alert",
        summary(e)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    ));
    if !e.tags.is_empty() {
        s.push_str(&table(
            "Tags",
            e.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ));
    }
    if !e.fields.is_empty() {
        s.push_str(&table(
            "Fields",
            e.fields
                .iter()
                .map(|(k, v)| (k.clone(), fmt_value(v, None)))
                .collect(),
        ));
    }
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{EventKind, Level, Value};

    #[test]
    fn html_body_escapes_host_supplied_text() {
        let e = AlertEvent {
            rule: "r".into(),
            id: "r:host=<script>".into(),
            message: "disk <b>full</b> & more".into(),
            details: "\"quoted\"".into(),
            kind: EventKind::Alert,
            level: Level::Critical,
            previous_level: Level::Ok,
            tags: [("host".to_owned(), "<img src=x onerror=alert(1)>".to_owned())].into(),
            fields: [("value".to_owned(), Value::Str("<i>".into()))].into(),
            time: 0,
            point_time: 0,
            duration: Duration::ZERO,
            notify: vec![],
            category: None,
        };
        let h = html_body(&e);
        assert!(!h.contains("<script>") && !h.contains("<img") && !h.contains("<i>"));
        assert!(h.contains("disk &lt;b&gt;full&lt;/b&gt; &amp; more"));
        assert!(h.contains("&quot;quoted&quot;"));
        assert_eq!(plain_body(&e), "\"quoted\"\n");
        let e = AlertEvent {
            details: String::new(),
            ..e
        };
        let p = plain_body(&e);
        assert!(p.starts_with("disk <b>full</b> & more\n\nAlert:    r:host=<script>\n"));
        assert!(p.contains("Level:    CRITICAL (was OK)"));
        let h = html_body(&e);
        assert!(
            h.contains("<td>&lt;img src=x onerror=alert(1)&gt;</td>"),
            "{h}"
        );
    }
}
