//! `hotswap ctl`: the operator CLI, against any hub (`--url`, `--token`,
//! or `HOTSWAP_URL` / `HOTSWAP_TOKEN`, or a file of `url = ...` and
//! `token = ...` lines). Every command prints the hub's answer as a table
//! or as JSON (`--output`); a refusal prints the problem's detail and
//! field errors. `status --watch` follows a deployment to its end, so CI
//! can gate on it.
//!
//! Exit codes: 0 done (a watched deployment completed); 1 the hub refused
//! the request, or the arguments are wrong; 2 a watched deployment rolled
//! back; 3 it failed or was cancelled; 4 `--timeout` passed first; 5 no
//! hub answered.
//!
//! # Layout
//! - `mod.rs`: the arguments and the commands.
//! - `client.rs`: REST calls, problem+json read into an error.
//! - `output.rs`: tables and JSON.

mod client;
mod output;

pub(crate) use client::tls_config;

use client::{Api, CallError, encode};
use output::{Output, fields, print, table};
use serde_json::{Value, json};
use std::{path::PathBuf, time::Duration};

/// The exit codes, as `hotswap ctl --help` prints them.
pub const EXIT_CODES: &str = "Exit codes: 0 done (a watched deployment completed); \
1 the hub refused the request (its problem printed) or the arguments are wrong; \
2 a watched deployment rolled back; 3 it failed or was cancelled; \
4 --timeout passed first; 5 no hub answered.";

/// Exit codes (see the module's documentation).
pub mod exit {
    pub const OK: i32 = 0;
    pub const REFUSED: i32 = 1;
    pub const ROLLED_BACK: i32 = 2;
    pub const FAILED: i32 = 3;
    pub const TIMEOUT: i32 = 4;
    pub const UNREACHABLE: i32 = 5;
}

/// Where the hub is and who calls it.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// The hub's base URL (http://host:port).
    #[arg(long, env = "HOTSWAP_URL")]
    url: Option<String>,
    /// A bearer token (`hotswap token --role operator --sub ci`).
    #[arg(long, env = "HOTSWAP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file of `url = ...` and `token = ...` lines, read for what
    /// neither a flag nor the environment gave (default:
    /// ~/.config/hotswap/ctl.toml when it exists).
    #[arg(long = "ctl-config")]
    ctl_config: Option<PathBuf>,
    /// A PEM certificate (a CA's, or the hub's own) an https:// hub's
    /// certificate is checked against, besides the system's.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// `table` (default) or `json`.
    #[arg(long, value_enum, default_value = "table", global = true)]
    output: Output,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Debug, clap::Subcommand)]
enum CtlCommand {
    /// Configs and their versions.
    Configs {
        #[command(subcommand)]
        action: ConfigsAction,
    },
    /// Deploys a version of a config.
    Deploy {
        #[arg(value_name = "CONFIG")]
        config_name: String,
        version: String,
        /// Canary, Rolling, BlueGreen, Direct, Geographic or ABTest (any case).
        #[arg(long, default_value = "Canary", value_parser = strategy_name)]
        strategy: String,
        /// Phase percentages, e.g. 10,50,100.
        #[arg(long, value_delimiter = ',')]
        phases: Vec<f64>,
        /// Follow it to its end (exit code as `status --watch`).
        #[arg(long)]
        watch: bool,
        /// With --watch: give up after this long (30m, 3600, PT1H).
        #[arg(long, default_value = "30m", value_parser = crate::auth::jwt::parse_duration)]
        timeout: Duration,
    },
    /// Deployments.
    Deployments {
        #[command(subcommand)]
        action: DeploymentsAction,
    },
    /// A deployment's state; with --watch, followed to its end.
    Status {
        id: String,
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value = "30m", value_parser = crate::auth::jwt::parse_duration)]
        timeout: Duration,
    },
    /// Live events.
    Events {
        #[command(subcommand)]
        action: EventsAction,
    },
    /// Experiments.
    Experiments {
        #[command(subcommand)]
        action: ExperimentsAction,
    },
    /// What a player sees of some configs.
    Resolve {
        player: String,
        /// Config names, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        configs: Vec<String>,
        /// Preview another instant (RFC 3339).
        #[arg(long)]
        at: Option<String>,
        /// Say which layer set each path.
        #[arg(long)]
        explain: bool,
        /// A player attribute, name=value (repeat it).
        #[arg(long = "attr")]
        attrs: Vec<String>,
    },
    /// Game servers.
    Servers {
        #[command(subcommand)]
        action: ServersAction,
    },
}

