//! Rule scripts: a sandboxed Rhai engine, loading a rule file (settings from `rule(#{...})`,
//! a required `fn check()`), and evaluating it against a [`QuerySource`] into a
//! [`CycleResult`]. The script API is docs/rules.md.
//!
//! - [`query`]: the query builder and its InfluxQL rendering.
//! - [`series`]: the `Series` type scripts see (a shared handle, see there why).
//! - [`settings`]: validating `rule(#{...})` with line:column errors.
//!
//! Each rule gets its own [`rhai::Engine`] (so `print` can name the rule); the standard
//! package is built once and shared. Queries reach the source through a thread-local context
//! set for the duration of one load or evaluation, which also carries the wall-clock deadline
//! that `on_progress` enforces.

pub mod budget;
mod presize;
pub mod series;
pub mod settings;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rhai::packages::{Package, StandardPackage};
use rhai::{
    AST, Array, CallFnOptions, Dynamic, Engine, EvalAltResult, Map, Module, NativeCallContext,
    OptimizationLevel, Position, Scope,
};
use wk_core::values::parse_duration;

use crate::model::{CycleResult, EvalFailure, FailureKind, Observation, RuleSettings};
use crate::query::{Aggregate, Query, TagFilter, TagMatch, compile_regex};
use crate::source::QuerySource;
use series::ScriptSeries;

/// Resource limits for one rule's script (each load and each evaluation).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Wall-clock limit for one evaluation (queries included: a query in flight is not
    /// interrupted, the script stops at its next step after the deadline).
    pub timeout: Duration,
    /// Rhai operations per evaluation (a CPU budget independent of machine speed); 0 = none.
    pub max_operations: u64,
    pub max_call_levels: usize,
    /// Expression nesting at the top level and inside functions (parse time).
    pub max_expr_depth: usize,
    pub max_function_expr_depth: usize,
    /// Bytes an evaluation (or load) may hold at once, counted at the allocator: the bound on
    /// everything a script grows.
    pub max_memory_bytes: usize,
    /// `Some(engine)` when the source cannot answer `influxql()` (VictoriaMetrics): a rule
    /// calling it does not load, with the call's position, rather than failing every cycle.
    pub no_influxql: Option<&'static str>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // The alerter's `max_eval_time` default (docs/rules.md, "Limits"): this said 10 s
            // while the service, `check` and `test` stopped rules at 5 s.
            timeout: crate::config::DEFAULT_MAX_EVAL_TIME,
            max_operations: 10_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_memory_bytes: 32 << 20,
            no_influxql: None,
        }
    }
}

impl Limits {
    /// The limits the alerter config sets (time and memory), the rest at their defaults.
    pub fn from_settings(s: &crate::config::Settings) -> Limits {
        Limits {
            timeout: s.max_eval_time,
            max_memory_bytes: s.max_rule_memory_bytes,
            ..Limits::default()
        }
    }

    /// [`Limits::from_settings`], and what the configured source cannot answer.
    pub fn from_config(c: &crate::config::Config) -> Limits {
        Limits {
            no_influxql: c.sources.first().and_then(|s| match s.kind {
                crate::config::SourceKind::InfluxDb => None,
                crate::config::SourceKind::VictoriaMetrics => Some("VictoriaMetrics"),
            }),
            ..Limits::from_settings(&c.settings)
        }
    }
}

/// What went wrong loading a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleErrorKind {
    /// The file could not be read.
    Io,
    /// The script does not compile.
    Syntax,
    /// `rule(#{...})` has an unknown key or a bad value.
    Settings,
    /// The top level failed while running (or `fn check()` is missing).
    Script,
}

/// A rule that failed to load: `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RuleError {
    pub file: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub kind: RuleErrorKind,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// A loaded rule: its settings and its compiled `check()`.
pub struct Rule {
    file: String,
    settings: RuleSettings,
    engine: Engine,
    ast: AST,
    /// Whether the top level calls `rule()`.
    calls_rule: bool,
    limits: Limits,
    /// Where `fn check()` is defined: failures without a position of their own point there.
    check_pos: (usize, usize),
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rule")
            .field("file", &self.file)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The rule files of a directory (`*.rhai`), sorted.
pub fn rule_files(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rhai"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Loads a rule file with the default [`Limits`].
pub fn load_rule(path: &Path) -> Result<Rule, RuleError> {
    load_rule_with(path, &Limits::default())
}

/// Loads a rule file.
pub fn load_rule_with(path: &Path, limits: &Limits) -> Result<Rule, RuleError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| RuleError {
        file: file.clone(),
        line: None,
        column: None,
        kind: RuleErrorKind::Io,
        message: format!("cannot read: {e}"),
    })?;
    load_rule_source_with(&file, &text, limits)
}

/// Loads a rule from text; `name` is the file name used in messages and, without directories
/// and `.rhai`, the default rule name.
pub fn load_rule_source(name: &str, text: &str) -> Result<Rule, RuleError> {
    load_rule_source_with(name, text, &Limits::default())
}

