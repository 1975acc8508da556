//! The alerter's cost per evaluation cycle (docs/performance.md, section "wk-alerter"):
//!
//! 1. A real influxd loaded with 1,000 hosts' worth of Telegraf-shaped data for the last six
//!    minutes (10 s interval); 20 rules (the 10 of examples/rules/, each twice under two names)
//!    evaluated once each against [`InfluxDbSource`] and fed to [`RuleState::apply`], several
//!    times. Measured per cycle: wall time, the alerter process's own CPU (CLOCK_PROCESS_CPUTIME_ID: the evaluating thread plus the tokio workers doing HTTP; influxd is a
//!    separate process, so its time is not in there) and influxd's CPU (its CPU-time clock,
//!    clock_getcpuclockid), plus a split of the alerter's CPU into phases.
//! 2. Each example rule over the same data without any database: with the [`MemorySource`]
//!    (native aggregation included) and with canned query results (Rhai, series conversion
//!    and observations only), and the state machine alone: ns per series.
//!
//! Run: `cargo bench -p wk-alerter --bench cycle` (needs `influxd`: `apt-get install -y
//! influxdb`). `WK_BENCH_HOSTS` and `WK_BENCH_CYCLES` change the size; `WK_BENCH_ONLY_CYCLE=1`
//! stops after part 1 (for profiling the cycle with `perf record`); `WK_BENCH_MEMORY_DEFAULT=1`
//! leaves mimalloc's defaults instead of the alerter's settings (`wk_alerter::memory::tune`).

#[path = "common/cpu.rs"]
mod cpu;
#[path = "common/hosts.rs"]
mod hosts;
#[path = "../tests/common/influxd.rs"]
mod influxd;

use cpu::{other_process_cpu, process_cpu, thread_cpu};
use hosts::{POINTS, step_lines};

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wk_alerter::model::{CycleResult, RuleSettings};
use wk_alerter::query::Query;
use wk_alerter::rules::{Limits, Rule, load_rule_source, load_rule_source_with};
use wk_alerter::source::influxdb::decode;
use wk_alerter::source::{
    InfluxAuth, InfluxDbConfig, InfluxDbSource, MemorySource, QuerySource, Series, SourceError,
};
use wk_alerter::state::{RuleState, StateSave};

const DB: &str = "telegraf";
const S: i64 = 1_000_000_000;
/// Telegraf's interval, and how much history is loaded (the longest rule range is 5m).
const INTERVAL: i64 = 10 * S;

type BoxError = Box<dyn std::error::Error>;

