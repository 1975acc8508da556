//! The names of Telegraf's plugins, so that a config using a Telegraf plugin we do not
//! implement loads with a warning, while a name that is no Telegraf plugin at all (a typo) is
//! an error with a suggestion.
//!
//! Source: the plugin directories of influxdata/telegraf at tag v1.39.3 (`plugins/<kind>/<name>/`,
//! each registering itself under its directory name; `inputs/example` is left out because
//! `plugins/inputs/all` does not build it in), plus each kind's `deprecations.go` for plugins
//! that were removed. Regenerate with
//! `git ls-tree v1.39.3 plugins/inputs/ | awk '$2=="tree"{print $4}'` (and so on per kind).

/// Input plugin names (245), sorted.
pub static INPUTS: &[&str] = &[
    "activemq",
    "aerospike",
    "aliyuncms",
    "amd_rocm_smi",
    "amqp_consumer",
    "apache",
    "apcupsd",
    "aurora",
    "azure_monitor",
    "azure_storage_queue",
    "bcache",
    "beanstalkd",
    "beat",
    "bind",
    "bond",
    "burrow",
    "ceph",
    "cgroup",
    "chrony",
    "cisco_telemetry_mdt",
    "clickhouse",
    "cloud_pubsub",
    "cloud_pubsub_push",
    "cloudwatch",
    "cloudwatch_metric_streams",
    "conntrack",
    "consul",
    "consul_agent",
    "couchbase",
    "couchdb",
    "cpu",
    "csgo",
    "ctrlx_datalayer",
    "dcos",
    "directory_monitor",
    "disk",
    "diskio",
    "disque",
    "dmcache",
    "dns_query",
    "docker",
    "docker_log",
    "dovecot",
    "dpdk",
    "ecs",
    "elasticsearch",
    "elasticsearch_query",
    "ethtool",
    "eventhub_consumer",
    "exec",
    "execd",
    "fail2ban",
    "fibaro",
    "file",
    "filecount",
    "filestat",
    "fireboard",
    "firehose",
    "fluentd",
    "fritzbox",
    "github",
    "gnmi",
    "gnmi_listener",
    "google_cloud_storage",
    "graylog",
    "haproxy",
    "hddtemp",
    "http",
    "http_listener_v2",
    "http_response",
    "huebridge",
    "hugepages",
    "icinga2",
    "infiniband",
    "influxdb",
    "influxdb_listener",
    "influxdb_v2_listener",
    "intel_baseband",
    "intel_dlb",
    "intel_pmt",
    "intel_pmu",
    "intel_powerstat",
    "intel_rdt",
    "internal",
    "internet_speed",
    "interrupts",
    "ipmi_sensor",
    "ipset",
    "iptables",
    "ipvs",
    "jenkins",
    "jolokia2_agent",
    "jolokia2_proxy",
    "jti_openconfig_telemetry",
    "kafka_consumer",
    "kapacitor",
    "kernel",
    "kernel_vmstat",
    "kibana",
    "kinesis_consumer",
    "knx_listener",
    "kube_inventory",
    "kubernetes",
    "lanz",
    "ldap",
    "leofs",
    "libvirt",
    "linux_cpu",
    "linux_sysctl_fs",
    "logql",
    "logstash",
    "lustre2",
    "lvm",
    "mailchimp",
    "marklogic",
    "mavlink",
    "mcrouter",
    "mdstat",
    "mem",
    "memcached",
    "mesos",
    "minecraft",
    "mock",
    "modbus",
    "mongodb",
    "monit",
    "mqtt_consumer",
    "multifile",
    "mysql",
    "nats",
    "nats_consumer",
    "neoom_beaam",
    "neptune_apex",
    "net",
    "net_response",
    "netflow",
    "netstat",
    "nfsclient",
    "nftables",
    "nginx",
    "nginx_plus",
    "nginx_plus_api",
    "nginx_sts",
    "nginx_upstream_check",
    "nginx_vts",
    "nomad",
    "nsd",
    "nsdp",
    "nsq",
    "nsq_consumer",
    "nstat",
    "ntpq",
    "nvidia_smi",
    "opcua",
    "opcua_listener",
    "openldap",
    "openntpd",
    "opensearch_query",
    "opensmtpd",
    "openstack",
    "opentelemetry",
    "openweathermap",
    "p4runtime",
    "passenger",
    "pf",
    "pgbouncer",
    "phpfpm",
    "ping",
    "postfix",
    "postgresql",
    "postgresql_extensible",
    "powerdns",
    "powerdns_recursor",
    "processes",
    "procstat",
    "prometheus",
    "promql",
    "proxmox",
    "puppetagent",
    "rabbitmq",
    "radius",
    "raindrops",
    "ras",
    "ravendb",
    "redfish",
    "redis",
    "redis_sentinel",
    "rethinkdb",
    "riak",
    "riemann_listener",
    "s7comm",
    "salesforce",
    "sensors",
    "sflow",
    "sip",
    "slab",
    "slurm",
    "smart",
    "smartctl",
    "snmp",
    "snmp_trap",
    "socket_listener",
    "socketstat",
    "solr",
    "sql",
    "sqlserver",
    "stackdriver",
    "statsd",
    "supervisor",
    "suricata",
    "swap",
    "synproxy",
    "syslog",
    "sysstat",
    "system",
    "systemd_units",
    "tacacs",
    "tail",
    "teamspeak",
    "temp",
    "tengine",
    "timex",
    "tomcat",
    "trig",
    "turbostat",
    "twemproxy",
    "unbound",
    "upsd",
    "uwsgi",
    "varnish",
    "vault",
    "vsphere",
    "webhooks",
    "whois",
    "win_eventlog",
    "win_perf_counters",
    "win_services",
    "win_wmi",
    "wireguard",
    "wireless",
    "x509_cert",
    "xtremio",
    "zfs",
    "zipkin",
    "zookeeper",
];

