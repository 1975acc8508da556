//! `[[outputs.influxdb]]`: line protocol to InfluxDB 1.x's `/write` (spec/telegraf.md §5.1).
//!
//! Per batch: metrics are grouped by database and retention policy (per-metric routing with
//! `database_tag` / `retention_policy_tag`), each group is serialized, gzipped unless
//! `content_encoding = "identity"`, and POSTed to the URLs in a new random order until one
//! answers. The answer is classified by [`classify`]:
//!
//! * 2xx: stored.
//! * `partial write` (type conflict, points beyond retention, unparsable lines): InfluxDB
//!   stored the good points and refused the others for good; the output reports
//!   [`WriteError::Rejected`] with the refused count (`dropped=N` in the message), so the good
//!   points are not written twice and the bad ones are never retried.
//! * `database not found`: the database is created and the batch kept for the next attempt
//!   (before that, each database is created once per URL: a refusal for good, 403 or a 2xx
//!   holding an error, is not tried again before each write);
//!   when it cannot be created (a user without the right: 403) at any URL, the metrics of
//!   that database are dropped (logged, naming it), as in Telegraf, and the others written.
//! * any other 4xx: the batch is refused (logged, counted as rejected), except 408/429 (retry).
//! * 5xx, timeout, connection refused: the batch is kept and retried with backoff.

use std::collections::HashSet;

use crate::common::http::{self, Client, Secret, base64, join_url, short, shuffled};
use tracing::warn;

use super::{Output, OutputSpec, WriteError};
use crate::lineproto::Serializer;
use crate::metric::Metric;
use crate::plugin::BuildContext;
use wk_core::options::Options;

/// Registry entry.
pub const SPEC: OutputSpec = OutputSpec {
    name: "influxdb",
    description: "Write metrics to InfluxDB 1.x over HTTP (/write)",
    sample_config: include_str!("sample.conf"),
    build,
};

/// The database when none (or `""`) is given, Telegraf's.
const DEFAULT_DATABASE: &str = "telegraf";

struct InfluxDb {
    client: Client,
    database: String,
    database_tag: Option<String>,
    exclude_database_tag: bool,
    retention_policy: String,
    retention_policy_tag: Option<String>,
    exclude_retention_policy_tag: bool,
    write_consistency: String,
    username: String,
    password: Secret,
    skip_database_creation: bool,
    serializer: Serializer,
    /// (url index, database) pairs not to create again before each write: created, or the
    /// creation refused in a way that will not change (see `create_database`).
    created: HashSet<(usize, String)>,
}

fn build(opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Output> {
    let settings = http::read_http_options(opts, "http://localhost:8086", true);
    // As Telegraf: an empty name is the default one.
    let database = Some(opts.string("database", DEFAULT_DATABASE))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
    let database_tag = opts.opt_string("database_tag").filter(|s| !s.is_empty());
    let exclude_database_tag = opts.bool("exclude_database_tag", false);
    let retention_policy = opts.string("retention_policy", "");
    let retention_policy_tag = opts
        .opt_string("retention_policy_tag")
        .filter(|s| !s.is_empty());
    let exclude_retention_policy_tag = opts.bool("exclude_retention_policy_tag", false);
    let write_consistency = opts.choice(
        "write_consistency",
        "",
        &["", "any", "one", "quorum", "all"],
    );
    let username = opts.string("username", "");
    let password = Secret::read(opts, "password", "password_file");
    let skip_database_creation = opts.bool("skip_database_creation", false);
    opts.unsupported(&["udp_payload"]);
    let serializer = Serializer {
        uint_support: opts.bool("influx_uint_support", false),
        omit_timestamp: opts.bool("influx_omit_timestamp", false),
        sort_fields: false,
    };
    Box::new(InfluxDb {
        client: Client::new(settings),
        database,
        database_tag,
        exclude_database_tag,
        retention_policy,
        retention_policy_tag,
        exclude_retention_policy_tag,
        write_consistency,
        username,
        password,
        skip_database_creation,
        serializer,
        created: HashSet::new(),
    })
}

/// What an answer of `/write` means for the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Stored,
    DatabaseNotFound(String),
    /// `n` points refused for good (the others, if any, stored).
    Rejected(usize, String),
    Retry(String),
}