fn main() {
    if let Err(e) = run() {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------
// Sources used for measuring

#[derive(Default, Clone)]
struct QueryStats {
    queries: usize,
    wall: Duration,
    /// CPU of the evaluating thread inside `query()`: building the request, waiting
    /// (no CPU) and decoding the JSON answer.
    thread_cpu: Duration,
    series: usize,
    rows: usize,
    texts: Vec<String>,
}

/// CPU of the evaluating thread, with that of the threads its rules' scripts ran on (each
/// script runs on a thread of its own: `wk_alerter::rules::script_cpu`).
fn eval_cpu() -> Duration {
    thread_cpu() + wk_alerter::rules::script_cpu()
}

/// Wraps a source and measures time spent in it.
struct Timed {
    inner: Arc<dyn QuerySource>,
    stats: Mutex<QueryStats>,
}

impl Timed {
    fn take(&self) -> QueryStats {
        std::mem::take(&mut *self.stats.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl QuerySource for Timed {
    fn query(&self, q: &Query, now_ns: i64) -> Result<Vec<Series>, SourceError> {
        let (t0, c0) = (Instant::now(), thread_cpu());
        let r = self.inner.query(q, now_ns);
        let (wall, cpu) = (t0.elapsed(), thread_cpu().saturating_sub(c0));
        let mut st = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        st.queries += 1;
        st.wall += wall;
        st.thread_cpu += cpu;
        if let Ok(series) = &r {
            st.series += series.len();
            st.rows += series.iter().map(|s| s.rows.len()).sum::<usize>();
        }
        if let Ok(text) = q.to_influxql(None, now_ns) {
            st.texts.push(text);
        }
        r
    }

    fn influxql(&self, text: &str, now_ns: i64) -> Result<Vec<Series>, SourceError> {
        self.inner.influxql(text, now_ns)
    }
}

/// Answers every query from results computed once by another source: what is left is the
/// rule's own cost (Rhai, series conversion, observations), with no database at all.
struct Canned {
    inner: Arc<dyn QuerySource>,
    cache: Mutex<HashMap<String, Vec<Series>>>,
}

impl QuerySource for Canned {
    fn query(&self, q: &Query, now_ns: i64) -> Result<Vec<Series>, SourceError> {
        let key = q
            .to_influxql(None, now_ns)
            .map_err(|e| SourceError::Query(e.0))?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.get(&key) {
            return Ok(s.clone());
        }
        let s = self.inner.query(q, now_ns)?;
        cache.insert(key, s.clone());
        Ok(s)
    }

    fn influxql(&self, text: &str, now_ns: i64) -> Result<Vec<Series>, SourceError> {
        self.inner.influxql(text, now_ns)
    }
}

// ---------------------------------------------------------------------------------------

/// The ten monitoring rules of examples/rules/ the data is made for (the `heal_*` examples
/// query inputs this data does not have, and were not there when the figures began).
const RULES: [&str; 10] = [
    "close_wait",
    "cpu_high",
    "disk_full",
    "host_down",
    "http_down",
    "load_high",
    "mem_high",
    "port_closed",
    "swap_high",
    "tcp_retransmits",
];

fn example_rules() -> Result<Vec<(String, String)>, BoxError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
    let mut out = Vec::new();
    for name in RULES {
        let p = dir.join(format!("{name}.rhai"));
        out.push((name.to_owned(), std::fs::read_to_string(&p)?));
    }
    Ok(out)
}

fn observed(r: &CycleResult, name: &str) -> Result<usize, BoxError> {
    match r {
        CycleResult::Observed(o) => Ok(o.len()),
        CycleResult::Failed(m) => Err(format!("{name}: {m}").into()),
    }
}

/// Reads one figure of a cycle.
type Getter<'a> = &'a dyn Fn(&CycleFigures) -> Duration;

#[derive(Default)]
struct CycleFigures {
    wall: Duration,
    self_cpu: Duration,
    main_cpu: Duration,
    influxd_cpu: Duration,
    query: QueryStats,
    apply: Duration,
    /// Encoding what the service would save after this cycle (`RuleState::due_save`: journal
    /// records of changed instances, or snapshots at checkpoints).
    persist: Duration,
    saved: usize,
    snapshots: usize,
    observations: usize,
    events: usize,
}

fn run() -> Result<(), BoxError> {
    let hosts = env_num("WK_BENCH_HOSTS", 1000);
    let cycles = env_num("WK_BENCH_CYCLES", 10).max(2);
    let mut report = String::new();

    // --- influxd with the data -----------------------------------------------------------
    let Some(influxd) = influxd::Influxd::start() else {
        return Err("influxd not installed (WK_SKIP_SERVERS=1): nothing measured".into());
    };
    // The alerter's memory settings, as `wk-alerter run` makes them first (after influxd has
    // started: the peer keeps the system's huge page policy). `WK_BENCH_MEMORY_DEFAULT=1`
    // leaves mimalloc's defaults, for comparison.
    if std::env::var_os("WK_BENCH_MEMORY_DEFAULT").is_none() {
        wk_alerter::memory::tune();
    }
    influxd.create_database(DB);
    let wall_now = wk_alerter::clock::now_ns();
    let last = wall_now.div_euclid(INTERVAL) * INTERVAL;
    let now = last + 5 * S;
    let t0 = Instant::now();
    let mut lines_total = 0usize;
    let mut all_lines = String::new();
    for k in (0..POINTS).rev() {
        let text = step_lines(hosts, k, last - k * INTERVAL);
        // Batches of about 5,000 lines per /write.
        let lines: Vec<&str> = text.lines().collect();
        for chunk in lines.chunks(5000) {
            influxd.write(DB, &chunk.join("\n"));
        }
        lines_total += lines.len();
        all_lines += &text;
    }
    let load_time = t0.elapsed();
    // Wait until influxd has settled (WAL snapshot, compactions after the load): its CPU
    // over half a second below 2 %, at most 60 s.
    let pid = influxd.pid();
    let settle_start = Instant::now();
    loop {
        let c0 = other_process_cpu(pid);
        std::thread::sleep(Duration::from_millis(500));
        let used = other_process_cpu(pid).saturating_sub(c0);
        if used < Duration::from_millis(10) || settle_start.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    eprintln!(
        "loaded {lines_total} lines ({hosts} hosts x {POINTS} points) in {:.1} s; settled in {:.1} s",
        load_time.as_secs_f64(),
        settle_start.elapsed().as_secs_f64()
    );

    // --- 20 rules ----------------------------------------------------------------------
    let examples = example_rules()?;
    let mut rules: Vec<(Rule, RuleState)> = Vec::new();
    for copy in ["a", "b"] {
        for (name, text) in &examples {
            // At 10,000 hosts a query alone can take longer than the default 5 s under load.
            let limits = Limits {
                timeout: Duration::from_secs(120),
                ..Limits::default()
            };
            let rule = load_rule_source_with(&format!("{name}_{copy}.rhai"), text, &limits)
                .map_err(|e| e.to_string())?;
            rules.push((rule, RuleState::new()));
        }
    }

    // --- cycles against influxd --------------------------------------------------------
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let influx: Arc<dyn QuerySource> = Arc::new(InfluxDbSource::new(
        InfluxDbConfig {
            url: influxd.url.clone(),
            database: DB.into(),
            retention_policy: None,
            auth: InfluxAuth::None,
            timeout: Duration::from_secs(60),
        },
        runtime.handle().clone(),
    )?);
    let timed = Arc::new(Timed {
        inner: influx,
        stats: Mutex::new(QueryStats::default()),
    });
    let source: Arc<dyn QuerySource> = timed.clone();
    let mut figures: Vec<CycleFigures> = Vec::new();
    for cycle in 0..cycles {
        // The data stays put; the state machine's clock moves by one interval per cycle.
        let apply_now = now + cycle as i64 * INTERVAL;
        let (w0, s0, m0, d0) = (
            Instant::now(),
            process_cpu(),
            eval_cpu(),
            other_process_cpu(pid),
        );
        let mut f = CycleFigures::default();
        for (rule, state) in rules.iter_mut() {
            let result = rule.evaluate(&source, now);
            f.observations += observed(&result, &rule.settings().name)?;
            let a0 = thread_cpu();
            f.events += state.apply(rule.settings(), &result, apply_now).len();
            f.apply += thread_cpu().saturating_sub(a0);
            // What the service then hands to the state writer (the fsyncs are that thread's).
            let p0 = thread_cpu();
            if let Some(save) = state.due_save(apply_now, &rule.settings().name)? {
                f.saved += save.len();
                if matches!(save, StateSave::Snapshot { .. }) {
                    f.snapshots += 1;
                }
            }
            f.persist += thread_cpu().saturating_sub(p0);
        }
        f.wall = w0.elapsed();
        f.self_cpu = process_cpu().saturating_sub(s0);
        f.main_cpu = eval_cpu().saturating_sub(m0);
        f.influxd_cpu = other_process_cpu(pid).saturating_sub(d0);
        f.query = timed.take();
        figures.push(f);
    }

    // JSON decoding alone, for the answers of one cycle.
    let texts = figures[0].query.texts.clone();
    let mut decode_time: HashMap<String, Duration> = HashMap::new();
    for text in &texts {
        if decode_time.contains_key(text) {
            continue;
        }
        let path = format!("/query?db={DB}&epoch=ns&q={}", influxd::urlencode(text));
        let (status, body) = influxd.http("GET", &path, "")?;
        let n = 10u32;
        let start = thread_cpu();
        for _ in 0..n {
            decode(status, body.as_bytes()).map_err(|e| e.to_string())?;
        }
        decode_time.insert(text.clone(), thread_cpu().saturating_sub(start) / n);
    }
    let decode_cycle: Duration = texts.iter().filter_map(|t| decode_time.get(t)).sum();

    let warm = &figures[1..];
    let n = warm.len() as u32;
    let mean = |get: Getter| -> Duration { warm.iter().map(get).sum::<Duration>() / n };
    let max = |get: Getter| -> Duration { warm.iter().map(get).max().unwrap_or_default() };
    let min = |get: Getter| -> Duration { warm.iter().map(get).min().unwrap_or_default() };
    // The median too: on a shared VM a neighbour's burst moves a mean of few cycles.
    let median = |get: Getter| -> Duration {
        let mut v: Vec<Duration> = warm.iter().map(get).collect();
        v.sort();
        v[v.len() / 2]
    };
    let first = &figures[0];
    let self_cpu = mean(&|f: &CycleFigures| f.self_cpu);
    let _ = writeln!(
        report,
        "### One cycle: {} rules over {hosts} hosts against influxd\n",
        rules.len()
    );
    let _ = writeln!(
        report,
        "{lines_total} lines loaded ({hosts} hosts x {POINTS} points at 10 s; {} observations per cycle from {} queries returning {} series, {} rows); {} cycles, first (cold) cycle shown apart, the others averaged (min..max).\n",
        first.observations, first.query.queries, first.query.series, first.query.rows, cycles
    );
    let _ = writeln!(
        report,
        "| per cycle | first | mean of the others | median | min..max |"
    );
    let _ = writeln!(report, "| --- | ---: | ---: | ---: | ---: |");
    let rows: [(&str, Getter); 8] = [
        ("wall time", &|f: &CycleFigures| f.wall),
        (
            "**alerter CPU (process, all threads)**",
            &|f: &CycleFigures| f.self_cpu,
        ),
        ("alerter CPU, evaluating thread", &|f: &CycleFigures| {
            f.main_cpu
        }),
        (
            "… of which inside query() (request + JSON decode)",
            &|f: &CycleFigures| f.query.thread_cpu,
        ),
        (
            "… state machine (RuleState::apply)",
            &|f: &CycleFigures| f.apply,
        ),
        (
            "… state saving (encoding what is due)",
            &|f: &CycleFigures| f.persist,
        ),
        ("wall time waiting in query()", &|f: &CycleFigures| {
            f.query.wall
        }),
        ("influxd CPU (separate process)", &|f: &CycleFigures| {
            f.influxd_cpu
        }),
    ];
    for (label, get) in rows {
        let _ = writeln!(
            report,
            "| {label} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1}..{:.1} ms |",
            ms(get(first)),
            ms(mean(get)),
            ms(median(get)),
            ms(min(get)),
            ms(max(get))
        );
    }
    let other_threads = mean(&|f: &CycleFigures| f.self_cpu.saturating_sub(f.main_cpu));
    let script = mean(&|f: &CycleFigures| {
        f.main_cpu
            .saturating_sub(f.query.thread_cpu + f.apply + f.persist)
    });
    // Before state::STATE_CHECKPOINT, every evaluation encoded the whole state.
    let p0 = thread_cpu();
    let mut all_bytes = 0;
    for (rule, state) in &rules {
        all_bytes += state
            .encode(Path::new("/state"), &rule.settings().name)?
            .len();
    }
    let encode_all = thread_cpu().saturating_sub(p0);
    let influxd_cpu = mean(&|f: &CycleFigures| f.influxd_cpu);
    let _ = writeln!(
        report,
        "\nDerived (means): JSON decoding alone (thread CPU, timed apart on the same answers) {:.1} ms; \
         tokio workers (HTTP client I/O) {:.1} ms; evaluating thread outside query() and apply() \
         (Rhai, series conversion, observations) {:.1} ms; events per cycle {} (first) / {} (last).\n",
        ms(decode_cycle),
        ms(other_threads),
        ms(script),
        first.events,
        figures.last().map_or(0, |f| f.events)
    );
    let _ = writeln!(
        report,
        "State saving: {} of {} warm cycles encoded something ({} snapshots, {:.1} MB in all); encoding every state after every cycle, as before the checkpoints, costs {:.1} ms per cycle ({:.1} MB).\n",
        warm.iter().filter(|f| f.saved > 0).count(),
        warm.len(),
        warm.iter().map(|f| f.snapshots).sum::<usize>(),
        warm.iter().map(|f| f.saved).sum::<usize>() as f64 / 1e6,
        ms(encode_all),
        all_bytes as f64 / 1e6
    );
    let _ = writeln!(
        report,
        "Peer, same cycles: influxd answering the cycle's queries {:.1} ms of CPU; **alerter / influxd = {:.2}**.\n",
        ms(influxd_cpu),
        self_cpu.as_secs_f64() / influxd_cpu.as_secs_f64().max(1e-9)
    );
    let target = Duration::from_millis(100);
    let _ = writeln!(
        report,
        "Target (issue 13, at 1,000 hosts): alerter CPU per cycle under 100 ms: **{}** ({:.1} ms, {:.0} % of the target; at a 10 s interval {:.1} % of one core).\n",
        if self_cpu < target { "met" } else { "missed" },
        ms(self_cpu),
        100.0 * self_cpu.as_secs_f64() / target.as_secs_f64(),
        100.0 * self_cpu.as_secs_f64() / 10.0
    );

    // --- per rule, per series, without a database ----------------------------------------
    if std::env::var_os("WK_BENCH_ONLY_CYCLE").is_some() {
        println!("{report}");
        return Ok(());
    }
    let memory: Arc<dyn QuerySource> = Arc::new(MemorySource::from_line_protocol(&all_lines, 0)?);
    drop(all_lines);
    let canned: Arc<dyn QuerySource> = Arc::new(Canned {
        inner: memory.clone(),
        cache: Mutex::new(HashMap::new()),
    });
    let _ = writeln!(report, "### Per rule, per series, no database\n");
    let _ = writeln!(
        report,
        "Each example rule evaluated 20 times on one thread (thread CPU, mean). \"canned\": query results computed once and handed back (Rhai + series conversion + observations only); \"memory\": the in-memory source aggregating natively too; \"apply\": RuleState::apply on the result (steady state).\n"
    );
    let _ = writeln!(
        report,
        "| rule | series | canned µs/eval | canned ns/series | memory ns/series | apply ns/series |"
    );
    let _ = writeln!(report, "| --- | ---: | ---: | ---: | ---: | ---: |");
    let reps = 20u32;
    for (name, text) in &examples {
        let rule = load_rule_source(&format!("{name}.rhai"), text).map_err(|e| e.to_string())?;
        let settings: &RuleSettings = rule.settings();
        let series = observed(&rule.evaluate(&canned, now), name)?; // fills the cache
        let per = |src: &Arc<dyn QuerySource>| -> Result<Duration, BoxError> {
            let c0 = eval_cpu();
            for _ in 0..reps {
                observed(&rule.evaluate(src, now), name)?;
            }
            Ok(eval_cpu().saturating_sub(c0) / reps)
        };
        let canned_t = per(&canned)?;
        let memory_t = per(&memory)?;
        let result = rule.evaluate(&canned, now);
        let mut state = RuleState::new();
        state.apply(settings, &result, now);
        let c0 = thread_cpu();
        for i in 0..reps {
            state.apply(settings, &result, now + i64::from(i + 1) * INTERVAL);
        }
        let apply_t = thread_cpu().saturating_sub(c0) / reps;
        let per_series = |d: Duration| d.as_nanos() as f64 / series.max(1) as f64;
        let _ = writeln!(
            report,
            "| {name} | {series} | {:.0} | {:.0} | {:.0} | {:.0} |",
            canned_t.as_secs_f64() * 1e6,
            per_series(canned_t),
            per_series(memory_t),
            per_series(apply_t)
        );
    }
    drop(runtime);
    println!("{report}");
    Ok(())
}
