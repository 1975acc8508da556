//! `[[inputs.systemd_units]]`: the load, active and sub state of each systemd unit of one type,
//! as names (tags) and as Telegraf's numeric codes (fields). Telegraf asks systemd over D-Bus
//! (`ListUnits`); we run `systemctl list-units --all`, which lists the same loaded units from
//! the same call, and parse its plain table. See README.md.

use std::time::Duration;

use super::{BuildContext, GatherError, Input, InputSpec};
use crate::common::command::{Run, run};
use crate::hostpaths::HostPaths;
use crate::metric::Metric;
use crate::plugin::Accumulator;
use wk_core::glob::GlobSet;
use wk_core::options::{Harmless, Options};

/// Registry entry.
pub const SPEC: InputSpec = InputSpec {
    name: "systemd_units",
    description: "Load, active and sub state of systemd units",
    sample_config: include_str!("sample.conf"),
    build,
    test_twice: false,
};

/// The unit types Telegraf accepts for `unittype`.
pub use wk_core::systemd::UNIT_TYPES;

/// systemd's `unit_load_state_table`, numbered as Telegraf does.
pub fn load_code(s: &str) -> Option<i64> {
    Some(match s {
        "loaded" => 0,
        "stub" => 1,
        "not-found" => 2,
        "bad-setting" => 3,
        "error" => 4,
        "merged" => 5,
        "masked" => 6,
        _ => return None,
    })
}

/// systemd's `unit_active_state_table`, numbered as Telegraf does.
pub fn active_code(s: &str) -> Option<i64> {
    Some(match s {
        "active" => 0,
        "reloading" => 1,
        "inactive" => 2,
        "failed" => 3,
        "activating" => 4,
        "deactivating" => 5,
        _ => return None,
    })
}

/// The sub states of every unit type, duplicates removed, each type's table at its own hex
/// offset (Telegraf's `subMap`).
pub fn sub_code(s: &str) -> Option<i64> {
    Some(match s {
        // service
        "running" => 0x00,
        "dead" => 0x01,
        "start-pre" => 0x02,
        "start" => 0x03,
        "exited" => 0x04,
        "reload" => 0x05,
        "stop" => 0x06,
        "stop-watchdog" => 0x07,
        "stop-sigterm" => 0x08,
        "stop-sigkill" => 0x09,
        "stop-post" => 0x0a,
        "final-sigterm" => 0x0b,
        "failed" => 0x0c,
        "auto-restart" => 0x0d,
        "condition" => 0x0e,
        "cleaning" => 0x0f,
        // service (continued) and automount
        "waiting" => 0x10,
        "reload-signal" => 0x11,
        "reload-notify" => 0x12,
        "final-watchdog" => 0x13,
        "dead-before-auto-restart" => 0x14,
        "failed-before-auto-restart" => 0x15,
        "dead-resources-pinned" => 0x16,
        "auto-restart-queued" => 0x17,
        // device
        "tentative" => 0x20,
        "plugged" => 0x21,
        // mount
        "mounting" => 0x30,
        "mounting-done" => 0x31,
        "mounted" => 0x32,
        "remounting" => 0x33,
        "unmounting" => 0x34,
        "remounting-sigterm" => 0x35,
        "remounting-sigkill" => 0x36,
        "unmounting-sigterm" => 0x37,
        "unmounting-sigkill" => 0x38,
        // scope
        "abandoned" => 0x50,
        // slice
        "active" => 0x60,
        // socket
        "start-chown" => 0x70,
        "start-post" => 0x71,
        "listening" => 0x72,
        "stop-pre" => 0x73,
        "stop-pre-sigterm" => 0x74,
        "stop-pre-sigkill" => 0x75,
        "final-sigkill" => 0x76,
        // swap
        "activating" => 0x80,
        "activating-done" => 0x81,
        "deactivating" => 0x82,
        "deactivating-sigterm" => 0x83,
        "deactivating-sigkill" => 0x84,
        // timer
        "elapsed" => 0xa0,
        _ => return None,
    })
}

/// One row of `systemctl list-units`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub load: String,
    pub active: String,
    pub sub: String,
}

