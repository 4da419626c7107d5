use crate::helpers::TestApp;
use crate::on_both_databases;
use serde_json::{Value, json};

async fn validate(app: &TestApp, schema: &str, document: Value) -> Vec<(String, String)> {
    let response = app
        .post_json(&format!("/api/v1/schemas/{schema}/validate"), &document)
        .await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    assert_eq!(
        response.body["valid"],
        response.body["errors"].as_array().unwrap().is_empty()
    );
    let mut out: Vec<(String, String)> = response.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_owned(),
                e["rule"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// `(path, rule)` pairs, sorted.
type Errors = Vec<(String, String)>;
/// A change applied to a copy of a schema.
type SchemaEdit = Box<dyn Fn(&mut Value)>;

fn errors(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(p, r)| (p.to_string(), r.to_string()))
        .collect()
}

/// Each rule of the design, checked through the built-in schemas.
async fn the_builtin_schemas_enforce_the_game_rules(app: TestApp) {
    let cases: Vec<(&str, Value, Errors)> = vec![
        (
            "game-balance",
            json!({"weapons": {"rifle": {"damage": 45, "fireRate": 600}}}),
            vec![],
        ),
        (
            "game-balance",
            json!({"weapons": {"rifle": {"damage": 0, "fireRate": 600}}}),
            errors(&[("/weapons/rifle/damage", "minimum")]),
        ),
        (
            "game-balance",
            json!({"weapons": {"rifle": {"damage": 1001, "fireRate": 600}}}),
            errors(&[("/weapons/rifle/damage", "maximum")]),
        ),
        (
            "game-balance",
            json!({"weapons": {"rifle": {"damage": 5, "fireRate": 10001}}}),
            errors(&[("/weapons/rifle/fireRate", "maximum")]),
        ),
        (
            "game-balance",
            json!({"abilities": {"dash": {"cooldown": 300.5}}}),
            errors(&[("/abilities/dash/cooldown", "maximum")]),
        ),
        (
            "game-balance",
            json!({"abilities": {"dash": {"cooldown": 0.05}}}),
            errors(&[("/abilities/dash/cooldown", "minimum")]),
        ),
        (
            "game-balance",
            json!({"characters": {"tank": {"health": 10001, "armor": 0}}}),
            errors(&[
                ("/characters/tank/armor", "minimum"),
                ("/characters/tank/health", "maximum"),
            ]),
        ),
        (
            "economy",
            json!({"store": {"weapons": {"rifle": {"price": 1500, "currency": "credits"}}}}),
            vec![],
        ),
        (
            "economy",
            json!({"store": {"weapons": {"rifle": {"price": -1, "currency": "doubloons"}}}}),
            errors(&[
                ("/store/weapons/rifle/currency", "enum"),
                ("/store/weapons/rifle/price", "minimum"),
            ]),
        ),
        (
            "economy",
            json!({"lootTables": {"chest": {"items": [{"itemId": "a", "dropRate": 0.05}, {"itemId": "b", "dropRate": 0.15}, {"itemId": "c", "dropRate": 0.3}, {"itemId": "d", "dropRate": 0.5}]}}}),
            vec![],
        ),
        (
            "economy",
            json!({"lootTables": {"chest": {"items": [{"itemId": "a", "dropRate": 0.5}, {"itemId": "b", "dropRate": 0.6}]}}}),
            errors(&[("/lootTables/chest/items", "x-sum")]),
        ),
        (
            "economy",
            json!({"lootTables": {"chest": {"items": [{"itemId": "a", "dropRate": 1.5}, {"itemId": "b", "dropRate": -0.5}]}}}),
            errors(&[
                ("/lootTables/chest/items/0/dropRate", "maximum"),
                ("/lootTables/chest/items/1/dropRate", "minimum"),
            ]),
        ),
        (
            "matchmaking",
            json!({"skillRanges": {"bronze": {"min": 0, "max": 1000}, "silver": {"min": 1001, "max": 2000}}, "teamComposition": {"minPlayers": 4, "maxPlayers": 5}}),
            vec![],
        ),
        (
            "matchmaking",
            json!({"skillRanges": {"bronze": {"min": 0, "max": 1000}, "silver": {"min": 999, "max": 2000}}}),
            errors(&[("/skillRanges/silver", "x-ranges")]),
        ),
        (
            "matchmaking",
            json!({"skillRanges": [{"min": 1001, "max": 2000}, {"min": 0, "max": 1000}]}),
            errors(&[("/skillRanges/1", "x-ranges")]),
        ),
        (
            "matchmaking",
            json!({"teamComposition": {"minPlayers": 6, "maxPlayers": 5}}),
            errors(&[("/teamComposition/minPlayers", "x-compare")]),
        ),
        (
            "live-event",
            json!({"eventId": "halloween-2025", "startTime": "2025-10-31T00:00:00Z", "endTime": "2025-11-07T23:59:59Z"}),
            vec![],
        ),
        (
            "live-event",
            json!({"eventId": "halloween-2025", "startTime": "2025-11-08T00:00:00Z", "endTime": "2025-11-07T23:59:59Z"}),
            errors(&[("/startTime", "x-compare")]),
        ),
        (
            "live-event",
            json!({"eventId": "x", "startTime": "yesterday", "endTime": "2025-11-07T23:59:59Z"}),
            errors(&[("/startTime", "format")]),
        ),
        (
            "performance",
            json!({"server": {"tickRate": 0}}),
            errors(&[("/server/tickRate", "minimum")]),
        ),
    ];
    for (schema, document, expected) in cases {
        assert_eq!(
            validate(&app, schema, document.clone()).await,
            expected,
            "{schema}: {document}"
        );
    }
}

fn weapon_schema() -> Value {
    json!({
        "type": "object",
        "required": ["damage"],
        "properties": {
            "damage": {"type": "number", "minimum": 1, "maximum": 1000},
            "tier": {"enum": ["common", "rare", "epic"]},
            "name": {"type": "string"}
        }
    })
}

async fn register(
    app: &TestApp,
    version: &str,
    schema: Value,
    extra: Value,
) -> crate::helpers::Response {
    let mut body = json!({"id": "weapon", "version": version, "schema": schema});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    app.post_json("/api/v1/schemas", &body).await
}

async fn a_registered_schema_validates_configs_that_name_it(app: TestApp) {
    let created = register(
        &app,
        "1.0.0",
        weapon_schema(),
        json!({"description": "a weapon"}),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["compatibility"], "backward");
    assert_eq!(created.body["builtin"], false);
    let config = app
        .post_json("/api/v1/configs", &json!({"name": "sword", "configType": "Custom", "environment": "staging", "schemaId": "weapon"}))
        .await;
    assert_eq!(config.status, 201);
    let refused = app
        .post_version("sword", "1.0.0", json!({"damage": 5000, "tier": "mythic"}))
        .await;
    assert_eq!(refused.status, 422);
    assert_eq!(
        refused.error_paths(),
        errors(&[("/content/damage", "maximum"), ("/content/tier", "enum")])
    );
    assert_eq!(
        app.post_version("sword", "1.0.0", json!({"damage": 50, "tier": "rare"}))
            .await
            .status,
        201
    );

    let listed = app.get("/api/v1/schemas").await;
    let ids: Vec<&str> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "content-manifest",
            "economy",
            "game-balance",
            "live-event",
            "live-event-rules",
            "matchmaking",
            "performance",
            "weapon"
        ]
    );
}

