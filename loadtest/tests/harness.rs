//! The harness end to end: the real `hotswap-loadtest` binary starts a
//! real hub (the workspace's `hotswap` binary, built next to it by `cargo
//! test --workspace`), runs each scenario at a small scale in separate
//! worker processes over real sockets, and writes its report.

use serde_json::Value;
use std::{path::PathBuf, process::Command};

fn run(name: &str, args: &[&str]) -> Value {
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_hotswap-loadtest"));
    let hub = harness.with_file_name("hotswap");
    assert!(
        hub.exists(),
        "no hub binary at {} — run the workspace's tests (`cargo test --workspace`), which build it",
        hub.display()
    );
    let out = fresh_out(name);
    let output = Command::new(&harness)
        .args(args)
        .args(["--metrics-ms", "200", "--out"])
        .arg(&out)
        .output()
        .expect("the harness runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("lost frames"),
        "the table is printed: {stdout}"
    );
    let svg = std::fs::read_to_string(out.join("latency.svg")).expect("a chart");
    assert!(svg.starts_with("<svg"));
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["lostFrames"], 0, "{report}");
    assert_eq!(report["outOfOrderFrames"], 0, "{report}");
    for field in [
        "servers",
        "players",
        "hubPeakRssBytes",
        "rssPerServerBytes",
        "hubCpuSeconds",
    ] {
        assert!(report[field].is_number(), "{field}: {report}");
    }
    report
}

/// An empty output folder of this test process for run `name`.
fn fresh_out(name: &str) -> PathBuf {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("harness")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    out
}

/// Whether nginx and its nchan module are here (Debian's nginx-light and
/// libnginx-mod-nchan); under CI, which installs them, they must be.
/// Without them, prints that `skipped` is skipped, and why.
fn nchan_here(skipped: &str) -> bool {
    let module = std::path::Path::new("/usr/lib/nginx/modules/ngx_nchan_module.so");
    if module.exists() && Command::new("nginx").arg("-v").output().is_ok() {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "under CI nginx and its nchan module must be installed (.ci/run does)"
    );
    eprintln!(
        "{skipped} skipped: no nginx with nchan here (apt-get install nginx-light libnginx-mod-nchan)"
    );
    false
}

fn summary(report: &Value, section: &str, key: &str) -> Value {
    let figure = report[section][key].clone();
    for q in ["p50", "p90", "p99", "max"] {
        assert!(
            figure[q].as_f64().is_some_and(|v| v >= 0.0),
            "{section}.{key}.{q}: {report}"
        );
    }
    assert!(figure["p50"].as_f64() <= figure["max"].as_f64());
    figure
}