/// Parses `systemctl list-units --all --plain --no-legend --full` output: the unit name and
/// its three states are the first four words (names never contain spaces: systemd escapes
/// them as `\x20`); the description after them is dropped. A leading `●` or `*` (failed or
/// not-found units, in some systemd versions even in plain mode) is skipped; lines with fewer
/// than four words or a first word without a `.` (a legend or a hint) are ignored.
pub fn parse_list_units(text: &str) -> Vec<Unit> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace().peekable();
            if matches!(words.peek(), Some(&"●") | Some(&"*")) {
                words.next();
            }
            let (name, load, active, sub) =
                (words.next()?, words.next()?, words.next()?, words.next()?);
            // Every unit name ends in `.<type>`; anything else is a legend or a hint.
            if !name.contains('.') {
                return None;
            }
            Some(Unit {
                name: name.to_owned(),
                load: load.to_owned(),
                active: active.to_owned(),
                sub: sub.to_owned(),
            })
        })
        .collect()
}

/// The options, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `pattern`'s space-separated globs.
    pub pattern: GlobSet,
    pub unittype: String,
    /// `scope = "user"`: the user's own manager (`systemctl --user`) and a `user` tag.
    pub user_scope: bool,
    pub timeout: Duration,
}

fn read_settings(opts: &mut Options<'_, '_>) -> Settings {
    let pattern = opts.string("pattern", "*");
    let pattern = if pattern.is_empty() {
        "*".into()
    } else {
        pattern
    };
    // Telegraf splits on single spaces; empty pieces (double spaces) match only "".
    let globs: Vec<&str> = pattern.split(' ').collect();
    let pattern = GlobSet::new(&globs).unwrap_or_else(|e| {
        opts.error_at("pattern", e);
        GlobSet::default()
    });
    let unittype = opts.string("unittype", "service");
    let unittype = if unittype.is_empty() {
        "service".to_owned()
    } else if UNIT_TYPES.contains(&unittype.as_str()) {
        unittype
    } else {
        opts.error_at("unittype", format!("invalid 'unittype' {unittype:?}"));
        "service".to_owned()
    };
    let scope = opts.string("scope", "system");
    let user_scope = match scope.as_str() {
        "" | "system" => false,
        "user" => true,
        other => {
            opts.error_at("scope", format!("invalid 'scope' {other:?}"));
            false
        }
    };
    opts.unsupported_unless(&[
        ("details", Harmless::Bool(false)),
        ("collect_disabled_units", Harmless::Bool(false)),
    ]);
    let timeout = opts.duration("timeout", Duration::from_secs(5));
    Settings {
        pattern,
        unittype,
        user_scope,
        timeout,
    }
}

fn build(opts: &mut Options<'_, '_>, ctx: &BuildContext<'_>) -> Box<dyn Input> {
    Box::new(SystemdUnits {
        settings: read_settings(opts),
        paths: ctx.paths.clone(),
        user: None,
    })
}

impl Settings {
    /// The `systemctl` arguments: the unit type comes from the validated option, never from
    /// anything systemd said.
    pub fn argv(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.user_scope {
            v.push("--user".to_owned());
        }
        v.extend(
            [
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "--no-pager",
                "--full",
            ]
            .map(str::to_owned),
        );
        v.push(format!("--type={}", self.unittype));
        v
    }

