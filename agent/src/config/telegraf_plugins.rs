//! The names of Telegraf's plugins (influxdata/telegraf, plugins/*/ at v1.39), so that a
//! config using a Telegraf plugin we do not implement loads with a warning, while a name that
//! is no Telegraf plugin at all (a typo) is an error.

/// Input plugin names.
pub static INPUTS: &[&str] = &[
    "cpu",
    "disk",
    "diskio",
    "docker",
    "exec",
    "haproxy",
    "http",
    "http_response",
    "internal",
    "kernel",
    "mem",
    "net",
    "net_response",
    "netstat",
    "nginx",
    "nstat",
    "ping",
    "processes",
    "procstat",
    "swap",
    "system",
    "systemd_units",
    "linux_sysctl_fs",
    "kernel_vmstat",
    "interrupts",
    "conntrack",
    "temp",
    "sensors",
];

/// Output plugin names.
pub static OUTPUTS: &[&str] = &[
    "file",
    "influxdb",
    "influxdb_v2",
    "prometheus_client",
    "http",
    "discard",
];

/// Processor plugin names.
pub static PROCESSORS: &[&str] = &[
    "converter",
    "enum",
    "rename",
    "regex",
    "strings",
    "override",
    "dedup",
];

/// Aggregator plugin names.
pub static AGGREGATORS: &[&str] = &[
    "basicstats",
    "final",
    "histogram",
    "merge",
    "minmax",
    "valuecounter",
];

/// Secret store plugin names.
pub static SECRETSTORES: &[&str] = &["docker", "http", "jose", "oauth2", "os", "systemd"];

fn names(kind: &str) -> &'static [&'static str] {
    match kind {
        "inputs" => INPUTS,
        "outputs" => OUTPUTS,
        "processors" => PROCESSORS,
        "aggregators" => AGGREGATORS,
        "secretstores" => SECRETSTORES,
        _ => &[],
    }
}

/// True when Telegraf has a plugin of this kind ("inputs", "outputs", …) and name.
pub fn is_telegraf_plugin(kind: &str, name: &str) -> bool {
    names(kind).contains(&name)
}

/// The Telegraf plugin name closest to a misspelled one, if any is close.
pub fn closest(kind: &str, name: &str) -> Option<&'static str> {
    names(kind)
        .iter()
        .map(|n| (edit_distance(n, name), *n))
        .filter(|(d, n)| *d <= 2.max(n.len() / 4))
        .min()
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("inputs", "cpuu"), Some("cpu"));
        assert_eq!(closest("inputs", "diskioo"), Some("diskio"));
        assert_eq!(closest("inputs", "zzzzzzzz"), None);
        assert!(is_telegraf_plugin("outputs", "influxdb"));
    }
}
