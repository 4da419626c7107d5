use crate::helpers::TestApp;
use crate::on_both_databases;
use serde_json::json;

async fn creating_a_config_returns_201_with_its_builtin_schema(app: TestApp) {
    let response = app
        .create_config("weapon-balance", "GameBalance", "production")
        .await;
    assert_eq!(response.status, 201, "{:?}", response.body);
    assert_eq!(
        response.header("location"),
        Some("/api/v1/configs/weapon-balance")
    );
    assert_eq!(response.body["schemaId"], "game-balance");
    assert_eq!(response.body["environment"], "production");
    assert_eq!(response.body["createdBy"], "test-admin");
    let fetched = app.get("/api/v1/configs/weapon-balance").await;
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.body["configType"], "GameBalance");
    assert_eq!(fetched.body["latestVersion"], serde_json::Value::Null);
}

async fn a_duplicate_config_name_returns_409(app: TestApp) {
    assert_eq!(
        app.create_config("loot", "Economy", "staging").await.status,
        201
    );
    let again = app.create_config("loot", "Economy", "staging").await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["code"], "config_exists");
}

async fn bad_config_fields_return_problems_with_paths(app: TestApp) {
    let cases = [
        (
            json!({"name": "Bad Name", "configType": "Economy", "environment": "staging"}),
            422,
            "/name",
        ),
        (
            json!({"name": "x", "configType": "Nope", "environment": "staging"}),
            422,
            "/configType",
        ),
        (
            json!({"name": "x", "configType": "Economy", "environment": "prod"}),
            422,
            "/environment",
        ),
        (json!({"name": "x", "configType": "Economy"}), 422, ""),
        (
            json!({"name": "x", "configType": "Economy", "environment": "staging", "colour": 1}),
            422,
            "/colour",
        ),
        (
            json!({"name": "x", "configType": "Custom", "environment": "staging", "schemaId": "nope"}),
            422,
            "/schemaId",
        ),
        (
            json!({"name": "x", "configType": "Custom", "environment": "staging", "description": "d".repeat(2001)}),
            422,
            "/description",
        ),
    ];
    for (body, status, path) in cases {
        let response = app.post_json("/api/v1/configs", &body).await;
        assert_eq!(response.status, status, "{body}: {:?}", response.body);
        assert_eq!(
            response.header("content-type"),
            Some("application/problem+json")
        );
        let paths: Vec<String> = response.error_paths().into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, vec![path.to_owned()], "{body}: {:?}", response.body);
    }
}

async fn malformed_json_returns_400_and_wrong_content_type_415(app: TestApp) {
    let malformed = app
        .send_raw(
            "POST",
            "/api/v1/configs",
            "application/json",
            b"{\"name\": ".to_vec(),
        )
        .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.body["code"], "malformed_body");
    let empty = app
        .send_raw("POST", "/api/v1/configs", "application/json", Vec::new())
        .await;
    assert_eq!(empty.status, 400);
    let text = app
        .send_raw("POST", "/api/v1/configs", "text/plain", b"name=x".to_vec())
        .await;
    assert_eq!(text.status, 415);
    assert_eq!(text.body["code"], "unsupported_media_type");
    let deep = "[".repeat(200) + &"]".repeat(200);
    let too_deep = app
        .send_raw(
            "POST",
            "/api/v1/configs",
            "application/json",
            deep.into_bytes(),
        )
        .await;
    assert_eq!(too_deep.status, 400);
}

async fn unknown_configs_return_404(app: TestApp) {
    for path in [
        "/api/v1/configs/nope",
        "/api/v1/configs/nope/versions",
        "/api/v1/configs/nope/versions/1.0.0",
        "/api/v1/configs/NOT%20A%20SLUG",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.body["code"], "config_not_found", "{path}");
    }
    assert_eq!(
        app.post_version("nope", "1.0.0", json!({})).await.status,
        404
    );
}

