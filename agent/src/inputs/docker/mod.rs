//! `[[inputs.docker]]`: the Docker engine's summary and, per container, its state, health,
//! memory, CPU, network and block I/O, read from the Docker Engine API (`/info`,
//! `/containers/json`, `/containers/<id>/json`, `/containers/<id>/stats`) over its unix
//! socket. Telegraf 1.39's measurements, tags, field names and types. See README.md.

pub mod client;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::metric::{Metric, Name};
use crate::plugin::Accumulator;
use client::Endpoint;
use wk_core::glob::GlobSet;
use wk_core::options::{Harmless, Options};

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "docker",
    description: "Docker engine summary and per-container state, memory, CPU, network and block I/O",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// Telegraf's default endpoint.
pub const DEFAULT_ENDPOINT: &str = "unix:///var/run/docker.sock";

/// At most this many containers are read at once (Telegraf starts one goroutine per
/// container; each stats call takes about a second, as the daemon waits for a second sample).
const PARALLEL: usize = 16;

/// The device classes of `perdevice_include` and `total_include`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Classes {
    pub cpu: bool,
    pub blkio: bool,
    pub network: bool,
}

/// An include/exclude pair of glob lists (Telegraf's `filter.NewIncludeExcludeFilter`): an
/// empty include list lets everything in.
#[derive(Debug, Clone, Default)]
pub struct IncludeExclude {
    include: GlobSet,
    exclude: GlobSet,
}

impl IncludeExclude {
    /// True when `s` is included and not excluded.
    pub fn is_match(&self, s: &str) -> bool {
        (self.include.is_empty() || self.include.is_match(s)) && !self.exclude.is_match(s)
    }
}

/// The options, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub timeout: Duration,
    pub source_tag: bool,
    pub perdevice: Classes,
    pub total: Classes,
    pub tag_env: Vec<String>,
    pub labels: IncludeExclude,
    pub names: IncludeExclude,
    pub states: IncludeExclude,
}

fn read_classes(opts: &mut Options<'_, '_>, key: &str, default: &[&str]) -> Classes {
    let list = opts
        .opt_strings(key)
        .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
    let mut c = Classes::default();
    for v in &list {
        match v.as_str() {
            "cpu" => c.cpu = true,
            "blkio" => c.blkio = true,
            "network" => c.network = true,
            other => opts.error_at(key, format!("invalid '{key}' setting {other:?}")),
        }
    }
    c
}

fn read_filter(opts: &mut Options<'_, '_>, include: &str, exclude: &str) -> IncludeExclude {
    let mut set = |key: &str| {
        let list = opts.strings(key);
        GlobSet::new(&list).unwrap_or_else(|e| {
            opts.error_at(key, e);
            GlobSet::default()
        })
    };
    IncludeExclude {
        include: set(include),
        exclude: set(exclude),
    }
}

/// Reads and checks the options (no I/O).
pub fn read_settings(opts: &mut Options<'_, '_>) -> Settings {
    let raw = opts.string("endpoint", DEFAULT_ENDPOINT);
    let raw = if raw.is_empty() {
        DEFAULT_ENDPOINT.to_owned()
    } else if raw == "ENV" {
        opts.warn_at(
            "endpoint",
            format!(
                "\"ENV\" (DOCKER_HOST and friends) is not implemented; using {DEFAULT_ENDPOINT}"
            ),
        );
        DEFAULT_ENDPOINT.to_owned()
    } else {
        raw
    };
    let endpoint = Endpoint::parse(&raw).unwrap_or_else(|e| {
        opts.error_at("endpoint", e);
        Endpoint::Unix("/var/run/docker.sock".into())
    });
    let timeout = opts.duration("timeout", Duration::from_secs(5));
    let timeout = if timeout.is_zero() {
        // Telegraf loads it and then fails every call at once; we load it too, and wait 5 s.
        opts.warn_at(
            "timeout",
            "0 would fail every call at once (as in Telegraf); using 5s",
        );
        Duration::from_secs(5)
    } else {
        timeout
    };
    let source_tag = opts.bool("source_tag", false);
    let mut perdevice = read_classes(opts, "perdevice_include", &["cpu"]);
    let mut total = read_classes(opts, "total_include", &["cpu", "blkio", "network"]);
    // Options of older Telegrafs, read as `telegraf config migrate` rewrites them (1.39
    // itself refuses them).
    let old = |opts: &mut Options<'_, '_>, key: &str, now: &str| {
        opts.warn_at(
            key,
            format!("was removed from Telegraf (1.39 refuses it); read as {now}, as `telegraf config migrate` rewrites it"),
        )
    };
    if opts.has("perdevice") {
        let on = opts.bool("perdevice", false);
        let listed = opts.has("perdevice_include");
        if on {
            perdevice = Classes {
                cpu: perdevice.cpu || !listed,
                blkio: true,
                network: true,
            };
        } else if perdevice.blkio || perdevice.network {
            opts.error_at(
                "perdevice",
                "contradicts perdevice_include (network or blkio)",
            );
        } else if !listed {
            perdevice = Classes::default();
        }
        old(opts, "perdevice", "perdevice_include");
    }
    if opts.has("total") {
        if !opts.bool("total", true) && opts.has("total_include") {
            total = Classes {
                cpu: total.cpu,
                ..Classes::default()
            };
        }
        old(opts, "total", "total_include");
    }
    let tag_env = opts.strings("tag_env");
    let labels = read_filter(opts, "docker_label_include", "docker_label_exclude");
    let mut names = read_filter(opts, "container_name_include", "container_name_exclude");
    if opts.has("container_names") {
        let mut list = opts.strings("container_name_include");
        for n in opts.strings("container_names") {
            if !list.contains(&n) {
                list.push(n);
            }
        }
        match GlobSet::new(&list) {
            Ok(g) => names.include = g,
            Err(e) => opts.error_at("container_names", e),
        }
        old(opts, "container_names", "container_name_include");
    }
    let mut states = read_filter(opts, "container_state_include", "container_state_exclude");
    if states.include.is_empty() && states.exclude.is_empty() {
        states.include = GlobSet::new(&["running"]).unwrap_or_default();
    }
    opts.unsupported_unless(&[("gather_services", Harmless::Bool(false))]);
    if !opts.strings("storage_objects").is_empty() {
        opts.warn_at(
            "storage_objects",
            "disk usage (docker_disk_usage) is not implemented; ignored",
        );
    }
    // Podman's missing previous sample is not worked around; Docker's own is used.
    let _ = opts.duration("podman_cache_ttl", Duration::from_secs(60));
    opts.unsupported(&[
        "tls_ca",
        "tls_cert",
        "tls_key",
        "tls_key_pwd",
        "tls_server_name",
        "tls_min_version",
        "tls_max_version",
        "tls_cipher_suites",
        "tls_renegotiation_method",
    ]);
    opts.unsupported_unless(&[
        ("insecure_skip_verify", Harmless::Bool(false)),
        ("tls_enable", Harmless::Bool(false)),
    ]);
    Settings {
        endpoint,
        timeout,
        source_tag,
        perdevice,
        total,
        tag_env,
        labels,
        names,
        states,
    }
}

