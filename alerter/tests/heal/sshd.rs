//! A real OpenSSH server (Debian `openssh-server`) on a free loopback port, in the foreground
//! (`sshd -D -e`) with its own config, host key and authorized key in a temp dir, and the
//! client side a recovery action needs: a key made with ssh-keygen and a known_hosts file
//! that pins the host key. Killed when dropped.
//!
//! Remote commands: ssh joins its arguments with spaces and the remote user's shell parses
//! the result, so argv must be quoted for that shell ([`shell_quote`]); [`Sshd::run`] does,
//! [`Sshd::run_unquoted`] does not (what a careless action would do).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use super::process::Spawned;
use crate::common::influxd::free_port;
use crate::common::wait::poll_until;

pub const SSHD: &str = "/usr/sbin/sshd";
pub const SSH: &str = "/usr/bin/ssh";
pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

pub struct Sshd {
    proc: Spawned,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The user the test logs in as (the one running the tests).
    pub user: String,
    /// The client's private key.
    pub key: PathBuf,
    /// A known_hosts file holding exactly this server's host key.
    pub known_hosts: PathBuf,
}

fn keygen(path: &Path) {
    wk_core::testing::run_ok(
        Command::new(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "wk-heal-test", "-f"])
            .arg(path),
    );
}

/// Quotes one argument for a POSIX shell: `'…'` with each `'` written as `'\''`.
pub fn shell_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

impl Sshd {
    /// Starts sshd and waits until it sends its banner; None when skipped (not installed and
    /// WK_SKIP_SERVERS=1).
    pub fn start() -> Option<Sshd> {
        if !super::require(SSHD, "openssh-server")
            || !super::require(SSH, "openssh-client")
            || !super::require(SSH_KEYGEN, "openssh-client")
        {
            return None;
        }
        // sshd refuses to start without its privilege-separation directory (made by the
        // package's service unit, which never ran here).
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let host_key = d.join("host_ed25519");
        let key = d.join("client_ed25519");
        keygen(&host_key);
        keygen(&key);
        std::fs::copy(d.join("client_ed25519.pub"), d.join("authorized_keys"))
            .expect("authorized_keys");
        let port = free_port();
        // StrictModes no: the temp dir lives under world-writable /tmp. UsePAM no: no PAM
        // session (pam_loginuid fails in containers); the key is the only way in.
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n\
             PrintMotd no\nLogLevel VERBOSE\n",
            hk = host_key.display(),
            d = d.display(),
        );
        std::fs::write(d.join("sshd_config"), config).expect("sshd_config");
        let log = std::fs::File::create(d.join("sshd.log")).expect("sshd.log");
        let proc = Spawned::spawn(
            Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
            true,
        )
        .expect("start sshd");
        let pub_key = std::fs::read_to_string(d.join("host_ed25519.pub")).expect("host key");
        let known_hosts = d.join("known_hosts");
        std::fs::write(&known_hosts, format!("[127.0.0.1]:{port} {pub_key}")).unwrap();
        let me = Sshd {
            proc,
            port,
            user: current_user(),
            key,
            known_hosts,
            dir,
        };
        let ready = poll_until(Duration::from_secs(20), || {
            me.proc.exited().is_none() && banner(port)
        });
        assert!(
            ready,
            "sshd did not answer on 127.0.0.1:{port} ({:?}):\n{}",
            me.proc.exited(),
            me.log()
        );
        Some(me)
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// The temp dir holding config, keys and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// sshd's log (stderr, `-e`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// ssh's own options: batch mode, this key only, this known_hosts only, no user config.
    pub fn ssh_options(&self) -> Vec<String> {
        let mut v: Vec<String> = vec!["-F".into(), "/dev/null".into()];
        for o in [
            "BatchMode=yes".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            format!("UserKnownHostsFile={}", self.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            "IdentitiesOnly=yes".to_owned(),
            "ConnectTimeout=5".to_owned(),
            "LogLevel=ERROR".to_owned(),
        ] {
            v.push("-o".into());
            v.push(o);
        }
        v.extend([
            "-i".into(),
            self.key.display().to_string(),
            "-p".into(),
            self.port.to_string(),
        ]);
        v
    }

    /// `user@127.0.0.1`
    pub fn destination(&self) -> String {
        format!("{}@127.0.0.1", self.user)
    }

    /// Runs `argv` on the "remote" host, each argument quoted for the remote shell.
    pub fn run(&self, argv: &[&str]) -> Output {
        let quoted: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        self.ssh(&quoted)
    }

    /// Runs `argv` as ssh would by default: joined with spaces, parsed by the remote shell.
    pub fn run_unquoted(&self, argv: &[&str]) -> Output {
        let v: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        self.ssh(&v)
    }

    fn ssh(&self, remote: &[String]) -> Output {
        Command::new(SSH)
            .args(self.ssh_options())
            .arg(self.destination())
            .arg("--")
            .args(remote)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }
}

/// Whether an SSH server greets on `port`.
fn banner(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0")
}

/// The user running the tests (by uid, not $USER).
pub fn current_user() -> String {
    // SAFETY: getuid(2) cannot fail.
    super::user_name(unsafe { libc::getuid() })
}