/// [`load_rule_source`] with explicit limits.
pub fn load_rule_source_with(name: &str, text: &str, limits: &Limits) -> Result<Rule, RuleError> {
    let file = name.to_owned();
    let err = |kind, pos: Option<(usize, usize)>, message: String| RuleError {
        file: file.clone(),
        line: pos.map(|p| p.0),
        column: pos.map(|p| p.1),
        kind,
        message,
    };
    let engine = build_engine(&file, limits);
    let ast = engine.compile(text).map_err(|e| {
        let pos = position(e.1);
        let mut message = e.0.to_string();
        let rest_of_line = |(l, c): (usize, usize)| {
            text.lines()
                .nth(l.saturating_sub(1))
                .map(|line| line.chars().skip(c.saturating_sub(1)).collect::<String>())
        };
        // `for: "1m"`, the key as Prometheus spells it (a `for` loop is not meant).
        let bare_for_key = |rest: String| {
            rest.strip_prefix("for")
                .is_some_and(|r| r.trim_start().starts_with(':'))
        };
        if pos.and_then(rest_of_line).is_some_and(bare_for_key) {
            message += " (`for` is a Rhai keyword: the setting is `pending: \"1m\"`)";
        }
        err(RuleErrorKind::Syntax, pos, message)
    })?;
    let checks: Vec<usize> = ast
        .iter_functions()
        .filter(|f| f.name == "check")
        .map(|f| f.params.len())
        .collect();
    if !checks.contains(&0) {
        let message = if checks.is_empty() {
            "no `fn check()`: a rule needs `fn check() { ... }` returning its series".to_owned()
        } else {
            "`fn check()` must take no parameters".to_owned()
        };
        return Err(err(RuleErrorKind::Script, None, message));
    }
    if let Err((pos, message)) = static_check(&engine, &ast, limits) {
        return Err(err(RuleErrorKind::Script, Some(pos), message));
    }

    // The top level's variables, an error's value and its text are made and dropped on the
    // script's thread (their nesting is the script's, see `with_context`).
    let (run, ctx) = with_context(Context::new(Phase::Load, None, 0, limits), || {
        let mut scope = Scope::new();
        engine
            .run_ast_with_scope(&mut scope, &ast)
            .map_err(|e| describe_error(&e, limits))
    });
    if let Err((pos, message)) = run {
        return Err(err(RuleErrorKind::Script, pos, message));
    }
    let default_name = Path::new(name)
        .file_name()
        .map(|f| {
            let f = f.to_string_lossy();
            f.strip_suffix(".rhai").unwrap_or(&f).to_owned()
        })
        .unwrap_or_else(|| name.to_owned());
    let calls_rule = ctx.settings.is_some();
    let call_pos = ctx.settings.as_ref().map_or((1, 1), |(_, pos)| *pos);
    let settings = match ctx.settings {
        None => RuleSettings {
            name: default_name,
            ..RuleSettings::default()
        },
        Some((map, pos)) => settings::build(&map, &default_name, text, pos)
            .map_err(|e| err(RuleErrorKind::Settings, Some(e.pos), e.message))?,
    };
    let mut settings = settings;
    if settings.name_pos == (0, 0) {
        settings.name_pos = call_pos;
    }
    if let Some(why) = settings::reserved(&settings.name) {
        return Err(err(
            RuleErrorKind::Settings,
            Some(settings.name_pos),
            format!(
                "rule name {:?} {why}: name the rule otherwise (rule(#{{ name: \"...\" }}), or \
                 the file)",
                settings.name
            ),
        ));
    }
    Ok(Rule {
        file,
        settings,
        engine,
        ast,
        calls_rule,
        limits: limits.clone(),
        check_pos: check_position(text),
    })
}

/// Where `fn check()` is defined (line, column), or (1, 1).
fn check_position(text: &str) -> (usize, usize) {
    text.lines()
        .enumerate()
        .find_map(|(i, line)| {
            let col = line.find("fn check(")?;
            let before = line[..col].trim();
            (before.is_empty() || before == "private").then(|| (i + 1, col + 1))
        })
        .unwrap_or((1, 1))
}

/// Rhai's keyword functions: parsed specially, so they are not in the engine's signatures.
const KEYWORD_FUNCTIONS: &[&str] = &[
    "print",
    "debug",
    "type_of",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "is_def_fn",
    "is_def_var",
    "eval",
];

/// The names of every function the engine knows (native, standard package, rule API).
fn known_functions(engine: &Engine) -> Arc<BTreeSet<String>> {
    // Every rule engine registers the same functions, so the set is built once.
    static KNOWN: OnceLock<Arc<BTreeSet<String>>> = OnceLock::new();
    KNOWN
        .get_or_init(|| {
            let mut names: BTreeSet<String> = engine
                .collect_fn_metadata(None, |f| Some(f.metadata.name.to_string()), true)
                .into_iter()
                .collect();
            names.extend(KEYWORD_FUNCTIONS.iter().map(|k| (*k).to_owned()));
            Arc::new(names)
        })
        .clone()
}