fn build(opts: &mut Options<'_, '_>, _ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(Docker {
        settings: read_settings(opts),
    })
}

/// The input.
pub struct Docker {
    pub settings: Settings,
}

// ---- JSON access: a missing or mistyped value reads as zero, as Go's decoder leaves it. ----

fn at<'v>(v: &'v Value, path: &[&str]) -> &'v Value {
    path.iter().fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}
fn u64_at(v: &Value, path: &[&str]) -> u64 {
    at(v, path).as_u64().unwrap_or(0)
}
fn i64_at(v: &Value, path: &[&str]) -> i64 {
    at(v, path).as_i64().unwrap_or(0)
}
fn str_at<'v>(v: &'v Value, path: &[&str]) -> &'v str {
    at(v, path).as_str().unwrap_or("")
}

/// Telegraf's `parseContainerName`: the first name without a `/` once the leading one is gone
/// (other names are links, `/other/alias`).
pub fn container_name(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| n.strip_prefix('/').unwrap_or(n))
        .find(|n| !n.contains('/'))
        .unwrap_or("")
        .to_owned()
}

/// Telegraf's `docker.ParseImage`: (name, version), the version `unknown` without a tag; a
/// registry host (with `.` or `:`, or `localhost`) stays in the name.
pub fn parse_image(image: &str) -> (String, String) {
    let (domain, remainder) = match image.find('/') {
        Some(i) if image[..i].contains(['.', ':']) || &image[..i] == "localhost" => {
            (&image[..i], &image[i + 1..])
        }
        _ => ("", image),
    };
    let (name, version) = match remainder.rfind(':') {
        Some(i) => (&remainder[..i], &remainder[i + 1..]),
        None => (remainder, "unknown"),
    };
    let name = if domain.is_empty() {
        name.to_owned()
    } else {
        format!("{domain}/{name}")
    };
    (name, version.to_owned())
}

/// Telegraf's `parseSize` for `DriverStatus` values: `65.54 kB`, `107.4 GB` (decimal units,
/// the `b` optional); `None` for anything else.
pub fn parse_size(s: &str) -> Option<i64> {
    let t = s.strip_suffix(['b', 'B']).unwrap_or(s);
    let (t, mul) = match t.chars().last().map(|c| c.to_ascii_lowercase()) {
        Some('k') => (&t[..t.len() - 1], 1e3),
        Some('m') => (&t[..t.len() - 1], 1e6),
        Some('g') => (&t[..t.len() - 1], 1e9),
        Some('t') => (&t[..t.len() - 1], 1e12),
        Some('p') => (&t[..t.len() - 1], 1e15),
        _ => (t, 1.0),
    };
    let t = t.strip_suffix(' ').unwrap_or(t);
    let number_like = !t.is_empty()
        && t.split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !number_like {
        return None;
    }
    let v: f64 = t.parse().ok()?;
    Some((v * mul) as i64)
}

/// An RFC 3339 time (`2018-06-14T05:48:53.266176036Z`, offsets allowed, fraction optional)
/// as ns since the epoch; i128 because Go's zero time (year 1) is out of i64's ns range.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let p = s.get(r)?;
        p.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| p.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: i128 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = &frac[..n.min(9)];
        nanos = digits.parse::<i128>().ok()? * 10i128.pow(9 - digits.len() as u32);
        rest = &frac[n..];
    }
    let offset: i64 = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first() {
                Some(b'+') => 1,
                Some(b'-') => -1,
                _ => return None,
            };
            let o = rest.get(1..)?;
            if o.len() != 5 || o.as_bytes()[2] != b':' {
                return None;
            }
            let oh: i64 = o[..2].parse().ok()?;
            let om: i64 = o[3..].parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs as i128 * 1_000_000_000 + nanos)
}

