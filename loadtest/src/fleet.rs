//! The coordinator's side of the worker processes: spawns them (the same
//! binary, `worker` subcommand), sends each a command and reads its reply.

use crate::worker::{Delivery, WorkerSpec};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::{net::IpAddr, process::Stdio, time::Duration};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout},
};

#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

/// The simulated servers, spread over worker processes.
#[derive(Debug)]
pub struct Fleet {
    workers: Vec<Worker>,
    pub servers: usize,
}

/// Open files a process keeps beyond its sockets (stdio, pipes, the runtime).
pub const FILES_RESERVED: u64 = 256;
/// Servers per process when the open-files limit allows more: with two
/// sockets each (three with `--nchan`), one process's address stays far
/// from its ~28,000 ephemeral ports.
pub const MAX_PER_PROCESS: usize = 5_000;

/// The open-files limit, its soft value raised to the hard one first
/// (worker processes and a hub the harness starts inherit it). A limit
/// that cannot be raised is read as it is.
pub fn raise_open_files() -> u64 {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    // Linux refuses an unlimited RLIMIT_NOFILE; its usual ceiling is 2^20.
    let target = if hard == RLIM_INFINITY { 1 << 20 } else { hard };
    if soft < target && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        return target;
    }
    soft
}

/// How to spread `servers` over processes and source addresses.
#[derive(Debug, Clone)]
pub struct Layout {
    pub per_process: usize,
    /// Source addresses, one per process (round robin); empty: the kernel picks.
    pub sources: Vec<IpAddr>,
}

impl Layout {
    /// Servers one worker process can hold under `open_files`, each
    /// holding `sockets` at once (a hub socket and a floor socket, and a
    /// subscriber to nginx + nchan with `--nchan`), at most
    /// [`MAX_PER_PROCESS`].
    pub fn per_process_for(open_files: u64, sockets: u64) -> anyhow::Result<usize> {
        let servers = open_files.saturating_sub(FILES_RESERVED) / sockets.max(1);
        if servers == 0 {
            bail!(
                "the open-files limit is {open_files}: a worker process needs {FILES_RESERVED} \
                 and {sockets} per simulated server (raise it with `ulimit -n`)"
            );
        }
        Ok(servers.min(MAX_PER_PROCESS as u64) as usize)
    }

    /// `per_process` as asked for (`--per-process`), or as many as the
    /// limit allows; more than the limit allows is an error, not a run
    /// that fails with `EMFILE` half way.
    pub fn choose_per_process(
        asked: Option<usize>,
        open_files: u64,
        sockets: u64,
    ) -> anyhow::Result<usize> {
        let most = Self::per_process_for(open_files, sockets)?;
        match asked {
            None => Ok(most),
            Some(0) => bail!("--per-process must be at least 1"),
            Some(n) if n as u64 * sockets + FILES_RESERVED > open_files => bail!(
                "--per-process {n} needs {} open files per worker process ({sockets} per server \
                 + {FILES_RESERVED}); the limit is {open_files}: use at most {most}, or raise it \
                 with `ulimit -n`",
                n as u64 * sockets + FILES_RESERVED
            ),
            Some(n) => Ok(n),
        }
    }

    /// `servers` per process; sockets per process stay under `per_process`
    /// (each server may hold a hub socket and a floor socket, and with
    /// `--nchan` a subscriber). One
    /// 127.0.0.x address per process keeps every address far from the
    /// ~28,000 ephemeral ports it has.
    pub fn plan(servers: usize, per_process: usize) -> Self {
        let per_process = per_process.max(1);
        let processes = servers.div_ceil(per_process).max(1);
        let sources = (0..processes)
            .map(|i| IpAddr::from([127, 0, 0, 10 + (i % 240) as u8]))
            .collect();
        Self {
            per_process,
            sources,
        }
    }
}

