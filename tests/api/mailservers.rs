//! Real mail servers for the mail tests, one set per test, on loopback: Debian's dovecot
//! (IMAP, with IDLE, a passwd-file user and a Maildir) and aiosmtpd (SMTP, optionally
//! requiring a login, steerable to fail; `tests/clients/smtp/server.py`). `scripts/test`
//! installs both and names them in `EDGEDESK_TEST_DOVECOT` / `EDGEDESK_TEST_SMTP_PYTHON`.
//! Outside CI, without them, the tests that need them are skipped with a loud note; in CI
//! their absence fails the test.

use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Whether the mail servers are installed (see the module header).
pub fn available() -> bool {
    let dovecot = std::env::var_os("EDGEDESK_TEST_DOVECOT").map(PathBuf::from).unwrap_or_else(|| "/usr/sbin/dovecot".into());
    let python = smtp_python();
    if dovecot.exists() && python.exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI must run the mail tests, but dovecot or aiosmtpd is missing (scripts/test installs them)");
    }
    eprintln!("SKIPPED: the mail tests need dovecot and aiosmtpd. Run scripts/test, which installs them.");
    false
}

fn smtp_python() -> PathBuf {
    std::env::var_os("EDGEDESK_TEST_SMTP_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("edgedesk/smtp/bin/python")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn wait_for_port(port: u16, what: &str, log: &Path) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what} did not listen on {port}: {}", std::fs::read_to_string(log).unwrap_or_default());
}