#[derive(Debug, clap::Subcommand)]
enum ConfigsAction {
    List,
    Get {
        name: String,
    },
    /// Uploads FILE (JSON or YAML) as a new version.
    Push {
        name: String,
        file: PathBuf,
        #[arg(long)]
        version: String,
        #[arg(long)]
        message: Option<String>,
    },
    /// What changed between two versions.
    Diff {
        name: String,
        from: String,
        to: String,
    },
}

#[derive(Debug, clap::Subcommand)]
enum DeploymentsAction {
    List,
    Get { id: String },
    Pause { id: String },
    Resume { id: String },
    Promote { id: String },
    Rollback { id: String },
    Approve { id: String },
}

#[derive(Debug, clap::Subcommand)]
enum EventsAction {
    List,
    /// Creates the live event FILE (JSON or YAML) describes.
    Create {
        file: PathBuf,
    },
    /// Occurrences past, active and scheduled, with overlaps.
    Timeline,
}

#[derive(Debug, clap::Subcommand)]
enum ExperimentsAction {
    List,
    Results { name: String },
}

#[derive(Debug, clap::Subcommand)]
enum ServersAction {
    List,
}

/// A strategy's name as the hub spells it, from any case.
fn strategy_name(text: &str) -> Result<String, String> {
    crate::domain::kinds::Strategy::ALL
        .iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text))
        .map(|s| s.as_str().to_owned())
        .ok_or_else(|| {
            let names: Vec<&str> = crate::domain::kinds::Strategy::ALL
                .iter()
                .map(|s| s.as_str())
                .collect();
            format!("one of {}", names.join(", "))
        })
}

/// Every item of a paged list (`{items, nextCursor}`), at most 100 pages.
async fn all_pages(api: &Api, path: &str) -> Result<Value, CallError> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let page_path = match &cursor {
            Some(cursor) => format!("{path}?cursor={}", encode(cursor)),
            None => path.to_owned(),
        };
        let page = api.get(&page_path).await?;
        all.extend(items(&page));
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    Ok(json!({ "items": all }))
}

/// Reads `url = ...` / `token = ...` lines (quotes optional).
fn file_settings(path: &std::path::Path) -> Result<(Option<String>, Option<String>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut url, mut token) = (None, None);
    for line in text.lines().map(str::trim) {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_owned();
        match key.trim() {
            "url" => url = Some(value),
            "token" => token = Some(value),
            _ => {}
        }
    }
    Ok((url, token))
}

/// A JSON or YAML file as a value.
fn document(path: &std::path::Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).or_else(|_| {
        serde_yaml_ng::from_str::<Value>(&text)
            .map_err(|e| format!("{}: neither JSON nor YAML ({e})", path.display()))
    })
}

fn items(value: &Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.clone(),
        other => other["items"].as_array().cloned().unwrap_or_default(),
    }
}

const DEPLOYMENT_COLUMNS: [(&str, &str); 8] = [
    ("ID", "/id"),
    ("CONFIG", "/config"),
    ("VERSION", "/version"),
    ("STRATEGY", "/strategy"),
    ("STATUS", "/status"),
    ("PHASE", "/phase"),
    ("ACKED", "/acked"),
    ("TARGETS", "/targets"),
];

