//! systemd names both programs know: the unit types (the agent's `systemd_units` input lists
//! them; the alerter's `restart_service` refuses every type but services).

/// The unit types, as Telegraf accepts them for `unittype`.
pub const UNIT_TYPES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "device",
    "mount",
    "automount",
    "swap",
    "timer",
    "path",
    "slice",
    "scope",
];

/// The service unit a process runs in, from its `/proc/<pid>/cgroup` text: the last
/// `*.service` component of its cgroup path (`0::/system.slice/wk-alerter.service` →
/// `wk-alerter.service`); `None` outside a service.
pub fn service_of_cgroup(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .flat_map(|path| path.rsplit('/'))
        .find(|c| c.ends_with(".service") && c.len() > ".service".len())
        .map(str::to_owned)
}

/// `unit` with `.service` appended when it names no unit type (`nginx` → `nginx.service`),
/// as systemctl reads it.
pub fn full_unit_name(unit: &str) -> String {
    let typed = unit
        .rsplit_once('.')
        .is_some_and(|(_, t)| UNIT_TYPES.contains(&t));
    if typed {
        unit.to_owned()
    } else {
        format!("{unit}.service")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_of_a_cgroup() {
        assert_eq!(
            service_of_cgroup("0::/system.slice/wk-alerter.service\n").as_deref(),
            Some("wk-alerter.service")
        );
        assert_eq!(
            service_of_cgroup("12:pids:/system.slice/nginx.service/worker\n1:name=systemd:/\n")
                .as_deref(),
            Some("nginx.service")
        );
        assert_eq!(
            service_of_cgroup("0::/user.slice/user-0.slice/session-3.scope\n"),
            None
        );
        assert_eq!(service_of_cgroup("0::/\n"), None);
        assert_eq!(full_unit_name("nginx"), "nginx.service");
        assert_eq!(full_unit_name("a.b"), "a.b.service");
        assert_eq!(full_unit_name("x.socket"), "x.socket");
    }
}