/// Dovecot with one user, `support` / `imap-secret`, whose INBOX is a Maildir.
pub struct Imap {
    pub port: u16,
    pub user: String,
    pub password: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl Imap {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let port = free_port();
        let (user, password) = ("support".to_string(), "imap-secret".to_string());
        let maildir = root.join("mail").join(&user).join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        for sub in ["run", "state"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let mail = 8; // Debian's `mail` user: mailboxes must not belong to root.
        for entry in walk(&root.join("mail")) {
            std::os::unix::fs::chown(&entry, Some(mail), Some(mail)).unwrap();
        }
        std::fs::write(root.join("passwd"), format!("{user}:{{PLAIN}}{password}::::::\n")).unwrap();
        let r = root.display();
        let config = format!(
            "protocols = imap\nlisten = 127.0.0.1\nssl = no\ndisable_plaintext_auth = no\nauth_mechanisms = plain login\n\
             base_dir = {r}/run\nstate_dir = {r}/state\nlog_path = {r}/log\ninfo_log_path = {r}/log\n\
             first_valid_uid = {mail}\nmail_location = maildir:{r}/mail/%u/Maildir\n\
             passdb {{\n  driver = passwd-file\n  args = {r}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={mail} gid={mail} home={r}/mail/%u\n}}\n\
             service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
             service stats {{\n  unix_listener stats-reader {{\n    mode = 0666\n  }}\n  unix_listener stats-writer {{\n    mode = 0666\n  }}\n}}\n"
        );
        std::fs::write(root.join("dovecot.conf"), config).unwrap();
        let child = spawn_dovecot(root);
        wait_for_port(port, "dovecot", &root.join("stderr")).await;
        Self { port, user, password, dir, child }
    }

    /// Stops dovecot and starts it again on the same port and mailbox (the server restarted
    /// under an open session).
    pub async fn restart(&mut self) {
        self.kill();
        let root = self.dir.path();
        self.child = spawn_dovecot(root);
        wait_for_port(self.port, "dovecot", &root.join("stderr")).await;
    }

    /// Puts `message` into the INBOX as a new message (what a delivery agent does).
    pub fn deliver(&self, message: &[u8]) {
        let maildir = self.dir.path().join("mail").join(&self.user).join("Maildir");
        let name = format!(
            "{}.{}.edgedesk-test",
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos(),
            std::process::id()
        );
        let temp = maildir.join("tmp").join(&name);
        std::fs::write(&temp, message).unwrap();
        std::os::unix::fs::chown(&temp, Some(8), Some(8)).unwrap();
        std::fs::rename(&temp, maildir.join("new").join(name)).unwrap();
    }
}

impl Imap {
    /// Kills dovecot and every process it started (the sessions' `imap` processes too).
    fn kill(&mut self) {
        use nix::unistd::Pid;
        let pid = Pid::from_raw(self.child.id() as i32);
        // Only its own group (it was started as the leader of one), never the tests'.
        match nix::unistd::getpgid(Some(pid)) {
            Ok(group) if group == pid && group != nix::unistd::getpgrp() => {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            _ => {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// Dovecot on the configuration in `root`, as the leader of a process group of its own (so
/// that it can be killed with every session process it started).
fn spawn_dovecot(root: &Path) -> Child {
    let dovecot = std::env::var_os("EDGEDESK_TEST_DOVECOT").unwrap_or_else(|| "/usr/sbin/dovecot".into());
    Command::new(dovecot)
        .process_group(0)
        .arg("-F")
        .arg("-c")
        .arg(root.join("dovecot.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(root.join("stderr")).unwrap())
        .spawn()
        .expect("dovecot starts")
}

impl Drop for Imap {
    fn drop(&mut self) {
        self.kill();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                out.extend(walk(&entry.path()));
            } else {
                out.push(entry.path());
            }
        }
    }
    out
}

/// aiosmtpd keeping what it accepts in a spool directory.
pub struct Smtp {
    pub port: u16,
    pub credentials: Option<(String, String)>,
    spool: tempfile::TempDir,
    child: Child,
}

impl Smtp {
    /// A relay that takes mail without a login.
    pub async fn open_relay() -> Self {
        Self::start(None).await
    }

    /// A server that takes mail only after a login as `user` / `password`.
    pub async fn with_login(user: &str, password: &str) -> Self {
        Self::start(Some((user.to_string(), password.to_string()))).await
    }

    async fn start(credentials: Option<(String, String)>) -> Self {
        let spool = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/smtp/server.py");
        let mut command = Command::new(smtp_python());
        command.arg(script).arg("--spool").arg(spool.path());
        if let Some((user, password)) = &credentials {
            command.args(["--user", user, "--password", password]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(spool.path().join("stderr")).unwrap())
            .spawn()
            .expect("the SMTP test server starts");
        let stdout = child.stdout.take().unwrap();
        let port = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
            line.trim().strip_prefix("PORT ").and_then(|p| p.parse::<u16>().ok())
        })
        .await
        .unwrap();
        let Some(port) = port else {
            panic!("the SMTP test server did not start: {}", std::fs::read_to_string(spool.path().join("stderr")).unwrap_or_default())
        };
        wait_for_port(port, "aiosmtpd", &spool.path().join("stderr")).await;
        Self { port, credentials, spool, child }
    }

    /// Makes the server answer every message with `mode` (`451`, `550`, `hang`; `""` accepts).
    pub fn steer(&self, mode: &str) {
        std::fs::write(self.spool.path().join("control"), mode).unwrap();
    }

    /// How many messages clients tried to hand over (DATA commands), accepted or not.
    pub fn attempts(&self) -> usize {
        std::fs::read_to_string(self.spool.path().join("attempts")).map_or(0, |a| a.lines().count())
    }

    /// The messages accepted so far, in order: (envelope JSON, raw message).
    pub fn received(&self) -> Vec<(serde_json::Value, Vec<u8>)> {
        let mut out = Vec::new();
        for n in 1.. {
            let base = self.spool.path().join(n.to_string());
            let Ok(envelope) = std::fs::read_to_string(base.with_extension("json")) else { break };
            out.push((serde_json::from_str(&envelope).unwrap(), std::fs::read(base.with_extension("eml")).unwrap()));
        }
        out
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
