//! The query a rule builds with `query("m").field(..)...` and its InfluxQL rendering.
//!
//! The same [`Query`] is evaluated natively by the memory source (`source::memory`); the two
//! must agree, so the semantics are written down once here and in docs/rules.md ("How queries
//! become InfluxQL"):
//! - range: points with `now - range < time <= now` (explicit nanosecond bounds, so the
//!   alerter's clock, not the database's, decides the window and tests are reproducible);
//! - where / where_not: tag equals / differs; a missing tag is the empty string (InfluxDB's rule);
//! - where_match / where_in: the tag matches a regex (unanchored, Rust `regex` syntax, which
//!   InfluxDB's Go RE2 shares for everything rules need) / equals one of a list; rendered as
//!   InfluxQL `=~ /re/` and an `OR` of equalities;
//! - group_by: one series per combination of the listed tags' values; without it one series;
//! - aggregates reduce each group to one value; no aggregate returns every point (raw);
//! - derivatives are computed between consecutive raw points, as InfluxDB does for
//!   `derivative("f", unit)` without `GROUP BY time`.

use std::fmt::Write as _;
use std::time::Duration;

/// What a query does with the points of one group.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    /// Every point, oldest first.
    Raw,
    Mean,
    Max,
    Min,
    Last,
    Sum,
    Count,
    /// `percentile(p)`, 0 < p <= 100, InfluxDB's nearest-rank selector.
    Percentile(f64),
    /// Rate of change per `unit` between consecutive points.
    Derivative {
        unit: Duration,
        non_negative: bool,
    },
}

impl Aggregate {
    /// The script-side name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Aggregate::Raw => "raw",
            Aggregate::Mean => "mean",
            Aggregate::Max => "max",
            Aggregate::Min => "min",
            Aggregate::Last => "last",
            Aggregate::Sum => "sum",
            Aggregate::Count => "count",
            Aggregate::Percentile(_) => "percentile",
            Aggregate::Derivative {
                non_negative: false,
                ..
            } => "derivative",
            Aggregate::Derivative {
                non_negative: true, ..
            } => "non_negative_derivative",
        }
    }
}

/// One tag condition: `tag = 'value'` or, negated, `tag != 'value'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    pub tag: String,
    pub value: String,
    pub negate: bool,
}

impl TagFilter {
    /// Whether a point whose tag has this value (`""` when absent) passes.
    pub fn matches(&self, tag_value: &str) -> bool {
        (tag_value == self.value) != self.negate
    }

    /// A tag value that passes the filter, when the filter names one.
    pub fn sample_value(&self) -> Option<String> {
        (!self.negate).then(|| self.value.clone())
    }
}

/// A compiled tag regex; equal when the patterns are.
#[derive(Debug, Clone)]
pub struct TagRegex(pub regex::Regex);

impl PartialEq for TagRegex {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A tag condition beyond equality: `.where_match(tag, re)` or `.where_in(tag, [..])`.
#[derive(Debug, Clone, PartialEq)]
pub enum TagMatch {
    Regex { tag: String, re: TagRegex },
    In { tag: String, values: Vec<String> },
}

impl TagMatch {
    /// The tag the condition is on.
    pub fn tag(&self) -> &str {
        match self {
            TagMatch::Regex { tag, .. } | TagMatch::In { tag, .. } => tag,
        }
    }

    /// Whether a point whose tag has this value (`""` when absent) passes.
    pub fn matches(&self, tag_value: &str) -> bool {
        match self {
            TagMatch::Regex { re, .. } => re.0.is_match(tag_value),
            TagMatch::In { values, .. } => values.iter().any(|v| v == tag_value),
        }
    }
}

/// A query over one field of one measurement; see the module doc for its semantics.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub measurement: String,
    /// The field to read; required by [`Query::validate`].
    pub field: Option<String>,
    pub filters: Vec<TagFilter>,
    /// Regex and list conditions (all must hold, with `filters`).
    pub matches: Vec<TagMatch>,
    pub range: Duration,
    pub aggregate: Aggregate,
    pub group_by: Vec<String>,
}

/// Why a query cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

/// The name of the single value column every rendered query returns.
pub const VALUE_COLUMN: &str = "value";