async fn configs_are_listed_by_name_with_paging_and_filters(app: TestApp) {
    for (name, environment) in [
        ("c-3", "staging"),
        ("c-1", "production"),
        ("c-2", "staging"),
    ] {
        assert_eq!(
            app.create_config(name, "Custom", environment).await.status,
            201
        );
    }
    let first = app.get("/api/v1/configs?limit=2").await;
    assert_eq!(first.status, 200);
    let names: Vec<&str> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c-1", "c-2"]);
    let cursor = first.body["nextCursor"].as_str().expect("a next page");
    let second = app
        .get(&format!("/api/v1/configs?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(second.body["items"][0]["name"], "c-3");
    assert!(second.body["nextCursor"].is_null());
    let staging = app.get("/api/v1/configs?environment=staging").await;
    assert_eq!(staging.body["items"].as_array().unwrap().len(), 2);
    for (bad, code) in [
        ("limit=0", "invalid_query"),
        ("limit=1001", "invalid_query"),
        ("limit=x", "invalid_query"),
        ("cursor=!!!", "invalid_cursor"),
        ("environment=moon", "invalid_query"),
    ] {
        let response = app.get(&format!("/api/v1/configs?{bad}")).await;
        assert_eq!(
            (response.status, response.body["code"].as_str()),
            (400, Some(code)),
            "{bad}: {:?}",
            response.body
        );
    }
}

async fn a_deleted_config_is_gone_but_its_name_stays_taken(app: TestApp) {
    assert_eq!(
        app.create_config("old-event", "Custom", "staging")
            .await
            .status,
        201
    );
    assert_eq!(
        app.post_version("old-event", "1.0.0", json!({"a": 1}))
            .await
            .status,
        201
    );
    assert_eq!(app.delete("/api/v1/configs/old-event").await.status, 204);
    assert_eq!(app.get("/api/v1/configs/old-event").await.status, 404);
    assert_eq!(app.delete("/api/v1/configs/old-event").await.status, 404);
    assert_eq!(
        app.create_config("old-event", "Custom", "staging")
            .await
            .status,
        409
    );
    let audit = app.get("/api/v1/audit?resource=configs/old-event").await;
    let actions: Vec<&str> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["config.delete", "version.create", "config.create"]
    );
}

on_both_databases!(
    creating_a_config_returns_201_with_its_builtin_schema,
    a_duplicate_config_name_returns_409,
    bad_config_fields_return_problems_with_paths,
    malformed_json_returns_400_and_wrong_content_type_415,
    unknown_configs_return_404,
    configs_are_listed_by_name_with_paging_and_filters,
    a_deleted_config_is_gone_but_its_name_stays_taken,
);

/// PostgreSQL refuses NUL in TEXT; none may reach it, and none may cause a 500.
async fn nul_characters_anywhere_get_a_4xx_never_a_500(app: TestApp) {
    assert_eq!(
        app.create_config("weapon-balance", "GameBalance", "staging")
            .await
            .status,
        201
    );
    assert_eq!(
        app.post_version("weapon-balance", "1.0.0", crate::helpers::balance(45))
            .await
            .status,
        201
    );
    for path in [
        "/api/v1/configs/a%00b",
        "/api/v1/configs/weapon-balance/versions/1.0%000",
        "/api/v1/configs/weapon-balance/versions/1.0.0/diff/%00",
        "/api/v1/schemas/x%00y",
        "/api/v1/audit?actor=a%00b",
        "/api/v1/audit?resource=%00",
        "/api/v1/configs?cursor=AA",
        "/api/v1/configs/weapon-balance/versions?cursor=eA",
        // One cursor codec for every list: the deployments' too.
        "/api/v1/deployments?cursor=AA",
    ] {
        let response = app.get(path).await;
        assert!(
            (400..500).contains(&response.status),
            "{path}: {} {:?}",
            response.status,
            response.body
        );
    }
    let posts = [
        (
            "/api/v1/configs",
            json!({"name": "n", "configType": "Custom", "environment": "staging", "description": "a\u{0}b"}),
        ),
        (
            "/api/v1/configs",
            json!({"name": "n", "configType": "Custom", "environment": "staging", "schemaId": "a\u{0}"}),
        ),
        (
            "/api/v1/configs/weapon-balance/versions",
            json!({"version": "2.0.0", "content": {}, "message": "\u{0}"}),
        ),
        (
            "/api/v1/configs/weapon-balance/rollback",
            json!({"toVersion": "1.0.0\u{0}"}),
        ),
        (
            "/api/v1/schemas",
            json!({"id": "s", "version": "1.0.0", "schema": {}, "description": "\u{0}"}),
        ),
        (
            "/api/v1/schemas/game-balance/validate?version=%00",
            json!({}),
        ),
    ];
    for (path, body) in posts {
        let response = app.post_json(path, &body).await;
        assert!(
            (400..500).contains(&response.status),
            "{path} {body}: {} {:?}",
            response.status,
            response.body
        );
    }
    // NUL inside the document itself is fine: the stored form escapes it.
    let with_nul = app
        .post_version(
            "weapon-balance",
            "1.1.0",
            json!({"weapons": {"a\u{0}b": {"damage": 1, "fireRate": 1}}}),
        )
        .await;
    assert_eq!(with_nul.status, 201, "{:?}", with_nul.body);
    let fetched = app
        .get("/api/v1/configs/weapon-balance/versions/1.1.0")
        .await;
    assert_eq!(fetched.body["content"]["weapons"]["a\u{0}b"]["damage"], 1);
}

on_both_databases!(nul_characters_anywhere_get_a_4xx_never_a_500);
