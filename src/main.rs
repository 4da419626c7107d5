//! The `hotswap` binary: a thin CLI over the library.

use clap::{Parser, Subcommand};
use hotswap::{settings::Settings, startup::Application, store::Store};
use std::path::PathBuf;

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
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load(cli.config.as_deref())?;
    hotswap::observability::init_logging(&settings.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let application = Application::build(settings).await?;
            application.run_until_stopped().await?;
        }
        Command::Migrate => {
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            store.close().await;
            tracing::info!("migrations applied");
        }
    }
    Ok(())
}
