//! docs/architecture.md, "Adding a plugin", the alerter's steps checked on the real folders:
//! every notifier and action folder is one registry line, every registry line has its folder,
//! and the actions table of alerter/src/actions/README.md names every action with every
//! argument its `ArgSpec` list takes (the table is what rule authors read).

use std::collections::BTreeSet;
use std::path::Path;

fn src() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
}

/// The folders of `src/<kind>` that hold code (`mod.rs`): the plugins.
fn plugin_folders(kind: &str) -> BTreeSet<String> {
    std::fs::read_dir(src().join(kind))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("mod.rs").exists())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn every_notifier_and_action_folder_is_one_registry_line() {
    for (kind, registered) in [
        (
            "notify",
            wk_alerter::notify::REGISTRY
                .iter()
                .map(|s| s.name.to_owned())
                .collect::<BTreeSet<_>>(),
        ),
        (
            "actions",
            wk_alerter::actions::REGISTRY
                .iter()
                .map(|s| s.name.to_owned())
                .collect(),
        ),
    ] {
        let folders = plugin_folders(kind);
        assert_eq!(
            folders, registered,
            "src/{kind}: the plugin folders and the registry differ"
        );
    }
}

#[test]
fn the_actions_table_names_every_action_and_its_arguments() {
    let readme = std::fs::read_to_string(src().join("actions/README.md")).unwrap();
    let mut problems = Vec::new();
    for spec in wk_alerter::actions::REGISTRY {
        let start = format!("| [`{}`]({}/README.md) |", spec.name, spec.name);
        let Some(row) = readme.lines().find(|l| l.starts_with(&start)) else {
            problems.push(format!("no row starting {start}"));
            continue;
        };
        let arguments = row.split('|').nth(2).unwrap_or("");
        for arg in spec.args {
            if !arguments.contains(&format!("`{}`", arg.name)) {
                problems.push(format!(
                    "{}: argument `{}` is not in the table's arguments column",
                    spec.name, arg.name
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
