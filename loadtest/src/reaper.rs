//! The processes the harness starts (the hub, nginx) must not outlive it.
//! Every way out of the harness stops them, but a SIGKILL runs no `Drop`:
//! a [`Reaper`] is a tiny `sh` beside each one, blocked reading a pipe only
//! the harness holds. When the harness dies, however it dies, the pipe
//! closes and the reaper sends the process SIGTERM. (The worker processes
//! need none: they stop when their stdin closes.)

use anyhow::Context;
use std::process::{Child, Command, Stdio};

/// Sends SIGTERM to one process when the harness dies; does nothing once
/// dropped.
#[derive(Debug)]
pub struct Reaper(Child);

impl Reaper {
    /// Watches the harness on behalf of process `pid`. Drop it before that
    /// process is stopped or killed on purpose, so that it never signals
    /// the pid once another process may have it.
    pub fn watch(pid: u32) -> anyhow::Result<Self> {
        let child = Command::new("sh")
            .arg("-c")
            // `read` returns at end of file: the harness is gone.
            .arg(format!("read _; kill -TERM {pid} 2>/dev/null"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the reaper (sh)")?;
        Ok(Self(child))
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