/// Rejects calls to functions and methods that exist neither in the engine nor in the
/// script: Rhai only finds them when the call runs, which for a rule may be never in `check`
/// and at 3 a.m. in production.
fn static_check(
    engine: &Engine,
    ast: &AST,
    limits: &Limits,
) -> Result<(), ((usize, usize), String)> {
    use rhai::{ASTNode, Expr, Stmt};
    let known = known_functions(engine);
    let script: BTreeSet<String> = ast.iter_functions().map(|f| f.name.to_owned()).collect();
    let mut found: Option<((usize, usize), String)> = None;
    ast.walk(&mut |path: &[ASTNode]| {
        let (call, pos, method) = match path.last() {
            Some(ASTNode::Expr(Expr::FnCall(c, pos))) => (c, *pos, false),
            Some(ASTNode::Expr(Expr::MethodCall(c, pos))) => (c, *pos, true),
            Some(ASTNode::Stmt(Stmt::FnCall(c, pos))) => (c, *pos, false),
            _ => return true,
        };
        let name = call.name.as_str();
        if let Some(source) = limits.no_influxql
            && name == "influxql"
            && !method
            && call.namespace.is_empty()
            && !script.contains(name)
        {
            found = Some((
                position(pos).unwrap_or((1, 1)),
                format!(
                    "influxql() needs an InfluxDB source and this alerter queries {source}: \
                     write the query with query(\"measurement\").field(..)"
                ),
            ));
            return false;
        }
        // A literal pattern is compiled at load: a bad one is a load error with its position.
        if name == "where_match"
            && let Some(Expr::StringConstant(p, at)) = call.args.get(1)
            && let Err(e) = compile_regex(p)
        {
            found = Some((
                position(*at).unwrap_or((1, 1)),
                format!(".where_match(): {e}"),
            ));
            return false;
        }
        let plain = name.chars().all(|c| c.is_alphanumeric() || c == '_');
        if call.op_token.is_some()
            || !call.namespace.is_empty()
            || !plain
            || known.contains(name)
            || script.contains(name)
        {
            return true;
        }
        let hint = suggest(name, known.iter().chain(&script))
            .map(|s| {
                if method {
                    format!(" (did you mean `.{s}()`?)")
                } else {
                    format!(" (did you mean `{s}()`?)")
                }
            })
            .unwrap_or_default();
        let message = if method {
            format!("unknown method `.{name}()`{hint}")
        } else {
            format!("unknown function `{name}()`{hint}")
        };
        found = Some((position(pos).unwrap_or((1, 1)), message));
        false
    });
    found.map_or(Ok(()), Err)
}

/// The closest name within two edits, for "did you mean".
fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    candidates
        .filter(|c| c.chars().all(|ch| ch.is_alphanumeric() || ch == '_'))
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

impl Rule {
    /// The settings from `rule(#{...})` (defaults for keys not given).
    pub fn settings(&self) -> &RuleSettings {
        &self.settings
    }

    /// The file the rule came from, as given to the loader.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Runs `check()` at `now_ns` against `source`. Never panics; a script error, a query
    /// failure, an exceeded limit or a bad return value is [`CycleResult::Failed`], typed by
    /// [`FailureKind`], with `file:line:col: message` (a failure without a position of its
    /// own points at `fn check()`).
    ///
    /// The top level runs again before `check()` (its `rule()` call is then ignored): that is
    /// how Rhai makes top-level constants visible in functions as `global::NAME`.
    pub fn evaluate(&self, source: &Arc<dyn QuerySource>, now_ns: i64) -> CycleResult {
        let mut ctx = Context::new(Phase::Check, Some(Arc::clone(source)), now_ns, &self.limits);
        ctx.rule_calls_left = usize::from(self.calls_rule);
        // Everything that holds the script's values (its scope, the returned value, an error
        // and its text) is made and dropped on the script's thread: only plain data leaves it.
        let (result, _) = with_context(ctx, || {
            let mut scope = Scope::new();
            let result = self.engine.call_fn_with_options::<Dynamic>(
                CallFnOptions::new().eval_ast(true).rewind_scope(true),
                &mut scope,
                &self.ast,
                "check",
                (),
            );
            self.result_of(result)
        });
        result
    }

    /// Turns `check()`'s outcome into the cycle's result (on the script's thread).
    fn result_of(&self, result: Result<Dynamic, Box<EvalAltResult>>) -> CycleResult {
        let source_error = context(|c| c.source_error.clone()).flatten();
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                let (pos, message) = describe_error(&e, &self.limits);
                let kind = match e.unwrap_inner() {
                    // Over its memory or operation budget: the rule's own doing, told through
                    // wk_rules (a rule that loops over a fleet grown past 10 M operations was
                    // a Timeout, which only its `error` policy saw: with "keep", silence).
                    EvalAltResult::ErrorTerminated(token, _)
                        if token.to_string() == OVER_BUDGET =>
                    {
                        FailureKind::Script
                    }
                    EvalAltResult::ErrorTooManyOperations(_) => FailureKind::Script,
                    EvalAltResult::ErrorTerminated(..) => FailureKind::Timeout,
                    EvalAltResult::ErrorRuntime(..)
                        if source_error.as_deref() == Some(message.as_str()) =>
                    {
                        FailureKind::Source
                    }
                    _ => FailureKind::Script,
                };
                return CycleResult::Failed(self.failure(kind, pos, &message));
            }
        };
        match observations(value) {
            Ok(obs) => CycleResult::Observed(obs),
            Err(m) => CycleResult::Failed(self.failure(FailureKind::BadReturn, None, &m)),
        }
    }

    fn failure(
        &self,
        kind: FailureKind,
        pos: Option<(usize, usize)>,
        message: &str,
    ) -> EvalFailure {
        let (l, c) = pos.unwrap_or(self.check_pos);
        let at = if pos.is_some() { "" } else { "check(): " };
        EvalFailure::new(kind, format!("{}:{l}:{c}: {at}{message}", self.file))
    }
}