#[test]
fn fanout_reports_delivery_against_the_floor() {
    let report = run(
        "fanout",
        &[
            "--scenario",
            "fanout",
            "--servers",
            "30",
            "--players",
            "3000",
            "--rounds",
            "3",
        ],
    );
    assert_eq!(report["scenario"], "fanout");
    assert_eq!(
        summary(&report, "fanout", "deliveryMs")["count"],
        90,
        "every server, every push"
    );
    let delivered = summary(&report, "fanout", "lastDeliveryMs");
    let handled = summary(&report, "fanout", "lastHandledMs");
    let acked = summary(&report, "fanout", "lastAckMs");
    // A frame reaches the socket, then the server's task, then its ack leaves.
    assert!(
        delivered["max"].as_f64() <= handled["max"].as_f64(),
        "{report}"
    );
    assert!(handled["max"].as_f64() <= acked["max"].as_f64(), "{report}");
    let floor = summary(&report, "floor", "lastDeliveryMs");
    let floor_handled = summary(&report, "floor", "lastHandledMs");
    assert!(
        floor["max"].as_f64() <= floor_handled["max"].as_f64(),
        "{report}"
    );
    // The floor's clients ack too: the same client load as the hub's fan-out.
    assert!(
        floor_handled["max"].as_f64() <= summary(&report, "floor", "lastAckMs")["max"].as_f64()
    );
    // Both floors, every socket every round: the WebSocket client the
    // servers use, and bare reads.
    assert_eq!(summary(&report, "floor", "deliveryMs")["count"], 90);
    assert_eq!(summary(&report, "floorRaw", "deliveryMs")["count"], 90);
    // From the deployment's request, the first frame of a push comes no
    // later than its last.
    let first = summary(&report, "fanout", "firstDeliveryFromRequestMs");
    let last = summary(&report, "fanout", "lastDeliveryFromRequestMs");
    assert_eq!(first["count"], 3);
    assert!(first["p50"].as_f64() > Some(0.0), "{report}");
    assert!(first["max"].as_f64() <= last["max"].as_f64(), "{report}");
    assert!(first["p50"].as_f64() <= last["p50"].as_f64(), "{report}");
    assert!(
        report["floor"]["lastAckOverRaw"].as_f64() > Some(0.0),
        "{report}"
    );
    // One ratio a round: each push against the floor round after it.
    assert_eq!(summary(&report, "fanout", "ratioToFloor")["count"], 3);
    summary(&report, "fanout", "ratioToRawFloor");
    summary(&report, "fanout", "handledRatioToFloor");
    assert_eq!(summary(&report, "fanout", "cpuRatioToFloor")["count"], 3);
    // The hub's CPU while it settled after each push, and the push's cost
    // with it, less the idle hub's.
    assert_eq!(summary(&report, "fanout", "hubCpuMsAfter")["count"], 3);
    assert_eq!(
        summary(&report, "fanout", "hubCpuUsPerServerWithStore")["count"],
        3
    );
    assert!(
        report["fanout"]["hubIdleCores"].as_f64() >= Some(0.0),
        "{report}"
    );
    assert!(report["unstampedReads"].is_u64(), "{report}");
}

/// The processes whose parent is `pid`, with their names (`/proc`).
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let parent = stat[close + 2..]
            .split(' ')
            .nth(1)
            .and_then(|p| p.parse().ok());
        if parent == Some(pid) {
            found.push((child, stat[open + 1..close].to_owned()));
        }
    }
    found
}

/// Whether `pid` runs (a zombie nobody reaped yet has stopped).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .is_some_and(|close| !stat[close + 2..].starts_with('Z'))
    })
}

