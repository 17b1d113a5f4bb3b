//! Child processes that never outlive the test: each runs in its own
//! process group with `PR_SET_PDEATHSIG` = SIGKILL (so a killed test process
//! takes it along), writes its output to a log file, and is stopped with its
//! whole group on drop (SIGTERM, then SIGKILL after a grace period).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustix::process::{Pid, Signal, kill_process_group, set_parent_process_death_signal};

/// A running child process and its log.
pub struct Process {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Result<Process> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; it is the only call between fork and exec.
        unsafe {
            command.pre_exec(|| {
                set_parent_process_death_signal(Some(Signal::KILL))?;
                Ok(())
            });
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.get_program()))?;
        Ok(Process {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// The process id (also its process group's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends `signal` to the process group (SIGSTOP/SIGCONT to freeze one).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = Pid::from_raw(self.child.id() as i32).context("pid 0")?;
        kill_process_group(pid, signal).with_context(|| format!("signalling {}", self.name))
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; waits for it.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let _ = self.signal(Signal::CONT);
        let _ = self.signal(Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                // Anything else left in its group goes too.
                let _ = self.signal(Signal::KILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.signal(Signal::KILL);
        let _ = self.child.wait();
    }

    /// SIGKILL to the whole group, at once; waits for it.
    pub fn kill(&mut self) {
        if self.exited().is_none() {
            let _ = self.signal(Signal::KILL);
            let _ = self.child.wait();
        }
    }

    /// The last `bytes` of the log, for failure messages.
    pub fn log_tail(&self, bytes: u64) -> String {
        tail(&self.log, bytes)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The last `bytes` of a file (lossy UTF-8), or a note why not.
pub fn tail(path: &Path, bytes: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(bytes)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

/// A workspace binary (`straddle`, `straddle-webhook`) of the profile this
/// test was built with, built first when it is missing or older than the
/// workspace's sources (a lone `cargo test -p straddle-tests` builds no
/// other package's binaries, and a stale one would test old code). A
/// fresh one is used as is: asking cargo anyway would rebuild dependencies
/// under this package's feature set, and `cargo test --workspace` flip back.
pub fn workspace_binary(package: &str, name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary outside target/<profile>/deps")?;
    let path = profile_dir.join(name);
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let stale = built.is_none_or(|built| {
        newest_source(crate::root(), sources_of(package)).is_some_and(|s| s > built)
    });
    if stale {
        let release = profile_dir.file_name().is_some_and(|p| p == "release");
        let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        build.args(["build", "--locked", "-p", package, "--bin", name]);
        if release {
            build.arg("--release");
        }
        let status = build.status().context("running cargo build")?;
        anyhow::ensure!(
            status.success(),
            "cargo build -p {package} --bin {name} failed"
        );
    }
    Ok(path)
}

/// The workspace crates a package's binaries are built from: only their
/// sources can make a binary stale (a `straddle` binary is not stale
/// because the webhook changed, and cargo would not relink it anyway).
fn sources_of(package: &str) -> &'static [&'static str] {
    match package {
        "straddle-webhook" => &["webhook", "oci", "policy/engine", "policy/host"],
        "straddle-compiler" => &[
            "compiler",
            "oci",
            "policy/engine",
            "policy/host",
            "policy/guest",
            "policy/artifact",
        ],
        _ => &[
            "webhook",
            "compiler",
            "oci",
            "policy/engine",
            "policy/host",
            "policy/guest",
            "policy/artifact",
        ],
    }
}

/// The newest modification time of a `.rs` file under `crates`.
fn newest_source(workspace: &Path, crates: &[&str]) -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<std::time::SystemTime>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, newest);
            } else if path.extension().is_some_and(|e| e == "rs")
                && let Ok(m) = entry.metadata().and_then(|m| m.modified())
            {
                *newest = (*newest).max(Some(m));
            }
        }
    }
    let mut newest = None;
    for krate in crates {
        walk(&workspace.join(krate).join("src"), &mut newest);
    }
    newest
}
