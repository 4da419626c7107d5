use crate::helpers::{TestApp, balance};
use crate::on_both_databases;
use serde_json::json;

async fn setup(app: &TestApp, environment: &str) {
    let response = app
        .create_config("weapon-balance", "GameBalance", environment)
        .await;
    assert_eq!(response.status, 201, "{:?}", response.body);
}

async fn uploading_a_version_stores_it_with_revision_checksum_and_report(app: TestApp) {
    setup(&app, "staging").await;
    let response = app
        .post_version("weapon-balance", "1.0.0", balance(45))
        .await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    assert_eq!(
        response.header("location"),
        Some("/api/v1/configs/weapon-balance/versions/1.0.0")
    );
    let body = &response.body;
    assert_eq!(body["revision"], 1);
    assert_eq!(body["author"], "test-admin");
    assert_eq!(
        body["checksum"],
        hotswap_client::document_checksum(&balance(45))
    );
    assert_eq!(body["content"], balance(45));
    assert_eq!(body["breakingChanges"], false);

    let second = app
        .post_version("weapon-balance", "1.1.0", balance(50))
        .await;
    assert_eq!(second.body["revision"], 2);
    let config = app.get("/api/v1/configs/weapon-balance").await;
    assert_eq!(config.body["latestVersion"], "1.1.0");
    assert_eq!(config.body["latestRevision"], 2);

    let report = app
        .get("/api/v1/configs/weapon-balance/versions/1.1.0/validation-report")
        .await;
    assert_eq!(report.status, 200);
    assert_eq!(report.body["valid"], true);
    assert_eq!(report.body["schemaId"], "game-balance");
    assert_eq!(report.body["schemaVersion"], "1.0.0");
    let latest = app
        .get("/api/v1/configs/weapon-balance/versions/latest")
        .await;
    assert_eq!(latest.body["version"], "1.1.0");
}

async fn a_yaml_body_is_accepted(app: TestApp) {
    setup(&app, "staging").await;
    let yaml = "version: 2.0.0\nmessage: from CI\ncontent:\n  weapons:\n    rifle:\n      damage: 45\n      fireRate: 600\n";
    let response = app
        .send_raw(
            "POST",
            "/api/v1/configs/weapon-balance/versions",
            "application/yaml",
            yaml.into(),
        )
        .await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    assert_eq!(
        response.body["content"]["weapons"]["rifle"]["fireRate"],
        600
    );
    assert_eq!(response.body["message"], "from CI");
    let broken = app
        .send_raw(
            "POST",
            "/api/v1/configs/weapon-balance/versions",
            "application/yaml",
            b"version: [1\n".to_vec(),
        )
        .await;
    assert_eq!(broken.status, 400);
}

async fn duplicate_and_lower_versions_return_409_naming_the_latest(app: TestApp) {
    setup(&app, "staging").await;
    assert_eq!(
        app.post_version("weapon-balance", "1.2.0", balance(45))
            .await
            .status,
        201
    );
    for (version, code) in [
        ("1.2.0", "version_exists"),
        ("1.1.9", "version_not_greater"),
        ("1.2.0+build.7", "version_not_greater"),
        ("1.2.0-rc.1", "version_not_greater"),
    ] {
        let response = app
            .post_version("weapon-balance", version, balance(46))
            .await;
        assert_eq!(response.status, 409, "{version}");
        assert_eq!(response.body["code"], code, "{version}");
        assert_eq!(response.body["latest"], "1.2.0", "{version}");
    }
    let not_semver = app.post_version("weapon-balance", "v2", balance(46)).await;
    assert_eq!(not_semver.status, 422);
    assert_eq!(not_semver.error_paths()[0].0, "/version");
}

async fn an_invalid_document_is_refused_with_every_error(app: TestApp) {
    setup(&app, "staging").await;
    let document = json!({
        "weapons": {
            "rifle": {"damage": 1500, "fireRate": 0},
            "bow": {"fireRate": 30}
        },
        "characters": {"tank": {"health": 0, "armor": 20000, "abilities": {"shield": {"cooldown": 0.01}}}}
    });
    let response = app.post_version("weapon-balance", "1.0.0", document).await;
    assert_eq!(response.status, 422, "{:?}", response.body);
    assert_eq!(response.body["code"], "validation_failed");
    assert_eq!(
        response.error_paths(),
        vec![
            (
                "/content/characters/tank/abilities/shield/cooldown".to_owned(),
                "minimum".to_owned()
            ),
            (
                "/content/characters/tank/armor".to_owned(),
                "maximum".to_owned()
            ),
            (
                "/content/characters/tank/health".to_owned(),
                "minimum".to_owned()
            ),
            (
                "/content/weapons/bow/damage".to_owned(),
                "required".to_owned()
            ),
            (
                "/content/weapons/rifle/damage".to_owned(),
                "maximum".to_owned()
            ),
            (
                "/content/weapons/rifle/fireRate".to_owned(),
                "minimum".to_owned()
            ),
        ]
    );
    assert_eq!(response.body["report"]["valid"], false);
    assert_eq!(
        response.body["report"]["errors"].as_array().unwrap().len(),
        6
    );
    // Nothing was stored.
    let history = app.get("/api/v1/configs/weapon-balance/versions").await;
    assert_eq!(history.body["items"].as_array().unwrap().len(), 0);
}