/// Turns check()'s return value into observations.
fn observations(value: Dynamic) -> Result<Vec<Observation>, String> {
    let items: Array = if value.is::<ScriptSeries>() {
        vec![value]
    } else if value.is_array() {
        value.into_array().unwrap_or_default()
    } else {
        return Err(format!(
            "check() must return an array of series (or one series), got {}",
            type_name(&value)
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if !item.is::<ScriptSeries>() {
            return Err(format!(
                "check() returned an array holding {} at index {i}; it must hold series",
                type_name(&item)
            ));
        }
        if let Some(s) = item.try_cast::<ScriptSeries>() {
            out.push(s.into_observation());
        }
    }
    // Sources answer in tag order, so a strictly ascending result (one comparison per
    // series) has no duplicates; otherwise they are found on references (no tag map copied).
    if out.windows(2).all(|w| w[0].tags < w[1].tags) {
        return Ok(out);
    }
    let mut seen = BTreeSet::new();
    for obs in &out {
        if !seen.insert(&obs.tags) {
            let tags: Vec<String> = obs.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return Err(format!(
                "check() returned two series with the same tags {{{}}}: an alert instance is \
                 the rule plus the tags, so each series needs its own (group_by the tags that \
                 tell them apart)",
                tags.join(",")
            ));
        }
    }
    Ok(out)
}

fn type_name(v: &Dynamic) -> String {
    if v.is_unit() {
        "() (nothing: is the array the last expression of check()?)".to_owned()
    } else {
        v.type_name().to_owned()
    }
}

fn position(p: Position) -> Option<(usize, usize)> {
    Some((p.line()?, p.position().unwrap_or(1)))
}

/// The innermost error's position and message (without Rhai's "(line x, position y)").
fn describe_error(e: &EvalAltResult, limits: &Limits) -> (Option<(usize, usize)>, String) {
    let inner = e.unwrap_inner();
    let pos = position(inner.position()).or_else(|| position(e.position()));
    let message = match inner {
        EvalAltResult::ErrorTooManyOperations(_) => format!(
            "stopped: more than {} operations (an endless loop?)",
            limits.max_operations
        ),
        EvalAltResult::ErrorTerminated(token, _) if token.to_string() == OVER_BUDGET => format!(
            "stopped: held more than {} MiB (the memory budget; a collection growing without bound?)",
            limits.max_memory_bytes >> 20
        ),
        EvalAltResult::ErrorTerminated(..) => format!(
            "stopped: ran longer than the {} ms time limit",
            limits.timeout.as_millis()
        ),
        EvalAltResult::ErrorRuntime(v, _) if v.is_string() => v.to_string(),
        other => {
            let text = other.to_string();
            let suffix = format!(" ({})", other.position());
            text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
        }
    };
    (pos, message)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Load,
    Check,
}

/// What native functions need during one load or evaluation.
struct Context {
    phase: Phase,
    source: Option<Arc<dyn QuerySource>>,
    now_ns: i64,
    deadline: Instant,
    /// The thread's held bytes when the run started, and how many more it may hold.
    mem_base: isize,
    mem_budget: isize,
    /// The map given to `rule()` and the call's position.
    settings: Option<(Map, (usize, usize))>,
    /// During evaluation: how many more `rule()` calls the top level makes.
    rule_calls_left: usize,
    /// The last query failure, so an evaluation that ends with it is a source error.
    source_error: Option<String>,
}

impl Context {
    fn new(
        phase: Phase,
        source: Option<Arc<dyn QuerySource>>,
        now_ns: i64,
        limits: &Limits,
    ) -> Context {
        let now = Instant::now();
        Context {
            phase,
            source,
            now_ns,
            deadline: now.checked_add(limits.timeout).unwrap_or(now),
            mem_base: budget::held_bytes(),
            mem_budget: isize::try_from(limits.max_memory_bytes).unwrap_or(isize::MAX),
            settings: None,
            rule_calls_left: 0,
            source_error: None,
        }
    }
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Runs `f` with `ctx` installed, on a thread of its own with a stack sized for the data a
/// script may build: Rhai drops (and prints, and compares) nested arrays and maps
/// recursively, and a rule nesting 20,000 arrays overflowed the 2 MiB of a tokio thread,
/// which aborted the alerter, again at each start. The nesting a script can reach is bounded
/// by its memory budget (about 40 bytes a level); the stack is address space, used as
/// touched. Returns `f`'s result and the context.
fn with_context<T: Send>(ctx: Context, f: impl FnOnce() -> T + Send) -> (T, Context) {
    let stack = usize::try_from(ctx.mem_budget)
        .unwrap_or(usize::MAX)
        .saturating_mul(16)
        .clamp(64 << 20, 1 << 30);
    let work = std::sync::Mutex::new(Some((ctx, f)));
    let take = || work.lock().unwrap_or_else(|e| e.into_inner()).take();
    std::thread::scope(|s| {
        let spawned = std::thread::Builder::new()
            .name("wk-rule".into())
            .stack_size(stack)
            .spawn_scoped(s, || {
                let done = take().map(|(ctx, f)| with_context_here(ctx, f));
                (done, thread_cpu_now())
            });
        let done = match spawned {
            Ok(h) => {
                let (done, cpu) = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                SCRIPT_CPU.with(|c| c.set(c.get() + cpu));
                done
            }
            Err(e) => {
                tracing::warn!(
                    "cannot start a thread for a rule's script ({e}); it runs on this one"
                );
                None
            }
        };
        match done {
            Some(done) => done,
            None => {
                // Only a thread that started takes the work, and this one did not.
                let (ctx, f) = take().expect("not taken: the thread did not start");
                with_context_here(ctx, f)
            }
        }
    })
}

thread_local! {
    static SCRIPT_CPU: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

/// CPU that the scripts this thread ran used on their own threads ([`with_context`]) since it
/// started: what this thread's CPU clock leaves out (the benches add it).
pub fn script_cpu() -> Duration {
    SCRIPT_CPU.with(std::cell::Cell::get)
}

/// The calling thread's CPU time.
fn thread_cpu_now() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// [`with_context`] on the calling thread.
fn with_context_here<T>(mut ctx: Context, f: impl FnOnce() -> T) -> (T, Context) {
    // The budget counts this thread's allocations.
    ctx.mem_base = budget::held_bytes();
    struct Restore(Option<Option<Context>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(prev) = self.0.take() {
                CONTEXT.with(|c| *c.borrow_mut() = prev);
            }
        }
    }
    let prev = CONTEXT.with(|c| c.borrow_mut().replace(ctx));
    let mut restore = Restore(Some(prev));
    let out = f();
    let prev = restore.0.take().unwrap_or(None);
    let ctx = CONTEXT.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev));
    // The context was installed above and native functions never remove it.
    let ctx = ctx.unwrap_or_else(|| Context {
        phase: Phase::Load,
        source: None,
        now_ns: 0,
        deadline: Instant::now(),
        mem_base: 0,
        mem_budget: isize::MAX,
        settings: None,
        rule_calls_left: 0,
        source_error: None,
    });
    (out, ctx)
}

fn context<T>(f: impl FnOnce(&mut Context) -> T) -> Option<T> {
    // Never re-entered (the closures do not call into Rhai); try_borrow keeps it panic-free.
    CONTEXT.with(|c| c.try_borrow_mut().ok()?.as_mut().map(f))
}

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

fn standard_package() -> Arc<Module> {
    // With the `sync` feature Rhai's shared pointer is `Arc`.
    static PACKAGE: OnceLock<Arc<Module>> = OnceLock::new();
    PACKAGE
        .get_or_init(|| StandardPackage::new().as_shared_module())
        .clone()
}

/// The sandboxed engine: the standard package only (no filesystem, network, environment or
/// process functions exist in it), `eval` and `import` disabled at parse time, limits, a
/// wall-clock deadline, print/debug to the log, and the rule API.
fn build_engine(file: &str, limits: &Limits) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(standard_package());
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.set_max_modules(0);
    engine.disable_symbol("eval");
    engine.disable_symbol("import");
    engine.set_optimization_level(OptimizationLevel::Simple);
    engine.set_strict_variables(true);
    engine.set_fail_on_invalid_map_property(true);
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth);
    // No element limits (`set_max_array_size` and the like): with any set, Rhai re-measures a
    // whole array after every push (quadratic); the memory budget bounds growth instead and
    // `presize` refuses the single allocations it cannot.
    presize::register(&mut engine, remaining_budget);
    engine.on_progress(|ops| {
        // Memory every step (a thread-local read): one step can allocate up to the largest
        // string or array, so checking rarely would let a script overshoot by hundreds of MB.
        let over = context(|c| budget::held_bytes().saturating_sub(c.mem_base) > c.mem_budget)
            .unwrap_or(false);
        if over {
            return Some(Dynamic::from(OVER_BUDGET));
        }
        if ops % 256 != 0 {
            return None;
        }
        let late = context(|c| Instant::now() >= c.deadline).unwrap_or(false);
        late.then(|| Dynamic::from("deadline"))
    });
    let rule = file.to_owned();
    engine.on_print(move |s| tracing::info!(rule = %rule, "{s}"));
    let rule = file.to_owned();
    engine.on_debug(
        move |s, _, pos| tracing::debug!(rule = %rule, line = pos.line().unwrap_or(0), "{s}"),
    );
    // sleep() would block the thread without counting operations, defeating the deadline.
    engine.register_fn("sleep", |_: f64| -> RhaiResult<()> {
        Err("sleep() is not available in rules".into())
    });
    engine.register_fn("sleep", |_: i64| -> RhaiResult<()> {
        Err("sleep() is not available in rules".into())
    });
    register_rule_api(&mut engine);
    register_integer_math(&mut engine);
    series::register(&mut engine);
    engine
}