impl Fleet {
    /// Starts the worker processes; their servers start connecting at once.
    pub async fn start(
        template: &WorkerSpec,
        servers: usize,
        layout: &Layout,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the harness binary")?;
        let mut workers = Vec::new();
        let mut first = 0;
        let mut index = 0;
        while first < servers {
            let count = layout.per_process.min(servers - first);
            let spec = WorkerSpec {
                first,
                count,
                source: layout
                    .sources
                    .get(index % layout.sources.len().max(1))
                    .copied(),
                ..template.clone()
            };
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .arg(serde_json::to_string(&spec)?)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting worker {index}"))?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            workers.push(Worker {
                child,
                stdin,
                lines: BufReader::new(stdout).lines(),
            });
            first += count;
            index += 1;
        }
        Ok(Self { workers, servers })
    }

    pub fn processes(&self) -> usize {
        self.workers.len()
    }

    /// CPU seconds the worker processes have used so far.
    pub fn cpu_seconds(&self) -> f64 {
        self.workers
            .iter()
            .filter_map(|w| w.child.id())
            .filter_map(crate::hubproc::usage)
            .map(|u| u.cpu_seconds)
            .sum()
    }

    /// Sends `command` to every worker, then reads every reply.
    pub async fn call(&mut self, command: Value) -> anyhow::Result<Vec<Value>> {
        let mut line = command.to_string();
        line.push('\n');
        for worker in &mut self.workers {
            worker.stdin.write_all(line.as_bytes()).await?;
            worker.stdin.flush().await?;
        }
        let mut replies = Vec::with_capacity(self.workers.len());
        for (i, worker) in self.workers.iter_mut().enumerate() {
            let reply = tokio::time::timeout(Duration::from_secs(60), worker.lines.next_line())
                .await
                .with_context(|| format!("worker {i} did not answer {command}"))??
                .with_context(|| format!("worker {i} exited"))?;
            let reply: Value = serde_json::from_str(&reply)?;
            if let Some(error) = reply.get("error") {
                bail!("worker {i}: {error}");
            }
            replies.push(reply);
        }
        Ok(replies)
    }

    /// Totals of the workers' status counters.
    pub async fn status(&mut self) -> anyhow::Result<Status> {
        let mut status = Status::default();
        for reply in self.call(json!({"op": "status"})).await? {
            let n = |k: &str| reply[k].as_u64().unwrap_or(0);
            status.connected += n("connected");
            status.welcomes += n("welcomes");
            status.out_of_order += n("outOfOrder");
            status.unstamped_reads += n("unstampedReads");
            status.resyncs += n("resyncs");
            status.metrics_sent += n("metricsSent");
            status.connect_failures += n("connectFailures");
            status.disconnects += n("disconnects");
            if let Some(revisions) = reply["revisions"].as_object() {
                for (revision, count) in revisions {
                    let revision: i64 = revision.parse().unwrap_or(0);
                    *status.revisions.entry(revision).or_default() += count.as_u64().unwrap_or(0);
                }
            }
            if let Some(errors) = reply["hubErrors"].as_object() {
                for (code, count) in errors {
                    *status.hub_errors.entry(code.clone()).or_default() +=
                        count.as_u64().unwrap_or(0);
                }
            }
            if let Some(closes) = reply["hubCloses"].as_object() {
                for (why, count) in closes {
                    *status.hub_closes.entry(why.clone()).or_default() +=
                        count.as_u64().unwrap_or(0);
                }
            }
            if let Some(failure) = reply["lastFailure"].as_str() {
                status.last_failure = Some(failure.to_owned());
            }
        }
        Ok(status)
    }

    /// Every frame received since the last collect.
    pub async fn collect(&mut self) -> anyhow::Result<Vec<Delivery>> {
        let mut all = Vec::new();
        for reply in self.call(json!({"op": "collect"})).await? {
            let deliveries: Vec<Delivery> = serde_json::from_value(reply["deliveries"].clone())?;
            all.extend(deliveries);
        }
        Ok(all)
    }

    /// Waits until every server holds `revision` (progress bar meanwhile).
    pub async fn wait_all_on(
        &mut self,
        revision: i64,
        label: &str,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.status().await?;
            let on = status.revisions.get(&revision).copied().unwrap_or(0) as usize;
            crate::progress(label, on, self.servers);
            if on >= self.servers {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                eprintln!();
                bail!(
                    "{label}: only {on} of {} servers on revision {revision} after {timeout:?} \
                     (connected {}, failures {}, last: {:?})",
                    self.servers,
                    status.connected,
                    status.connect_failures,
                    status.last_failure
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every worker and waits for the processes to exit.
    pub async fn stop(mut self) {
        let _ = self.call(json!({"op": "stop"})).await;
        for worker in &mut self.workers {
            let _ = tokio::time::timeout(Duration::from_secs(5), worker.child.wait()).await;
            let _ = worker.child.start_kill();
        }
    }
}

/// The workers' counters, summed.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub connected: u64,
    pub welcomes: u64,
    pub out_of_order: u64,
    /// Socket reads without a kernel receive time (timed when read).
    pub unstamped_reads: u64,
    pub resyncs: u64,
    pub metrics_sent: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub revisions: std::collections::BTreeMap<i64, u64>,
    pub hub_errors: std::collections::BTreeMap<String, u64>,
    /// Close frames the hub sent, by `code reason`.
    pub hub_closes: std::collections::BTreeMap<String, u64>,
    pub last_failure: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_per_process_follow_the_open_files_limit() {
        // This machine's 20,000: the 5,000 cap.
        assert_eq!(Layout::per_process_for(20_000, 2).unwrap(), 5_000);
        // With nginx + nchan's subscribers too, still the cap.
        assert_eq!(Layout::per_process_for(20_000, 3).unwrap(), 5_000);
        // A common default of 1,024: two sockets per server after the
        // reserve, or three.
        assert_eq!(Layout::per_process_for(1_024, 2).unwrap(), 384);
        assert_eq!(Layout::per_process_for(1_024, 3).unwrap(), 256);
        assert_eq!(Layout::plan(10_000, 384).sources.len(), 27);
        assert!(Layout::per_process_for(257, 2).is_err());
    }

    #[test]
    fn a_per_process_count_over_the_limit_is_refused_before_the_run() {
        assert_eq!(Layout::choose_per_process(None, 1_024, 2).unwrap(), 384);
        assert_eq!(
            Layout::choose_per_process(Some(384), 1_024, 2).unwrap(),
            384
        );
        let error = Layout::choose_per_process(Some(5_000), 1_024, 2)
            .unwrap_err()
            .to_string();
        assert!(error.contains("use at most 384"), "{error}");
        assert!(Layout::choose_per_process(Some(0), 1_024, 2).is_err());
        // 384 servers hold 1,152 sockets with --nchan: over 1,024.
        let error = Layout::choose_per_process(Some(384), 1_024, 3)
            .unwrap_err()
            .to_string();
        assert!(error.contains("use at most 256"), "{error}");
    }
}
