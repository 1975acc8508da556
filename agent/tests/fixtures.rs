//! Walks every `agent/src/inputs/<name>/testdata/<case>/` and checks it:
//!
//! - `config.conf`: a telegraf.conf (usually just the `[[inputs.<name>]]` table);
//! - `proc0/`, `proc1/`, …: the /proc tree of each gather, in order; `sys0/`, `sys1/`, … the
//!   same for /sys; `sys/`, `etc/`, `var/`, `run/`, `dev/`: trees that stay for every step;
//! - `expected.out`: every metric of every step in `--test` format (fields sorted, uints with
//!   `u`), the host tag left out, step N stamped 1700000000 s + 10 s·N;
//! - `expected.err`: the config or gather errors, one per line, the fixture root written
//!   `<root>`; when absent, any error fails the case.
//!
//! A regression is a new folder, not new code. `WK_BLESS=1 cargo test fixtures` rewrites the
//! golden files (review the diff!).

use std::fs;
use std::path::{Path, PathBuf};

use wk_agent::config::{self, LoadRequest};
use wk_agent::hostpaths::HostPaths;
use wk_agent::lineproto::test_format;
use wk_agent::models::running_input::GlobalTags;

const BASE_NS: i64 = 1_700_000_000_000_000_000;
const STEP_NS: i64 = 10_000_000_000;

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            copy_tree(&e.path(), &target);
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(e.path()).unwrap(), &target).unwrap();
        } else {
            fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn cases() -> Vec<PathBuf> {
    let inputs = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/inputs");
    let mut out = Vec::new();
    for input in fs::read_dir(&inputs).unwrap() {
        let td = input.unwrap().path().join("testdata");
        let Ok(rd) = fs::read_dir(&td) else { continue };
        for case in rd {
            let case = case.unwrap().path();
            if case.join("config.conf").is_file() {
                out.push(case);
            }
        }
    }
    out.sort();
    out
}

/// Runs one case and returns (output lines, error lines).
pub fn run_case(case: &Path) -> (String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for fixed in ["sys", "etc", "var", "run", "dev"] {
        if case.join(fixed).is_dir() {
            copy_tree(&case.join(fixed), &root.join(fixed));
        }
    }
    let req = LoadRequest {
        paths: HostPaths::under(root),
        test_mode: true,
        ..LoadRequest::new(vec![case.join("config.conf")])
    };
    let scrub = |s: &str| {
        s.replace(&root.display().to_string(), "<root>")
            .replace(&case.display().to_string(), "<case>")
    };
    let mut plan = match config::load(&req) {
        Ok(p) => p,
        Err(e) => {
            let errs: String = e
                .errors
                .iter()
                .map(|d| format!("{}:{}: {}\n", d.line, d.column, d.message))
                .collect();
            return (String::new(), scrub(&errs));
        }
    };
    plan.global_tags = GlobalTags::default();
    let (mut out, mut errs) = (String::new(), String::new());
    for step in 0.. {
        let proc_dir = case.join(format!("proc{step}"));
        if !proc_dir.is_dir() {
            assert!(step > 0, "{}: no proc0/ directory", case.display());
            break;
        }
        let _ = fs::remove_dir_all(root.join("proc"));
        copy_tree(&proc_dir, &root.join("proc"));
        let sys_dir = case.join(format!("sys{step}"));
        if sys_dir.is_dir() {
            let _ = fs::remove_dir_all(root.join("sys"));
            copy_tree(&sys_dir, &root.join("sys"));
        }
        for ri in plan.inputs.iter_mut() {
            let outcome = ri.gather(BASE_NS + step * STEP_NS, &plan.global_tags);
            for m in &outcome.metrics {
                out.push_str(&test_format(m));
            }
            for e in &outcome.errors {
                errs.push_str(&format!("step {step}: {}\n", scrub(&e.to_string())));
            }
        }
    }
    (out, errs)
}

/// Git keeps no empty directory: one in a fixture tree passes here and fails on a fresh
/// clone (CI). Such a directory needs a `.keep` file.
#[test]
fn no_fixture_directory_is_empty() {
    fn walk(dir: &Path, empty: &mut Vec<String>) {
        let entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
        if entries.is_empty() {
            empty.push(dir.display().to_string());
        }
        for e in entries {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), empty);
            }
        }
    }
    let mut empty = Vec::new();
    for case in cases() {
        walk(&case, &mut empty);
    }
    assert!(
        empty.is_empty(),
        "empty fixture directories (add a .keep file): {empty:?}"
    );
}

#[test]
fn fixture_cases() {
    let bless = std::env::var_os("WK_BLESS").is_some();
    let cases = cases();
    assert!(!cases.is_empty(), "no fixture cases found");
    let mut failures = Vec::new();
    for case in &cases {
        let (out, errs) = run_case(case);
        let out_path = case.join("expected.out");
        let err_path = case.join("expected.err");
        if bless {
            fs::write(&out_path, &out).unwrap();
            if errs.is_empty() {
                let _ = fs::remove_file(&err_path);
            } else {
                fs::write(&err_path, &errs).unwrap();
            }
            continue;
        }
        let want_out = fs::read_to_string(&out_path).unwrap_or_default();
        let want_err = fs::read_to_string(&err_path).unwrap_or_default();
        if out != want_out {
            failures.push(format!(
                "{}: output differs\n--- expected\n{want_out}--- got\n{out}",
                case.display()
            ));
        }
        if errs != want_err {
            failures.push(format!(
                "{}: errors differ\n--- expected\n{want_err}--- got\n{errs}",
                case.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixture cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