/// Go's zero `time.Time` (`0001-01-01T00:00:00Z`), which Docker sends for "never".
const GO_ZERO_TIME_NS: i128 = -62_135_596_800 * 1_000_000_000;

fn saturate(ns: i128) -> i64 {
    ns.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// One metric under construction with the container's tags.
fn metric(name: &str, time: i64, tags: &[(String, String)]) -> Metric {
    let mut m = Metric::new(name.to_owned(), time);
    for (k, v) in tags {
        m.set_tag(k.clone(), v.clone());
    }
    m
}

/// A container's sum over its interfaces or devices: `tag=total`, `container_id` and the
/// summed fields, in Telegraf's order.
fn summed<K: Into<Name>>(
    mut m: Metric,
    tag: &'static str,
    id: &str,
    sums: impl IntoIterator<Item = (K, u64)>,
) -> Metric {
    m.set_tag(tag, "total");
    m.add_field("container_id", id);
    for (k, v) in sums {
        m.add_field(k, v);
    }
    m
}

/// The engine summary from `/info`: the `docker` lines (counts, `memory_total`, the
/// devicemapper pool block size) and `docker_data`, `docker_metadata`,
/// `docker_devicemapper` when the storage driver reports them.
pub fn info_metrics(info: &Value, time: i64) -> Vec<Metric> {
    let tags = vec![
        ("engine_host".to_owned(), str_at(info, &["Name"]).to_owned()),
        (
            "server_version".to_owned(),
            str_at(info, &["ServerVersion"]).to_owned(),
        ),
    ];
    let mut out = Vec::new();
    let mut m = metric("docker", time, &tags);
    for (field, key) in [
        ("n_cpus", "NCPU"),
        ("n_used_file_descriptors", "NFd"),
        ("n_containers", "Containers"),
        ("n_containers_running", "ContainersRunning"),
        ("n_containers_stopped", "ContainersStopped"),
        ("n_containers_paused", "ContainersPaused"),
        ("n_images", "Images"),
        ("n_goroutines", "NGoroutines"),
        ("n_listener_events", "NEventsListener"),
    ] {
        m.add_field(field, i64_at(info, &[key]));
    }
    out.push(m);
    out.push(metric("docker", time, &tags).with_field("memory_total", i64_at(info, &["MemTotal"])));

    let mut unit_tags = tags.clone();
    unit_tags.push(("unit".into(), "bytes".into()));
    let mut pool_name = None;
    let mut dm = metric("docker_devicemapper", time, &tags);
    let mut data = metric("docker_data", time, &unit_tags);
    let mut meta = metric("docker_metadata", time, &unit_tags);
    for pair in at(info, &["DriverStatus"]).as_array().into_iter().flatten() {
        let (Some(k), Some(v)) = (
            pair.get(0).and_then(Value::as_str),
            pair.get(1).and_then(Value::as_str),
        ) else {
            continue;
        };
        let name = k.replace(' ', "_").to_lowercase();
        if name == "pool_name" {
            pool_name = Some(v.to_owned());
            continue;
        }
        let Some(value) = parse_size(v) else {
            tracing::debug!("docker: parsing size {v:?} of {k:?} failed");
            continue;
        };
        if matches!(
            name.as_str(),
            "pool_blocksize"
                | "base_device_size"
                | "data_space_used"
                | "data_space_total"
                | "data_space_available"
                | "metadata_space_used"
                | "metadata_space_total"
                | "metadata_space_available"
                | "thin_pool_minimum_free_space"
        ) {
            dm.add_field(format!("{name}_bytes"), value);
        }
        if name == "pool_blocksize" {
            out.push(metric("docker", time, &unit_tags).with_field("pool_blocksize", value));
        } else if let Some(f) = name.strip_prefix("data_space_") {
            data.add_field(f.to_owned(), value);
        } else if let Some(f) = name.strip_prefix("metadata_space_") {
            meta.add_field(f.to_owned(), value);
        }
    }
    out.push(data);
    out.push(meta);
    if let Some(p) = pool_name {
        dm.set_tag("pool_name", p);
    }
    out.push(dm);
    out.retain(|m| !m.fields.is_empty());
    out
}

/// One entry of `/containers/json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub image: String,
    pub state: String,
    pub labels: Vec<(String, String)>,
}

/// Reads the container list.
pub fn parse_list(list: &Value) -> Result<Vec<Listed>, String> {
    let items = list
        .as_array()
        .ok_or("the container list is not a JSON array")?;
    Ok(items
        .iter()
        .map(|c| {
            let names: Vec<&str> = at(c, &["Names"])
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            Listed {
                id: str_at(c, &["Id"]).to_owned(),
                name: container_name(&names),
                image: str_at(c, &["Image"]).to_owned(),
                state: str_at(c, &["State"]).to_owned(),
                labels: at(c, &["Labels"])
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect(),
            }
        })
        .collect())
}

