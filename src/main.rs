//! The `hotswap` binary: a thin CLI over the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use hotswap::{
    Actor, Catalog, KeyMaterial, Role, Store, jwt, settings::Settings, startup::Application,
};
use std::{path::PathBuf, sync::Arc};

#[derive(Debug, Parser)]
#[command(
    name = "hotswap",
    version,
    about = "Real-time configuration and live-ops hub for online games"
)]
struct Cli {
    /// A settings file layered over config/default.toml (environment variables still win).
    #[arg(long, global = true, env = "HOTSWAP_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Mint a JWT from the configured HS256 secret and print it.
    Token {
        /// viewer, developer, operator or admin.
        #[arg(long, value_parser = |s: &str| s.parse::<Role>())]
        role: Role,
        /// Who the token names (recorded in the audit trail).
        #[arg(long)]
        sub: String,
        /// Lifetime: 3600, 30m, 8h, 7d or PT8H.
        #[arg(long, default_value = "8h", value_parser = jwt::parse_duration)]
        ttl: std::time::Duration,
        /// A player attribute the token vouches for, `name=value` (a
        /// player token's `attrs` claim; repeat it for more).
        #[arg(long = "attr")]
        attrs: Vec<String>,
    },
    /// The operator CLI against a hub (`--url`, `--token`).
    #[command(after_help = hotswap::ctl::EXIT_CODES)]
    Ctl(hotswap::ctl::CtlArgs),
    /// Reports from stored telemetry.
    Report {
        #[command(subcommand)]
        report: ReportKind,
    },
    /// Manage the key that encrypts secret config fields.
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
}

#[derive(Debug, Subcommand)]
enum ReportKind {
    /// The balance loop's flags: the most over- and under-performing
    /// content ids (win contribution, from draft_pick and run_end) and the
    /// tiers with too high or too low fail rates.
    Balance {
        /// Start of the window: RFC 3339 or a date (2026-11-01).
        #[arg(long, value_parser = hotswap::domain::kpis::parse_instant)]
        from: i64,
        /// End of the window (exclusive); now by default.
        #[arg(long, value_parser = hotswap::domain::kpis::parse_instant)]
        to: Option<i64>,
        /// How many content ids each way.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Fewest runs ended for a content id or a tier to be judged.
        #[arg(long, default_value_t = 20)]
        min_runs: u64,
        /// A tier failed less often than this is too easy.
        #[arg(long, default_value_t = 0.2)]
        min_fail: f64,
        /// A tier failed more often than this is too hard.
        #[arg(long, default_value_t = 0.8)]
        max_fail: f64,
    },
}

#[derive(Debug, Subcommand)]
enum SecretsAction {
    /// Re-encrypt every stored secret under the current key
    /// (keep the old key in secrets.previous_keys until this has run everywhere).
    Rotate,
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The CLI talks to a hub: it reads none of the hub's settings.
    let command = match cli.command.unwrap_or(Command::Serve) {
        Command::Ctl(args) => std::process::exit(hotswap::ctl::run(args).await),
        other => other,
    };
    let settings = Settings::load(cli.config.as_deref())?;
    hotswap::observability::init_logging(&settings.log);
    match command {
        Command::Ctl(_) => unreachable!("run above"),
        Command::Serve => {
            hotswap::startup::raise_open_files_limit();
            let application = Application::build(settings).await?;
            application.run_until_stopped().await?;
        }
        Command::Migrate => {
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            store.close().await;
            tracing::info!("migrations applied");
        }
        Command::Token {
            role,
            sub,
            ttl,
            attrs,
        } => {
            anyhow::ensure!(
                !sub.is_empty() && sub.len() <= 256,
                "--sub must be 1-256 characters"
            );
            anyhow::ensure!(
                attrs.is_empty() || role == hotswap::Role::Player,
                "--attr is for player tokens (--role player)"
            );
            let mut vouched = serde_json::Map::new();
            for attr in &attrs {
                let (name, value) = attr
                    .split_once('=')
                    .with_context(|| format!("--attr {attr:?}: name=value"))?;
                vouched.insert(name.to_owned(), hotswap::attribute_value(value));
            }
            let setup = jwt::Authenticator::from_settings(
                &settings.auth,
                settings.environment,
                &settings.data_dir,
            )?;
            let vouched = (!vouched.is_empty()).then_some(vouched);
            println!(
                "{}",
                setup.authenticator.mint_with(&sub, role, ttl, vouched)?
            );
        }
        Command::Secrets {
            action: SecretsAction::Rotate,
        } => {
            let keys = Arc::new(KeyMaterial::from_settings(&settings)?);
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            let catalog = Catalog::new(store.clone(), settings.limits.clone(), keys);
            let actor = Actor {
                subject: "cli:secrets-rotate".into(),
                role: Some(Role::Admin),
                source: None,
                request_id: None,
            };
            let (versions, values) = catalog
                .rotate_secrets(&actor)
                .await
                .context("rotating secrets")?;
            store.close().await;
            println!("re-encrypted {values} secret values in {versions} versions");
        }
        Command::Report {
            report:
                ReportKind::Balance {
                    from,
                    to,
                    top,
                    min_runs,
                    min_fail,
                    max_fail,
                },
        } => {
            let to = to.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
            anyhow::ensure!(from < to, "--from must be before --to");
            anyhow::ensure!((1..=100).contains(&top), "--top must be 1-100");
            anyhow::ensure!(
                (0.0..=1.0).contains(&min_fail)
                    && (0.0..=1.0).contains(&max_fail)
                    && min_fail <= max_fail,
                "--min-fail and --max-fail are fractions, min <= max"
            );
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            let query = hotswap::BalanceQuery {
                from_ms: from,
                to_ms: to,
                top,
                min_runs,
                min_fail,
                max_fail,
            };
            let report = hotswap::balance_report(&store, &query).await;
            store.close().await;
            print!("{}", report?);
        }
    }
    Ok(())
}
