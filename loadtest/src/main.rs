//! `hotswap-loadtest`: simulated game servers and players against a real
//! hub. `hotswap-loadtest --servers 1000 --players 100000 --scenario fanout`.

use clap::{Parser, Subcommand};
use hotswap_loadtest::{
    fleet::{FILES_RESERVED, Layout},
    players::PlayerModel,
    scenarios::{self, Options, Scenario},
    worker::{self, WorkerSpec},
};
use std::{path::PathBuf, time::Duration};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Load-test a HotSwap hub with simulated game servers and players"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[arg(long, value_enum, default_value = "fanout")]
    scenario: Scenario,
    /// Simulated game servers.
    #[arg(long, default_value_t = 1000)]
    servers: usize,
    /// Simulated players, spread evenly over the servers.
    #[arg(long, default_value_t = 100_000)]
    players: u64,
    /// Pushes (fanout) or rounds (canary-rollback, kill-switch, reconnect-storm;
    /// chaos: one kill -9 of the hub per round, 10 by default; live-event:
    /// one event per round, 3 by default).
    #[arg(long)]
    rounds: Option<usize>,
    /// Soak duration in seconds.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Soak: seconds between pushes.
    #[arg(long, default_value_t = 10)]
    push_every: u64,
    /// Metrics interval told to a hub the harness starts, and used by the servers.
    #[arg(long, default_value_t = 1000)]
    metrics_ms: u64,
    /// Servers send no metrics (they do by default).
    #[arg(long)]
    no_metrics: bool,
    /// Simulated servers per worker process (each may hold two sockets);
    /// default: as many as the open-files limit allows, at most 5,000.
    #[arg(long)]
    per_process: Option<usize>,
    /// Sockets each worker opens at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Canary rollback: the canary's crash rate is multiplied by this.
    #[arg(long, default_value_t = 3.0)]
    regression_factor: f64,
    /// Canary rollback: seconds of healthy metrics before the regression.
    #[arg(long, default_value_t = 12)]
    warmup: u64,
    /// Soak: seconds of hub CPU measured with metrics off, then on.
    #[arg(long, default_value_t = 10)]
    ingest_window: u64,
    /// Hub nodes the harness starts (a cluster on --database-url and
    /// --redis-url); the simulated servers are spread over them, and the
    /// deployments are made on the first (it drives them).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// With --nodes above 1: the PostgreSQL database the nodes share.
    #[arg(long, env = "HOTSWAP_LOADTEST_DATABASE_URL")]
    database_url: Option<String>,
    /// With --nodes above 1: the Redis the nodes share.
    #[arg(long, env = "HOTSWAP_LOADTEST_REDIS_URL")]
    redis_url: Option<String>,
    /// Fanout: also start nginx + nchan (one worker per core; Debian's
    /// nginx-light and libnginx-mod-nchan), open a WebSocket subscriber
    /// per server to it, and publish the same message to them after each
    /// push, as `nchan.*` and `fanout.ratioToNchan`.
    #[arg(long)]
    nchan: bool,
    /// Target a running hub (http://127.0.0.x:port) instead of starting one.
    #[arg(long)]
    hub_url: Option<String>,
    /// With --hub-url: an admin token.
    #[arg(long, env = "HOTSWAP_TOKEN")]
    token: Option<String>,
    /// With --hub-url: the hub's process id, for CPU and memory figures.
    #[arg(long)]
    hub_pid: Option<u32>,
    /// The hub binary to start (default: `hotswap` next to this binary).
    #[arg(long)]
    hub_bin: Option<PathBuf>,
    /// Extra hub setting for a hub the harness starts, as HOTSWAP_KEY=VALUE (repeatable).
    #[arg(long = "hub-env", value_parser = parse_env)]
    hub_env: Vec<(String, String)>,
    /// Where report.json, latency.svg and the hub's log go
    /// (default loadtest-results/<timestamp>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Player model: mean session length in minutes.
    #[arg(long, default_value_t = PlayerModel::default().session_minutes)]
    session_minutes: f64,
    /// Player model: crashes per player-hour.
    #[arg(long, default_value_t = PlayerModel::default().crashes_per_player_hour)]
    crashes_per_player_hour: f64,
    /// Player model: median latency in ms.
    #[arg(long, default_value_t = PlayerModel::default().latency_ms)]
    latency_ms: f64,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// (internal) one worker process of simulated servers, driven over stdin.
    #[command(hide = true)]
    Worker { spec: String },
    /// The HTTP floor: a bare keep-alive responder (two tokio workers)
    /// answering every request with a body of `body_bytes`, for `wrk`
    /// (scripts/bench-players.sh).
    HttpFloor {
        #[arg(long, default_value = "127.0.0.1:0")]
        bind: String,
        #[arg(long, default_value_t = 1000)]
        body_bytes: usize,
    },
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))?;
    if !key.starts_with("HOTSWAP_") {
        return Err(format!("{key} is not a hub setting (HOTSWAP_...)"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Sub::Worker { spec }) => {
            let spec: WorkerSpec = serde_json::from_str(&spec)?;
            // One thread: a worker process is many cheap sockets, and the
            // hub needs the cores more.
            return tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(worker::run(spec));
        }
        Some(Sub::HttpFloor { bind, body_bytes }) => {
            return tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?
                .block_on(hotswap_loadtest::http_floor::serve(&bind, body_bytes));
        }
        None => {}
    }
    if cli.servers == 0 {
        anyhow::bail!("--servers must be at least 1");
    }
    // Raised for this process, its workers and the hub it may start.
    let open_files = hotswap_loadtest::fleet::raise_open_files();
    if cli.nchan && cli.scenario != Scenario::Fanout {
        anyhow::bail!("--nchan is measured beside --scenario fanout only");
    }
    // A hub socket and a floor socket per server, and a subscriber to
    // nginx + nchan with --nchan.
    let sockets = if cli.nchan { 3 } else { 2 };
    let per_process = Layout::choose_per_process(cli.per_process, open_files, sockets)?;
    if cli.hub_url.is_none() && (cli.servers as u64) + FILES_RESERVED > open_files {
        anyhow::bail!(
            "the hub the harness starts needs a socket per server: {} servers need about {} \
             open files, and the limit is {open_files} (raise it with `ulimit -n`)",
            cli.servers,
            cli.servers as u64 + FILES_RESERVED
        );
    }
    let out = cli.out.unwrap_or_else(|| {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from("loadtest-results").join(stamp.to_string())
    });
    let rounds = cli.rounds.unwrap_or(match cli.scenario {
        Scenario::Fanout => 10,
        Scenario::KillSwitch => 3,
        Scenario::Chaos => 10,
        Scenario::LiveEvent => 3,
        _ => 1,
    });
    let options = Options {
        scenario: cli.scenario,
        servers: cli.servers,
        players: cli.players,
        rounds: rounds.max(1),
        duration: Duration::from_secs(cli.duration),
        push_every: Duration::from_secs(cli.push_every.max(1)),
        metrics_ms: cli.metrics_ms.clamp(100, 3_600_000),
        metrics: !cli.no_metrics,
        per_process,
        connect_concurrency: cli.connect_concurrency.max(1),
        regression_factor: cli.regression_factor,
        warmup: Duration::from_secs(cli.warmup),
        ingest_window: Duration::from_secs(cli.ingest_window),
        hub_url: cli.hub_url,
        hub_pid: cli.hub_pid,
        nchan: cli.nchan,
        token: cli.token,
        hub_bin: cli.hub_bin,
        out: out.clone(),
        model: PlayerModel {
            session_minutes: cli.session_minutes,
            crashes_per_player_hour: cli.crashes_per_player_hour,
            latency_ms: cli.latency_ms,
            ..PlayerModel::default()
        },
        hub_env: cli.hub_env,
        nodes: cli.nodes.max(1),
        database_url: cli.database_url,
        redis_url: cli.redis_url,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let report = runtime.block_on(scenarios::run(options))?;
    println!("{}", report.table());
    println!("report: {}", out.join("report.json").display());
    println!("chart:  {}", out.join("latency.svg").display());
    Ok(())
}