/// Classifies an answer of InfluxDB 1.x `/write` to a batch of `count` points (pure, tested
/// on literal answers).
pub fn classify(status: u16, body: &str, count: usize) -> Verdict {
    if (200..300).contains(&status) {
        return Verdict::Stored;
    }
    let msg = error_text(body);
    if msg.contains("database not found") {
        return Verdict::DatabaseNotFound(msg);
    }
    if msg.contains("partial write") || msg.contains("unable to parse") {
        return Verdict::Rejected(rejected_count(&msg, count), msg);
    }
    if msg.contains("points beyond retention policy")
        || msg.contains("retention policy not found")
        || msg.contains("hinted handoff queue not empty")
    {
        return Verdict::Rejected(count, msg);
    }
    if status == 408 || status == 429 {
        return Verdict::Retry(format!("HTTP {status}: {msg}"));
    }
    if (400..500).contains(&status) {
        return Verdict::Rejected(count, format!("HTTP {status}: {msg}"));
    }
    Verdict::Retry(format!("HTTP {status}: {msg}"))
}

/// The `"error"` string of InfluxDB's JSON error body, or the body itself.
pub fn error_text(body: &str) -> String {
    let b = body.trim();
    if let Some(rest) = b.strip_prefix("{\"error\":\"")
        && let Some(inner) = rest.strip_suffix("\"}")
    {
        return unescape_json(inner);
    }
    b.to_owned()
}

