//! Attacks through schemas (issue 14, second review): a schema whose
//! validation explodes, a secret recovered one yes/no at a time through
//! rules that see it, a message quoting a secret beside the value it is
//! about, and enums big enough to make answers huge. Each is refused with
//! a clear problem, the hub keeps answering, and nothing leaks.

use crate::helpers::{Response, TestApp};
use crate::on_both_databases;
use hotswap::{Role, settings::Settings};
use serde_json::{Map, Value, json};

/// Production-sized documents (1 MiB) and bodies.
fn big_documents(settings: &mut Settings) {
    settings.limits.max_document_bytes = 1024 * 1024;
    settings.limits.max_json_depth = 64;
}

/// `levels` subschemas, each an `anyOf` of two `$ref`s to the next: at one
/// place when `down_a_level` is false, one member further down otherwise.
fn doubling(levels: usize, down_a_level: bool) -> Value {
    let mut defs = Map::new();
    for i in 0..levels {
        let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
        let branch = if down_a_level {
            json!({"properties": {"a": next}})
        } else {
            next
        };
        defs.insert(format!("d{i}"), json!({"anyOf": [branch, branch]}));
    }
    defs.insert(format!("d{levels}"), json!({"type": "string"}));
    json!({"$ref": "#/$defs/d0", "$defs": defs})
}

fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

async fn register(app: &TestApp, token: Option<&str>, body: &Value) -> Response {
    app.request(
        "POST",
        "/api/v1/schemas",
        Some(token.unwrap_or(&app.admin_token)),
        Some(("application/json", serde_json::to_vec(body).unwrap())),
    )
    .await
}

async fn healthy(app: &TestApp) {
    let health = app.get("/health").await;
    assert_eq!(health.status, 200, "{:?}", health.body);
}

// ---- 1. A schema whose validation explodes ---------------------------------

