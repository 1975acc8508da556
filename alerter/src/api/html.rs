//! The status page: one server-rendered HTML document (no JavaScript; it reloads itself with
//! a meta refresh; forms post silences), readable on a phone. Every value is escaped: tag
//! values and messages come from the monitored hosts.

use std::fmt::Write;

use super::Api;
use super::board::muted;
use crate::notify::text::html_escape as esc;
use crate::stream::http::Head;
use crate::template::{format_duration, format_rfc3339 as rfc3339};

/// Seconds between reloads (`?refresh=N` changes it, `0` stops it).
const REFRESH_SECS: u32 = 15;
/// Rows of the notification and action tables.
const RECENT: usize = 20;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0 auto;max-width:72em;padding:.5em;\
color:#222}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}table{border-collapse:collapse;\
width:100%}td,th{text-align:left;padding:.25em .4em;border-bottom:1px solid #ddd;vertical-align:top;\
overflow-wrap:anywhere}td.crit,td.warn,td.info{overflow-wrap:normal}.wrap{overflow-x:auto}.crit{color:#b00;font-weight:bold}.warn{color:#a60;\
font-weight:bold}.info{color:#06a}.muted{color:#777}.tag{font-family:monospace;font-size:.9em}\
.counts span{display:inline-block;margin-right:1em}form{margin:.2em 0}input,select,button{font-size:1em}\
details summary{cursor:pointer;color:#06a}@media(max-width:40em){td,th{display:block;border:0;\
padding:.1em .3em}tr{display:block;border-bottom:1px solid #ccc;padding:.3em 0}thead{display:none}}";

fn level_class(level: &str) -> &'static str {
    match level {
        "CRITICAL" => "crit",
        "WARNING" => "warn",
        "INFO" => "info",
        _ => "",
    }
}

fn ago(now: i64, ns: i64) -> String {
    if ns <= 0 {
        return "never".into();
    }
    let d = std::time::Duration::from_secs(u64::try_from((now - ns) / 1_000_000_000).unwrap_or(0));
    format!("{} ago", format_duration(d))
}

/// The matchers that silence exactly this alert: its rule and every tag, each value as an
/// escaped regular expression (matched whole) with whitespace written as `\x{…}`, each key
/// bare or quoted ([`tag_key`](crate::notify::silence::tag_key): a tag named `rule`, a key
/// with a space), so that no value or key reads as anything but itself. One form field each.
fn matchers_for(e: &crate::model::AlertEvent) -> Vec<String> {
    use crate::notify::silence::{exact_regex, tag_key};
    let mut m = vec![format!("rule=~{}", exact_regex(&e.rule))];
    for (k, v) in &e.tags {
        m.push(format!("{}=~{}", tag_key(k), exact_regex(v)));
    }
    m
}

/// A table of the page: `empty` (when given) instead of a table without rows, else the
/// column heads and one `row` per item.
fn table<T>(
    p: &mut String,
    empty: Option<&str>,
    heads: &[&str],
    items: impl IntoIterator<Item = T>,
    mut row: impl FnMut(&mut String, T),
) {
    let mut items = items.into_iter().peekable();
    if let Some(empty) = empty
        && items.peek().is_none()
    {
        let _ = write!(p, "<p>{empty}</p>");
        return;
    }
    let _ = write!(p, "<div class=\"wrap\"><table><thead><tr>");
    for h in heads {
        let _ = write!(p, "<th>{h}</th>");
    }
    let _ = write!(p, "</tr></thead><tbody>");
    for item in items {
        row(p, item);
    }
    let _ = write!(p, "</tbody></table></div>");
}

/// `?p=…` when the request carried the token as `p` (percent-encoded), else empty.
pub(super) fn token_query(head: &Head) -> String {
    head.param("p").map_or_else(String::new, |t| {
        let enc: String = t
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!("?p={enc}")
    })
}

impl Api {
    /// The whole page; `writable`: the request may change things (its forms would work).
    pub(super) fn page(&self, head: &Head, now: i64, writable: bool) -> String {
        let refresh = head
            .param("refresh")
            .and_then(|r| r.parse::<u32>().ok())
            .unwrap_or(REFRESH_SECS);
        // A page opened with `?p=TOKEN` keeps it in its forms (they would be refused without).
        let keep = esc(&token_query(head));
        let b = self.board.get();
        let c = b.counts(&self.router, now);
        let mut p = String::with_capacity(16 * 1024);
        let _ = write!(
            p,
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        );
        if refresh > 0 {
            let _ = write!(p, "<meta http-equiv=\"refresh\" content=\"{refresh}\">");
        }
        let _ = write!(
            p,
            "<title>{} firing · wk-alerter</title><style>{STYLE}</style></head><body>\
             <h1>wk-alerter</h1><p class=\"counts\"><span><b>{}</b> firing</span>\
             <span>{} silenced</span><span>{} inhibited</span><span>{} pending</span>\
             <span>{} ({} with problems)</span><span>{}</span></p>\
             <p class=\"muted\">source {} · up since {} · page at {}{}</p>",
            c.firing,
            c.firing,
            c.silenced,
            c.inhibited,
            c.pending,
            crate::template::count(c.rules as u64, "rule"),
            c.broken,
            crate::template::count(c.evaluations, "evaluation"),
            esc(&b.source),
            esc(&rfc3339(b.started)),
            esc(&rfc3339(now)),
            if refresh > 0 {
                format!(", reloads every {refresh}s")
            } else {
                String::new()
            }
        );

        // Alerts.
        let _ = write!(p, "<h2 id=\"alerts\">Alerts</h2>");
        let alerts: Vec<_> = b.alerts().collect();
        let heads = ["level", "alert", "value", "since", "state"];
        table(
            &mut p,
            Some("Nothing is firing."),
            &heads,
            alerts,
            |p, a| {
                let e = &a.event;
                let level = e.level.as_str();
                let state = if a.pending {
                    "pending".to_owned()
                } else {
                    match muted(&self.router, a, now) {
                        Some((kind, why)) => {
                            format!("{kind} <span class=\"muted\">({})</span>", esc(&why))
                        }
                        None => match e.kind {
                            crate::model::EventKind::NoData => "no data".into(),
                            crate::model::EventKind::Error => "evaluation failing".into(),
                            _ => "firing".into(),
                        },
                    }
                };
                let value = e
                    .fields
                    .get("value")
                    .map(|v| match v {
                        crate::model::Value::Float(f) => format!("{f:.2}"),
                        crate::model::Value::Int(i) => i.to_string(),
                        crate::model::Value::Bool(b) => b.to_string(),
                        crate::model::Value::Str(s) => s.clone(),
                    })
                    .unwrap_or_default();
                let _ = write!(
                    p,
                    "<tr class=\"alert\" data-id=\"{}\"><td class=\"{}\">{}</td><td><b>{}</b><br>{}\
                     <br><span class=\"tag\">{}</span></td><td>{}</td><td>{}</td>\
                     <td class=\"state\">{state}{}</td></tr>",
                    esc(&e.id),
                    level_class(level),
                    esc(level),
                    esc(&e.rule),
                    esc(&e.message),
                    esc(&e.id),
                    esc(&value),
                    esc(&ago(now, a.since.unwrap_or(0))),
                    if a.flapping { " (flapping)" } else { "" },
                );
                let _ = write!(
                    p,
                    "<tr><td></td><td colspan=\"4\"><details><summary>silence this alert</summary>\
                     <form method=\"post\" action=\"/api/v1/silences{keep}\">{}\
                     <select name=\"duration\"><option>1h</option><option>2h</option>\
                     <option>8h</option><option>1d</option></select> \
                     <input name=\"comment\" required placeholder=\"why, and who\"> \
                     <button>silence</button></form></details></td></tr>",
                    matchers_for(e)
                        .iter()
                        .map(|m| format!(
                            "<input type=\"hidden\" name=\"matcher\" value=\"{}\">",
                            esc(m)
                        ))
                        .collect::<String>()
                );
            },
        );

        // Silences.
        let _ = write!(p, "<h2 id=\"silences\">Silences</h2>");
        match crate::notify::silence_store::load(&self.state_dir) {
            Ok(all) => {
                let live: Vec<_> = all.iter().filter(|s| s.ends > now).collect();
                let heads = ["matchers", "until", "by", ""];
                table(&mut p, Some("No silence."), &heads, live, |p, s| {
                    let _ = write!(
                        p,
                        "<tr class=\"silence\"><td class=\"tag\">{}</td><td>{}{}</td>\
                             <td>{}: {}</td><td><form method=\"post\" \
                             action=\"/api/v1/silences/{}/expire{keep}\"><button>expire</button>\
                             </form></td></tr>",
                        esc(&s.matchers.join(" ")),
                        esc(&rfc3339(s.ends)),
                        if s.starts.is_some_and(|t| t > now) {
                            format!(" (from {})", esc(&rfc3339(s.starts.unwrap_or(0))))
                        } else {
                            String::new()
                        },
                        esc(&s.by),
                        esc(&s.comment),
                        esc(&s.id),
                    );
                });
            }
            Err(e) => {
                let _ = write!(p, "<p class=\"crit\">{}</p>", esc(&e.to_string()));
            }
        }
        if !writable {
            // The forms below would be refused: say why, and how to get them.
            let _ = write!(
                p,
                "<p class=\"muted\">Read-only here: changes need the token (open this page \
                 as <code>/?p=TOKEN</code>, or use <code>wk-alerter silence</code>), or \
                 <code>[http] loopback_writes_without_token = true</code> on a machine whose \
                 local users and proxies you trust.</p>"
            );
        }
        let _ = write!(
            p,
            "<details><summary>new silence</summary><form method=\"post\" \
             action=\"/api/v1/silences{keep}\"><p><input name=\"matchers\" required size=\"30\" \
             placeholder=\"host=web1 rule=cpu_*\"> for <input name=\"duration\" value=\"2h\" \
             size=\"4\"></p><p><input name=\"comment\" required size=\"30\" \
             placeholder=\"why, and who\"> <button>silence</button></p><p class=\"muted\">\
             Matchers, space-separated: key=glob, key!=glob, key=~regex, key!~regex; \
             <code>rule</code> names the rule, a quoted key (\"k8s pod\"=x) any tag.</p></form></details>"
        );

        // Rules.
        let _ = write!(p, "<h2 id=\"rules\">Rules</h2>");
        let heads = ["rule", "every", "last evaluation", "version", "problem"];
        table(&mut p, None, &heads, b.rules.values(), |p, r| {
            let problem = match (&r.newer_file_failed, &r.last_error) {
                (Some(f), _) => format!(
                    "<span class=\"crit\">the file on disk ({}) does not run: {}</span>",
                    esc(&r.file_version),
                    esc(f)
                ),
                (None, Some(e)) => format!("<span class=\"crit\">{}</span>", esc(e)),
                (None, None) if r.name.is_empty() => {
                    "<span class=\"crit\">not loaded</span>".into()
                }
                (None, None) => r.no_series.as_ref().map_or_else(String::new, |w| {
                    format!("<span class=\"muted\">{}</span>", esc(w))
                }),
            };
            let _ = write!(
                p,
                "<tr><td><b>{}</b><br><span class=\"tag\">{}</span></td><td>{}</td><td>{} \
                 ({:.1} ms)<br>{} runs, {} failed</td><td class=\"tag\">{}</td><td>{problem}</td></tr>",
                esc(&r.name),
                esc(&r.file),
                esc(&r.every),
                esc(&ago(now, r.last_evaluation_ns)),
                r.last_duration_ms,
                r.evaluations,
                r.failures,
                esc(&r.version),
            );
        });

        // Notifications.
        let _ = write!(p, "<h2 id=\"notifications\">Recent notifications</h2>");
        let history = self.router.history();
        let recent = history.iter().rev().take(RECENT);
        let heads = ["when", "alert", "to", "status"];
        table(&mut p, Some("None yet."), &heads, recent, |p, d| {
            let _ = write!(
                p,
                "<tr><td>{}</td><td class=\"{}\">{} {} <span class=\"tag\">{}</span></td>\
                     <td>{}</td><td>{}{}</td></tr>",
                esc(&ago(now, d.time)),
                level_class(&d.level),
                esc(&d.level),
                esc(&d.kind),
                esc(&d.id),
                esc(if d.notifier.is_empty() {
                    "-"
                } else {
                    &d.notifier
                }),
                esc(&d.status),
                if d.error.is_empty() {
                    String::new()
                } else {
                    format!(" <span class=\"muted\">{}</span>", esc(&d.error))
                },
            );
        });

        // Actions.
        let _ = write!(p, "<h2 id=\"actions\">Recent recovery actions</h2>");
        let results = self.engine.results();
        let recent = results.iter().rev().take(RECENT);
        let heads = ["when", "action", "result", "time to recover"];
        table(&mut p, Some("None yet."), &heads, recent, |p, r| {
            let ttr = if r.recovered && r.verified_ns > 0 && r.fault_ns > 0 {
                format_duration(std::time::Duration::from_millis(
                    u64::try_from((r.verified_ns - r.fault_ns) / 1_000_000).unwrap_or(0),
                ))
            } else {
                "-".into()
            };
            let _ = write!(
                p,
                "<tr><td>{}</td><td><b>{}</b>({}) <span class=\"tag\">{}</span></td>\
                     <td>{}{}: {}</td><td>{}</td></tr>",
                esc(&ago(now, r.started_ns)),
                esc(&r.action),
                esc(&r.args),
                esc(&r.alert_id),
                esc(&r.status),
                if r.recovered { ", recovered" } else { "" },
                esc(&r.did),
                esc(&ttr),
            );
        });
        let _ = writeln!(
            p,
            "<p class=\"muted\">JSON: <a href=\"/api/v1/alerts\">alerts</a> · \
             <a href=\"/api/v1/rules\">rules</a> · <a href=\"/api/v1/silences\">silences</a> · \
             <a href=\"/api/v1/notifications\">notifications</a> · \
             <a href=\"/api/v1/actions\">actions</a> · <a href=\"/metrics\">metrics</a></p>\
             </body></html>"
        );
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<script>alert(\"x\")</script> & 'y'"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }

    #[test]
    fn silence_matchers_for_an_alert_are_exact() {
        let mut e = crate::model::AlertEvent {
            rule: "cpu".into(),
            ..Default::default()
        };
        // Values that were misread: a leading `~` (a regex operator), glob characters,
        // whitespace that splits the form (a tab was a 400), a key with `/` (left out), a
        // tag named `rule` (a second rule matcher that never matched).
        e.tags.insert("host".into(), "web1".into());
        e.tags.insert("path".into(), "/a b*".into());
        e.tags.insert("mood".into(), "~x".into());
        e.tags.insert("tabbed".into(), "a\tb".into());
        e.tags.insert("k8s/pod".into(), "api-1".into());
        e.tags.insert("rule".into(), "other".into());
        e.tags.insert("k8s pod".into(), "api 1".into());
        let m = matchers_for(&e);
        assert_eq!(
            m,
            [
                "rule=~cpu",
                "host=~web1",
                "\"k8s pod\"=~api\\x{20}1",
                "k8s/pod=~api\\-1",
                "mood=~\\~x",
                "path=~/a\\x{20}b\\*",
                "\"rule\"=~other",
                "tabbed=~a\\x{9}b"
            ]
        );
        // As the form posts them: one field each.
        let matchers = m
            .iter()
            .map(|one| crate::notify::silence::Matcher::parse(one).unwrap())
            .collect();
        let s = crate::notify::Silence {
            matchers,
            starts: None,
            ends: i64::MAX,
            comment: String::new(),
        };
        assert!(s.silences(&e, 1));
        let mut other = e.clone();
        other.tags.insert("path".into(), "/a bc".into());
        assert!(!s.silences(&other, 1), "exact, not a glob");
        let mut other = e.clone();
        other.tags.insert("k8s/pod".into(), "api-2".into());
        assert!(!s.silences(&other, 1), "the k8s/pod tag counts");
        for (k, v) in [("rule", "x"), ("k8s pod", "api 2")] {
            let mut other = e.clone();
            other.tags.insert(k.into(), v.into());
            assert!(!s.silences(&other, 1), "the {k:?} tag counts");
        }
    }
}
