//! Every list of plugins outside the registries is checked against them, so adding a plugin
//! is one folder plus one registry line, and a forgotten step of docs/architecture.md's
//! "Adding a plugin" fails here: each input and output folder has mod.rs and a README whose
//! configuration block is its sample.conf, each input has fixture cases and a live test, the
//! README's supported-inputs sentence and docs/telegraf-compatibility.md name every plugin,
//! and the alerter's notifier folders (and action folders, when present) follow the same
//! shape.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The first ```toml block of a README.
fn config_block(readme: &str) -> Option<&str> {
    let start = readme.find("```toml\n")? + "```toml\n".len();
    let len = readme[start..].find("```")?;
    Some(&readme[start..start + len])
}

/// A plugin folder: mod.rs, and README.md whose configuration block is exactly sample.conf.
fn check_folder(dir: &Path, sample_config: Option<&str>) -> Vec<String> {
    let mut problems = Vec::new();
    let sample = dir.join("sample.conf");
    let readme = dir.join("README.md");
    if !sample.exists() || !readme.exists() || !dir.join("mod.rs").exists() {
        problems.push(format!(
            "{}: needs mod.rs, README.md and sample.conf",
            dir.display()
        ));
        return problems;
    }
    let sample = read(&sample);
    if let Some(embedded) = sample_config
        && embedded != sample
    {
        problems.push(format!(
            "{}: registry sample_config is not sample.conf",
            dir.display()
        ));
    }
    match config_block(&read(&readme)) {
        Some(block) if block == sample => {}
        Some(_) => problems.push(format!(
            "{}/README.md: configuration block differs from sample.conf",
            dir.display()
        )),
        None => problems.push(format!("{}/README.md: no ```toml block", dir.display())),
    }
    problems
}