/// Integer fields reach scripts as integers: the float methods a rule calls on a value
/// (`s.value.round()`, `.sqrt()`) work on them too, rather than failing only on the hosts
/// whose field happens to be an integer. Mixed arithmetic and comparisons (`s.value > 90.0`)
/// are Rhai's own.
fn register_integer_math(engine: &mut Engine) {
    for name in ["floor", "ceiling", "round", "int"] {
        engine.register_fn(name, |x: i64| x);
    }
    engine.register_fn("sqrt", |x: i64| (x as f64).sqrt());
    engine.register_fn("exp", |x: i64| (x as f64).exp());
    engine.register_fn("ln", |x: i64| (x as f64).ln());
    engine.register_fn("log", |x: i64| (x as f64).log10());
    engine.register_fn("is_nan", |_: i64| false);
    engine.register_fn("is_infinite", |_: i64| false);
    engine.register_fn("is_finite", |_: i64| true);
}

/// The bytes the running evaluation may still allocate (`None` outside one).
fn remaining_budget() -> Option<usize> {
    context(|c| {
        let used = budget::held_bytes().saturating_sub(c.mem_base);
        usize::try_from(c.mem_budget.saturating_sub(used)).unwrap_or(0)
    })
}

/// The token `on_progress` stops a script with when it exceeds its memory budget.
const OVER_BUDGET: &str = "memory budget";

