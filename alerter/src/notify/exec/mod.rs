//! `[[notifiers.exec]]`: runs a program per event (Kapacitor's `exec` handler, with the guard
//! rails it lacked): an argv from the config (never a shell, never event data in argv), the
//! event JSON on stdin, `WK_ALERT_*` environment variables, its own process group that is
//! killed whole when the attempt times out or is cancelled, stderr kept for the error.

use std::io::ErrorKind;
use std::process::Stdio;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use wk_core::options::Options;

use super::text::truncate;
use super::{Notifier, NotifierSpec, NotifyError, SendFuture};
use crate::model::AlertEvent;
use crate::template::kind_str;

/// Registry entry.
pub const SPEC: NotifierSpec = NotifierSpec {
    name: "exec",
    description: "Run a program per event: event JSON on stdin, WK_ALERT_* variables, timeout kills its process group",
    sample_config: include_str!("sample.conf"),
    build,
};

/// The exec notifier.
#[derive(Debug, Clone)]
pub struct ExecNotifier {
    /// Program and arguments, exactly as configured.
    pub argv: Vec<String>,
    /// Extra environment variables from the config.
    pub env: Vec<(String, String)>,
    /// How much of stderr (and stdout) is kept for messages.
    pub max_output_bytes: usize,
    /// Pass the alerter's own environment on (it may hold the secrets other notifiers'
    /// `${VAR}`s read); when false the program gets only `PATH`, `env` and `WK_*`.
    pub inherit_env: bool,
}

/// `PATH` for a program started with `inherit_env = false`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn build(opts: &mut Options<'_, '_>) -> Box<dyn Notifier> {
    let argv = opts.strings("command");
    if argv.is_empty() || argv[0].is_empty() {
        opts.error_at(
            "command",
            "is required: the program and its arguments as a list, e.g. [\"/usr/local/bin/page\", \"--team\", \"ops\"] (no shell is used)",
        );
    }
    let env = opts.string_table("env");
    for (k, _) in &env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            opts.error_at("env", format!("invalid variable name {k:?}"));
        }
    }
    let max_output_bytes = opts.size("max_output_bytes", 4096) as usize;
    let inherit_env = opts.bool("inherit_env", true);
    Box::new(ExecNotifier {
        argv,
        env,
        max_output_bytes,
        inherit_env,
    })
}