/// Output plugin names (68), sorted.
pub static OUTPUTS: &[&str] = &[
    "amon",
    "amqp",
    "application_insights",
    "arc",
    "azure_data_explorer",
    "azure_monitor",
    "bigquery",
    "clarify",
    "cloud_pubsub",
    "cloudwatch",
    "cloudwatch_logs",
    "cratedb",
    "datadog",
    "discard",
    "dynatrace",
    "elasticsearch",
    "event_hubs",
    "exec",
    "execd",
    "file",
    "graphite",
    "graylog",
    "groundwork",
    "health",
    "heartbeat",
    "http",
    "influxdb",
    "influxdb_v2",
    "influxdb_v3",
    "inlong",
    "instrumental",
    "iotdb",
    "kafka",
    "kinesis",
    "librato",
    "logzio",
    "loki",
    "microsoft_fabric",
    "mongodb",
    "mqtt",
    "nats",
    "nebius_cloud_monitoring",
    "newrelic",
    "nsq",
    "opensearch",
    "opentelemetry",
    "opentsdb",
    "parquet",
    "postgresql",
    "prometheus_client",
    "quix",
    "redistimeseries",
    "remotefile",
    "riemann",
    "sensu",
    "signalfx",
    "socket_writer",
    "sql",
    "stackdriver",
    "stomp",
    "sumologic",
    "syslog",
    "timestream",
    "warp10",
    "wavefront",
    "websocket",
    "yandex_cloud_monitoring",
    "zabbix",
];

/// Processor plugin names (35), sorted.
pub static PROCESSORS: &[&str] = &[
    "aws_ec2",
    "batch",
    "clone",
    "converter",
    "cumulative_sum",
    "date",
    "dedup",
    "defaults",
    "enum",
    "execd",
    "filepath",
    "filter",
    "ifname",
    "lookup",
    "noise",
    "override",
    "parser",
    "pivot",
    "port_name",
    "printer",
    "regex",
    "rename",
    "reverse_dns",
    "round",
    "s2geo",
    "scale",
    "snmp_lookup",
    "split",
    "starlark",
    "strings",
    "tag_limit",
    "template",
    "timestamp",
    "topk",
    "unpivot",
];

/// Aggregator plugin names (9), sorted.
pub static AGGREGATORS: &[&str] = &[
    "basicstats",
    "derivative",
    "final",
    "histogram",
    "merge",
    "minmax",
    "quantile",
    "starlark",
    "valuecounter",
];

/// Secret store plugin names (8), sorted.
pub static SECRETSTORES: &[&str] = &[
    "docker",
    "googlecloud",
    "http",
    "jose",
    "oauth2",
    "os",
    "systemd",
    "vault",
];

/// A plugin Telegraf removed: (kind, name, version it was removed in, what to use instead).
/// Telegraf refuses these with a notice ("plugin deprecated"), and so do we.
pub static REMOVED: &[(&str, &str, &str, &str)] = &[
    (
        "inputs",
        "cassandra",
        "1.30.0",
        "use inputs.jolokia2 with the cassandra example configuration",
    ),
    (
        "inputs",
        "cisco_telemetry_gnmi",
        "1.35.0",
        "it was renamed to inputs.gnmi",
    ),
    (
        "inputs",
        "http_listener",
        "1.35.0",
        "it was renamed to inputs.influxdb_listener (or use inputs.http_listener_v2)",
    ),
    ("inputs", "httpjson", "1.30.0", "use inputs.http"),
    ("inputs", "io", "1.30.0", "use inputs.diskio"),
    ("inputs", "jolokia", "1.30.0", "use inputs.jolokia2"),
    (
        "inputs",
        "kafka_consumer_legacy",
        "1.30.0",
        "use inputs.kafka_consumer",
    ),
    (
        "inputs",
        "KNXListener",
        "1.35.0",
        "it was renamed to inputs.knx_listener",
    ),
    (
        "inputs",
        "logparser",
        "1.35.0",
        "use inputs.tail with the grok data format",
    ),
    ("inputs", "snmp_legacy", "1.30.0", "use inputs.snmp"),
    (
        "inputs",
        "tcp_listener",
        "1.30.0",
        "use inputs.socket_listener",
    ),
    (
        "inputs",
        "udp_listener",
        "1.30.0",
        "use inputs.socket_listener",
    ),
    ("outputs", "riemann_legacy", "1.30.0", "use outputs.riemann"),
];

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