impl Settings {
    /// The tags of a listed container before inspection, or `None` when the name and state
    /// filters leave it out.
    pub fn container_tags(
        &self,
        c: &Listed,
        info_tags: &[(String, String)],
    ) -> Option<Vec<(String, String)>> {
        if c.name.is_empty() || !self.names.is_match(&c.name) || !self.states.is_match(&c.state) {
            return None;
        }
        let (image, version) = parse_image(&c.image);
        let mut tags = info_tags.to_vec();
        tags.push(("container_name".into(), c.name.clone()));
        tags.push(("container_image".into(), image));
        tags.push(("container_version".into(), version));
        if self.source_tag {
            tags.push(("source".into(), c.id.chars().take(12).collect()));
        }
        for (k, v) in &c.labels {
            if self.labels.is_match(k) {
                tags.push((k.clone(), v.clone()));
            }
        }
        Some(tags)
    }

    /// Adds `tag_env`'s variables found in the inspected `Config.Env` (non-blank values).
    pub fn env_tags(&self, inspect: &Value, tags: &mut Vec<(String, String)>) {
        let env: Vec<&str> = at(inspect, &["Config", "Env"])
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for want in &self.tag_env {
            for var in &env {
                if let Some((k, v)) = var.split_once('=')
                    && k == want
                    && !v.trim().is_empty()
                {
                    tags.push((k.to_owned(), v.to_owned()));
                }
            }
        }
    }
}

/// `docker_container_status` and `docker_container_health` from an inspection. `now` (ns)
/// stands in for a finish time that is not set, as in Telegraf's uptime.
pub fn state_metrics(
    inspect: &Value,
    id: &str,
    tags: &[(String, String)],
    time: i64,
    now: i64,
) -> Vec<Metric> {
    let state = at(inspect, &["State"]);
    if !state.is_object() {
        return vec![];
    }
    let mut m = metric("docker_container_status", time, tags);
    m.add_field(
        "oomkilled",
        at(state, &["OOMKilled"]).as_bool().unwrap_or(false),
    );
    m.add_field("pid", i64_at(state, &["Pid"]));
    m.add_field("exitcode", i64_at(state, &["ExitCode"]));
    m.add_field("restart_count", i64_at(inspect, &["RestartCount"]));
    m.add_field("container_id", id);
    let set = |t: Option<i128>| t.filter(|&t| t != GO_ZERO_TIME_NS);
    let finished = set(parse_rfc3339(str_at(state, &["FinishedAt"])));
    if let Some(f) = finished {
        m.add_field("finished_at", saturate(f));
    }
    if let Some(started) = set(parse_rfc3339(str_at(state, &["StartedAt"]))) {
        m.add_field("started_at", saturate(started));
        let end = finished.unwrap_or(now as i128);
        let uptime = if end < started {
            now as i128 - started
        } else {
            end - started
        };
        m.add_field("uptime_ns", saturate(uptime));
    }
    let mut out = vec![m];
    let health = at(state, &["Health"]);
    if health.is_object() {
        out.push(
            metric("docker_container_health", time, tags)
                .with_field("health_status", str_at(health, &["Status"]))
                .with_field("failing_streak", i64_at(health, &["FailingStreak"])),
        );
    }
    out
}

/// The memory fields Telegraf copies from `memory_stats.stats` when present.
const MEM_STATS: [&str; 29] = [
    "active_anon",
    "active_file",
    "cache",
    "hierarchical_memory_limit",
    "inactive_anon",
    "inactive_file",
    "mapped_file",
    "pgfault",
    "pgmajfault",
    "pgpgin",
    "pgpgout",
    "rss",
    "rss_huge",
    "total_active_anon",
    "total_active_file",
    "total_cache",
    "total_inactive_file",
    "total_inactive_anon",
    "total_mapped_file",
    "total_pgfault",
    "total_pgmajfault",
    "total_pgpgin",
    "total_pgpgout",
    "total_rss",
    "total_rss_huge",
    "total_unevictable",
    "total_writeback",
    "unevictable",
    "writeback",
];

/// Memory in use without the page cache, as the docker CLI computes it: usage less `cache`
/// (Docker ≤ 19.03), `total_inactive_file` (cgroup v1) or `inactive_file` (cgroup v2).
pub fn mem_usage_no_cache(mem: &Value) -> f64 {
    let usage = u64_at(mem, &["usage"]);
    let stat = |k: &str| at(mem, &["stats", k]).as_u64();
    for k in ["cache", "total_inactive_file"] {
        if let Some(v) = stat(k)
            && v < usage
        {
            return (usage - v) as f64;
        }
    }
    let v = stat("inactive_file").unwrap_or(0);
    if v < usage {
        (usage - v) as f64
    } else {
        usage as f64
    }
}

/// The docker CLI's CPU percentage: the container's share of the host's CPU time since the
/// previous sample, times the number of CPUs.
pub fn cpu_percent_unix(stats: &Value) -> f64 {
    let cpu = u64_at(stats, &["cpu_stats", "cpu_usage", "total_usage"]) as f64
        - u64_at(stats, &["precpu_stats", "cpu_usage", "total_usage"]) as f64;
    let system = u64_at(stats, &["cpu_stats", "system_cpu_usage"]) as f64
        - u64_at(stats, &["precpu_stats", "system_cpu_usage"]) as f64;
    let mut online = u64_at(stats, &["cpu_stats", "online_cpus"]) as f64;
    if online == 0.0 {
        online = percpu(stats).len() as f64;
    }
    if system > 0.0 && cpu > 0.0 {
        cpu / system * online * 100.0
    } else {
        0.0
    }
}