impl Query {
    /// A query over `measurement` with the defaults of docs/rules.md (range 1m, raw).
    pub fn new(measurement: impl Into<String>) -> Query {
        Query {
            measurement: measurement.into(),
            field: None,
            filters: Vec::new(),
            matches: Vec::new(),
            range: Duration::from_secs(60),
            aggregate: Aggregate::Raw,
            group_by: Vec::new(),
        }
    }

    /// Checks what the builder could not check call by call.
    pub fn validate(&self) -> Result<&str, QueryError> {
        if self.measurement.is_empty() {
            return Err(QueryError("query(): the measurement name is empty".into()));
        }
        let field = match self.field.as_deref() {
            Some(f) if !f.is_empty() => f,
            _ => {
                return Err(QueryError(format!(
                    "query({:?}) needs .field(name) before .run()",
                    self.measurement
                )));
            }
        };
        if self.range.is_zero() {
            return Err(QueryError(
                "range must be longer than 0s: .range(\"1m\")".into(),
            ));
        }
        if let Aggregate::Percentile(p) = self.aggregate
            && !(p > 0.0 && p <= 100.0)
        {
            return Err(QueryError(format!(
                "percentile({p}): p must be in 0 < p <= 100"
            )));
        }
        if let Aggregate::Derivative { unit, .. } = self.aggregate
            && unit.is_zero()
        {
            return Err(QueryError(
                "derivative unit must be longer than 0s: .derivative(\"1s\")".into(),
            ));
        }
        for t in &self.group_by {
            if t.is_empty() || t == "*" {
                return Err(QueryError(format!(
                    "group_by({t:?}): name the tags to group by"
                )));
            }
        }
        Ok(field)
    }

    /// The time window `(start, end]` in ns for an evaluation at `now_ns`.
    pub fn window(&self, now_ns: i64) -> (i64, i64) {
        let range = i64::try_from(self.range.as_nanos()).unwrap_or(i64::MAX);
        (now_ns.saturating_sub(range), now_ns)
    }

    /// The InfluxQL statement for an evaluation at `now_ns`; `retention_policy` qualifies the
    /// measurement when set. Identifiers and tag values are quoted, so hostile tag values
    /// (they come from monitored hosts) stay literals.
    pub fn to_influxql(
        &self,
        retention_policy: Option<&str>,
        now_ns: i64,
    ) -> Result<String, QueryError> {
        let field = quote_ident(self.validate()?);
        let mut q = String::from("SELECT ");
        // Writing to a String cannot fail: the results of write! are ignored below.
        match &self.aggregate {
            Aggregate::Raw => q.push_str(&field),
            Aggregate::Percentile(p) => {
                let _ = write!(q, "percentile({field}, {})", number(*p));
            }
            Aggregate::Derivative { unit, .. } => {
                let _ = write!(
                    q,
                    "{}({field}, {})",
                    self.aggregate.name(),
                    duration_literal(*unit)
                );
            }
            other => {
                let _ = write!(q, "{}({field})", other.name());
            }
        }
        let _ = write!(q, " AS {} FROM ", quote_ident(VALUE_COLUMN));
        if let Some(rp) = retention_policy.filter(|rp| !rp.is_empty()) {
            q.push_str(&quote_ident(rp));
            q.push('.');
        }
        q.push_str(&quote_ident(&self.measurement));
        let (start, end) = self.window(now_ns);
        let _ = write!(q, " WHERE time > {start} AND time <= {end}");
        for f in &self.filters {
            let op = if f.negate { "!=" } else { "=" };
            let _ = write!(
                q,
                " AND {} {op} {}",
                quote_ident(&f.tag),
                quote_string(&f.value)
            );
        }
        for m in &self.matches {
            match m {
                TagMatch::Regex { tag, re } => {
                    let _ = write!(
                        q,
                        " AND {} =~ {}",
                        quote_ident(tag),
                        regex_literal(re.0.as_str())
                    );
                }
                TagMatch::In { tag, values } => {
                    let alts: Vec<String> = values
                        .iter()
                        .map(|v| format!("{} = {}", quote_ident(tag), quote_string(v)))
                        .collect();
                    let _ = write!(q, " AND ({})", alts.join(" OR "));
                }
            }
        }
        if !self.group_by.is_empty() {
            q.push_str(" GROUP BY ");
            let tags: Vec<String> = self.group_by.iter().map(|t| quote_ident(t)).collect();
            q.push_str(&tags.join(", "));
        }
        Ok(q)
    }
}