fn deployment_fields(d: &Value) -> String {
    fields(
        d,
        &[
            ("id", "/id"),
            ("config", "/config"),
            ("version", "/version"),
            ("environment", "/environment"),
            ("strategy", "/strategy"),
            ("status", "/status"),
            ("phase", "/phase"),
            ("targets", "/targets"),
            ("pushed", "/pushed"),
            ("acked", "/acked"),
            ("failed", "/failed"),
            ("rollback", "/rollback/reason"),
            ("created by", "/createdBy"),
        ],
    )
}

/// Runs one command; the exit code.
pub async fn run(args: CtlArgs) -> i32 {
    let (mut url, mut token) = (args.url.clone(), args.token.clone());
    let config_file = args.ctl_config.clone().or_else(|| {
        std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".config/hotswap/ctl.toml"))
            .filter(|path| path.exists())
    });
    if let Some(path) = config_file.filter(|_| url.is_none() || token.is_none()) {
        match file_settings(&path) {
            Ok((file_url, file_token)) => {
                url = url.or(file_url);
                token = token.or(file_token);
            }
            Err(why) => {
                eprintln!("error: {why}");
                return exit::REFUSED;
            }
        }
    }
    let Some(url) = url else {
        eprintln!("error: which hub? give --url, HOTSWAP_URL or a ctl config file");
        return exit::REFUSED;
    };
    let api = match Api::new(&url, token, args.ca_cert.as_deref()) {
        Ok(api) => api,
        Err(why) => {
            eprintln!("error: {why}");
            return exit::REFUSED;
        }
    };
    match command(&api, args.output, args.command).await {
        Ok(code) => code,
        Err(Failure::Call(CallError::Transport(why))) => {
            eprintln!("error: {why}");
            exit::UNREACHABLE
        }
        Err(Failure::Call(problem)) => {
            eprintln!("error: {problem}");
            exit::REFUSED
        }
        Err(Failure::Usage(why)) => {
            eprintln!("error: {why}");
            exit::REFUSED
        }
    }
}

enum Failure {
    Call(CallError),
    Usage(String),
}

impl From<CallError> for Failure {
    fn from(error: CallError) -> Self {
        Failure::Call(error)
    }
}