/// Windows: used 100 ns intervals over the possible ones (Go's unsigned arithmetic kept).
fn cpu_percent_windows(stats: &Value) -> f64 {
    let read = parse_rfc3339(str_at(stats, &["read"])).unwrap_or(0);
    let preread = parse_rfc3339(str_at(stats, &["preread"])).unwrap_or(0);
    let possible =
        (saturate(read - preread) as u64 / 100).wrapping_mul(u64_at(stats, &["num_procs"]));
    let used = u64_at(stats, &["cpu_stats", "cpu_usage", "total_usage"])
        .wrapping_sub(u64_at(stats, &["precpu_stats", "cpu_usage", "total_usage"]));
    if possible > 0 {
        used as f64 / possible as f64 * 100.0
    } else {
        0.0
    }
}

fn percpu(stats: &Value) -> Vec<u64> {
    at(stats, &["cpu_stats", "cpu_usage", "percpu_usage"])
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_u64().unwrap_or(0))
        .collect()
}

/// The `docker_container_cpu` totals, in Telegraf's order: field, and its path in the stats.
const CPU_TOTALS: [(&str, &[&str]); 7] = [
    ("usage_total", &["cpu_stats", "cpu_usage", "total_usage"]),
    (
        "usage_in_usermode",
        &["cpu_stats", "cpu_usage", "usage_in_usermode"],
    ),
    (
        "usage_in_kernelmode",
        &["cpu_stats", "cpu_usage", "usage_in_kernelmode"],
    ),
    ("usage_system", &["cpu_stats", "system_cpu_usage"]),
    (
        "throttling_periods",
        &["cpu_stats", "throttling_data", "periods"],
    ),
    (
        "throttling_throttled_periods",
        &["cpu_stats", "throttling_data", "throttled_periods"],
    ),
    (
        "throttling_throttled_time",
        &["cpu_stats", "throttling_data", "throttled_time"],
    ),
];

/// The network counters, in Telegraf's field names.
const NET_FIELDS: [&str; 8] = [
    "rx_dropped",
    "rx_bytes",
    "rx_errors",
    "tx_packets",
    "tx_dropped",
    "rx_packets",
    "tx_errors",
    "tx_bytes",
];

/// The block I/O lists of `blkio_stats` and the field each becomes (`None`: one field without
/// the operation, as `io_time_recursive` and `sectors_recursive`).
const BLKIO: [(&str, &str, bool); 8] = [
    (
        "io_service_bytes_recursive",
        "io_service_bytes_recursive_",
        true,
    ),
    ("io_serviced_recursive", "io_serviced_recursive_", true),
    ("io_queue_recursive", "io_queue_recursive_", true),
    (
        "io_service_time_recursive",
        "io_service_time_recursive_",
        true,
    ),
    ("io_wait_time_recursive", "io_wait_time_", true),
    ("io_merged_recursive", "io_merged_recursive_", true),
    ("io_time_recursive", "io_time_recursive", false),
    ("sectors_recursive", "sectors_recursive", false),
];