#[test]
fn every_input_and_output_folder_documents_its_sample_config() {
    let src = root().join("agent/src");
    let mut problems = Vec::new();
    for spec in wk_agent::inputs::REGISTRY {
        problems.extend(check_folder(
            &src.join("inputs").join(spec.name),
            Some(spec.sample_config),
        ));
    }
    for spec in wk_agent::outputs::REGISTRY {
        problems.extend(check_folder(
            &src.join("outputs").join(spec.name),
            Some(spec.sample_config),
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Plugins whose tests cannot take the usual form, and where they are instead.
const TESTED_ELSEWHERE: &[(&str, &str)] = &[
    (
        "internal",
        "reads the agent's own counters, not /proc: tests/cli.rs internal_metrics_count_every_dropped_metric",
    ),
    (
        "file",
        "writes local files: tests/cli.rs once_writes_to_the_file_output and the daemon tests",
    ),
];

/// Step 1's `testdata/<case>/` (at least one case fixtures.rs runs) and step 5's live test
/// (`live.rs` in the input's folder; build.rs adds it to tests/live.rs); for outputs, a test
/// file against a real server in tests/outputs/ (declared in its mod.rs).
#[test]
fn every_plugin_has_fixture_cases_and_a_test_against_the_real_thing() {
    let agent = root().join("agent");
    let output_mods = read(&agent.join("tests/outputs/mod.rs"));
    let declared = |mods: &str, name: &str| {
        mods.lines()
            .any(|l| l.trim_start_matches("pub ") == format!("mod {name};"))
    };
    let mut problems = Vec::new();
    for spec in wk_agent::inputs::REGISTRY {
        let name = spec.name;
        if TESTED_ELSEWHERE.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let testdata = agent.join("src/inputs").join(name).join("testdata");
        let has_case = std::fs::read_dir(&testdata)
            .into_iter()
            .flatten()
            .any(|e| e.is_ok_and(|e| e.path().join("config.conf").is_file()));
        if !has_case {
            problems.push(format!(
                "inputs/{name}: no testdata/<case>/config.conf fixture case"
            ));
        }
        if !agent.join(format!("src/inputs/{name}/live.rs")).is_file() {
            problems.push(format!(
                "inputs/{name}: no live test src/inputs/{name}/live.rs"
            ));
        }
    }
    for spec in wk_agent::outputs::REGISTRY {
        let name = spec.name;
        if TESTED_ELSEWHERE.iter().any(|(n, _)| *n == name) {
            continue;
        }
        if !agent.join(format!("tests/outputs/{name}.rs")).is_file()
            || !declared(&output_mods, name)
        {
            problems.push(format!(
                "outputs/{name}: no tests/outputs/{name}.rs declared in tests/outputs/mod.rs"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_plugin_folder_is_registered() {
    let src = root().join("agent/src");
    for (kind, names) in [
        (
            "inputs",
            wk_agent::inputs::REGISTRY
                .iter()
                .map(|s| s.name)
                .collect::<Vec<_>>(),
        ),
        (
            "outputs",
            wk_agent::outputs::REGISTRY.iter().map(|s| s.name).collect(),
        ),
    ] {
        for entry in std::fs::read_dir(src.join(kind)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                assert!(
                    names.contains(&name.as_str()),
                    "{kind}/{name} is not in the registry"
                );
            }
        }
    }
}

#[test]
fn alerter_plugin_folders_document_their_sample_config() {
    let mut problems = Vec::new();
    for kind in ["notify", "actions"] {
        let dir = root().join("alerter/src").join(kind);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            // Folders with code are plugins; a testdata-only folder is not. Notifiers are
            // configured by a sample.conf the README shows; actions live in rules, so they
            // need the README only.
            if !path.is_dir() || !path.join("mod.rs").exists() {
                continue;
            }
            if kind == "notify" {
                problems.extend(check_folder(&path, None));
            } else if !path.join("README.md").exists() {
                problems.push(format!("{}: needs README.md", path.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn readme_and_compatibility_table_name_every_plugin() {
    let readme = read(&root().join("README.md"));
    let supported = readme
        .split("Supported inputs:")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .expect("README.md has a 'Supported inputs:' paragraph");
    let compat = read(&root().join("docs/telegraf-compatibility.md"));
    let mut missing = Vec::new();
    for spec in wk_agent::inputs::REGISTRY {
        let tick = format!("`{}`", spec.name);
        if !supported.contains(&tick) {
            missing.push(format!("README.md 'Supported inputs' lacks {tick}"));
        }
        if !compat.contains(&format!("| {tick} |")) {
            missing.push(format!(
                "docs/telegraf-compatibility.md has no row for {tick}"
            ));
        }
    }
    // Every other Telegraf input is named once in the "Other Telegraf inputs" list.
    let others: std::collections::BTreeSet<&str> = compat
        .split("<!-- other-inputs -->")
        .nth(1)
        .and_then(|s| s.split("<!-- /other-inputs -->").next())
        .expect("docs/telegraf-compatibility.md has the other-inputs list")
        .split(',')
        .map(|w| w.trim().trim_matches('`'))
        .filter(|w| !w.is_empty())
        .collect();
    let want: std::collections::BTreeSet<&str> = wk_agent::config::telegraf_plugins::INPUTS
        .iter()
        .copied()
        .filter(|n| wk_agent::inputs::find(n).is_none())
        .collect();
    for n in want.difference(&others) {
        missing.push(format!(
            "docs/telegraf-compatibility.md: other inputs lack `{n}`"
        ));
    }
    for n in others.difference(&want) {
        missing.push(format!(
            "docs/telegraf-compatibility.md: `{n}` is listed as another input but is implemented or no Telegraf input"
        ));
    }
    for spec in wk_agent::outputs::REGISTRY {
        let tick = format!("`{}`", spec.name);
        if !compat.contains(&format!("| {tick} |")) {
            missing.push(format!(
                "docs/telegraf-compatibility.md has no row for output {tick}"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The project can be adopted: both license texts are there, every crate says
/// `MIT OR Apache-2.0`, and README says so.
#[test]
fn license_files_and_metadata_agree() {
    let root = root();
    assert!(read(&root.join("LICENSE-APACHE")).contains("Apache License"));
    assert!(read(&root.join("LICENSE-MIT")).contains("Permission is hereby granted"));
    assert!(read(&root.join("Cargo.toml")).contains("license = \"MIT OR Apache-2.0\""));
    for krate in ["agent", "agent/core", "alerter"] {
        let manifest = read(&root.join(krate).join("Cargo.toml"));
        assert!(manifest.contains("license.workspace = true"), "{krate}");
    }
    assert!(read(&root.join("README.md")).contains("LICENSE-MIT"));
}

/// Regression: the README's agent command after the quick start rebuilt ~20 crates (another
/// package selection means other features). Both build the same two packages the same way.
#[test]
fn readme_and_quickstart_share_one_build() {
    let root = root();
    let build = "cargo build --release --locked -p wk-alerter -p wk-agent";
    assert!(read(&root.join("scripts/quickstart")).contains(build));
    let readme = read(&root.join("README.md"));
    assert!(
        readme.contains(build),
        "README builds as the quick start does"
    );
    assert!(
        !readme.contains("cargo run"),
        "README runs the built binary, not cargo run"
    );
}