fn unescape_json(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => out.push('?'),
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

/// How many points a partial-write message says were refused: `dropped=N` when N > 0, else
/// the number of `unable to parse` lines, else (unknown) the whole batch.
pub fn rejected_count(msg: &str, count: usize) -> usize {
    let dropped = msg.rfind("dropped=").and_then(|i| {
        let digits: String = msg[i + 8..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse::<usize>().ok()
    });
    let unparsable = msg.matches("unable to parse").count();
    let n = match dropped {
        Some(d) if d > 0 => d + unparsable,
        _ if unparsable > 0 => unparsable,
        _ => count,
    };
    n.min(count)
}

impl InfluxDb {
    fn auth_headers(&self) -> Result<Vec<(&'static str, String)>, WriteError> {
        let password = self.password.get()?;
        if self.username.is_empty() && password.is_empty() {
            return Ok(Vec::new());
        }
        let cred = base64(format!("{}:{password}", self.username).as_bytes());
        Ok(vec![("Authorization", format!("Basic {cred}"))])
    }

    /// `CREATE DATABASE` at URL `i`; `Err` says why it failed (for the log). A refusal that
    /// will not change is remembered as done, so that it is not tried (nor logged) again
    /// before each write: a 403 (a user who may not create databases), as in Telegraf, and a
    /// 2xx whose body holds an error (InfluxDB 2.x's v1 API: "not implemented: CREATE
    /// DATABASE"), which Telegraf 1.39 tries again before every write. A "database not found"
    /// answer to a write still tries once more (`write_group`).
    fn create_database(
        &mut self,
        i: usize,
        db: &str,
        auth: &[(&str, String)],
    ) -> Result<(), String> {
        let url = join_url(&self.client.settings.urls[i], "query", &[]);
        let q = format!(
            "CREATE DATABASE \"{}\"",
            db.replace('\\', "\\\\").replace('"', "\\\"")
        );
        let body = format!("q={}", http::percent_encode(&q));
        let r = self
            .client
            .post(
                &url,
                "application/x-www-form-urlencoded",
                body.as_bytes(),
                auth,
                false,
            )
            .map_err(|e| e.to_string())?;
        // InfluxDB answers some refusals with 200 and an error in the body.
        let refused = short(&error_text(&r.body));
        if (200..300).contains(&r.status) && !r.body.contains("\"error\"") {
            self.created.insert((i, db.to_owned()));
            return Ok(());
        }
        if r.status == 403 || (200..300).contains(&r.status) {
            self.created.insert((i, db.to_owned()));
        }
        Err(format!("HTTP {}: {refused}", r.status))
    }

    /// Writes one serialized group to the first URL that answers.
    fn write_group(
        &mut self,
        db: &str,
        rp: &str,
        body: &[u8],
        count: usize,
    ) -> Result<(), WriteError> {
        let auth = self.auth_headers()?;
        let urls = self.client.settings.urls.len();
        let mut errors = Vec::new();
        let mut not_found = 0;
        for i in shuffled(urls) {
            if !self.skip_database_creation
                && !self.created.contains(&(i, db.to_owned()))
                && let Err(e) = self.create_database(i, db, &auth)
            {
                let url = http::redact_url(&self.client.settings.urls[i]);
                warn!(url = %url, "creating database {db:?} failed: {e}");
            }
            let mut params = vec![("db", db)];
            if !rp.is_empty() {
                params.push(("rp", rp));
            }
            if !self.write_consistency.is_empty() && self.write_consistency != "one" {
                params.push(("consistency", self.write_consistency.as_str()));
            }
            let url = join_url(&self.client.settings.urls[i], "write", &params);
            let shown = crate::common::http::redact_url(&url);
            let reply = match self
                .client
                .post(&url, "text/plain; charset=utf-8", body, &auth, true)
            {
                Ok(r) => r,
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            };
            match classify(reply.status, &reply.body, count) {
                Verdict::Stored => return Ok(()),
                Verdict::Rejected(rejected, reason) => {
                    return Err(WriteError::Rejected {
                        rejected,
                        reason: format!("{shown}: {}", short(&reason)),
                    });
                }
                Verdict::DatabaseNotFound(msg) => {
                    // As Telegraf: created now, the write is retried; not created (a user
                    // without the right, 403), the next URL is tried, and when every URL
                    // says so the metrics are dropped rather than kept forever.
                    let why = if self.skip_database_creation {
                        "skip_database_creation is set".to_owned()
                    } else {
                        self.created.remove(&(i, db.to_owned()));
                        match self.create_database(i, db, &auth) {
                            Ok(()) => {
                                return Err(WriteError::Retry(format!(
                                    "{shown}: {}; created it, the batch is kept for the next attempt",
                                    short(&msg)
                                )));
                            }
                            Err(e) => format!("creating it failed: {e}"),
                        }
                    };
                    not_found += 1;
                    errors.push(format!("{shown}: {}; {why}", short(&msg)));
                }
                Verdict::Retry(msg) => errors.push(format!("{shown}: {}", short(&msg))),
            }
        }
        if not_found == urls {
            // Every server says the database does not exist and it cannot be created: kept,
            // these metrics would block every other database's behind them for good.
            return Err(WriteError::Rejected {
                rejected: count,
                reason: format!(
                    "database {db:?} does not exist and cannot be created, its {count} metric(s) are dropped: {}",
                    errors.join("; ")
                ),
            });
        }
        Err(WriteError::Retry(format!(
            "could not write any address: {}",
            errors.join("; ")
        )))
    }
}

impl Output for InfluxDb {
    fn write(&mut self, metrics: &[Metric]) -> Result<(), WriteError> {
        // Group by (database, retention policy), in order of first appearance.
        let mut groups: Vec<(String, String, Vec<u8>, usize)> = Vec::new();
        let mut unwritable = 0;
        for m in metrics {
            // The value of the metric's routing tag, else the configured name.
            let route = |tag: &Option<String>, default: &str| {
                tag.as_deref()
                    .and_then(|t| m.tag(t))
                    .unwrap_or(default)
                    .to_owned()
            };
            let db = route(&self.database_tag, &self.database);
            let rp = route(&self.retention_policy_tag, &self.retention_policy);
            let g = match groups.iter().position(|g| g.0 == db && g.1 == rp) {
                Some(g) => g,
                None => {
                    groups.push((db, rp, Vec::new(), 0));
                    groups.len() - 1
                }
            };
            let strip_db = self
                .exclude_database_tag
                .then_some(self.database_tag.as_deref())
                .flatten();
            let strip_rp = self
                .exclude_retention_policy_tag
                .then_some(self.retention_policy_tag.as_deref())
                .flatten();
            let wrote = if strip_db.is_some() || strip_rp.is_some() {
                let mut m = m.clone();
                m.retain_tags(|k| Some(k) != strip_db && Some(k) != strip_rp);
                self.serializer.write(&mut groups[g].2, &m)
            } else {
                self.serializer.write(&mut groups[g].2, m)
            };
            if wrote {
                groups[g].3 += 1;
            } else {
                unwritable += 1;
            }
        }
        let mut rejected = unwritable;
        let mut reasons = Vec::new();
        if unwritable > 0 {
            reasons.push(format!("{unwritable} metric(s) without a writable field"));
        }
        let mut retry = Vec::new();
        for (db, rp, body, count) in &groups {
            if *count == 0 {
                continue;
            }
            match self.write_group(db, rp, body, *count) {
                Ok(()) => {}
                Err(WriteError::Rejected {
                    rejected: n,
                    reason,
                }) => {
                    rejected += n;
                    reasons.push(reason);
                }
                Err(e) => retry.push(e.to_string()),
            }
        }
        if !retry.is_empty() {
            // The whole batch is kept; groups already stored are written again on retry,
            // which InfluxDB treats as an overwrite of the same points.
            return Err(WriteError::Retry(retry.join("; ")));
        }
        if rejected > 0 {
            return Err(WriteError::Rejected {
                rejected,
                reason: reasons.join("; "),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: InfluxDB 2.x's v1 API answers CREATE DATABASE with 200 and "not
    /// implemented" in the body; that answer was no longer remembered, so a CREATE DATABASE
    /// and a WARN went out before every write.
    #[test]
    fn a_creation_refused_with_a_2xx_is_not_tried_before_every_write() {
        let (url, seen) = http::test_server(|line| {
            if line.starts_with("post /query") {
                (
                    "200 OK",
                    r#"{"results":[{"statement_id":0,"error":"not implemented: CREATE DATABASE"}]}"#,
                )
            } else {
                ("204 No Content", "")
            }
        });
        let paths = crate::hostpaths::HostPaths::default();
        let stats = Default::default();
        let ctx = BuildContext {
            paths: &paths,
            interval: std::time::Duration::from_secs(10),
            stats: &stats,
        };
        let (mut out, said) =
            wk_core::testing::read_table(&format!("[influxdb]\n  urls = [\"{url}\"]\n"), |o| {
                build(o, &ctx)
            });
        assert!(said.is_empty(), "{said:?}");
        for t in 1..=3 {
            let m = Metric::new("m", t).with_field("x", 1i64);
            assert_eq!(out.write(&[m]), Ok(()));
        }
        let seen = seen.lock().expect("lock").clone();
        let queries = seen.iter().filter(|l| l.starts_with("post /query")).count();
        let writes = seen.iter().filter(|l| l.starts_with("post /write")).count();
        assert_eq!((queries, writes), (1, 3), "{seen:?}");
    }

    #[test]
    fn success_codes_store() {
        assert_eq!(classify(204, "", 3), Verdict::Stored);
        assert_eq!(classify(200, "", 3), Verdict::Stored);
    }

    #[test]
    fn type_conflict_rejects_only_the_dropped_points() {
        let body = r#"{"error":"partial write: field type conflict: input field \"x\" on measurement \"m\" is type string, already exists as type float dropped=1"}"#;
        match classify(400, body, 5) {
            Verdict::Rejected(1, msg) => assert!(msg.contains("field \"x\""), "{msg}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn unparsable_lines_are_counted() {
        let body = "{\"error\":\"partial write:\\nunable to parse 'a b': invalid field format\\nunable to parse 'c d': invalid field format dropped=0\"}";
        assert!(matches!(classify(400, body, 10), Verdict::Rejected(2, _)));
        let body = "{\"error\":\"unable to parse 'x': missing fields\"}";
        assert!(matches!(classify(400, body, 1), Verdict::Rejected(1, _)));
    }

    #[test]
    fn beyond_retention_counts_dropped() {
        let body = r#"{"error":"partial write: points beyond retention policy dropped=4"}"#;
        assert!(matches!(classify(400, body, 9), Verdict::Rejected(4, _)));
    }

    #[test]
    fn database_not_found_is_its_own_verdict() {
        let body = r#"{"error":"database not found: \"nope\""}"#;
        assert_eq!(
            classify(404, body, 2),
            Verdict::DatabaseNotFound("database not found: \"nope\"".into())
        );
    }

    #[test]
    fn other_4xx_reject_and_5xx_retry() {
        assert!(matches!(
            classify(401, r#"{"error":"authorization failed"}"#, 7),
            Verdict::Rejected(7, _)
        ));
        assert!(matches!(classify(413, "", 7), Verdict::Rejected(7, _)));
        assert!(matches!(classify(429, "", 7), Verdict::Retry(_)));
        assert!(matches!(
            classify(500, r#"{"error":"timeout"}"#, 7),
            Verdict::Retry(_)
        ));
        assert!(matches!(classify(503, "", 7), Verdict::Retry(_)));
        assert!(matches!(
            classify(500, r#"{"error":"retention policy not found: x"}"#, 7),
            Verdict::Rejected(7, _)
        ));
    }

    #[test]
    fn counts_never_exceed_the_batch() {
        assert_eq!(rejected_count("partial write: x dropped=99", 3), 3);
        assert_eq!(rejected_count("partial write: garbage", 3), 3);
        assert_eq!(rejected_count("dropped=", 3), 3);
    }

    #[test]
    fn json_errors_are_unescaped() {
        assert_eq!(error_text(r#"{"error":"a \"b\"\nc"}"#), "a \"b\"\nc");
        assert_eq!(error_text("plain text"), "plain text");
    }
}