    /// The metrics of the listed units that match the pattern and the type; a unit whose
    /// state has no code is skipped with an error, as in Telegraf.
    pub fn metrics(
        &self,
        units: &[Unit],
        user: Option<&str>,
        time: i64,
    ) -> (Vec<Metric>, Vec<String>) {
        let (mut out, mut errors) = (Vec::new(), Vec::new());
        for u in units {
            if !self.pattern.is_match(&u.name) {
                continue;
            }
            if u.name.rsplit_once('.').map(|(_, t)| t) != Some(self.unittype.as_str()) {
                continue;
            }
            let (load, active, sub) = match state_codes(u) {
                Ok(codes) => codes,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let mut m = Metric::new("systemd_units", time)
                .with_tag("name", u.name.clone())
                .with_tag("load", u.load.clone())
                .with_tag("active", u.active.clone())
                .with_tag("sub", u.sub.clone())
                .with_field("load_code", load)
                .with_field("active_code", active)
                .with_field("sub_code", sub);
            if let Some(user) = user {
                m.set_tag("user", user);
            }
            out.push(m);
        }
        (out, errors)
    }
}

/// The name of the user running the agent, from `/etc/passwd` (`None` when absent there).
pub fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

/// The input.
pub struct SystemdUnits {
    pub settings: Settings,
    paths: HostPaths,
    /// The `user` tag of the user scope, looked up at the first gather.
    user: Option<String>,
}

impl SystemdUnits {
    fn user(&mut self) -> Result<String, GatherError> {
        if let Some(u) = &self.user {
            return Ok(u.clone());
        }
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata("/proc/self")
            .map_err(|e| GatherError::Other(format!("unable to determine user: {e}")))?
            .uid();
        let passwd_path = self.paths.etc.join("passwd");
        let passwd = std::fs::read_to_string(&passwd_path).unwrap_or_default();
        // Go's user.Current() falls back to the uid when the name is unknown.
        let name = user_name(&passwd, uid).unwrap_or_else(|| uid.to_string());
        self.user = Some(name.clone());
        Ok(name)
    }
}

impl Input for SystemdUnits {
    fn gather(&mut self, acc: &mut Accumulator) -> Result<(), GatherError> {
        let user = if self.settings.user_scope {
            Some(self.user()?)
        } else {
            None
        };
        let text = match run("systemctl", &self.settings.argv(), self.settings.timeout) {
            Run::Exited {
                code: 0, stdout, ..
            } => stdout,
            Run::Exited { code, stderr, .. } => {
                return Err(GatherError::Other(format!(
                    "listing loaded units failed: systemctl exited with {code}: {}",
                    stderr.trim()
                )));
            }
            Run::Failed(e) => {
                return Err(GatherError::Other(format!(
                    "listing loaded units failed: {e}"
                )));
            }
        };
        let units = parse_list_units(&text);
        let (metrics, errors) = self.settings.metrics(&units, user.as_deref(), acc.time());
        for m in metrics {
            acc.push(m);
        }
        for e in errors {
            acc.add_error(e);
        }
        Ok(())
    }
}

/// A unit's load, active and sub state codes, or Telegraf's error for the first state that has
/// none.
fn state_codes(u: &Unit) -> Result<(i64, i64, i64), String> {
    let code = |field: &str, value: &str, code: fn(&str) -> Option<i64>| {
        code(value)
            .ok_or_else(|| format!("parsing field '{field}' failed, value not in map: {value}"))
    };
    Ok((
        code("load", &u.load, load_code)?,
        code("active", &u.active, active_code)?,
        code("sub", &u.sub, sub_code)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::FieldValue;

    const DEBIAN12: &str = include_str!("testdata/list-units-debian12.txt");
    const BULLETS: &str = include_str!("testdata/list-units-bullets.txt");

    fn settings(pattern: &str, unittype: &str) -> Settings {
        let globs: Vec<&str> = pattern.split(' ').collect();
        Settings {
            pattern: GlobSet::new(&globs).unwrap(),
            unittype: unittype.into(),
            user_scope: false,
            timeout: Duration::from_secs(5),
        }
    }

    fn line(m: &Metric) -> String {
        crate::lineproto::test_format(m)
    }

    #[test]
    fn recorded_debian_services_as_telegraf_reports_them() {
        let units = parse_list_units(DEBIAN12);
        assert_eq!(units.len(), 43);
        let (ms, errors) = settings("*", "service").metrics(&units, None, 1);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ms.len(), 19);
        let got: Vec<String> = ms.iter().map(line).collect();
        for want in [
            "> systemd_units,active=active,load=loaded,name=cron.service,sub=running active_code=0i,load_code=0i,sub_code=0i 1\n",
            "> systemd_units,active=failed,load=loaded,name=nginx.service,sub=failed active_code=3i,load_code=0i,sub_code=12i 1\n",
            "> systemd_units,active=inactive,load=not-found,name=ntp.service,sub=dead active_code=2i,load_code=2i,sub_code=1i 1\n",
            "> systemd_units,active=inactive,load=masked,name=plymouth-start.service,sub=dead active_code=2i,load_code=6i,sub_code=1i 1\n",
            "> systemd_units,active=activating,load=loaded,name=telegraf.service,sub=auto-restart active_code=4i,load_code=0i,sub_code=13i 1\n",
            "> systemd_units,active=active,load=loaded,name=apparmor.service,sub=exited active_code=0i,load_code=0i,sub_code=4i 1\n",
            "> systemd_units,active=active,load=loaded,name=systemd-fsck@dev-disk-by\\x2duuid-4A1B\\x2d2C3D.service,sub=exited active_code=0i,load_code=0i,sub_code=4i 1\n",
        ] {
            assert!(
                got.contains(&want.to_owned()),
                "{want}not in\n{}",
                got.concat()
            );
        }
    }

    #[test]
    fn other_unit_types_and_patterns() {
        let units = parse_list_units(DEBIAN12);
        let codes = |pattern: &str, ty: &str| -> Vec<(String, i64)> {
            let (ms, errors) = settings(pattern, ty).metrics(&units, None, 1);
            assert!(errors.is_empty(), "{errors:?}");
            ms.iter()
                .map(|m| {
                    let FieldValue::Int(c) = m.field("sub_code").unwrap() else {
                        panic!()
                    };
                    (m.tag("name").unwrap().to_owned(), *c)
                })
                .collect()
        };
        assert_eq!(
            codes("*", "socket"),
            [
                ("dbus.socket".to_owned(), 0),
                ("docker.socket".to_owned(), 0x72),
                ("systemd-journald.socket".to_owned(), 0)
            ]
        );
        assert_eq!(codes("*", "device").len(), 4);
        assert!(codes("*", "device").iter().all(|(_, c)| *c == 0x21));
        assert_eq!(codes("*", "swap"), [("dev-zram0.swap".to_owned(), 0x60)]);
        assert_eq!(codes("*", "timer").len(), 2);
        assert_eq!(
            codes("*", "scope"),
            [
                ("init.scope".to_owned(), 0),
                ("session-4.scope".to_owned(), 0x50)
            ]
        );
        assert_eq!(
            codes("*", "automount"),
            [("proc-sys-fs-binfmt_misc.automount".to_owned(), 0x10)]
        );
        assert_eq!(codes("*", "mount").len(), 6);
        // Telegraf's example: several space-separated globs.
        let names: Vec<String> = codes("docker* ssh.service user@*", "service")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            ["docker.service", "ssh.service", "user@1000.service"]
        );
    }

    #[test]
    fn bullets_are_skipped_and_unknown_states_are_errors() {
        let units = parse_list_units(BULLETS);
        assert_eq!(units.len(), 5);
        assert_eq!(units[1].name, "nginx.service");
        assert_eq!(units[2].load, "not-found");
        assert_eq!(units[3].name, "rsyslog.service");
        let (ms, errors) = settings("*", "service").metrics(&units, Some("admin"), 1);
        assert_eq!(ms.len(), 4);
        assert_eq!(ms[0].tag("user"), Some("admin"));
        assert_eq!(
            errors,
            ["parsing field 'sub' failed, value not in map: frobnicating"]
        );
    }

    #[test]
    fn short_and_empty_lines_are_ignored() {
        assert!(parse_list_units("").is_empty());
        assert!(parse_list_units("\n0 loaded units listed.\n").is_empty());
        assert!(parse_list_units("a.service loaded active\n").is_empty());
    }

    #[test]
    fn every_code_of_telegrafs_tables() {
        for (i, s) in [
            "loaded",
            "stub",
            "not-found",
            "bad-setting",
            "error",
            "merged",
            "masked",
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(load_code(s), Some(i as i64));
        }
        for (i, s) in [
            "active",
            "reloading",
            "inactive",
            "failed",
            "activating",
            "deactivating",
        ]
        .iter()
        .enumerate()
        {
            assert_eq!(active_code(s), Some(i as i64));
        }
        assert_eq!(sub_code("elapsed"), Some(0xa0));
        assert_eq!(sub_code("deactivating-sigkill"), Some(0x84));
        assert_eq!(sub_code("auto-restart-queued"), Some(0x17));
        assert_eq!(sub_code("unmounting-sigkill"), Some(0x38));
        assert_eq!(sub_code("final-sigkill"), Some(0x76));
        assert_eq!(sub_code("nope"), None);
    }

    #[test]
    fn argv_and_user_lookup() {
        let mut s = settings("*", "timer");
        s.user_scope = true;
        assert_eq!(
            s.argv(),
            [
                "--user",
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "--no-pager",
                "--full",
                "--type=timer"
            ]
        );
        let passwd = "root:x:0:0:root:/root:/bin/bash\nadmin:x:1000:1000::/home/admin:/bin/bash\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("admin"));
        assert_eq!(user_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(user_name(passwd, 7), None);
    }
}
