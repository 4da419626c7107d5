//! nginx + nchan, the pub/sub server a studio might pick instead of the
//! hub, started by the harness for `fanout --nchan`: one worker per core,
//! a WebSocket subscriber location and an HTTP publisher location on a
//! port of its own, its files under `<out>/nchan`.

use crate::reaper::Reaper;
use anyhow::{Context, bail};
use std::{net::SocketAddr, path::Path, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where Debian's `libnginx-mod-nchan` puts the module.
const MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

/// The channel every subscriber listens on.
pub const CHANNEL: &str = "loadtest";

/// Where the subscribers' answers (their acks) go: a WebSocket subscriber
/// that sends a message to a plain `nchan_subscriber` location is
/// disconnected, so the subscribers publish to a channel of its own that
/// keeps only the last message.
const ANSWERS: &str = "answers";

/// A running nginx with nchan; stopped when dropped (or, should the
/// harness be killed, by its reaper).
#[derive(Debug)]
pub struct Nchan {
    child: std::process::Child,
    reaper: Option<Reaper>,
    pub addr: SocketAddr,
}

impl Nchan {
    /// Starts nginx (`nginx` on the PATH) with `workers` worker processes,
    /// each taking up to `connections` sockets.
    pub async fn start(out: &Path, workers: usize, connections: u64) -> anyhow::Result<Self> {
        if !Path::new(MODULE).exists() {
            bail!(
                "--nchan needs nginx's nchan module at {MODULE} \
                 (Debian: apt-get install nginx-light libnginx-mod-nchan)"
            );
        }
        let dir = out.join("nchan");
        std::fs::create_dir_all(dir.join("logs"))?;
        // A free port now; nginx binds it a moment later (127.0.0.1 only).
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, config(&dir, addr, workers, connections))?;
        let mut command = std::process::Command::new("nginx");
        let child = command
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("logs/stderr.log"))?)
            .spawn()
            .context("--nchan starts `nginx` (Debian: apt-get install nginx-light)")?;
        let reaper = Reaper::watch(child.id());
        let mut nchan = Self {
            child,
            reaper: None,
            addr,
        };
        nchan.reaper = Some(reaper?);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = nchan.child.try_wait()? {
                bail!(
                    "nginx stopped at start ({status}; the port taken, or its config: see {})",
                    dir.join("logs").display()
                );
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "nginx did not listen on {addr} within 10 s (see {})",
                    dir.join("logs").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(nchan)
    }

    /// CPU seconds of nginx's master and workers, to the nanosecond
    /// (`/proc/<pid>/schedstat`: its processes are single-threaded; the
    /// 10 ms ticks of `/proc/<pid>/stat` would read a small round as 0).
    pub fn cpu_seconds(&self) -> f64 {
        let master = self.child.id();
        let mut pids = vec![master];
        pids.extend(children(master));
        pids.into_iter().filter_map(on_cpu_seconds).sum()
    }

    /// Waits until nginx's CPU stops rising (it has read and republished
    /// the subscribers' answers): two looks 20 ms apart that find it
    /// still, at most 2 s.
    pub async fn until_still(&self) {
        let mut last = self.cpu_seconds();
        let mut still = 0;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.cpu_seconds();
            still = if now - last < 1e-5 { still + 1 } else { 0 };
            if still == 2 {
                return;
            }
            last = now;
        }
    }

    /// Publishes `payload` (binary: nchan sends it in binary frames) to
    /// the channel; returns when nchan answered.
    pub async fn publish(&self, payload: &[u8]) -> anyhow::Result<()> {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
        let head = format!(
            "POST /pub/{CHANNEL} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            payload.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(payload).await?;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
            .await
            .context("nchan's publisher did not answer within 10 s")??;
        let status = crate::http::parse_response(&answer)?.status;
        if !(200..300).contains(&status) {
            bail!("nchan's publisher answered HTTP {status}");
        }
        Ok(())
    }
}

impl Drop for Nchan {
    fn drop(&mut self) {
        drop(self.reaper.take());
        // SIGQUIT would wait for the subscribers; SIGTERM stops at once.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// A single-threaded process's time on a CPU, from `schedstat`.
fn on_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    let fields = stat[stat.rfind(')')? + 2..].to_owned();
                    fields.split(' ').nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// nginx's configuration: `workers` processes, a WebSocket subscriber at
/// `/sub/<channel>` (a new subscriber gets only messages published after
/// it came; what it sends is published to [`ANSWERS`], which nobody
/// reads), an HTTP publisher at `/pub/<channel>`; no access log.
fn config(dir: &Path, addr: SocketAddr, workers: usize, connections: u64) -> String {
    let d = dir.display();
    let files = connections + 64;
    format!(
        "load_module {MODULE};
worker_processes {workers};
worker_rlimit_nofile {files};
pid {d}/nginx.pid;
error_log {d}/logs/error.log warn;
events {{ worker_connections {connections}; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  server {{
    listen {addr};
    location ~ ^/sub/(\\w+)$ {{
      nchan_pubsub websocket;
      nchan_subscriber_channel_id $1;
      nchan_subscriber_first_message newest;
      nchan_publisher_channel_id {ANSWERS};
      nchan_message_buffer_length 1;
      nchan_message_timeout 10s;
    }}
    location ~ ^/pub/(\\w+)$ {{
      nchan_publisher http;
      nchan_channel_id $1;
      nchan_message_buffer_length 4;
    }}
  }}
}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_both_locations_and_the_workers() {
        let conf = config(
            Path::new("/tmp/x"),
            ([127, 0, 0, 1], 8080).into(),
            2,
            10_064,
        );
        assert!(conf.contains("worker_processes 2;"));
        assert!(conf.contains("worker_connections 10064;"));
        assert!(conf.contains("worker_rlimit_nofile 10128;"));
        assert!(conf.contains("listen 127.0.0.1:8080;"));
        assert!(conf.contains("nchan_pubsub websocket;"));
        assert!(conf.contains("nchan_publisher_channel_id answers;"));
        assert!(conf.contains("nchan_publisher http;"));
        assert!(conf.contains("nchan_subscriber_first_message newest;"));
    }
}