/// Environment variable name for a tag key: `WK_TAG_` + the key upper-cased, with every
/// character outside `[A-Z0-9_]` replaced by `_`.
pub fn tag_var(key: &str) -> String {
    let mut s = String::from("WK_TAG_");
    s.extend(key.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    s
}

/// Longest value of one `WK_*` variable; longer ones are cut (on a character boundary) and end
/// in `…`. The kernel refuses a single environment string over 128 KiB (E2BIG), which made
/// every exec of an event with a huge tag value fail; the whole event is on stdin anyway.
pub const MAX_ENV_VALUE: usize = 4096;

/// Variables beyond this many tags are left out (the event on stdin has them all).
pub const MAX_TAG_VARS: usize = 64;

/// `s` without NUL bytes (they cannot be passed) and at most [`MAX_ENV_VALUE`] bytes.
fn env_value(s: &str) -> String {
    let s = s.replace('\0', "");
    if s.len() <= MAX_ENV_VALUE {
        return s;
    }
    let mut end = MAX_ENV_VALUE - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The variables set for `event`: values without NUL bytes, each cut to [`MAX_ENV_VALUE`],
/// at most [`MAX_TAG_VARS`] tags.
pub fn event_env(e: &AlertEvent) -> Vec<(String, String)> {
    let clean = |s: &str| env_value(s);
    let mut v = vec![
        ("WK_ALERT_ID".to_owned(), clean(&e.id)),
        ("WK_ALERT_RULE".to_owned(), clean(&e.rule)),
        ("WK_ALERT_LEVEL".to_owned(), e.level.as_str().to_owned()),
        (
            "WK_ALERT_PREVIOUS_LEVEL".to_owned(),
            e.previous_level.as_str().to_owned(),
        ),
        ("WK_ALERT_KIND".to_owned(), kind_str(e.kind).to_owned()),
        ("WK_ALERT_MESSAGE".to_owned(), clean(&e.message)),
        ("WK_ALERT_TIME".to_owned(), e.time.to_string()),
        (
            "WK_ALERT_DURATION_SECS".to_owned(),
            e.duration.as_secs().to_string(),
        ),
        (
            "WK_ALERT_CATEGORY".to_owned(),
            clean(e.category.as_deref().unwrap_or("")),
        ),
    ];
    v.extend(
        e.tags
            .iter()
            .take(MAX_TAG_VARS)
            .map(|(k, val)| (tag_var(k), clean(val))),
    );
    v
}

/// Kills a process group when dropped (a cancelled or timed-out attempt) unless disarmed.
struct GroupKill {
    pgid: Option<i32>,
}

impl GroupKill {
    fn kill(&mut self) {
        // The group is ours: the child was started with process_group(0).
        if let Some(pgid) = self.pgid.take().filter(|p| *p > 1)
            && let Some(pgid) = rustix::process::Pid::from_raw(pgid)
        {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads up to `max` bytes and drains (discards) the rest so the writer never blocks.
async fn read_limited(r: Option<impl AsyncRead + Unpin>, max: usize, kept: &mut Vec<u8>) {
    let Some(mut r) = r else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = max.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// How long output is still read once the program has exited and its group is killed: a
/// helper it started in a session of its own (`setsid`) may hold the pipes for good.
const OUTPUT_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// What a finished program left: its exit status and the first bytes of its output.
#[derive(Debug)]
pub struct Captured {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Captured {
    /// "exited with status N" / "was killed by signal N".
    pub fn how(&self) -> String {
        match (
            self.status.code(),
            std::os::unix::process::ExitStatusExt::signal(&self.status),
        ) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            (None, None) => "failed".to_owned(),
        }
    }
}

/// How to start a program: argv (never a shell), environment, stdin.
#[derive(Debug, Clone, Default)]
pub struct Program<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    /// When false the program gets only `PATH` and `env`.
    pub inherit_env: bool,
    pub stdin: Vec<u8>,
    /// How much of stdout and of stderr is kept (the rest is read and dropped).
    pub max_output_bytes: usize,
}

/// Runs a program in its own process group and waits for it. Dropping the future (a timeout,
/// a cancelled task) kills the whole group; so does the program's own exit (helpers it left
/// in the background would otherwise keep our pipes open). Shared by the exec notifier and
/// the recovery actions.
pub async fn run_program(p: Program<'_>) -> std::io::Result<Captured> {
    let Some((program, args)) = p.argv.split_first() else {
        return Err(std::io::Error::new(ErrorKind::InvalidInput, "empty argv"));
    };
    let mut cmd = tokio::process::Command::new(program);
    if !p.inherit_env {
        cmd.env_clear().env("PATH", DEFAULT_PATH);
    }
    cmd.args(args)
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    crate::memory::for_child(cmd.as_std_mut());
    let mut child = cmd.spawn()?;
    let mut group = GroupKill {
        pgid: child.id().map(|p| p as i32),
    };
    let stdin = child.stdin.take();
    let input = p.stdin;
    let write = async move {
        if let Some(mut s) = stdin {
            // A program that does not read stdin closes the pipe: not an error.
            let _ = s.write_all(&input).await;
            let _ = s.shutdown().await;
        }
    };
    let max = p.max_output_bytes;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let (pipe_out, pipe_err) = (child.stdout.take(), child.stderr.take());
    let wait = async {
        let status = child.wait().await;
        group.kill();
        status
    };
    let status = {
        let mut reads = std::pin::pin!(async {
            tokio::join!(
                read_limited(pipe_out, max, &mut stdout),
                read_limited(pipe_err, max, &mut stderr)
            )
        });
        let mut run = std::pin::pin!(async { tokio::join!(write, wait).1 });
        let mut read_all = false;
        let status = loop {
            tokio::select! {
                status = &mut run => break status,
                _ = &mut reads, if !read_all => read_all = true,
            }
        };
        if !read_all {
            let _ = tokio::time::timeout(OUTPUT_GRACE, &mut reads).await;
        }
        status
    };
    Ok(Captured {
        status: status?,
        stdout,
        stderr,
    })
}

impl ExecNotifier {
    async fn run(&self, event: &AlertEvent) -> Result<(), NotifyError> {
        let Some(program) = self.argv.first() else {
            return Err(NotifyError::Permanent("no command configured".into()));
        };
        let input = serde_json::to_vec(event)
            .map_err(|e| NotifyError::Permanent(format!("cannot serialize the event: {e}")))?;
        let mut env = self.env.clone();
        env.extend(event_env(event));
        let max = self.max_output_bytes;
        let done = run_program(Program {
            argv: &self.argv,
            env: &env,
            inherit_env: self.inherit_env,
            stdin: input,
            max_output_bytes: max,
        })
        .await
        .map_err(|e| {
            let msg = format!("cannot run {program:?}: {e}");
            match e.kind() {
                ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::InvalidInput => {
                    NotifyError::Permanent(msg)
                }
                _ => NotifyError::Retryable(msg),
            }
        })?;
        if done.status.success() {
            return Ok(());
        }
        let how = done.how();
        let mut text = String::from_utf8_lossy(&done.stderr).trim().to_owned();
        if text.is_empty() {
            text = String::from_utf8_lossy(&done.stdout).trim().to_owned();
        }
        let mut msg = format!("{program:?} {how}");
        if !text.is_empty() {
            msg.push_str(": ");
            msg.push_str(&truncate(&text, max));
        }
        Err(NotifyError::Retryable(msg))
    }
}

impl Notifier for ExecNotifier {
    fn send<'a>(&'a self, event: &'a AlertEvent) -> SendFuture<'a> {
        Box::pin(self.run(event))
    }
}
