//! Records the compiler version for the `internal` input's `rust_version` tag (Telegraf's
//! `go_version`), and lists the inputs' live tests for the integration test binary.
fn main() {
    live_tests();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_owned))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WK_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-env-changed=RUSTC");
}

/// Each input's live test is `src/inputs/<name>/live.rs`, in the plugin's folder with the rest
/// of it; `tests/live.rs` includes the module list written here, so adding an input adds no
/// line outside its folder (issue 8: one folder and one registry line).
fn live_tests() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/inputs");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.path().join("live.rs").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = String::new();
    for name in names {
        let file = dir.join(&name).join("live.rs");
        // A folder added or removed changes `dir`; an edited test is a changed source file.
        println!("cargo:rerun-if-changed={}", dir.join(&name).display());
        out.push_str(&format!(
            "#[path = {:?}]\nmod {name};\n",
            file.display().to_string()
        ));
    }
    let out_dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(std::path::Path::new(&out_dir).join("live_tests.rs"), out)
        .expect("write OUT_DIR/live_tests.rs");
}
