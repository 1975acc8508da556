//! Every alerter example config loads, and every example rule loads and names only notifiers
//! that config defines.

use std::path::Path;

use wk_alerter::config;
use wk_alerter::rules::load_rule;

fn files(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

#[test]
fn every_example_config_and_rule_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let confs = files(&root.join("examples/alerter"), "conf");
    assert!(!confs.is_empty());
    let no_env = |_: &str| None;
    for c in &confs {
        let cfg = config::load(c, &no_env).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            cfg.warnings.is_empty(),
            "{}: {:?}",
            c.display(),
            cfg.warnings
        );
        let rules_dir = root.join(&cfg.settings.rules_dir);
        let rules = files(&rules_dir, "rhai");
        assert!(!rules.is_empty(), "{}", rules_dir.display());
        for r in rules {
            let rule = load_rule(&r).unwrap_or_else(|e| panic!("{e}"));
            cfg.notify
                .validate_names(&rule.settings().notify)
                .unwrap_or_else(|e| panic!("{}: {e}", r.display()));
        }
    }
}