impl Settings {
    /// `docker_container_mem`, `_cpu`, `_net` and `_blkio` from one stats answer.
    pub fn stats_metrics(
        &self,
        stats: &Value,
        id: &str,
        tags: &[(String, String)],
        time: i64,
    ) -> Vec<Metric> {
        let mut out = Vec::new();
        let windows = str_at(stats, &["os_type"]) == "windows";

        // Memory.
        let mem = at(stats, &["memory_stats"]);
        let mut m = metric("docker_container_mem", time, tags);
        m.add_field("container_id", id);
        for k in MEM_STATS {
            if let Some(v) = at(mem, &["stats", k]).as_u64() {
                m.add_field(k, v);
            }
        }
        let failcnt = u64_at(mem, &["failcnt"]);
        if failcnt != 0 {
            m.add_field("fail_count", failcnt);
        }
        if windows {
            m.add_field("commit_bytes", u64_at(mem, &["commitbytes"]));
            m.add_field("commit_peak_bytes", u64_at(mem, &["commitpeakbytes"]));
            m.add_field("private_working_set", u64_at(mem, &["privateworkingset"]));
        } else {
            let limit = u64_at(mem, &["limit"]);
            m.add_field("limit", limit);
            m.add_field("max_usage", u64_at(mem, &["max_usage"]));
            let used = mem_usage_no_cache(mem);
            m.add_field("usage", used as u64);
            let pct = if limit != 0 {
                used / limit as f64 * 100.0
            } else {
                0.0
            };
            m.add_field("usage_percent", pct);
        }
        out.push(m);

        // CPU.
        if self.total.cpu {
            let mut c = metric("docker_container_cpu", time, tags);
            c.set_tag("cpu", "cpu-total");
            for (field, path) in CPU_TOTALS {
                c.add_field(field, u64_at(stats, path));
            }
            c.add_field("container_id", id);
            let pct = if windows {
                cpu_percent_windows(stats)
            } else {
                cpu_percent_unix(stats)
            };
            c.add_field("usage_percent", pct);
            out.push(c);
        }
        let per = percpu(stats);
        if self.perdevice.cpu && !per.is_empty() {
            let online = u64_at(stats, &["cpu_stats", "online_cpus"]) as usize;
            let n = if online > 0 {
                online.min(per.len())
            } else {
                per.len()
            };
            for (i, v) in per[..n].iter().enumerate() {
                let mut c = metric("docker_container_cpu", time, tags);
                c.set_tag("cpu", format!("cpu{i}"));
                c.add_field("usage_total", *v);
                c.add_field("container_id", id);
                out.push(c);
            }
        }

        // Network: per interface, and the sum.
        let mut total: BTreeMap<&str, u64> = BTreeMap::new();
        let networks: BTreeMap<&String, &Value> = at(stats, &["networks"])
            .as_object()
            .into_iter()
            .flatten()
            .collect();
        for (name, n) in &networks {
            if self.perdevice.network {
                let mut m = metric("docker_container_net", time, tags);
                m.set_tag("network", name.as_str());
                for f in NET_FIELDS {
                    m.add_field(f, u64_at(n, &[f]));
                }
                m.add_field("container_id", id);
                out.push(m);
            }
            for f in NET_FIELDS {
                let t = total.entry(f).or_default();
                *t = t.wrapping_add(u64_at(n, &[f]));
            }
        }
        if self.total.network && !total.is_empty() {
            let m = metric("docker_container_net", time, tags);
            out.push(summed(m, "network", id, total));
        }

        // Block I/O: per major:minor device, and the sum.
        let mut devices: BTreeMap<(u64, u64), BTreeMap<String, u64>> = BTreeMap::new();
        for (list, prefix, with_op) in BLKIO {
            for e in at(stats, &["blkio_stats", list])
                .as_array()
                .into_iter()
                .flatten()
            {
                let dev = (u64_at(e, &["major"]), u64_at(e, &["minor"]));
                let field = if with_op {
                    format!("{prefix}{}", str_at(e, &["op"]).to_lowercase())
                } else {
                    prefix.to_owned()
                };
                devices
                    .entry(dev)
                    .or_default()
                    .insert(field, u64_at(e, &["value"]));
            }
        }
        let mut sums: BTreeMap<String, u64> = BTreeMap::new();
        for ((major, minor), fields) in &devices {
            if self.perdevice.blkio {
                let mut m = metric("docker_container_blkio", time, tags);
                m.set_tag("device", format!("{major}:{minor}"));
                for (k, v) in fields {
                    m.add_field(k.clone(), *v);
                }
                m.add_field("container_id", id);
                out.push(m);
            }
            for (k, v) in fields {
                let s = sums.entry(k.clone()).or_default();
                *s = s.wrapping_add(*v);
            }
        }
        if self.total.blkio {
            let m = metric("docker_container_blkio", time, tags);
            out.push(summed(m, "device", id, sums));
        }
        out
    }
}

/// A container id as a URL path segment: ids are hex, anything else is percent-encoded so a
/// strange answer cannot change the request.
fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn get_json(s: &Settings, path: &str) -> Result<Option<Value>, String> {
    let body = client::get(&s.endpoint, path, s.timeout)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| format!("GET {path}: bad JSON: {e}"))
}

impl Docker {
    /// Inspects one container and reads its stats: its metrics, and the error that cut them
    /// short.
    fn container(
        &self,
        c: &Listed,
        mut tags: Vec<(String, String)>,
        time: i64,
        now: i64,
    ) -> (Vec<Metric>, Option<String>) {
        let s = &self.settings;
        let id = path_segment(&c.id);
        let inspect = match get_json(s, &format!("/containers/{id}/json")) {
            Ok(Some(v)) => v,
            Ok(None) => Value::Null,
            Err(e) => return (vec![], Some(format!("inspecting container failed: {e}"))),
        };
        s.env_tags(&inspect, &mut tags);
        let mut out = Vec::new();
        if at(&inspect, &["State"]).is_object() {
            tags.push((
                "container_status".into(),
                str_at(&inspect, &["State", "Status"]).to_owned(),
            ));
            out.extend(state_metrics(&inspect, &c.id, &tags, time, now));
        }
        match get_json(s, &format!("/containers/{id}/stats?stream=false")) {
            Ok(Some(stats)) if stats.is_object() => {
                out.extend(s.stats_metrics(&stats, &c.id, &tags, time));
                (out, None)
            }
            Ok(_) => (out, None),
            Err(e) => (out, Some(format!("getting container stats failed: {e}"))),
        }
    }
}