/// A harness killed with SIGKILL runs no `Drop`: its reapers stop the hub
/// it started, and nginx with `--nchan` where nginx and nchan are here.
#[test]
fn a_killed_harness_leaves_no_hub_nor_nginx_running() {
    let harness = PathBuf::from(env!("CARGO_BIN_EXE_hotswap-loadtest"));
    let out = fresh_out("killed");
    let nchan = nchan_here("nginx's part");
    let mut args = vec![
        "--scenario",
        "fanout",
        "--servers",
        "10",
        "--players",
        "1000",
        "--rounds",
        "100000",
    ];
    if nchan {
        args.push("--nchan");
    }
    let mut child = Command::new(&harness)
        .args(&args)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("the harness runs");
    let wanted: &[&str] = if nchan {
        &["hotswap", "nginx"]
    } else {
        &["hotswap"]
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let started = loop {
        let started: Vec<(u32, String)> = children(child.id())
            .into_iter()
            .filter(|(_, name)| wanted.contains(&name.as_str()))
            .collect();
        if started.len() == wanted.len() {
            break started;
        }
        if std::time::Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the harness did not start {wanted:?} within 90 s: {started:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for (pid, name) in started {
        while running(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} ({pid}) still runs 30 s after its harness was killed"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// nginx + nchan measured beside the hub, round by round (`--nchan`).
/// Needs Debian's nginx-light and libnginx-mod-nchan: skipped with a
/// printed reason without them, except under CI, which installs them.
#[test]
fn fanout_is_measured_against_nginx_and_nchan() {
    if !nchan_here("the test") {
        return;
    }
    let report = run(
        "nchan",
        &[
            "--scenario",
            "fanout",
            "--servers",
            "30",
            "--players",
            "3000",
            "--rounds",
            "3",
            "--nchan",
        ],
    );
    // Every subscriber got every message, and acked it.
    assert_eq!(summary(&report, "nchan", "deliveryMs")["count"], 90);
    let last = summary(&report, "nchan", "lastDeliveryMs");
    assert_eq!(last["count"], 3);
    assert!(
        last["max"].as_f64() <= summary(&report, "nchan", "lastAckMs")["max"].as_f64(),
        "{report}"
    );
    // nginx's CPU is read to the nanosecond: a round of 30 is not 0.
    let cpu = summary(&report, "nchan", "cpuUsPerSubscriber");
    assert!(cpu["p50"].as_f64() > Some(0.0), "{report}");
    summary(&report, "fanout", "lastDeliveryFromRequestMs");
    // Each push against the same round's publish.
    assert_eq!(summary(&report, "fanout", "ratioToNchan")["count"], 3);
    assert_eq!(summary(&report, "fanout", "cpuRatioToNchan")["count"], 3);
}

#[test]
fn a_regressing_canary_is_rolled_back_and_timed() {
    let report = run(
        "canary",
        &[
            "--scenario",
            "canary-rollback",
            "--servers",
            "40",
            "--players",
            "40000",
            "--crashes-per-player-hour",
            "100",
            "--warmup",
            "3",
            "--hub-env",
            "HOTSWAP_DEPLOYMENTS__FAST_WINDOW_MS=2000",
            "--hub-env",
            "HOTSWAP_DEPLOYMENTS__EVALUATE_EVERY_MS=100",
        ],
    );
    let round = &report["canaryRollback"]["round1"];
    assert_eq!(round["rollback"]["trigger"], "automatic", "{report}");
    assert_eq!(round["rollback"]["metric"], "crashRate", "{report}");
    assert!(round["canaryServers"].as_u64() > Some(0));
    let detection = summary(&report, "canaryRollback", "regressionToDetectionMs");
    let last_ack = summary(&report, "canaryRollback", "regressionToLastAckMs");
    assert!(
        detection["max"].as_f64() <= last_ack["max"].as_f64(),
        "{report}"
    );
}

#[test]
fn the_kill_switch_is_timed_to_the_last_ack() {
    let report = run(
        "kill",
        &[
            "--scenario",
            "kill-switch",
            "--servers",
            "30",
            "--players",
            "3000",
            "--rounds",
            "2",
        ],
    );
    assert_eq!(summary(&report, "killSwitch", "lastAckMs")["count"], 2);
    assert_eq!(summary(&report, "killSwitch", "deliveryMs")["count"], 60);
    // Against the floor of the same run: the same sockets' clients acking
    // a frame from a bare loop.
    assert_eq!(summary(&report, "floor", "lastAckMs")["count"], 2);
    let ratio = summary(&report, "killSwitch", "ratioToFloor");
    assert_eq!(ratio["count"], 2);
    assert!(ratio["p50"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(summary(&report, "floorRaw", "lastAckMs")["count"], 2);
    assert_eq!(
        summary(&report, "killSwitch", "ratioToRawFloor")["count"],
        2
    );
}

#[test]
fn a_live_event_is_timed_from_its_instant_to_the_last_ack() {
    let report = run(
        "live-event",
        &[
            "--scenario",
            "live-event",
            "--servers",
            "30",
            "--players",
            "3000",
            "--rounds",
            "2",
        ],
    );
    let last_ack = summary(&report, "liveEvent", "instantToLastAckMs");
    assert_eq!(last_ack["count"], 2);
    // Never before the instant: the event's actor waits for it.
    let first = summary(&report, "liveEvent", "instantToFirstDeliveryMs");
    assert!(first["p50"].as_f64().unwrap() >= 0.0, "{report}");
    assert!(
        first["max"].as_f64() <= last_ack["max"].as_f64(),
        "{report}"
    );
    assert_eq!(summary(&report, "liveEvent", "deliveryMs")["count"], 60);
    assert_eq!(summary(&report, "liveEvent", "endToLastAckMs")["count"], 2);
    assert_eq!(
        summary(&report, "liveEvent", "lateMs")["max"],
        0.0,
        "on time: {report}"
    );
}

#[test]
fn a_restarted_hub_gets_every_server_back() {
    let report = run(
        "storm",
        &[
            "--scenario",
            "reconnect-storm",
            "--servers",
            "30",
            "--players",
            "3000",
            "--hub-env",
            "HOTSWAP_HUB__RECONNECT_WINDOW_MS=300",
        ],
    );
    summary(&report, "reconnectStorm", "allResyncedMs");
    summary(&report, "reconnectStorm", "hubRestartMs");
}

#[test]
fn a_soak_samples_the_hub_and_measures_metric_ingest() {
    let report = run(
        "soak",
        &[
            "--scenario",
            "soak",
            "--servers",
            "20",
            "--players",
            "2000",
            "--duration",
            "3",
            "--push-every",
            "1",
            "--ingest-window",
            "1",
        ],
    );
    assert!(
        report["ingest"]["framesPerSecond"].as_f64() > Some(50.0),
        "{report}"
    );
    assert!(report["ingest"]["cpuCores"].is_number(), "{report}");
    assert!(report["soak"]["pushes"].as_u64() >= Some(2), "{report}");
    assert!(report["soak"]["metricFramesSent"].as_u64() > Some(0));
    summary(&report, "soak", "deliveryMs");
}

#[test]
fn a_hub_killed_mid_deployment_loses_nothing() {
    let report = run(
        "chaos",
        &[
            "--scenario",
            "chaos",
            "--servers",
            "30",
            "--players",
            "3000",
            "--rounds",
            "2",
        ],
    );
    assert_eq!(report["chaos"]["kills"], 2, "{report}");
    let rounds = report["chaos"]["rounds"].as_array().unwrap();
    for round in rounds {
        assert!(
            round["ended"] == "Completed" || round["ended"] == "RolledBack",
            "every deployment finishes or rolls back: {round}"
        );
    }
    summary(&report, "chaos", "restartMs");
    summary(&report, "chaos", "killToAllServersSettledMs");
}

/// PostgreSQL for the cluster runs (`HOTSWAP_TEST_POSTGRES_URL`, as the
/// hub's tests); `None` with a printed reason when it is unreachable
/// outside CI (under `CI` the test fails instead).
fn postgres() -> Option<String> {
    let url = std::env::var("HOTSWAP_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    if std::net::TcpStream::connect(("127.0.0.1", 5432)).is_ok() {
        return Some(url);
    }
    let reason = "PostgreSQL is unreachable on 127.0.0.1:5432";
    assert!(
        std::env::var("CI").map_or(true, |v| v.trim().is_empty()),
        "{reason} (CI=true requires the cluster runs)"
    );
    eprintln!("SKIPPED the cluster runs of the harness: {reason}");
    None
}

/// A private `redis-server` on a free port, killed when dropped.
struct Redis(std::process::Child, u16);

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server never listened"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Redis(child, port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three nodes on one PostgreSQL and one Redis: the servers spread over
/// them get every push of a deployment the first node drives, and a
/// regressing canary is rolled back on all of them.
#[test]
fn a_cluster_of_three_fans_out_and_rolls_back() {
    let Some(database) = postgres() else {
        return;
    };
    let redis = Redis::start();
    let redis_url = format!("redis://127.0.0.1:{}/0", redis.1);
    let cluster = [
        "--nodes",
        "3",
        "--database-url",
        &database,
        "--redis-url",
        &redis_url,
    ];
    let mut args = vec![
        "--scenario",
        "fanout",
        "--servers",
        "30",
        "--players",
        "3000",
        "--rounds",
        "3",
    ];
    args.extend(cluster);
    let report = run("cluster-fanout", &args);
    assert_eq!(report["nodes"], 3, "{report}");
    summary(&report, "fanout", "lastDeliveryMs");
    let mut args = vec![
        "--scenario",
        "canary-rollback",
        "--servers",
        "30",
        "--players",
        "30000",
        "--crashes-per-player-hour",
        "100",
        "--warmup",
        "3",
        "--hub-env",
        "HOTSWAP_DEPLOYMENTS__FAST_WINDOW_MS=2000",
        "--hub-env",
        "HOTSWAP_DEPLOYMENTS__EVALUATE_EVERY_MS=100",
    ];
    args.extend(cluster);
    let report = run("cluster-canary", &args);
    let round = &report["canaryRollback"]["round1"];
    assert_eq!(round["rollback"]["trigger"], "automatic", "{report}");
    summary(&report, "canaryRollback", "regressionToLastAckMs");
}
