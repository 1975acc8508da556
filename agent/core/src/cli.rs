//! What both command lines share: the exit statuses (documented in docs/cli.md, asserted by
//! the tests) and the `completions` and `man` subcommands, generated from the same clap
//! definitions that parse the arguments, so completions and man pages cannot drift from
//! `--help`.

use std::io::Write;
use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// Exit statuses of both programs (docs/cli.md).
pub mod exit {
    /// Done, or the daemon stopped on SIGTERM/SIGINT.
    pub const OK: u8 = 0;
    /// A run-time failure: an input failed in `--test`/`--once`, metrics unsent, a listener
    /// that cannot bind, the runtime or a file that cannot be written.
    pub const FAILURE: u8 = 1;
    /// Invalid input: a config or rule that does not load, bad data, bad arguments (clap's
    /// usage errors are 2 as well).
    pub const INVALID: u8 = 2;
}

/// Writes the completion script of `cmd` for `shell` to `out`. A reader that went away
/// (`| head`) is not an error; clap_complete would panic on it, so the script is built in
/// memory first.
pub fn completions(
    cmd: &mut clap::Command,
    shell: Shell,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, cmd, name, &mut script);
    match out.write_all(&script).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Writes one man page (section 1) per command and visible subcommand of `cmd` into `dir`
/// (`wk-alerter.1`, `wk-alerter-check.1`, …).
pub fn man_pages(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(cmd, dir)
}

/// The `completions` and `man` subcommands, the same in both programs (flattened into their
/// command enums).
#[derive(clap::Subcommand, Debug)]
pub enum Generate {
    /// Print the shell completion script to stdout (e.g. `completions bash >
    /// /usr/share/bash-completion/completions/NAME`).
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages, one per command and sub-command, into a directory.
    Man {
        /// Output directory (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

impl Generate {
    /// Generates for `cmd` (the program's whole definition); returns the exit status, having
    /// printed any error.
    pub fn run(&self, mut cmd: clap::Command) -> u8 {
        let name = cmd.get_name().to_owned();
        let result = match self {
            Generate::Completions { shell } => {
                completions(&mut cmd, *shell, &mut std::io::stdout()).map_err(|e| e.to_string())
            }
            Generate::Man { dir } => {
                man_pages(cmd, dir).map_err(|e| format!("{}: {e}", dir.display()))
            }
        };
        match result {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("{name}: {e}");
                exit::FAILURE
            }
        }
    }
}