impl Input for Docker {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let s = &self.settings;
        let (time, now) = (acc.time(), acc.clock());
        let mut info_tags = Vec::new();
        match get_json(s, "/info") {
            Ok(Some(info)) => {
                info_tags.push(("engine_host".into(), str_at(&info, &["Name"]).to_owned()));
                info_tags.push((
                    "server_version".into(),
                    str_at(&info, &["ServerVersion"]).to_owned(),
                ));
                for m in info_metrics(&info, time) {
                    acc.push(m);
                }
            }
            Ok(None) => acc.add_error(format!(
                "getting info failed: empty answer from {}",
                s.endpoint
            )),
            Err(e) => acc.add_error(format!("getting info failed: {e}")),
        }
        let list = get_json(s, "/containers/json?all=1")
            .and_then(|l| parse_list(&l.unwrap_or(Value::Null)))
            .map_err(|e| GatherError::Other(format!("listing containers failed: {e}")))?;
        let selected: Vec<(&Listed, Vec<(String, String)>)> = list
            .iter()
            .filter_map(|c| Some((c, s.container_tags(c, &info_tags)?)))
            .collect();
        for batch in selected.chunks(PARALLEL) {
            let this = &*self;
            let results: Vec<(Vec<Metric>, Option<String>)> = std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .iter()
                    .map(|(c, tags)| {
                        scope.spawn(move || this.container(c, tags.clone(), time, now))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| (vec![], Some("container reader panicked".into())))
                    })
                    .collect()
            });
            for (metrics, err) in results {
                for m in metrics {
                    acc.push(m);
                }
                if let Some(e) = err {
                    acc.add_error(e);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::FieldValue;

    #[test]
    fn image_names_and_versions_as_telegraf() {
        for (image, name, version) in [
            ("redis", "redis", "unknown"),
            ("redis:7", "redis", "7"),
            ("redis/image/6", "redis/image/6", "unknown"),
            (
                "quay.io:4443/coreos/etcd:v3.3.25",
                "quay.io:4443/coreos/etcd",
                "v3.3.25",
            ),
            ("localhost/app:1.0", "localhost/app", "1.0"),
            ("localhost:5000/app", "localhost:5000/app", "unknown"),
        ] {
            assert_eq!(parse_image(image), (name.into(), version.into()), "{image}");
        }
    }

    #[test]
    fn container_names_skip_links() {
        assert_eq!(container_name(&["/a/b", "/web"]), "web");
        assert_eq!(container_name(&["/x/y"]), "");
        assert_eq!(container_name(&[]), "");
    }

    #[test]
    fn driver_status_sizes() {
        for (text, want) in [
            ("65.54 kB", Some(65540)),
            ("107.4 GB", Some(107_400_000_000)),
            // float64 rounding, as in Telegraf (its testdata expects 2146999999).
            ("2.147 GB", Some(2_146_999_999)),
            ("10", Some(10)),
            ("3kb", Some(3000)),
            ("1.2.3 MB", None),
            ("/dev/loop0", None),
            ("true", None),
            ("kB", None),
            ("1.02.137 (2016-11-30)", None),
        ] {
            assert_eq!(parse_size(text), want, "{text}");
        }
    }

    #[test]
    fn rfc3339_times() {
        for (text, want) in [
            (
                "2018-06-14T05:48:53.266176036Z",
                Some(1_528_955_333_266_176_036),
            ),
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01T01:00:00+01:00", Some(0)),
            ("2024-01-01T00:00:00.5Z", Some(1_704_067_200_500_000_000)),
            ("0001-01-01T00:00:00Z", Some(GO_ZERO_TIME_NS)),
            ("", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-01-01 00:00:00Z", None),
            ("2024-01-01T00:00:00", None),
        ] {
            assert_eq!(parse_rfc3339(text), want, "{text}");
        }
    }

    fn settings() -> Settings {
        Settings {
            endpoint: Endpoint::Unix("/nonexistent".into()),
            timeout: Duration::from_secs(1),
            source_tag: false,
            perdevice: Classes {
                cpu: true,
                blkio: true,
                network: true,
            },
            total: Classes {
                cpu: true,
                blkio: true,
                network: true,
            },
            tag_env: vec!["A".into(), "EMPTY".into()],
            labels: IncludeExclude::default(),
            names: IncludeExclude::default(),
            states: IncludeExclude::default(),
        }
    }

    #[test]
    fn exited_container_state_and_uptime() {
        let inspect: Value = serde_json::from_str(
            r#"{"RestartCount":2,"State":{"Status":"exited","OOMKilled":true,"Pid":0,"ExitCode":137,
                "StartedAt":"2024-01-01T00:00:00Z","FinishedAt":"2024-01-01T01:00:00Z","Health":null}}"#,
        )
        .unwrap();
        let ms = state_metrics(&inspect, "abc", &[], 5, 99);
        assert_eq!(ms.len(), 1, "no health line for a null Health");
        let m = &ms[0];
        assert_eq!(m.field("oomkilled"), Some(&FieldValue::Bool(true)));
        assert_eq!(m.field("exitcode"), Some(&FieldValue::Int(137)));
        assert_eq!(m.field("restart_count"), Some(&FieldValue::Int(2)));
        assert_eq!(
            m.field("uptime_ns"),
            Some(&FieldValue::Int(3_600_000_000_000))
        );
        assert_eq!(
            m.field("finished_at"),
            Some(&FieldValue::Int(1_704_070_800_000_000_000))
        );
        assert_eq!(
            m.field("container_id"),
            Some(&FieldValue::Str("abc".into()))
        );
    }

    #[test]
    fn running_container_uptime_runs_to_now_and_health_is_reported() {
        let inspect: Value = serde_json::from_str(
            r#"{"State":{"Status":"running","Pid":42,"StartedAt":"1970-01-01T00:00:10Z",
                "FinishedAt":"0001-01-01T00:00:00Z","Health":{"Status":"healthy","FailingStreak":0}}}"#,
        )
        .unwrap();
        let ms = state_metrics(&inspect, "abc", &[], 5, 25_000_000_000);
        assert_eq!(
            ms[0].field("uptime_ns"),
            Some(&FieldValue::Int(15_000_000_000))
        );
        assert_eq!(ms[0].field("finished_at"), None);
        assert_eq!(ms[1].name.as_ref(), "docker_container_health");
        assert_eq!(
            ms[1].field("health_status"),
            Some(&FieldValue::Str("healthy".into()))
        );
        assert_eq!(ms[1].field("failing_streak"), Some(&FieldValue::Int(0)));
    }

    #[test]
    fn env_tags_only_listed_and_non_blank() {
        let inspect: Value =
            serde_json::from_str(r#"{"Config":{"Env":["A=x=y","B=2","EMPTY= ","NOEQ"]}}"#).unwrap();
        let mut tags = vec![];
        settings().env_tags(&inspect, &mut tags);
        assert_eq!(tags, vec![("A".to_owned(), "x=y".to_owned())]);
    }

    #[test]
    fn stats_blkio_net_and_cpu_online_limit() {
        let stats: Value = serde_json::from_str(
            r#"{"cpu_stats":{"cpu_usage":{"total_usage":400,"percpu_usage":[100,300,0,0]},
                 "system_cpu_usage":2000,"online_cpus":2},
                "precpu_stats":{"cpu_usage":{"total_usage":200},"system_cpu_usage":1000},
                "memory_stats":{"usage":600,"limit":1000,"stats":{"inactive_file":100}},
                "networks":{"eth0":{"rx_bytes":1,"tx_bytes":2},"eth1":{"rx_bytes":10}},
                "blkio_stats":{"io_service_bytes_recursive":[{"major":8,"minor":0,"op":"Read","value":5},
                   {"major":8,"minor":0,"op":"Write","value":6},{"major":8,"minor":16,"op":"Read","value":1}],
                   "io_queue_recursive":null,"sectors_recursive":[{"major":8,"minor":16,"op":"","value":9}]}}"#,
        )
        .unwrap();
        let ms = settings().stats_metrics(&stats, "id", &[], 1);
        let find = |name: &str, tag: (&str, &str)| {
            ms.iter()
                .find(|m| m.name.as_ref() == name && m.tag(tag.0) == Some(tag.1))
                .unwrap_or_else(|| panic!("{name} {tag:?} in {ms:?}"))
        };
        let mem = &ms[0];
        assert_eq!(mem.field("usage"), Some(&FieldValue::Uint(500)));
        assert_eq!(mem.field("usage_percent"), Some(&FieldValue::Float(50.0)));
        let total = find("docker_container_cpu", ("cpu", "cpu-total"));
        assert_eq!(total.field("usage_percent"), Some(&FieldValue::Float(40.0)));
        assert!(
            ms.iter().all(|m| m.tag("cpu") != Some("cpu2")),
            "online_cpus=2 limits"
        );
        assert_eq!(
            find("docker_container_cpu", ("cpu", "cpu1")).field("usage_total"),
            Some(&FieldValue::Uint(300))
        );
        let net = find("docker_container_net", ("network", "total"));
        assert_eq!(net.field("rx_bytes"), Some(&FieldValue::Uint(11)));
        assert_eq!(net.field("tx_bytes"), Some(&FieldValue::Uint(2)));
        let b = find("docker_container_blkio", ("device", "total"));
        assert_eq!(
            b.field("io_service_bytes_recursive_read"),
            Some(&FieldValue::Uint(6))
        );
        assert_eq!(b.field("sectors_recursive"), Some(&FieldValue::Uint(9)));
        let d = find("docker_container_blkio", ("device", "8:0"));
        assert_eq!(
            d.field("io_service_bytes_recursive_write"),
            Some(&FieldValue::Uint(6))
        );
    }

    #[test]
    fn empty_stats_of_a_stopped_container_give_a_zero_memory_line_and_a_blkio_total() {
        let ms = settings().stats_metrics(&serde_json::json!({}), "id", &[], 1);
        let names: Vec<&str> = ms.iter().map(|m| m.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "docker_container_mem",
                "docker_container_cpu",
                "docker_container_blkio"
            ]
        );
        assert_eq!(ms[2].fields.len(), 1, "only container_id, as Telegraf");
    }

    #[test]
    fn filters_and_path_segments() {
        let mut s = settings();
        s.names = IncludeExclude {
            include: GlobSet::new(&["web*"]).unwrap(),
            exclude: GlobSet::new(&["web-old"]).unwrap(),
        };
        s.states.include = GlobSet::new(&["running"]).unwrap();
        let c = |name: &str, state: &str| Listed {
            id: "1234567890abcdef".into(),
            name: name.into(),
            image: "nginx:1".into(),
            state: state.into(),
            labels: vec![("com.x".into(), "y".into())],
        };
        assert!(s.container_tags(&c("web-1", "running"), &[]).is_some());
        assert!(s.container_tags(&c("web-old", "running"), &[]).is_none());
        assert!(s.container_tags(&c("db", "running"), &[]).is_none());
        assert!(s.container_tags(&c("web-1", "exited"), &[]).is_none());
        s.source_tag = true;
        let tags = s.container_tags(&c("web-1", "running"), &[]).unwrap();
        assert!(tags.contains(&("source".into(), "1234567890ab".into())));
        assert!(tags.contains(&("com.x".into(), "y".into())));
        assert_eq!(path_segment("ab/../x?y"), "ab%2F..%2Fx%3Fy");
    }
}
