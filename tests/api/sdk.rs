//! The SDK's own defences: signatures it refuses (and the hub records),
//! and the persist file (private, verified again when loaded).

use crate::helpers::{TestApp, balance, connected, sdk_config as client_config};
use crate::on_both_databases;
use crate::sockets::WAIT;
use hotswap_client::{Client, ClientConfig};
use serde_json::Value;
use std::{sync::atomic::Ordering, time::Duration};

async fn setup(app: &TestApp) -> String {
    let created = app
        .create_config("weapon-balance", "GameBalance", "staging")
        .await;
    assert_eq!(created.status, 201);
    app.deploy("weapon-balance", "1.0.0", balance(45)).await;
    app.server_key(&[], &[]).await.0
}

/// A public key other than the hub's: every signature fails against it.
fn another_public_key() -> String {
    use base64::Engine;
    let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
    base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes())
}

async fn the_sdk_refuses_a_badly_signed_config_and_the_hub_records_it(app: TestApp) {
    let key = setup(&app).await;
    let client =
        connected(client_config(&app, &key, "wary-1").verify_with(another_public_key())).await;
    let deployed = app.deploy("weapon-balance", "1.1.0", balance(60)).await;
    let id = deployed.body["id"].as_str().unwrap().to_owned();
    let mut view = Value::Null;
    for _ in 0..250 {
        view = app
            .get(&format!("/api/v1/deployments/{id}/servers"))
            .await
            .body;
        if view["items"][0]["state"] == "failed" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let server = &view["items"][0];
    assert_eq!(server["serverId"], "wary-1", "{view:?}");
    assert_eq!(server["state"], "failed", "{view:?}");
    assert!(
        server["error"]
            .as_str()
            .is_some_and(|e| e.contains("signature refused")),
        "{view:?}"
    );
    assert!(
        client.config("weapon-balance").is_none(),
        "it holds nothing"
    );
    assert!(client.stats().rejected.load(Ordering::Relaxed) >= 1);
    let deployment = app.get(&format!("/api/v1/deployments/{id}")).await.body;
    assert_eq!(deployment["failed"], 1, "{deployment:?}");
    client.stop().await;
}

async fn the_sdk_keeps_its_persist_file_private_and_checks_it_again_on_load(app: TestApp) {
    let key = setup(&app).await;
    let signing_key = app.signing_key().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("configs.json");
    let client = connected(
        client_config(&app, &key, "persisted-1")
            .verify_with(signing_key.clone())
            .persist_to(&path),
    )
    .await;
    assert!(client.wait_for_revision("weapon-balance", 1, WAIT).await);
    client.stop().await;
    for _ in 0..100 {
        if path.exists() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the file holds secrets in clear: {mode:o}");
    }
    // Offline (no hub at this address), the file is what the client serves.
    let offline = |signing: &str| {
        ClientConfig::new("ws://127.0.0.1:9", &key, "persisted-1")
            .environment("staging")
            .subscribe("weapon-balance")
            .verify_with(signing.to_owned())
            .persist_to(&path)
    };
    let intact = Client::start(offline(&signing_key)).unwrap();
    assert_eq!(
        intact.config("weapon-balance").map(|c| c.revision),
        Some(1),
        "a verified file is served at once"
    );
    intact.stop().await;
    // Edited on disk, checksum recomputed to match: the signature gives it away.
    let mut stored: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let entry = &mut stored[0];
    entry["document"]["weapons"]["rifle"]["damage"] = 999.into();
    entry["checksum"] = hotswap_client::document_checksum(&entry["document"]).into();
    std::fs::write(&path, serde_json::to_vec(&stored).unwrap()).unwrap();
    let tampered = Client::start(offline(&signing_key)).unwrap();
    assert!(
        tampered.config("weapon-balance").is_none(),
        "a tampered file is not served"
    );
    tampered.stop().await;
}

on_both_databases!(
    the_sdk_refuses_a_badly_signed_config_and_the_hub_records_it,
    the_sdk_keeps_its_persist_file_private_and_checks_it_again_on_load,
);