async fn command(api: &Api, output: Output, command: CtlCommand) -> Result<i32, Failure> {
    match command {
        CtlCommand::Configs { action } => configs(api, output, action).await,
        CtlCommand::Deploy {
            config_name: config,
            version,
            strategy,
            phases,
            watch,
            timeout,
        } => {
            let mut request = json!({"config": config, "version": version, "strategy": strategy});
            if !phases.is_empty() {
                request["phases"] = json!(phases);
            }
            let created = api.post("/api/v1/deployments", &request).await?;
            let id = created["id"].as_str().unwrap_or_default().to_owned();
            if watch {
                if output == Output::Table {
                    println!("deployment {id} created");
                }
                return Ok(watch_deployment(api, output, &id, timeout).await?);
            }
            print(output, &created, deployment_fields);
            Ok(exit::OK)
        }
        CtlCommand::Deployments { action } => {
            let (path, body) = match &action {
                DeploymentsAction::List => {
                    let list = all_pages(api, "/api/v1/deployments").await?;
                    print(output, &list, |l| table(&items(l), &DEPLOYMENT_COLUMNS));
                    return Ok(exit::OK);
                }
                DeploymentsAction::Get { id } => {
                    let one = api
                        .get(&format!("/api/v1/deployments/{}", encode(id)))
                        .await?;
                    print(output, &one, deployment_fields);
                    return Ok(exit::OK);
                }
                DeploymentsAction::Pause { id } => (format!("{}/pause", encode(id)), json!({})),
                DeploymentsAction::Resume { id } => (format!("{}/resume", encode(id)), json!({})),
                DeploymentsAction::Promote { id } => (format!("{}/promote", encode(id)), json!({})),
                DeploymentsAction::Rollback { id } => {
                    (format!("{}/rollback", encode(id)), json!({}))
                }
                DeploymentsAction::Approve { id } => (format!("{}/approve", encode(id)), json!({})),
            };
            let done = api
                .post(&format!("/api/v1/deployments/{path}"), &body)
                .await?;
            print(output, &done, deployment_fields);
            Ok(exit::OK)
        }
        CtlCommand::Status { id, watch, timeout } => {
            if watch {
                return Ok(watch_deployment(api, output, &id, timeout).await?);
            }
            let one = api
                .get(&format!("/api/v1/deployments/{}", encode(&id)))
                .await?;
            print(output, &one, deployment_fields);
            Ok(exit::OK)
        }
        CtlCommand::Events { action } => {
            match action {
                EventsAction::List => {
                    let list = api.get("/api/v1/live-events").await?;
                    print(output, &list, |l| {
                        table(
                            &items(l),
                            &[
                                ("NAME", "/name"),
                                ("TYPE", "/definition/eventType"),
                                ("STATE", "/state"),
                                ("REGIONS", "/definition/regions"),
                                ("PRIORITY", "/definition/priority"),
                            ],
                        )
                    });
                }
                EventsAction::Create { file } => {
                    let body = document(&file).map_err(Failure::Usage)?;
                    let created = api.post("/api/v1/live-events", &body).await?;
                    print(output, &created, |e| {
                        fields(e, &[("name", "/name"), ("state", "/state")])
                    });
                }
                EventsAction::Timeline => {
                    let timeline = api.get("/api/v1/live-events/timeline").await?;
                    print(output, &timeline, |t| {
                        table(
                            &items(t),
                            &[
                                ("EVENT", "/event"),
                                ("STATE", "/state"),
                                ("START", "/start"),
                                ("END", "/end"),
                                ("REGION", "/region"),
                                ("OVERLAPS", "/overlaps"),
                            ],
                        )
                    });
                }
            }
            Ok(exit::OK)
        }
        CtlCommand::Experiments { action } => {
            match action {
                ExperimentsAction::List => {
                    let list = api.get("/api/v1/experiments").await?;
                    print(output, &list, |l| {
                        table(
                            &items(l),
                            &[
                                ("NAME", "/name"),
                                ("CONFIG", "/config"),
                                ("STATUS", "/status"),
                                ("WINNER", "/winner"),
                            ],
                        )
                    });
                }
                ExperimentsAction::Results { name } => {
                    let results = api
                        .get(&format!("/api/v1/experiments/{}/results", encode(&name)))
                        .await?;
                    print(output, &results, render_results);
                }
            }
            Ok(exit::OK)
        }
        CtlCommand::Resolve {
            player,
            configs,
            at,
            explain,
            attrs,
        } => {
            let mut query = format!("configs={}", encode(&configs.join(",")));
            if let Some(at) = at {
                query.push_str(&format!("&at={}", encode(&at)));
            }
            if explain {
                query.push_str("&explain=true");
            }
            for attr in &attrs {
                let (name, value) = attr
                    .split_once('=')
                    .ok_or_else(|| Failure::Usage(format!("--attr {attr:?}: name=value")))?;
                query.push_str(&format!("&{}={}", encode(name), encode(value)));
            }
            let answer = api
                .get(&format!(
                    "/api/v1/players/{}/config?{query}",
                    encode(&player)
                ))
                .await?;
            print(output, &answer, |a| {
                serde_json::to_string_pretty(&a["configs"]).unwrap_or_default()
            });
            Ok(exit::OK)
        }
        CtlCommand::Servers {
            action: ServersAction::List,
        } => {
            let list = api.get("/api/v1/game-servers").await?;
            print(output, &list, |l| {
                table(
                    &items(l),
                    &[
                        ("SERVER", "/serverId"),
                        ("REGION", "/region"),
                        ("ENVIRONMENT", "/environment"),
                        ("STATUS", "/status"),
                        ("CONNECTED", "/connected"),
                        ("PLAYERS", "/players"),
                        ("APPLIED", "/applied"),
                    ],
                )
            });
            Ok(exit::OK)
        }
    }
}