/// True when Telegraf 1.39 has a plugin of this kind ("inputs", "outputs", …) and name.
pub fn is_telegraf_plugin(kind: &str, name: &str) -> bool {
    names(kind).binary_search(&name).is_ok()
}

/// When Telegraf removed this plugin: (version, what to use instead).
pub fn removed(kind: &str, name: &str) -> Option<(&'static str, &'static str)> {
    REMOVED
        .iter()
        .find(|(k, n, _, _)| *k == kind && *n == name)
        .map(|(_, _, version, notice)| (*version, *notice))
}

/// The Telegraf plugin name closest to a misspelled one, if any is close (ties go to the
/// name that sorts first).
pub fn closest(kind: &str, name: &str) -> Option<&'static str> {
    wk_core::suggest::closest_in(names(kind).iter().copied(), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_sorted_unique_and_complete() {
        for (kind, list, count) in [
            ("inputs", INPUTS, 245),
            ("outputs", OUTPUTS, 68),
            ("processors", PROCESSORS, 35),
            ("aggregators", AGGREGATORS, 9),
            ("secretstores", SECRETSTORES, 8),
        ] {
            assert_eq!(list.len(), count, "{kind}");
            // Sorted and unique: binary_search in is_telegraf_plugin relies on it.
            assert!(list.windows(2).all(|w| w[0] < w[1]), "{kind} not sorted");
            for name in list {
                assert!(is_telegraf_plugin(kind, name), "{kind}.{name}");
            }
        }
        for (kind, name, _, _) in REMOVED {
            assert!(!is_telegraf_plugin(kind, name), "{kind}.{name} is removed");
        }
    }

    #[test]
    fn known_plugins() {
        for (kind, name) in [
            ("inputs", "cpu"),
            ("inputs", "docker"),
            ("inputs", "haproxy"),
            ("inputs", "zookeeper"),
            ("inputs", "activemq"),
            ("inputs", "win_perf_counters"),
            ("outputs", "influxdb"),
            ("outputs", "influxdb_v2"),
            ("outputs", "influxdb_v3"),
            ("outputs", "zabbix"),
            ("processors", "starlark"),
            ("processors", "timestamp"),
            ("aggregators", "quantile"),
            ("secretstores", "vault"),
        ] {
            assert!(is_telegraf_plugin(kind, name), "{kind}.{name}");
        }
        assert!(!is_telegraf_plugin("inputs", "example"));
        assert!(!is_telegraf_plugin("inputs", "io"));
        assert!(!is_telegraf_plugin("inputs", "influxdb_v2"));
        assert!(!is_telegraf_plugin("parsers", "json"));
        assert!(!is_telegraf_plugin("inputs", ""));
        assert_eq!(
            removed("inputs", "io"),
            Some(("1.30.0", "use inputs.diskio"))
        );
        assert_eq!(removed("inputs", "cpu"), None);
    }

    #[test]
    fn typos_get_a_suggestion() {
        assert_eq!(closest("inputs", "cpuu"), Some("cpu"));
        assert_eq!(closest("inputs", "diskioo"), Some("diskio"));
        assert_eq!(closest("inputs", "dokcer"), Some("docker"));
        assert_eq!(closest("inputs", "ha_proxy"), Some("haproxy"));
        assert_eq!(closest("inputs", "procstats"), Some("procstat"));
        assert_eq!(closest("outputs", "influx"), Some("influxdb"));
        assert_eq!(closest("outputs", "influxdbv2"), Some("influxdb_v2"));
        assert_eq!(closest("processors", "renam"), Some("rename"));
        assert_eq!(closest("aggregators", "basicstat"), Some("basicstats"));
        assert_eq!(closest("inputs", "CPU"), Some("cpu"));
        assert_eq!(closest("outputs", "InfluxDB"), Some("influxdb"));
        assert_eq!(closest("inputs", "zzzzzzzz"), None);
        assert_eq!(closest("nonsense", "cpu"), None);
    }
}
