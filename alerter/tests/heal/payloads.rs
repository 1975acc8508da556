//! Shell-injection payloads for tag values that reach recovery actions, each of which would
//! create the same marker file if any shell (or option parser) interpreted it. The test
//! asserts the marker is absent after the action ran.

use std::path::PathBuf;

pub struct Payloads {
    dir: tempfile::TempDir,
    /// The file a successful injection creates.
    pub marker: PathBuf,
}

impl Payloads {
    pub fn new() -> Payloads {
        let dir = tempfile::tempdir().expect("temp dir");
        let marker = dir.path().join("INJECTED");
        Payloads { dir, marker }
    }

    /// (name, value) pairs: each value, given to a shell, creates [`Payloads::marker`].
    pub fn shell(&self) -> Vec<(&'static str, String)> {
        let m = self.marker.display();
        vec![
            ("semicolon", format!("nginx; touch {m}")),
            ("and", format!("nginx && touch {m}")),
            ("pipe", format!("nginx | touch {m}")),
            ("subshell", format!("$(touch {m})")),
            ("backticks", format!("`touch {m}`")),
            ("newline", format!("nginx\ntouch {m}")),
        ]
    }

    /// (name, value) pairs that inject options rather than commands: a leading `--` (GNU
    /// tools: `sort --output=X` writes X) and a leading `-o` (ssh: `-oProxyCommand=…` runs a
    /// command) when the value lands where an option is parsed.
    pub fn options(&self) -> Vec<(&'static str, String)> {
        let m = self.marker.display();
        vec![
            ("leading_dashes", format!("--output={m}")),
            ("ssh_option", format!("-oProxyCommand=touch {m}")),
        ]
    }

    /// Every payload.
    pub fn all(&self) -> Vec<(&'static str, String)> {
        let mut v = self.shell();
        v.extend(self.options());
        v
    }

    /// Whether some injection ran.
    pub fn injected(&self) -> bool {
        self.marker.exists()
    }

    /// Removes the marker (between positive controls).
    pub fn reset(&self) {
        let _ = std::fs::remove_file(&self.marker);
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
