//! `vip` in a network namespace the test creates (`ip netns add`), with a dummy interface (a
//! port-less bridge where the kernel has no dummy driver)
//! holding a primary and a secondary IPv4 address and an IPv6 address: the agent binary run
//! there (`ip netns exec NS wk-agent --test`) must report held=1 for those and held=0 for an
//! address nobody has; after `ip addr del` the secondary is held=0. The oracle is `ip` itself.
//! Skipped (counted) where namespaces cannot be made (no `ip`, not root).

use std::process::{Command, Output};

use wk_core::testing::run_ok;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn ok(args: &[&str]) {
    run_ok(Command::new("ip").args(args));
}

/// The `vip` lines of one `wk-agent --test` run inside the namespace.
fn gather_in(ns: &str, conf: &std::path::Path) -> Vec<String> {
    let out = run_ok(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                env!("CARGO_BIN_EXE_wk-agent"),
                "--test",
                "--config",
            ])
            .arg(conf),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("> vip,"))
        .map(str::to_owned)
        .collect()
}

/// `held` and `interface` of the line for `address`.
fn held(lines: &[String], address: &str) -> (i64, Option<String>) {
    let line = lines
        .iter()
        .find(|l| {
            l.contains(&format!("address={address},")) || l.contains(&format!("address={address} "))
        })
        .unwrap_or_else(|| panic!("no line for {address} in {lines:?}"))
        .trim_start_matches("> ");
    let v = line
        .split(' ')
        .nth(1)
        .and_then(|f| f.split(',').find_map(|kv| kv.strip_prefix("held=")))
        .unwrap()
        .trim_end_matches('i')
        .parse()
        .unwrap();
    let iface = line
        .split(' ')
        .next()
        .unwrap()
        .split(',')
        .find_map(|t| t.strip_prefix("interface="))
        .map(str::to_owned);
    (v, iface)
}

#[test]
fn secondary_address_on_a_dummy_interface_is_held_until_deleted() {
    let name = format!("wkvip{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &name]).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => wk_core::skip!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => wk_core::skip!("no `ip` command: {e}"),
    }
    let ns = Netns(name);
    let n = ns.0.as_str();
    // A dummy interface; where the kernel lacks the dummy driver (this build host's), a
    // bridge without ports, which holds addresses the same way.
    if !ip(&["-n", n, "link", "add", "wkvip0", "type", "dummy"])
        .status
        .success()
    {
        ok(&["-n", n, "link", "add", "wkvip0", "type", "bridge"]);
    }
    ok(&["-n", n, "link", "set", "wkvip0", "up"]);
    ok(&["-n", n, "addr", "add", "192.0.2.1/24", "dev", "wkvip0"]);
    ok(&["-n", n, "addr", "add", "192.0.2.77/24", "dev", "wkvip0"]);
    ok(&[
        "-n",
        n,
        "addr",
        "add",
        "2001:db8::77/64",
        "dev",
        "wkvip0",
        "nodad",
    ]);
    // The oracle agrees the secondary is there.
    let shown =
        String::from_utf8_lossy(&ip(&["-n", n, "-o", "addr", "show", "dev", "wkvip0"]).stdout)
            .into_owned();
    assert!(
        shown.contains("192.0.2.77/24") && shown.contains("secondary"),
        "{shown}"
    );

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("keepalived.state");
    std::fs::write(&state, "INSTANCE VI_1 MASTER 100\n").unwrap();
    let conf = dir.path().join("vip.conf");
    std::fs::write(
        &conf,
        format!(
            "[[inputs.vip]]\n  addresses = [\"192.0.2.77/24\", \"2001:db8::77\", \"198.51.100.9\"]\n  state_file = \"{}\"\n\
             [[inputs.vip]]\n  addresses = [\"192.0.2.77\"]\n  interface = \"lo\"\n",
            state.display()
        ),
    )
    .unwrap();

    let lines = gather_in(n, &conf);
    assert_eq!(lines.len(), 4, "{lines:?}");
    let any_iface: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("state="))
        .cloned()
        .collect();
    assert_eq!(held(&any_iface, "192.0.2.77"), (1, Some("wkvip0".into())));
    assert_eq!(held(&any_iface, "2001:db8::77"), (1, Some("wkvip0".into())));
    assert_eq!(held(&any_iface, "198.51.100.9"), (0, None));
    assert!(
        any_iface.iter().all(|l| l.contains("state=\"MASTER\"")),
        "{any_iface:?}"
    );
    // Restricted to another interface, the address is not counted.
    let on_lo: Vec<String> = lines
        .iter()
        .filter(|l| !l.contains("state="))
        .cloned()
        .collect();
    assert_eq!(held(&on_lo, "192.0.2.77"), (0, Some("lo".into())));

    ok(&["-n", n, "addr", "del", "192.0.2.77/24", "dev", "wkvip0"]);
    std::fs::write(&state, "INSTANCE VI_1 BACKUP 100\n").unwrap();
    let lines = gather_in(n, &conf);
    let any_iface: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("state="))
        .cloned()
        .collect();
    assert_eq!(held(&any_iface, "192.0.2.77"), (0, None));
    assert_eq!(held(&any_iface, "2001:db8::77"), (1, Some("wkvip0".into())));
    assert!(
        any_iface.iter().all(|l| l.contains("state=\"BACKUP\"")),
        "{any_iface:?}"
    );
}
