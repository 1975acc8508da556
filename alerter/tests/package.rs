//! scripts/package builds the two .deb files from this build's binaries (dev profile: the
//! same layout as a release build, without minutes of LTO in CI); the test reads them with
//! `dpkg-deb --info`, unpacks them with `dpkg-deb -x` into a fresh tree, checks the files,
//! runs `systemd-analyze verify` on the shipped units, runs the unpacked binaries on the
//! shipped default configs, and installs and purges both with dpkg in a fresh tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::tools::{agent_binary, on_path};
use wk_core::testing::run_ok;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs scripts/package on this build's binaries; returns the path of each .deb.
fn build_packages(out: &Path) -> Vec<PathBuf> {
    let bin_dir = agent_binary().parent().unwrap().to_owned();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/package");
    let built = run_ok(
        Command::new(script)
            .args(["--builder", "dpkg-deb", "--bin-dir"])
            .arg(&bin_dir)
            .arg("--out")
            .arg(out),
    );
    String::from_utf8(built.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect()
}

/// The unit files as shipped, except that `/usr/bin/wk-…` points into the unpacked tree:
/// `systemd-analyze verify` checks that every Exec*= program exists on this machine, and the
/// package's are only unpacked, not installed.
fn units_for_verify(root: &Path, dir: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(dir).unwrap();
    let mut units = Vec::new();
    for e in fs::read_dir(root.join("usr/lib/systemd/system")).unwrap() {
        let path = e.unwrap().path();
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace("=/usr/bin/wk-", &format!("={}/usr/bin/wk-", root.display()));
        let copy = dir.join(path.file_name().unwrap());
        fs::write(&copy, text).unwrap();
        units.push(copy);
    }
    // The service with the documented drop-in for local recovery actions, as systemd would
    // merge them (later keys win).
    let dropin =
        fs::read_to_string(root.join("usr/share/doc/wk-alerter/examples/local-actions.conf"))
            .unwrap();
    let alerter = fs::read_to_string(dir.join("wk-alerter.service")).unwrap();
    let merged = dir.join("wk-alerter-local-actions.service");
    fs::write(&merged, format!("{alerter}\n{dropin}")).unwrap();
    units.push(merged);
    units.sort();
    units
}

#[test]
fn packages_install_files_units_and_binaries_that_run() {
    for tool in ["dpkg", "dpkg-deb", "python3", "systemd-analyze", "man"] {
        if !on_path(tool) {
            wk_core::skip!(
                "{tool} is not installed (Debian packages dpkg, python3, systemd, man-db)"
            );
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let debs = build_packages(&tmp.path().join("out"));
    let names: Vec<String> = debs
        .iter()
        .map(|d| d.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        names,
        [
            format!("wk-agent_{version}-1_amd64.deb"),
            format!("wk-alerter_{version}-1_amd64.deb")
        ]
    );

    let root = tmp.path().join("root");
    for deb in &debs {
        let info = text(&run_ok(Command::new("dpkg-deb").arg("--info").arg(deb)));
        let name = if info.contains("Package: wk-agent\n") {
            "wk-agent"
        } else {
            "wk-alerter"
        };
        for field in [
            &format!("Version: {version}-1") as &str,
            "Architecture: amd64",
            "Depends: libc6 (>= 2.",
            "Section: admin",
            "Maintainer: ",
            " postinst ",
            " prerm ",
            " postrm ",
            " conffiles ",
        ] {
            assert!(info.contains(field), "{name}: no {field:?} in:\n{info}");
        }
        run_ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
        // Every conffile is shipped, and lives under /etc/watchkeeper.
        let control = tmp.path().join(format!("control-{name}"));
        run_ok(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
        let conffiles = fs::read_to_string(control.join("conffiles")).unwrap();
        assert!(conffiles.contains(&format!("/etc/watchkeeper/{name}.conf\n")));
        for c in conffiles.lines() {
            assert!(c.starts_with("/etc/watchkeeper/"), "{c}");
            assert!(
                root.join(&c[1..]).is_file(),
                "conffile {c} is not in the package"
            );
        }
        for script in ["postinst", "prerm", "postrm"] {
            run_ok(Command::new("sh").arg("-n").arg(control.join(script)));
        }
    }

    for file in [
        "usr/bin/wk-agent",
        "usr/bin/wk-alerter",
        "usr/bin/wk-deploy-config",
        "etc/watchkeeper/wk-agent.conf",
        "etc/watchkeeper/wk-alerter.conf",
        "etc/watchkeeper/rules/deploy_refused.rhai",
        "usr/lib/systemd/system/wk-agent.service",
        "usr/lib/systemd/system/wk-alerter.service",
        "usr/lib/systemd/system/wk-deploy-config.service",
        "usr/lib/systemd/system/wk-deploy-config.timer",
        "usr/share/man/man1/wk-agent.1",
        "usr/share/man/man1/wk-alerter.1",
        "usr/share/man/man1/wk-alerter-silence-add.1",
        "usr/share/bash-completion/completions/wk-agent",
        "usr/share/bash-completion/completions/wk-alerter",
        "usr/share/zsh/vendor-completions/_wk-alerter",
        "usr/share/fish/vendor_completions.d/wk-agent.fish",
        "usr/share/doc/wk-agent/copyright",
        "usr/share/doc/wk-agent/deploy.md",
        "usr/share/doc/wk-alerter/packaging.md",
        "usr/share/doc/wk-alerter/examples/local-actions.conf",
    ] {
        let meta = fs::metadata(root.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(meta.len() > 0, "{file} is empty");
        let exec = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0;
        assert_eq!(exec, file.starts_with("usr/bin/"), "{file}: mode");
    }

    // The units: hardened, and valid for systemd (its own checker; warnings fail too).
    for (unit, needs) in [
        (
            "wk-agent.service",
            &["DynamicUser=yes", "StateDirectory=wk-agent"] as &[&str],
        ),
        (
            "wk-alerter.service",
            &["DynamicUser=yes", "StateDirectory=wk-alerter"],
        ),
        (
            "wk-deploy-config.service",
            &["ReadWritePaths=/etc/watchkeeper"],
        ),
    ] {
        let text = fs::read_to_string(root.join("usr/lib/systemd/system").join(unit)).unwrap();
        for key in needs.iter().chain(&[
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
        ]) {
            assert!(text.lines().any(|l| l == *key), "{unit} lacks {key}");
        }
    }
    let units = units_for_verify(&root, &tmp.path().join("units"));
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        // Documentation=man:… is checked with man(1): the pages are in the unpacked tree.
        .env("MANPATH", root.join("usr/share/man"))
        .output()
        .unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        text(&verify)
    );

    // The installed binaries run, and accept the configs they ship with.
    let bin = |name: &str| root.join("usr/bin").join(name);
    for name in ["wk-agent", "wk-alerter"] {
        let out = run_ok(Command::new(bin(name)).arg("--version"));
        assert_eq!(text(&out), format!("{name} {version}\n"));
    }
    let agent_conf = root.join("etc/watchkeeper/wk-agent.conf");
    let out = run_ok(
        Command::new(bin("wk-agent"))
            .arg("--config")
            .arg(&agent_conf)
            .arg("--test"),
    );
    assert!(
        text(&out).contains("> cpu,cpu=cpu-total,"),
        "{}",
        text(&out)
    );
    let mut rules: Vec<PathBuf> = fs::read_dir(root.join("etc/watchkeeper/rules"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    rules.sort();
    assert_eq!(rules.len(), 7, "{rules:?}");
    let out = run_ok(
        Command::new(bin("wk-alerter"))
            .arg("--config")
            .arg(root.join("etc/watchkeeper/wk-alerter.conf"))
            .args(["check", "--no-eval"])
            .args(&rules),
    );
    assert!(text(&out).contains("deploy_refused"), "{}", text(&out));
    // A real install with dpkg into a fresh tree (its own package database; the maintainer
    // scripts run outside a chroot with $DPKG_ROOT set, and touch nothing of this machine),
    // then a purge that removes everything, the state in /var/lib included.
    let installed = tmp.path().join("installed");
    fs::create_dir_all(installed.join("var/lib/dpkg/info")).unwrap();
    fs::create_dir_all(installed.join("var/lib/dpkg/updates")).unwrap();
    fs::write(installed.join("var/lib/dpkg/status"), "").unwrap();
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", installed.display()))
            .args([
                "--force-script-chrootless",
                "--force-not-root",
                "--force-depends",
            ])
            .args(["--log=/dev/null"])
            .args(args);
        c
    };
    run_ok(dpkg(&["-i"]).args(&debs));
    for name in ["wk-agent", "wk-alerter"] {
        let status = text(&run_ok(&mut dpkg(&["-s", name])));
        assert!(status.contains("Status: install ok installed"), "{status}");
    }
    assert!(
        installed
            .join("etc/watchkeeper/rules/cpu_high.rhai")
            .is_file()
    );
    fs::create_dir_all(installed.join("var/lib/wk-alerter")).unwrap();
    fs::write(installed.join("var/lib/wk-alerter/alerts.json"), "{}").unwrap();
    run_ok(&mut dpkg(&["--purge", "wk-agent", "wk-alerter"]));
    let left: Vec<PathBuf> = walk(&installed)
        .into_iter()
        .filter(|p| !p.starts_with(installed.join("var/lib/dpkg")))
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");

    // The deploy script shipped is the repository's.
    assert_eq!(
        fs::read(root.join("usr/bin/wk-deploy-config")).unwrap(),
        fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/deploy-config.sh"))
            .unwrap()
    );
}

/// Every file (not directory) under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