async fn oversize_and_overdeep_documents_are_refused(app: TestApp) {
    assert_eq!(
        app.create_config("blob", "Custom", "staging").await.status,
        201
    );
    // The test hub allows 64 KiB documents and 128 KiB bodies.
    let big = json!({"data": "x".repeat(70 * 1024)});
    let response = app.post_version("blob", "1.0.0", big).await;
    assert_eq!(response.status, 413);
    assert_eq!(response.body["code"], "document_too_large");
    let huge_body = json!({"version": "1.0.0", "content": {"data": "x".repeat(200 * 1024)}});
    let response = app
        .post_json("/api/v1/configs/blob/versions", &huge_body)
        .await;
    assert_eq!(response.status, 413);
    assert_eq!(response.body["code"], "body_too_large");
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({"d": deep});
    }
    let response = app.post_version("blob", "1.0.0", deep).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.body["code"], "document_too_deep");
    assert_eq!(
        app.post_version("blob", "1.0.0", json!({"fine": true}))
            .await
            .status,
        201
    );
}

async fn history_lists_newest_first_with_paging(app: TestApp) {
    setup(&app, "staging").await;
    for (i, version) in ["1.0.0", "1.0.1", "1.1.0", "2.0.0", "2.0.1"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            app.post_version("weapon-balance", version, balance(40 + i as u32))
                .await
                .status,
            201
        );
    }
    let mut seen = Vec::new();
    let mut path = "/api/v1/configs/weapon-balance/versions?limit=2".to_owned();
    loop {
        let page = app.get(&path).await;
        assert_eq!(page.status, 200);
        for item in page.body["items"].as_array().unwrap() {
            assert!(item.get("content").is_none(), "history omits documents");
            seen.push(item["version"].as_str().unwrap().to_owned());
        }
        match page.body["nextCursor"].as_str() {
            Some(cursor) => {
                path = format!("/api/v1/configs/weapon-balance/versions?limit=2&cursor={cursor}")
            }
            None => break,
        }
    }
    assert_eq!(seen, ["2.0.1", "2.0.0", "1.1.0", "1.0.1", "1.0.0"]);
}

async fn the_diff_between_two_versions_has_a_patch_and_readable_changes(app: TestApp) {
    setup(&app, "staging").await;
    app.post_version("weapon-balance", "1.0.0", balance(45))
        .await;
    let mut next = balance(50);
    next["weapons"]["smg"] = json!({"damage": 20, "fireRate": 900});
    next["weapons"]["rifle"]
        .as_object_mut()
        .unwrap()
        .remove("reloadTime");
    app.post_version("weapon-balance", "1.1.0", next.clone())
        .await;
    let diff = app
        .get("/api/v1/configs/weapon-balance/versions/1.0.0/diff/1.1.0")
        .await;
    assert_eq!(diff.status, 200, "{:?}", diff.body);
    assert_eq!(diff.body["from"]["version"], "1.0.0");
    assert_eq!(diff.body["to"]["revision"], 2);
    let changes: Vec<(String, String)> = diff.body["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["path"].as_str().unwrap().to_owned(),
                c["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            ("/weapons/rifle/damage".to_owned(), "modified".to_owned()),
            ("/weapons/rifle/reloadTime".to_owned(), "removed".to_owned()),
            ("/weapons/smg".to_owned(), "added".to_owned()),
        ]
    );
    let mut document = balance(45);
    let patch: json_patch::Patch = serde_json::from_value(diff.body["patch"].clone()).unwrap();
    json_patch::patch(&mut document, &patch).unwrap();
    assert_eq!(document, next);
    assert_eq!(
        app.get("/api/v1/configs/weapon-balance/versions/1.0.0/diff/9.9.9")
            .await
            .status,
        404
    );
}

async fn rollback_creates_a_new_version_with_the_old_content(app: TestApp) {
    setup(&app, "staging").await;
    app.post_version("weapon-balance", "1.2.0", balance(45))
        .await;
    app.post_version("weapon-balance", "1.3.0", balance(90))
        .await;
    let response = app
        .post_json(
            "/api/v1/configs/weapon-balance/rollback",
            &json!({"toVersion": "1.2.0"}),
        )
        .await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    assert_eq!(response.body["version"], "1.3.1");
    assert_eq!(response.body["revision"], 3);
    assert_eq!(response.body["rollbackOf"], "1.2.0");
    assert_eq!(response.body["tags"], json!(["rollback"]));
    assert_eq!(response.body["content"], balance(45));
    let explicit = app
        .post_json(
            "/api/v1/configs/weapon-balance/rollback",
            &json!({"toVersion": "1.3.0", "version": "2.0.0"}),
        )
        .await;
    assert_eq!(explicit.body["version"], "2.0.0");
    assert_eq!(explicit.body["content"], balance(90));
    let missing = app
        .post_json(
            "/api/v1/configs/weapon-balance/rollback",
            &json!({"toVersion": "0.1.0"}),
        )
        .await;
    assert_eq!(missing.status, 404);
    let audit = app
        .get("/api/v1/audit?resource=configs/weapon-balance/versions/1.3.1")
        .await;
    assert_eq!(audit.body["items"][0]["action"], "config.rollback");
}

