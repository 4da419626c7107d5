//! A fake game server: connects to a hub, prints every config change, and
//! reports made-up player metrics.
//!
//! ```sh
//! HOTSWAP_URL=ws://127.0.0.1:8080 HOTSWAP_API_KEY=hsk_... \
//!   cargo run -p hotswap-client --example game_server -- weapon-balance
//! ```
//! Optional: `HOTSWAP_SERVER_ID`, `HOTSWAP_REGION`, `HOTSWAP_ENVIRONMENT`,
//! `HOTSWAP_SIGNING_KEY` (from `GET /api/v1/signing-key`), `HOTSWAP_PERSIST`.

use hotswap_client::{Client, ClientConfig};
use std::time::Duration;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(api_key) = std::env::var("HOTSWAP_API_KEY") else {
        eprintln!("set HOTSWAP_API_KEY to a game-server key (POST /api/v1/api-keys)");
        std::process::exit(2);
    };
    let subscriptions: Vec<String> = std::env::args().skip(1).collect();
    if subscriptions.is_empty() {
        eprintln!("usage: game_server CONFIG [CONFIG...]");
        std::process::exit(2);
    }
    let mut config = ClientConfig::new(
        env("HOTSWAP_URL", "ws://127.0.0.1:8080"),
        api_key,
        env("HOTSWAP_SERVER_ID", "example-1"),
    )
    .region(env("HOTSWAP_REGION", "EU-WEST"))
    .environment(env("HOTSWAP_ENVIRONMENT", "staging"))
    .capacity(64);
    for name in subscriptions {
        config = config.subscribe(name);
    }
    if let Ok(key) = std::env::var("HOTSWAP_SIGNING_KEY") {
        config = config.verify_with(key);
    }
    if let Ok(path) = std::env::var("HOTSWAP_PERSIST") {
        config = config.persist_to(path);
    }
    let client = Client::start(config)?;
    client.on_change(|change| {
        let latency = chrono_free_now_ms() - change.sent_at_ms;
        println!(
            "{} -> revision {} ({}), {} ms after the hub sent it:\n{}",
            change.config,
            change.current.revision,
            change.current.version,
            latency,
            serde_json::to_string_pretty(&change.current.document).unwrap_or_default()
        );
    });
    client.set_players(40);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n: u64 = 0;
    // One future for the whole loop: a Ctrl-C between two ticks is not lost.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {
                n += 1;
                client.metrics().record_latency_ms(30 + n % 40);
                client.metrics().record_fps(58 + n % 5);
                if n.is_multiple_of(40) {
                    client.metrics().record_session_end(600 + n % 300);
                }
            }
        }
    }
    println!("state at exit: {:?}", client.state());
    client.stop().await;
    Ok(())
}

fn chrono_free_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