/// The script type `Query`: the builder behind `query("m")...run()`.
#[derive(Debug, Clone)]
pub struct QueryBuilder(pub Query);

impl QueryBuilder {
    /// Adds a tag match; the query so far (each call of the chain returns a copy).
    fn matching(&mut self, m: TagMatch) -> QueryBuilder {
        self.0.matches.push(m);
        self.clone()
    }
}

fn register_rule_api(engine: &mut Engine) {
    engine.register_fn(
        "rule",
        |call: NativeCallContext, map: Map| -> RhaiResult<()> {
            let pos = position(call.call_position()).unwrap_or((1, 1));
            let outcome = context(|c| {
                if c.phase != Phase::Load {
                    // The top level runs again before each check() and calls rule() as it did at
                    // load (settings were fixed then); any further call comes from a function.
                    if c.rule_calls_left == 0 {
                        return Err(
                            "rule(#{...}) belongs at the top level of the file, not in a function"
                                .to_owned(),
                        );
                    }
                    c.rule_calls_left -= 1;
                    return Ok(());
                }
                if let Some((_, (l, col))) = &c.settings {
                    return Err(format!(
                        "rule() is called twice; the first call is at line {l}, column {col}"
                    ));
                }
                c.settings = Some((map, pos));
                Ok(())
            });
            match outcome {
                Some(Ok(())) => Ok(()),
                Some(Err(m)) => Err(m.into()),
                None => Err("rule() called outside a rule load".into()),
            }
        },
    );
    // The evaluation time (ns since the epoch), so a rule can compare a series' last point
    // with it: how long ago a host last reported (see docs/rules.md, "Hosts silent at start").
    engine.register_fn("now", || -> RhaiResult<i64> { Ok(in_check("now()")?.1) });
    // How long ago the series' point was, as of the evaluation time (not the wall clock, so
    // a replay with `wk-alerter test` gives what the service would have).
    engine.register_fn("age", |s: &mut ScriptSeries| -> RhaiResult<i64> {
        let (time, stamped_by) = {
            let d = s.lock();
            (d.time, d.stamped_by)
        };
        if let Some(agg) = stamped_by {
            return Err(format!(
                "s.age(): a {agg}() is stamped with the evaluation time, not with a point's: \
                 query .last() (or raw points) to know how old the data is"
            )
            .into());
        }
        Ok(in_check("s.age()")?.1.saturating_sub(time))
    });
    // Durations in ns, the unit of now(), s.time and s.age(): `s.age() > mins(2)`.
    for (name, unit) in [
        ("secs", 1_000_000_000i64),
        ("mins", 60_000_000_000),
        ("hours", 3_600_000_000_000),
        ("days", 86_400_000_000_000),
    ] {
        engine.register_fn(name, move |n: i64| -> RhaiResult<i64> {
            n.checked_mul(unit)
                .ok_or_else(|| format!("{name}({n}): too long for a duration in ns").into())
        });
        engine.register_fn(name, move |n: f64| -> RhaiResult<i64> {
            let ns = (n * unit as f64).round();
            // i64::MAX as f64 rounds up to 2^63, which is already out of range.
            if !ns.is_finite() || ns.abs() >= i64::MAX as f64 {
                return Err(format!("{name}({n}): not a duration in ns").into());
            }
            Ok(ns as i64)
        });
    }
    engine.register_fn("duration", |text: &str| -> RhaiResult<i64> {
        let d = parse_duration(text).map_err(|e| format!("duration(): {e}"))?;
        i64::try_from(d.as_nanos())
            .map_err(|_| format!("duration({text:?}): too long for a duration in ns").into())
    });
    engine.register_type_with_name::<QueryBuilder>("Query");
    engine.register_fn("query", |measurement: &str| -> RhaiResult<QueryBuilder> {
        in_check("query()")?;
        if measurement.is_empty() {
            return Err("query(measurement): the name is empty".into());
        }
        Ok(QueryBuilder(Query::new(measurement)))
    });
    engine.register_fn(
        "field",
        |q: &mut QueryBuilder, f: &str| -> RhaiResult<QueryBuilder> {
            if f.is_empty() {
                return Err(".field(name): the name is empty".into());
            }
            q.0.field = Some(f.to_owned());
            Ok(q.clone())
        },
    );
    for (name, negate) in [("where", false), ("where_not", true)] {
        let filter = move |q: &mut QueryBuilder, tag: &str, value: String| {
            q.0.filters.push(TagFilter {
                tag: tag.to_owned(),
                value,
                negate,
            });
            q.clone()
        };
        engine.register_fn(name, move |q: &mut QueryBuilder, tag: &str, value: &str| {
            filter(q, tag, value.to_owned())
        });
        // Tag values are strings; `.where("port", 5432)` means "5432".
        engine.register_fn(name, move |q: &mut QueryBuilder, tag: &str, value: i64| {
            filter(q, tag, value.to_string())
        });
    }
    engine.register_fn(
        "where_match",
        |q: &mut QueryBuilder, tag: &str, pattern: &str| -> RhaiResult<QueryBuilder> {
            let re = compile_regex(pattern).map_err(|e| format!(".where_match(): {e}"))?;
            Ok(q.matching(TagMatch::Regex {
                tag: tag.to_owned(),
                re,
            }))
        },
    );
    engine.register_fn(
        "where_in",
        |q: &mut QueryBuilder, tag: &str, values: Array| -> RhaiResult<QueryBuilder> {
            if values.is_empty() {
                return Err(".where_in(tag, []): the list is empty (nothing would match)".into());
            }
            let values = values
                .iter()
                .map(|v| {
                    if v.is_string() || v.is_int() {
                        Ok(v.to_string())
                    } else {
                        Err(format!(
                            ".where_in(): tag values are strings, got {}",
                            v.type_name()
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(q.matching(TagMatch::In {
                tag: tag.to_owned(),
                values,
            }))
        },
    );
    engine.register_fn(
        "range",
        |q: &mut QueryBuilder, d: &str| -> RhaiResult<QueryBuilder> {
            let d = parse_duration(d).map_err(|e| format!(".range(): {e}"))?;
            if d.is_zero() {
                return Err(".range(): must be longer than 0s".into());
            }
            q.0.range = d;
            Ok(q.clone())
        },
    );
    let simple = [
        ("mean", Aggregate::Mean),
        ("max", Aggregate::Max),
        ("min", Aggregate::Min),
        ("last", Aggregate::Last),
        ("sum", Aggregate::Sum),
        ("count", Aggregate::Count),
    ];
    for (name, agg) in simple {
        engine.register_fn(name, move |q: &mut QueryBuilder| {
            q.0.aggregate = agg.clone();
            q.clone()
        });
    }
    fn percentile(q: &mut QueryBuilder, p: f64) -> RhaiResult<QueryBuilder> {
        if !(p > 0.0 && p <= 100.0) {
            return Err(format!(".percentile({p}): p must be in 0 < p <= 100").into());
        }
        q.0.aggregate = Aggregate::Percentile(p);
        Ok(q.clone())
    }
    engine.register_fn("percentile", percentile);
    engine.register_fn("percentile", |q: &mut QueryBuilder, p: i64| {
        percentile(q, p as f64)
    });
    for (name, non_negative) in [("derivative", false), ("non_negative_derivative", true)] {
        let set = move |q: &mut QueryBuilder, unit: &str| -> RhaiResult<QueryBuilder> {
            let unit = parse_duration(unit).map_err(|e| format!(".{name}(unit): {e}"))?;
            if unit.is_zero() {
                return Err(format!(".{name}(unit): must be longer than 0s").into());
            }
            q.0.aggregate = Aggregate::Derivative { unit, non_negative };
            Ok(q.clone())
        };
        engine.register_fn(name, set);
        engine.register_fn(name, move |q: &mut QueryBuilder| set(q, "1s"));
    }
    fn group_by(q: &mut QueryBuilder, tags: &[&str]) -> RhaiResult<QueryBuilder> {
        for t in tags {
            if t.is_empty() || *t == "*" {
                return Err(format!(".group_by({t:?}): name the tags to group by").into());
            }
            if !q.0.group_by.iter().any(|g| g == t) {
                q.0.group_by.push((*t).to_owned());
            }
        }
        Ok(q.clone())
    }
    engine.register_fn("group_by", |q: &mut QueryBuilder, a: &str| {
        group_by(q, &[a])
    });
    engine.register_fn("group_by", |q: &mut QueryBuilder, a: &str, b: &str| {
        group_by(q, &[a, b])
    });
    engine.register_fn(
        "group_by",
        |q: &mut QueryBuilder, a: &str, b: &str, c: &str| group_by(q, &[a, b, c]),
    );
    engine.register_fn(
        "group_by",
        |q: &mut QueryBuilder, a: &str, b: &str, c: &str, d: &str| group_by(q, &[a, b, c, d]),
    );
    engine.register_fn(
        "group_by",
        |q: &mut QueryBuilder, tags: Array| -> RhaiResult<QueryBuilder> {
            let mut names = Vec::with_capacity(tags.len());
            for t in &tags {
                names.push(t.clone().into_string().map_err(|_| {
                    format!(
                        ".group_by([...]): tag names are strings, got {}",
                        t.type_name()
                    )
                })?);
            }
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            group_by(q, &refs)
        },
    );
    engine.register_fn("run", |q: &mut QueryBuilder| -> RhaiResult<Array> {
        let (source, now) = in_check(".run()")?;
        q.0.validate().map_err(|e| e.0)?;
        // One name for all the series of the answer.
        let field: std::sync::Arc<str> = q.0.field.as_deref().unwrap_or_default().into();
        let series = source.query(&q.0, now).map_err(source_failed)?;
        let stamped_by = match q.0.aggregate {
            Aggregate::Mean | Aggregate::Sum | Aggregate::Count => Some(q.0.aggregate.name()),
            _ => None,
        };
        Ok(series
            .into_iter()
            .map(|s| Dynamic::from(ScriptSeries::from_source(s, &field, stamped_by)))
            .collect())
    });
    // A join of two results on a tag, built natively: one call where a script loop would take
    // an operation per series.
    engine.register_fn(
        "by_tag",
        |series: &mut Array, tag: &str| -> RhaiResult<Map> {
            let mut out = Map::new();
            for (i, item) in series.iter().enumerate() {
                let Some(s) = item.read_lock::<ScriptSeries>() else {
                    return Err(format!(
                        "by_tag({tag:?}): the array holds {} at index {i}; it must hold series",
                        type_name(item)
                    )
                    .into());
                };
                let key = s.lock().tags.get(tag).cloned().unwrap_or_default();
                out.insert(key.into(), item.clone());
            }
            Ok(out)
        },
    );
    engine.register_fn("to_string", |q: &mut QueryBuilder| {
        q.0.to_influxql(None, 0).unwrap_or_else(|e| e.0)
    });
    engine.register_fn("to_debug", |q: &mut QueryBuilder| {
        q.0.to_influxql(None, 0).unwrap_or_else(|e| e.0)
    });
    // For text built into influxql(): tag values come from monitored hosts.
    engine.register_fn("influxql_string", |s: &str| crate::query::quote_string(s));
    engine.register_fn("influxql_ident", |s: &str| crate::query::quote_ident(s));
    // A valid regex only: `C:\` would end in `\/`, which InfluxQL reads as an escaped slash.
    engine.register_fn("influxql_regex", |s: &str| -> RhaiResult<String> {
        crate::query::compile_regex(s).map_err(|e| format!("influxql_regex(): {e}"))?;
        Ok(crate::query::regex_literal(s))
    });
    engine.register_fn("influxql", |text: &str| -> RhaiResult<Array> {
        let (source, now) = in_check("influxql()")?;
        let series = source.influxql(text, now).map_err(source_failed)?;
        let no_field = std::sync::Arc::from("");
        Ok(series
            .into_iter()
            .map(|s| Dynamic::from(ScriptSeries::from_source(s, &no_field, None)))
            .collect())
    });
}

/// Records a query failure in the context (it is a source error if the evaluation ends
/// with it) and turns it into the script error.
fn source_failed(e: crate::source::SourceError) -> Box<EvalAltResult> {
    let message = e.to_string();
    context(|c| c.source_error = Some(message.clone()));
    message.into()
}

/// The source and time of the running evaluation, or the error for calling `what` outside
/// `fn check()`.
fn in_check(what: &str) -> RhaiResult<(Arc<dyn QuerySource>, i64)> {
    let got = context(|c| match (c.phase, &c.source) {
        (Phase::Check, Some(s)) => Some((Arc::clone(s), c.now_ns)),
        _ => None,
    })
    .flatten();
    got.ok_or_else(|| {
        format!(
            "{what} runs only when the rule is evaluated: put queries inside `fn check() {{ ... }}`, \
             not at the top level of the file"
        )
        .into()
    })
}

impl crate::actions::engine::Recheck for Rule {
    fn evaluate(&self, source: &Arc<dyn QuerySource>, now_ns: i64) -> CycleResult {
        Rule::evaluate(self, source, now_ns)
    }
}

#[cfg(test)]
mod tests;