/// An InfluxQL identifier: always double-quoted, with `\`, `"` and newline escaped (the
/// escapes InfluxQL's scanner accepts: `\\`, `\"`, `\'`, `\n`).
pub fn quote_ident(s: &str) -> String {
    quote(s, '"')
}

/// An InfluxQL string literal: single-quoted with the same escapes.
pub fn quote_string(s: &str) -> String {
    quote(s, '\'')
}

fn quote(s: &str, q: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' | '\'' if c == q => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push(q);
    out
}

/// An InfluxQL regex literal: `/.../` with `/` escaped (the only escape its scanner needs;
/// a backslash before any other character is passed to the regex engine as is). A newline,
/// which the scanner refuses inside a regex, is written as the regex escape `\n`.
pub fn regex_literal(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 2);
    out.push('/');
    for c in pattern.chars() {
        match c {
            '/' => out.push_str("\\/"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('/');
    out
}

/// What of Rust's regex syntax Go's RE2 (which InfluxDB and VictoriaMetrics use) refuses: the
/// rule would load, pass `check` and run over the stream, then fail every query in
/// production. Flags other than `i`, `m`, `s` and `U` (`x` verbose mode, `R`, `u`), class set
/// operations (`[a-z&&[^x]]`, `--`, `~~`) and classes nested in classes.
fn beyond_re2(pattern: &str) -> Result<(), String> {
    use regex_syntax::ast::{self, Ast, ClassSetItem, visit};
    struct Re2;
    impl ast::Visitor for Re2 {
        type Output = ();
        type Err = String;
        fn finish(self) -> Result<(), String> {
            Ok(())
        }
        fn visit_pre(&mut self, a: &Ast) -> Result<(), String> {
            let flags = match a {
                Ast::Flags(f) => Some(&f.flags),
                Ast::Group(g) => match &g.kind {
                    ast::GroupKind::NonCapturing(f) => Some(f),
                    _ => None,
                },
                _ => None,
            };
            for item in flags.map_or(&[][..], |f| &f.items) {
                if let ast::FlagsItemKind::Flag(flag) = &item.kind
                    && !matches!(
                        flag,
                        ast::Flag::CaseInsensitive
                            | ast::Flag::MultiLine
                            | ast::Flag::DotMatchesNewLine
                            | ast::Flag::SwapGreed
                    )
                {
                    return Err(format!(
                        "the flag {flag:?} is not in Go's RE2 (InfluxDB, VictoriaMetrics): \
                         only i, m, s and U"
                    ));
                }
            }
            Ok(())
        }
        fn visit_post(&mut self, a: &Ast) -> Result<(), String> {
            use ast::AssertionKind as K;
            match a {
                Ast::Assertion(x)
                    if !matches!(
                        x.kind,
                        K::StartLine
                            | K::EndLine
                            | K::StartText
                            | K::EndText
                            | K::WordBoundary
                            | K::NotWordBoundary
                    ) =>
                {
                    Err(
                        "this word-boundary form (\\<, \\>, \\b{start}, …) is not in Go's RE2 \
                         (InfluxDB, VictoriaMetrics): only \\b and \\B"
                            .into(),
                    )
                }
                Ast::Repetition(r) => match r.op.kind {
                    ast::RepetitionKind::Range(
                        ast::RepetitionRange::Exactly(n)
                        | ast::RepetitionRange::AtLeast(n)
                        | ast::RepetitionRange::Bounded(_, n),
                    ) if n > 1000 => Err(format!(
                        "a repetition count of {n} is over Go's RE2 limit of 1000"
                    )),
                    _ => Ok(()),
                },
                _ => Ok(()),
            }
        }
        fn visit_class_set_binary_op_pre(
            &mut self,
            _: &ast::ClassSetBinaryOp,
        ) -> Result<(), String> {
            Err(
                "class set operations (&&, --, ~~) are not in Go's RE2 (InfluxDB, \
                 VictoriaMetrics)"
                    .into(),
            )
        }
        fn visit_class_set_item_pre(&mut self, item: &ClassSetItem) -> Result<(), String> {
            if matches!(item, ClassSetItem::Bracketed(_)) {
                return Err(
                    "a class inside a class ([a[b]]) is not in Go's RE2 (InfluxDB, \
                            VictoriaMetrics)"
                        .into(),
                );
            }
            Ok(())
        }
    }
    let parsed = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| e.to_string())?;
    visit(&parsed, Re2)
}

/// Compiles a tag regex, through a cache: rules build their queries at every evaluation, and
/// the patterns (literals in the rule) are few.
pub fn compile_regex(pattern: &str) -> Result<TagRegex, String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, regex::Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(re) = cache.get(pattern) {
        return Ok(TagRegex(re.clone()));
    }
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("bad regex {pattern:?}: {e}"))?;
    beyond_re2(pattern).map_err(|e| format!("bad regex {pattern:?}: {e}"))?;
    // Bounded: patterns built from data would otherwise grow it without end.
    if cache.len() >= 1024 {
        cache.clear();
    }
    cache.insert(pattern.to_owned(), re.clone());
    Ok(TagRegex(re))
}

