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
