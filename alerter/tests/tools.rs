//! The other programs these tests run: this build's wk-agent, tools on PATH. (Not in
//! common/, which the benches include too.)

/// The wk-agent binary of the same build (target/<profile>/wk-agent next to this test's
/// deps/ directory). `cargo build --workspace` (scripts/test does) puts it there.
pub fn agent_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_owned();
    let path = profile_dir.join("wk-agent");
    assert!(
        path.exists(),
        "{} is missing: build the agent first (`cargo build -p wk-agent`, or scripts/test which \
         builds the workspace)",
        path.display()
    );
    path
}

/// Whether `tool` is an executable on PATH.
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            std::fs::metadata(d.join(tool)).is_ok_and(|m| {
                m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
            })
        })
    })
}