async fn configs(api: &Api, output: Output, action: ConfigsAction) -> Result<i32, Failure> {
    match action {
        ConfigsAction::List => {
            let list = all_pages(api, "/api/v1/configs").await?;
            print(output, &list, |l| {
                table(
                    &items(l),
                    &[
                        ("NAME", "/name"),
                        ("TYPE", "/configType"),
                        ("ENVIRONMENT", "/environment"),
                        ("LATEST", "/latestVersion"),
                        ("REVISION", "/latestRevision"),
                    ],
                )
            });
        }
        ConfigsAction::Get { name } => {
            let one = api
                .get(&format!("/api/v1/configs/{}", encode(&name)))
                .await?;
            print(output, &one, |c| {
                fields(
                    c,
                    &[
                        ("name", "/name"),
                        ("type", "/configType"),
                        ("environment", "/environment"),
                        ("schema", "/schemaId"),
                        ("latest version", "/latestVersion"),
                        ("latest revision", "/latestRevision"),
                    ],
                )
            });
        }
        ConfigsAction::Push {
            name,
            file,
            version,
            message,
        } => {
            let content = document(&file).map_err(Failure::Usage)?;
            let mut body = json!({"version": version, "content": content});
            if let Some(message) = message {
                body["message"] = json!(message);
            }
            let stored = api
                .post(
                    &format!("/api/v1/configs/{}/versions", encode(&name)),
                    &body,
                )
                .await?;
            print(output, &stored, |v| {
                fields(
                    v,
                    &[
                        ("version", "/version"),
                        ("revision", "/revision"),
                        ("checksum", "/checksum"),
                    ],
                )
            });
        }
        ConfigsAction::Diff { name, from, to } => {
            let diff = api
                .get(&format!(
                    "/api/v1/configs/{}/versions/{}/diff/{}",
                    encode(&name),
                    encode(&from),
                    encode(&to)
                ))
                .await?;
            print(output, &diff, |d| {
                serde_json::to_string_pretty(d).unwrap_or_default()
            });
        }
    }
    Ok(exit::OK)
}

/// One line per metric and variant: value, interval, lift and p-values.
fn render_results(results: &Value) -> String {
    let mut rows = Vec::new();
    for metric in results["metrics"].as_array().into_iter().flatten() {
        for variant in metric["variants"].as_array().into_iter().flatten() {
            let mut row = variant.clone();
            row["metric"] = metric["name"].clone();
            rows.push(row);
        }
    }
    let mut text = format!(
        "experiment {}  status {}  sample ratio mismatch: {}\n",
        output::cell(&results["experiment"]),
        output::cell(&results["status"]),
        output::cell(&results["sampleRatio"]["mismatch"]),
    );
    text.push_str(&table(
        &rows,
        &[
            ("METRIC", "/metric"),
            ("VARIANT", "/variant"),
            ("UNITS", "/units"),
            ("VALUE", "/value"),
            ("LOW", "/interval/low"),
            ("HIGH", "/interval/high"),
            ("LIFT", "/vsControl/relative"),
            ("P", "/vsControl/pValue"),
            ("SEQUENTIAL P", "/vsControl/sequentialPValue"),
        ],
    ));
    text
}

/// The exit code a deployment's final status calls for; none while it runs.
fn final_code(status: &str) -> Option<i32> {
    match status {
        "Completed" => Some(exit::OK),
        "RolledBack" => Some(exit::ROLLED_BACK),
        "Failed" | "Cancelled" => Some(exit::FAILED),
        _ => None,
    }
}

/// Whether a failed poll is worth another try before the deadline: no
/// answer, the rate limit, or the hub unavailable or failing.
fn passing(error: &CallError) -> bool {
    match error {
        CallError::Transport(_) => true,
        CallError::Problem { status, .. } => *status == 429 || *status >= 500,
    }
}

