//! The hub under test as a child process: started with settings fit for a
//! load test (its own data directory and SQLite file, rate limits out of
//! the way), restarted on the same port and store for the reconnect storm,
//! and sampled for CPU seconds and RSS through `/proc`.

use crate::http::Api;
use crate::reaper::Reaper;
use anyhow::{Context, bail};
use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

/// CPU and memory of a process, read from `/proc/<pid>`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

/// Reads a process's CPU time (user + system) and resident memory.
pub fn usage(pid: u32) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at ")".
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Usage {
        cpu_seconds: ticks as f64 / clock_ticks() as f64,
        rss_bytes: kib("VmRSS:") * 1024,
        peak_rss_bytes: kib("VmHWM:") * 1024,
    })
}

/// This process's CPU time (user + system, every thread), to the
/// microsecond (`/proc`'s ticks are 10 ms).
pub fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let (user, system) = (u.user_time(), u.system_time());
        (user.tv_sec() + system.tv_sec()) as f64 + (user.tv_usec() + system.tv_usec()) as f64 / 1e6
    })
}

fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

/// A hub the harness started.
#[derive(Debug)]
pub struct HubProcess {
    binary: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    env: Vec<(String, String)>,
    /// Stops the hub should the harness be killed; dropped before the
    /// hub is stopped or killed on purpose (and, declared first, before
    /// `child` when this is dropped).
    reaper: Option<Reaper>,
    child: Option<tokio::process::Child>,
}

impl HubProcess {
    /// The hub binary next to the harness's own (`target/release/hotswap`).
    pub fn default_binary() -> anyhow::Result<PathBuf> {
        let exe = std::env::current_exe()?;
        let binary = exe.with_file_name("hotswap");
        if !binary.exists() {
            bail!(
                "no hub binary at {} — build it first (`cargo build --release --workspace`) or pass --hub-bin",
                binary.display()
            );
        }
        Ok(binary)
    }

    /// Starts a hub on a free port with its store under `dir`.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        settings: &[(String, String)],
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let data = dir.join("data");
        let mut env = vec![
            ("HOTSWAP_BIND".to_owned(), format!("127.0.0.1:{port}")),
            ("HOTSWAP_DATA_DIR".to_owned(), data.display().to_string()),
            (
                "HOTSWAP_DATABASE__URL".to_owned(),
                format!("sqlite://{}", data.join("hotswap.db").display()),
            ),
            (
                "HOTSWAP_RATE_LIMIT__PRINCIPAL_PER_MINUTE".to_owned(),
                "1000000".to_owned(),
            ),
            (
                "HOTSWAP_RATE_LIMIT__PRINCIPAL_BURST".to_owned(),
                "100000".to_owned(),
            ),
            (
                "HOTSWAP_RATE_LIMIT__ADDRESS_PER_MINUTE".to_owned(),
                "1000000".to_owned(),
            ),
            (
                "HOTSWAP_RATE_LIMIT__ADDRESS_BURST".to_owned(),
                "100000".to_owned(),
            ),
            // The simulated fleet shares a few source addresses: its
            // reconnect storms are not an upgrade flood.
            (
                "HOTSWAP_RATE_LIMIT__UPGRADE_PER_MINUTE".to_owned(),
                "1000000".to_owned(),
            ),
            (
                "HOTSWAP_RATE_LIMIT__UPGRADE_BURST".to_owned(),
                "100000".to_owned(),
            ),
            ("HOTSWAP_LOG__LEVEL".to_owned(), "warn".to_owned()),
        ];
        env.extend(settings.iter().cloned());
        let mut hub = Self {
            binary: binary.to_owned(),
            dir: dir.to_owned(),
            port,
            env,
            reaper: None,
            child: None,
        };
        hub.spawn().await?;
        Ok(hub)
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn usage(&self) -> Option<Usage> {
        usage(self.pid()?)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("hub.log"))?;
        let child = tokio::process::Command::new(&self.binary)
            .envs(self.env.iter().cloned())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        let pid = child.id();
        self.child = Some(child);
        self.reaper = pid.map(Reaper::watch).transpose()?;
        let api = Api::new(&self.base_url(), "")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(reply) = api.get("/health").await
                && reply.status == 200
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the hub exited ({status}); see {}",
                    self.dir.join("hub.log").display()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!("the hub did not answer /health within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An admin token minted by the hub binary from the same data directory.
    pub async fn admin_token(&self) -> anyhow::Result<String> {
        let output = tokio::process::Command::new(&self.binary)
            .envs(self.env.iter().cloned())
            .args([
                "token", "--role", "admin", "--sub", "loadtest", "--ttl", "24h",
            ])
            .output()
            .await?;
        if !output.status.success() {
            bail!("hotswap token: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    /// Graceful stop (SIGTERM: the hub tells servers to come back later).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.reaper = None;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        if tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .is_err()
        {
            child.kill().await?;
        }
        Ok(())
    }

    /// SIGKILL (no shutdown, no flush), then a new process on the same
    /// port and store.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.reaper = None;
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        self.spawn().await
    }

    /// Stops, then starts a new process on the same port and store.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await
    }
}