async fn breaking_schema_changes_are_refused_unless_approved(app: TestApp) {
    assert_eq!(
        register(&app, "1.0.0", weapon_schema(), json!({}))
            .await
            .status,
        201
    );
    let edits: Vec<(&str, SchemaEdit)> = vec![
        (
            "removed-property",
            Box::new(|s| {
                s["properties"].as_object_mut().unwrap().remove("name");
            }),
        ),
        (
            "new-required-field",
            Box::new(|s| s["required"] = json!(["damage", "tier"])),
        ),
        (
            "narrowed-range",
            Box::new(|s| s["properties"]["damage"]["maximum"] = json!(500)),
        ),
        (
            "narrowed-enum",
            Box::new(|s| s["properties"]["tier"]["enum"] = json!(["common"])),
        ),
        (
            "changed-type",
            Box::new(|s| s["properties"]["name"]["type"] = json!("integer")),
        ),
    ];
    for (kind, edit) in &edits {
        let mut schema = weapon_schema();
        edit(&mut schema);
        let refused = register(&app, "2.0.0", schema, json!({})).await;
        assert_eq!(refused.status, 409, "{kind}: {:?}", refused.body);
        assert_eq!(refused.body["code"], "breaking_schema_change");
        assert_eq!(refused.body["errors"][0]["rule"], *kind);
    }
    let mut widened = weapon_schema();
    widened["properties"]["damage"]["maximum"] = json!(2000);
    assert_eq!(
        register(&app, "1.1.0", widened, json!({})).await.status,
        201,
        "widening is backward compatible"
    );
    let mut narrowed = weapon_schema();
    narrowed["properties"]["damage"]["maximum"] = json!(500);
    let approved = register(&app, "2.0.0", narrowed, json!({"approveBreaking": true})).await;
    assert_eq!(approved.status, 201, "{:?}", approved.body);
    assert_eq!(approved.body["breakingApprovedBy"], "test-admin");
    assert_eq!(
        approved.body["versions"],
        json!(["2.0.0", "1.1.0", "1.0.0"])
    );
    let old = app.get("/api/v1/schemas/weapon?version=1.0.0").await;
    assert_eq!(old.body["schema"], weapon_schema());
    let lower = register(
        &app,
        "1.5.0",
        weapon_schema(),
        json!({"compatibility": "none"}),
    )
    .await;
    assert_eq!(lower.status, 409);
    assert_eq!(lower.body["latest"], "2.0.0");
}

async fn unusable_schemas_are_refused(app: TestApp) {
    let cases = [
        json!({"type": "not-a-type"}),
        json!({"x-sum": {"equals": 1}}),
        json!({"$ref": "https://example.com/remote.json"}),
        json!("just a string"),
    ];
    for schema in cases {
        let response = register(&app, "1.0.0", schema.clone(), json!({})).await;
        assert_eq!(response.status, 422, "{schema}: {:?}", response.body);
        assert_eq!(response.body["code"], "invalid_schema");
    }
    let bad_id = app
        .post_json(
            "/api/v1/schemas",
            &json!({"id": "Bad", "version": "1.0.0", "schema": {}}),
        )
        .await;
    assert_eq!(bad_id.status, 422);
    assert_eq!(app.get("/api/v1/schemas/nope").await.status, 404);
    assert_eq!(
        app.post_json("/api/v1/schemas/nope/validate", &json!({}))
            .await
            .status,
        404
    );
}

on_both_databases!(
    the_builtin_schemas_enforce_the_game_rules,
    a_registered_schema_validates_configs_that_name_it,
    breaking_schema_changes_are_refused_unless_approved,
    unusable_schemas_are_refused,
);