/// Follows a deployment, printing a line each time it moves, until it
/// ends or `timeout` passes. Polls every 2 s; a poll that fails in passing
/// (no answer, 429, 5xx: a hub restarting, a shared token's rate limit)
/// is tried again until the deadline; any other refusal ends the watch.
async fn watch_deployment(
    api: &Api,
    output: Output,
    id: &str,
    timeout: Duration,
) -> Result<i32, CallError> {
    let deadline = std::time::Instant::now() + timeout;
    let path = format!("/api/v1/deployments/{}", encode(id));
    let mut last_line = String::new();
    let mut last: Option<Value> = None;
    let mut told = false;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let polled =
            actix_web::rt::time::timeout(left.max(Duration::from_millis(100)), api.get(&path))
                .await;
        match polled {
            Ok(Ok(deployment)) => {
                let status = deployment["status"].as_str().unwrap_or("?").to_owned();
                let line = format!(
                    "{status}  phase {}  acked {}/{}  failed {}{}",
                    output::cell(&deployment["phase"]),
                    output::cell(&deployment["acked"]),
                    output::cell(&deployment["targets"]),
                    output::cell(&deployment["failed"]),
                    deployment["rollback"]["reason"]
                        .as_str()
                        .map(|r| format!("  rollback: {r}"))
                        .unwrap_or_default(),
                );
                if line != last_line && output == Output::Table {
                    println!("{line}");
                    last_line = line;
                }
                if let Some(code) = final_code(&status) {
                    if output == Output::Json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&deployment).unwrap_or_default()
                        );
                    }
                    return Ok(code);
                }
                last = Some(deployment);
            }
            Ok(Err(error)) if passing(&error) => {
                if !told {
                    eprintln!("warning: {error}; trying again until the timeout");
                    told = true;
                }
            }
            Ok(Err(error)) => return Err(error),
            Err(_) => {}
        }
        if std::time::Instant::now() >= deadline {
            eprintln!("error: deployment {id} did not end within {timeout:?}");
            if let (Output::Json, Some(last)) = (output, &last) {
                println!("{}", serde_json::to_string_pretty(last).unwrap_or_default());
            }
            return Ok(exit::TIMEOUT);
        }
        let pause = deadline
            .saturating_duration_since(std::time::Instant::now())
            .min(Duration::from_secs(2));
        actix_web::rt::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_read_in_any_case_and_passing_failures_are_retried() {
        assert_eq!(strategy_name("canary").unwrap(), "Canary");
        assert_eq!(strategy_name("BLUEGREEN").unwrap(), "BlueGreen");
        assert!(strategy_name("yolo").unwrap_err().contains("Canary"));
        let problem = |status| CallError::Problem {
            status,
            code: "x".into(),
            message: "y".into(),
        };
        assert!(passing(&problem(429)) && passing(&problem(503)));
        assert!(!passing(&problem(404)) && !passing(&problem(401)));
        assert!(passing(&CallError::Transport("down".into())));
    }

    #[test]
    fn a_deployments_end_is_its_exit_code() {
        assert_eq!(final_code("Completed"), Some(exit::OK));
        assert_eq!(final_code("RolledBack"), Some(exit::ROLLED_BACK));
        assert_eq!(final_code("Cancelled"), Some(exit::FAILED));
        assert_eq!(final_code("RollingBack"), None);
        assert_eq!(final_code("InProgress"), None);
    }

    #[test]
    fn a_ctl_file_gives_url_and_token() {
        let dir = tempfile_dir();
        let path = dir.join("ctl.toml");
        std::fs::write(
            &path,
            "# the staging hub\nurl = \"http://127.0.0.1:8080\"\ntoken = abc\n",
        )
        .unwrap();
        assert_eq!(
            file_settings(&path).unwrap(),
            (Some("http://127.0.0.1:8080".into()), Some("abc".into()))
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hotswap-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