async fn a_schema_whose_validation_explodes_is_refused_and_the_hub_stays_up(app: TestApp) {
    // 2^22 paths at one place: refused when registered, where it doubles.
    let bomb = register(
        &app,
        None,
        &json!({"id": "bomb", "version": "1.0.0", "schema": doubling(22, false)}),
    )
    .await;
    assert_eq!(bomb.status, 422, "{:?}", bomb.body);
    assert_eq!(bomb.body["code"], "invalid_schema");
    let message = bomb.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("checks at one place"), "{message}");
    assert!(
        bomb.body["errors"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with("/schema/$defs/d"),
        "{:?}",
        bomb.body
    );
    let looping = register(
        &app,
        None,
        &json!({"id": "loop", "version": "1.0.0",
                "schema": {"$ref": "#/$defs/a", "$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}}}),
    )
    .await;
    assert_eq!(looping.status, 422, "{:?}", looping.body);

    // Doubling one level down is cheap at each place: registered, and a
    // document deep enough to make it explode is refused before validation.
    let deep = register(
        &app,
        None,
        &json!({"id": "deep", "version": "1.0.0", "schema": doubling(60, true)}),
    )
    .await;
    assert_eq!(deep.status, 201, "{:?}", deep.body);
    let shallow = app
        .post_json("/api/v1/schemas/deep/validate", &nested(8))
        .await;
    assert_eq!(shallow.status, 200, "{:?}", shallow.body);
    assert_eq!(shallow.body["valid"], true, "properties pass a number");
    let refused = app
        .post_json("/api/v1/schemas/deep/validate", &nested(40))
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "validation_too_costly");
    healthy(&app).await;

    // The same through a config: no version is stored.
    let created = app
        .post_json(
            "/api/v1/configs",
            &json!({"name": "deep-config", "configType": "Custom", "environment": "staging", "schemaId": "deep"}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let upload = app.post_version("deep-config", "1.0.0", nested(40)).await;
    assert_eq!(upload.status, 422, "{:?}", upload.body);
    assert_eq!(upload.body["code"], "validation_too_costly");
    assert_eq!(upload.body["errors"][0]["path"], "/content");
    let versions = app.get("/api/v1/configs/deep-config/versions").await;
    assert_eq!(versions.body["items"], json!([]), "{:?}", versions.body);
    healthy(&app).await;
}

// ---- 2. A secret probed one yes/no at a time --------------------------------

const SECRET: &str = "sk-live-TOP-SECRET-4242";

fn vault(extra: impl FnOnce(&mut Value)) -> Value {
    let mut schema = json!({"type": "object", "properties": {"db": {"type": "object", "properties": {
        "apiKey": {"type": "string", "x-secret": true}, "host": {"type": "string"}}}}});
    extra(&mut schema);
    schema
}

async fn a_developer_cannot_probe_a_secret_through_rules_that_see_it(app: TestApp) {
    let registered = register(
        &app,
        None,
        &json!({"id": "vault", "version": "1.0.0", "compatibility": "none", "schema": vault(|_| {})}),
    )
    .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let created = app.create_production_config("svc", "vault").await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let stored = app
        .post_version(
            "svc",
            "1.0.0",
            json!({"db": {"apiKey": SECRET, "host": "h"}}),
        )
        .await;
    assert_eq!(stored.status, 201, "{:?}", stored.body);

    // Each probe the review used, under the mode `none` the schema has.
    let developer = app.token(Role::Developer, "dev");
    let probes = [
        vault(|s| {
            s["properties"]["db"]["patternProperties"] =
                json!({"^apiKey$|^zz0$": {"pattern": "^sk-live-T"}})
        }),
        vault(|s| s["properties"]["db"]["additionalProperties"] = json!({"pattern": "^sk"})),
        vault(|s| s["properties"]["db"]["properties"]["apiKey"]["maxLength"] = json!(23)),
        vault(|s| {
            s["properties"]["db"]["x-compare"] =
                json!({"left": "host", "op": "<", "right": "apiKey"})
        }),
        vault(|s| {
            s["properties"]["db"]["allOf"] = json!([{"$ref": "#/$defs/probe"}]);
            s["$defs"] = json!({"probe": {"properties": {"apiKey": {"pattern": "^sk"}}}});
        }),
    ];
    for (i, probe) in probes.into_iter().enumerate() {
        let body = json!({"id": "vault", "version": format!("1.{}.0", i + 1), "schema": probe});
        let refused = register(&app, Some(&developer), &body).await;
        assert_eq!(refused.status, 409, "probe {i}: {:?}", refused.body);
        assert!(
            refused
                .error_paths()
                .iter()
                .any(|(_, rule)| rule == "changed-secret-rule"),
            "probe {i}: {:?}",
            refused.body
        );
        let mut approving = body.clone();
        approving["approveBreaking"] = json!(true);
        let self_approved = register(&app, Some(&developer), &approving).await;
        assert_eq!(
            self_approved.status, 403,
            "probe {i}: {:?}",
            self_approved.body
        );
    }
    // A change away from the secret is the developer's to make.
    let host_rule = register(
        &app,
        Some(&developer),
        &json!({"id": "vault", "version": "1.9.0",
                "schema": vault(|s| s["properties"]["db"]["properties"]["host"]["maxLength"] = json!(255))}),
    )
    .await;
    assert_eq!(host_rule.status, 201, "{:?}", host_rule.body);

    // Revalidating learns nothing: the schema the developer could reach
    // holds every document it held before.
    let revalidated = app
        .request(
            "POST",
            "/api/v1/configs/svc/versions/1.0.0/validate",
            Some(&developer),
            None,
        )
        .await;
    assert_eq!(revalidated.status, 200, "{:?}", revalidated.body);
    assert_eq!(revalidated.body["valid"], true);
    assert!(!revalidated.body.to_string().contains(SECRET));
}

/// A keyword added where there was none narrows a `backward` schema (the
/// review's list), with or without secrets.
async fn keywords_added_where_there_were_none_are_breaking(app: TestApp) {
    let schema = json!({"type": "object", "properties": {"tags": {"type": "array"}, "name": {"type": "string"}}});
    let registered = register(
        &app,
        None,
        &json!({"id": "open", "version": "1.0.0", "schema": schema}),
    )
    .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let developer = app.token(Role::Developer, "dev");
    let additions = [
        json!({"patternProperties": {"^n": {"maxLength": 1}}}),
        json!({"additionalProperties": false}),
        json!({"propertyNames": {"maxLength": 2}}),
        json!({"properties": {"tags": {"type": "array", "items": {"type": "integer"}}}}),
        json!({"properties": {"tags": {"type": "array", "contains": {"type": "integer"}}}}),
        json!({"properties": {"tags": {"type": "array", "prefixItems": [{"type": "integer"}]}}}),
        json!({"properties": {"extra": {"type": "integer"}}}),
    ];
    for (i, addition) in additions.into_iter().enumerate() {
        let mut narrowed = schema.clone();
        for (keyword, value) in addition.as_object().unwrap() {
            match (narrowed.get_mut(keyword), value) {
                (Some(Value::Object(existing)), Value::Object(more)) => {
                    existing.extend(more.clone())
                }
                _ => narrowed[keyword] = value.clone(),
            }
        }
        let refused = register(
            &app,
            Some(&developer),
            &json!({"id": "open", "version": format!("1.{}.0", i + 1), "schema": narrowed}),
        )
        .await;
        assert_eq!(refused.status, 409, "addition {i}: {:?}", refused.body);
        assert_eq!(refused.body["code"], "breaking_schema_change");
    }
}

// ---- 3. A message quoting a secret beside the value it is about -------------

async fn a_rule_between_a_secret_and_another_value_never_quotes_the_secret(app: TestApp) {
    let schema = json!({"type": "object", "properties": {"db": {
        "properties": {"port": {"type": "integer"}, "pin": {"type": "integer", "x-secret": true}},
        "x-compare": {"left": "port", "op": "==", "right": "pin"}
    }}});
    let registered = register(
        &app,
        None,
        &json!({"id": "pins", "version": "1.0.0", "schema": schema}),
    )
    .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    let created = app
        .post_json(
            "/api/v1/configs",
            &json!({"name": "pins", "configType": "Custom", "environment": "staging", "schemaId": "pins"}),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let refused = app
        .post_version(
            "pins",
            "1.0.0",
            json!({"db": {"port": 5432, "pin": 982451653}}),
        )
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(
        refused.error_paths(),
        [("/content/db/port".to_owned(), "x-compare".to_owned())]
    );
    assert!(
        !refused.body.to_string().contains("982451653"),
        "{:?}",
        refused.body
    );
}

// ---- 4. Enums big enough to make answers huge ------------------------------

async fn huge_enums_are_refused_and_messages_stay_short(app: TestApp) {
    let too_many: Vec<u32> = (0..30_000).collect();
    let refused = register(
        &app,
        None,
        &json!({"id": "skus", "version": "1.0.0", "schema": {"type": "array", "items": {"enum": too_many}}}),
    )
    .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "invalid_schema");

    let options: Vec<String> = (0..5_000).map(|i| format!("sku-{i:05}")).collect();
    let registered = register(
        &app,
        None,
        &json!({"id": "skus", "version": "1.0.0", "schema": {"type": "array", "items": {"enum": options}}}),
    )
    .await;
    assert_eq!(registered.status, 201, "{:?}", registered.body);
    // 1,000 wrong items: 500 short messages, not 500 copies of the list.
    let wrong: Vec<String> = (0..1_000).map(|i| format!("nope-{i}")).collect();
    let report = app
        .post_json("/api/v1/schemas/skus/validate", &json!(wrong))
        .await;
    assert_eq!(report.status, 200, "{:?}", report.body);
    assert_eq!(report.body["truncated"], true);
    let size = report.body.to_string().len();
    assert!(size < 256 * 1024, "the report is {size} bytes");
    let message = report.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("(5000 values in all)"), "{message}");
    // 20,000 items against 5,000 values each: past the work bound.
    let many: Vec<&str> = vec!["nope"; 20_000];
    let refused = app
        .post_json("/api/v1/schemas/skus/validate", &json!(many))
        .await;
    assert_eq!(refused.status, 422, "{:?}", refused.body);
    assert_eq!(refused.body["code"], "validation_too_costly");
    healthy(&app).await;
}

on_both_databases!(
    a_schema_whose_validation_explodes_is_refused_and_the_hub_stays_up with big_documents,
    a_developer_cannot_probe_a_secret_through_rules_that_see_it,
    keywords_added_where_there_were_none_are_breaking,
    a_rule_between_a_secret_and_another_value_never_quotes_the_secret,
    huge_enums_are_refused_and_messages_stay_short with big_documents,
);
