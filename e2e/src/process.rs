use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A child process, in a process group of its own, whose output goes to a log
/// file. The group is killed when this is dropped, so nothing outlives a test, not
/// even a grandchild (Flask's reloader runs the app in one).
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub fn spawn(name: &str, mut command: Command, log_dir: &std::path::Path) -> Process {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("creating the log file");
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file handle"))
            .stderr(file)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({command:?}): {e}"));
        Process {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id().expect("the process is running") as i32)
    }

    fn signal_group(&self, signal: Signal) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(-(pid as i32)), signal);
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub async fn stop(mut self) {
        self.signal_group(Signal::SIGTERM);
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(status)) => assert!(
                status.success(),
                "{} exited with {status} after SIGTERM; log:\n{}",
                self.name,
                self.log_text()
            ),
            _ => panic!("{} did not stop within 10 s of SIGTERM", self.name),
        }
    }

    /// SIGTERM, then wait up to `timeout` for the process to exit, however it
    /// exits; SIGKILL after that.
    pub async fn terminate(mut self, timeout: Duration) {
        self.signal_group(Signal::SIGTERM);
        if tokio::time::timeout(timeout, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "{} did not stop within {timeout:?} of SIGTERM; killing it",
                self.name
            );
            self.signal_group(Signal::SIGKILL);
            let _ = self.child.wait().await;
        }
    }

    /// SIGKILL: no chance to flush or finish anything.
    pub async fn kill(mut self) {
        self.signal_group(Signal::SIGKILL);
        let _ = self.child.wait().await;
    }

    /// Panics unless the process is still running.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited with {status}; log:\n{}",
                self.name,
                self.log_text()
            );
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.signal_group(Signal::SIGKILL);
    }
}
