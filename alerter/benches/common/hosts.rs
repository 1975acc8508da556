//! Telegraf-shaped data for 1,000s of hosts: what the ten example monitoring rules of
//! examples/rules/ query (the cycle bench and the vmalert peer bench load the same lines).

use std::fmt::Write as _;

/// History points per series the benches load (6 minutes at 10 s: the longest rule range is 5m).
pub const POINTS: i64 = 36;

/// Telegraf-shaped line protocol for host `h` at time `t` (step `k` of the history): what the
/// ten example rules query. Every 20th host is in trouble on every check.
pub fn host_lines(out: &mut String, h: usize, k: i64, t: i64) {
    let host = format!("h{h:04}");
    let sick = h.is_multiple_of(20);
    let j = ((h * 7 + k as usize * 13) % 10) as f64; // some jitter
    let idle = if sick { 3.0 + j / 10.0 } else { 60.0 + j };
    let _ = writeln!(
        out,
        "cpu,cpu=cpu-total,host={host} usage_idle={idle},usage_user={},usage_system=2.5 {t}",
        97.5 - idle
    );
    let mem = if sick { 97.0 } else { 40.0 + j };
    let _ = writeln!(
        out,
        "mem,host={host} used_percent={mem},available_percent={} {t}",
        100.0 - mem
    );
    for (dev, path, fstype, used) in [
        ("sda1", "/", "ext4", if sick { 95.0 } else { 50.0 + j }),
        ("sda2", "/var", "ext4", 30.0 + j),
        ("sdb1", "/data", "xfs", 70.0),
        ("tmpfs", "/run", "tmpfs", 99.0),
    ] {
        let _ = writeln!(
            out,
            "disk,device={dev},fstype={fstype},host={host},mode=rw,path={path} used_percent={used},free=1000000i,total=2000000i {t}"
        );
    }
    let swap = if sick { 90.0 } else { 1.0 };
    let _ = writeln!(
        out,
        "swap,host={host} used_percent={swap},total=1000000i {t}"
    );
    let load5 = if sick { 20.0 } else { 0.5 + j / 10.0 };
    let uptime = 100_000 + k * 10;
    let _ = writeln!(
        out,
        "system,host={host} load1={load5},load5={load5},load15={load5},n_cpus=4i,n_users=1i,uptime={uptime}i {t}"
    );
    let cw = if sick { 900 } else { 3 };
    let _ = writeln!(
        out,
        "netstat,host={host} tcp_close_wait={cw}i,tcp_established=40i,tcp_time_wait=12i {t}"
    );
    // Counter: 300/s on sick hosts, 1/s on the others; k counts back from now.
    let step = POINTS - k;
    let retrans = 1_000_000 + step * if sick { 3000 } else { 10 };
    let _ = writeln!(
        out,
        "nstat,host={host},name=snmp TcpRetransSegs={retrans}i,TcpOutSegs={}i {t}",
        step * 5000
    );
    for server in ["http://localhost:8080/health", "https://localhost/"] {
        let code = i64::from(sick);
        let _ = writeln!(
            out,
            "http_response,host={host},method=GET,result=success,server={server},status_code=200 result_code={code}i,response_time=0.012,http_response_code=200i {t}"
        );
    }
    for port in [22, 5432] {
        let code = if sick { 2 } else { 0 };
        let _ = writeln!(
            out,
            "net_response,host={host},port={port},protocol=tcp,result=success,server=localhost result_code={code}i,response_time=0.001 {t}"
        );
    }
}

/// All hosts' lines for one timestamp.
pub fn step_lines(hosts: usize, k: i64, t: i64) -> String {
    let mut out = String::with_capacity(hosts * 1500);
    for h in 0..hosts {
        host_lines(&mut out, h, k, t);
    }
    out
}