async fn tags_can_be_replaced(app: TestApp) {
    setup(&app, "staging").await;
    app.post_json(
        "/api/v1/configs/weapon-balance/versions",
        &json!({"version": "1.0.0", "content": balance(45), "tags": ["beta"]}),
    )
    .await;
    let tagged = app
        .put_json(
            "/api/v1/configs/weapon-balance/versions/1.0.0/tags",
            &json!({"tags": ["stable", "season-3", "stable"]}),
        )
        .await;
    assert_eq!(tagged.status, 200, "{:?}", tagged.body);
    assert_eq!(tagged.body["tags"], json!(["season-3", "stable"]));
    let bad = app
        .put_json(
            "/api/v1/configs/weapon-balance/versions/1.0.0/tags",
            &json!({"tags": ["has space"]}),
        )
        .await;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.error_paths()[0].0, "/tags/0");
    let history = app.get("/api/v1/configs/weapon-balance/versions").await;
    assert_eq!(
        history.body["items"][0]["tags"],
        json!(["season-3", "stable"])
    );
}

async fn breaking_changes_in_production_need_an_approval(app: TestApp) {
    setup(&app, "production").await;
    app.post_version("weapon-balance", "1.0.0", balance(45))
        .await;
    let mut breaking = balance(45);
    breaking["weapons"]["rifle"]
        .as_object_mut()
        .unwrap()
        .remove("reloadTime");
    breaking["characters"]["tank"]["armor"] = json!(50.5);
    let response = app.post_version("weapon-balance", "2.0.0", breaking).await;
    assert_eq!(response.status, 201);
    assert_eq!(response.body["breakingChanges"], true);
    assert_eq!(response.body["requiresApproval"], true);
    let report = app
        .get("/api/v1/configs/weapon-balance/versions/2.0.0/validation-report")
        .await;
    let warnings: Vec<&str> = report.body["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["rule"].as_str().unwrap())
        .collect();
    assert_eq!(warnings, ["removed-key"]);

    let approved = app
        .post_json(
            "/api/v1/configs/weapon-balance/versions/2.0.0/approve",
            &json!({"comment": "balance pass"}),
        )
        .await;
    assert_eq!(approved.status, 200, "{:?}", approved.body);
    assert_eq!(approved.body["approvedBy"], "test-admin");
    assert_eq!(approved.body["requiresApproval"], false);
    // Approving again keeps the first approval; an empty body is fine.
    let again = app
        .post_empty("/api/v1/configs/weapon-balance/versions/2.0.0/approve")
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["approvedAt"], approved.body["approvedAt"]);
    let audit = app
        .get("/api/v1/audit?resource=configs/weapon-balance/versions/2.0.0")
        .await;
    let approvals = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "version.approve")
        .count();
    assert_eq!(approvals, 1);
}

async fn revalidation_stores_a_fresh_report(app: TestApp) {
    setup(&app, "staging").await;
    app.post_version("weapon-balance", "1.0.0", balance(45))
        .await;
    let response = app
        .post_empty("/api/v1/configs/weapon-balance/versions/1.0.0/validate")
        .await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    assert_eq!(response.body["valid"], true);
    let stored = app
        .get("/api/v1/configs/weapon-balance/versions/1.0.0/validation-report")
        .await;
    assert_eq!(stored.body["checkedAt"], response.body["checkedAt"]);
}

async fn concurrent_uploads_of_the_same_version_store_exactly_one(app: TestApp) {
    setup(&app, "staging").await;
    let uploads = (0..6).map(|i| app.post_version("weapon-balance", "1.0.0", balance(40 + i)));
    let statuses: Vec<u16> = futures_util::future::join_all(uploads)
        .await
        .into_iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        5,
        "every other upload is a conflict: {statuses:?}"
    );
    let history = app.get("/api/v1/configs/weapon-balance/versions").await;
    assert_eq!(history.body["items"].as_array().unwrap().len(), 1);
}

on_both_databases!(
    uploading_a_version_stores_it_with_revision_checksum_and_report,
    a_yaml_body_is_accepted,
    duplicate_and_lower_versions_return_409_naming_the_latest,
    an_invalid_document_is_refused_with_every_error,
    oversize_and_overdeep_documents_are_refused,
    history_lists_newest_first_with_paging,
    the_diff_between_two_versions_has_a_patch_and_readable_changes,
    rollback_creates_a_new_version_with_the_old_content,
    tags_can_be_replaced,
    breaking_changes_in_production_need_an_approval,
    revalidation_stores_a_fresh_report,
    concurrent_uploads_of_the_same_version_store_exactly_one,
);