/// A number as InfluxQL reads it (no exponent, integral values without a fraction).
fn number(v: f64) -> String {
    format!("{v}")
}

/// A duration literal in the largest unit that divides it exactly (`1s`, `10m`, `1500ms`).
pub fn duration_literal(d: Duration) -> String {
    let ns = d.as_nanos();
    for (unit, size) in [
        ("h", 3_600_000_000_000u128),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("u", 1_000),
    ] {
        if ns.is_multiple_of(size) {
            return format!("{}{unit}", ns / size);
        }
    }
    format!("{ns}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu() -> Query {
        let mut q = Query::new("cpu");
        q.field = Some("usage_idle".into());
        q
    }

    const NOW: i64 = 1_700_000_060_000_000_000;

    #[test]
    fn mean_with_filter_and_group_by() {
        let mut q = cpu();
        q.aggregate = Aggregate::Mean;
        q.filters.push(TagFilter {
            tag: "cpu".into(),
            value: "cpu-total".into(),
            negate: false,
        });
        q.filters.push(TagFilter {
            tag: "host".into(),
            value: "db1".into(),
            negate: true,
        });
        q.group_by = vec!["host".into(), "dc".into()];
        assert_eq!(
            q.to_influxql(None, NOW).unwrap(),
            "SELECT mean(\"usage_idle\") AS \"value\" FROM \"cpu\" \
             WHERE time > 1700000000000000000 AND time <= 1700000060000000000 \
             AND \"cpu\" = 'cpu-total' AND \"host\" != 'db1' GROUP BY \"host\", \"dc\""
        );
    }

    #[test]
    fn every_aggregate_renders_its_function() {
        let cases = [
            (Aggregate::Raw, "SELECT \"usage_idle\" AS"),
            (Aggregate::Max, "SELECT max(\"usage_idle\") AS"),
            (Aggregate::Min, "SELECT min(\"usage_idle\") AS"),
            (Aggregate::Last, "SELECT last(\"usage_idle\") AS"),
            (Aggregate::Sum, "SELECT sum(\"usage_idle\") AS"),
            (Aggregate::Count, "SELECT count(\"usage_idle\") AS"),
            (
                Aggregate::Percentile(99.5),
                "SELECT percentile(\"usage_idle\", 99.5) AS",
            ),
            (
                Aggregate::Percentile(95.0),
                "SELECT percentile(\"usage_idle\", 95) AS",
            ),
            (
                Aggregate::Derivative {
                    unit: Duration::from_secs(1),
                    non_negative: false,
                },
                "SELECT derivative(\"usage_idle\", 1s) AS",
            ),
            (
                Aggregate::Derivative {
                    unit: Duration::from_secs(60),
                    non_negative: true,
                },
                "SELECT non_negative_derivative(\"usage_idle\", 1m) AS",
            ),
        ];
        for (agg, want) in cases {
            let mut q = cpu();
            q.aggregate = agg.clone();
            let got = q.to_influxql(None, NOW).unwrap();
            assert!(got.starts_with(want), "{agg:?}: {got}");
        }
    }

    /// Issue 10 item 15: rules had no regex (InfluxQL `=~`) and no list of values.
    #[test]
    fn where_match_and_where_in_render_as_influxql() {
        let mut q = cpu();
        q.matches.push(TagMatch::Regex {
            tag: "host".into(),
            re: compile_regex("^web[0-9]+/a$").unwrap(),
        });
        q.matches.push(TagMatch::In {
            tag: "dc".into(),
            values: vec!["eu".into(), "u's".into()],
        });
        let got = q.to_influxql(None, NOW).unwrap();
        assert!(
            got.ends_with(r#"AND "host" =~ /^web[0-9]+\/a$/ AND ("dc" = 'eu' OR "dc" = 'u\'s')"#),
            "{got}"
        );
        assert!(q.matches[0].matches("web12/a"));
        assert!(!q.matches[0].matches("db1"));
        assert!(q.matches[1].matches("u's") && !q.matches[1].matches(""));
        assert!(compile_regex("(").unwrap_err().contains("bad regex"));
    }

    /// Regression (helper-45): patterns only Rust's regex takes loaded, passed `check` and ran
    /// over the stream, then failed every query on InfluxDB and VictoriaMetrics (Go's RE2).
    #[test]
    fn regex_syntax_beyond_re2_is_refused() {
        for bad in [
            "(?x) web \\d+",
            "(?R)^a$",
            "[a-z&&[^x]]",
            "[a-z--b]",
            "[a[bc]]",
            "\\<web",
            "a\\b{end}",
            "a{1001}",
        ] {
            let e = compile_regex(bad).unwrap_err();
            assert!(e.contains("RE2"), "{bad}: {e}");
        }
        for ok in [
            "(?i)^WEB\\d+$",
            "(?s:a.b)",
            "(?U)a+",
            "[[:alpha:]]+",
            "\\p{Greek}",
            "[^a-z]",
        ] {
            compile_regex(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn retention_policy_qualifies_the_measurement() {
        let got = cpu().to_influxql(Some("two weeks"), NOW).unwrap();
        assert!(got.contains("FROM \"two weeks\".\"cpu\" WHERE"), "{got}");
    }

    #[test]
    fn hostile_tag_values_stay_string_literals() {
        // Tag values come from monitored hosts: each attempt must end up inside one literal.
        let attacks = [
            ("x' OR 'a'='a", r"'x\' OR \'a\'=\'a'"),
            (r"x\' OR 1=1 --", r"'x\\\' OR 1=1 --'"),
            ("a\nDROP DATABASE telegraf", r"'a\nDROP DATABASE telegraf'"),
            (r"ends with \", r"'ends with \\'"),
            ("\"dq\"", "'\"dq\"'"),
        ];
        for (value, literal) in attacks {
            let mut q = cpu();
            q.filters.push(TagFilter {
                tag: "host".into(),
                value: value.into(),
                negate: false,
            });
            let got = q.to_influxql(None, NOW).unwrap();
            assert!(
                got.ends_with(&format!("AND \"host\" = {literal}")),
                "{value:?}: {got}"
            );
        }
    }

    #[test]
    fn hostile_identifiers_are_quoted() {
        let mut q = Query::new("cpu\" WHERE 1=1; DROP");
        q.field = Some("f\\\"".into());
        q.group_by = vec!["h\"ost".into()];
        let got = q.to_influxql(None, NOW).unwrap();
        assert!(
            got.starts_with(r#"SELECT "f\\\"" AS "value" FROM "cpu\" WHERE 1=1; DROP" WHERE"#),
            "{got}"
        );
        assert!(got.ends_with(r#"GROUP BY "h\"ost""#), "{got}");
    }

    #[test]
    fn validation_names_the_problem() {
        let q = Query::new("cpu");
        assert!(q.validate().unwrap_err().0.contains("needs .field(name)"));
        let mut q = cpu();
        q.aggregate = Aggregate::Percentile(0.0);
        assert!(q.validate().unwrap_err().0.contains("0 < p <= 100"));
        let mut q = cpu();
        q.group_by = vec!["*".into()];
        assert!(q.validate().unwrap_err().0.contains("name the tags"));
    }

    #[test]
    fn duration_literals_use_the_largest_exact_unit() {
        assert_eq!(duration_literal(Duration::from_secs(7200)), "2h");
        assert_eq!(duration_literal(Duration::from_secs(90)), "90s");
        assert_eq!(duration_literal(Duration::from_millis(1500)), "1500ms");
        assert_eq!(duration_literal(Duration::from_micros(3)), "3u");
        assert_eq!(duration_literal(Duration::from_nanos(7)), "7ns");
    }
}
