//! `/openapi.json` documents every route the service serves, and the service
//! serves every route the document names, with the answers and the links a
//! generated client needs. (That every schema is exactly as strict as the
//! server is checked by Schemathesis: `scripts/api-contract.sh`.)

use std::collections::BTreeSet;

use produktly_segment::domain::catalog;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{self, Backend, Env};

/// The contract's routes (shared API.md), as `METHOD path`.
const CONTRACT: &[&str] = &[
    "POST /v1/track",
    "POST /v1/batch",
    "POST /v1/identify",
    "POST /admin/v1/workspaces",
    "GET /admin/v1/workspaces",
    "PUT /admin/v1/workspaces/{id}",
    "GET /admin/v1/workspaces/{id}",
    "DELETE /admin/v1/workspaces/{id}",
    "POST /admin/v1/workspaces/{id}/erasures",
    "POST /admin/v1/workspaces/{id}/ingest-key/rotate",
    "PUT /admin/v1/workspaces/{id}/integrations/segment",
    "GET /admin/v1/workspaces/{id}/integrations/segment",
    "DELETE /admin/v1/workspaces/{id}/integrations/segment",
    "POST /admin/v1/workspaces/{id}/integrations/segment/test",
    "GET /admin/v1/workspaces/{id}/dead-letters",
    "POST /admin/v1/workspaces/{id}/dead-letters/replay",
    "GET /admin/v1/workspaces/{id}/activity",
    "GET /admin/v1/workspaces/{id}/deliveries",
    "GET /admin/v1/workspaces/{id}/activity/stream",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /sdk/v1/produktly-segment.js",
];

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_and_the_routes_agree() {
    let Some(env) = Env::new(Backend::Sqlite).await else { return };
    let app = env.start_app().await;
    let workspace = app.workspace_with_segment("wk_openapi").await;
    let document: Value = common::json_answer(app.http.get(app.url("/openapi.json"))).await;
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));

    let paths = document["paths"].as_object().unwrap();
    let documented: BTreeSet<String> = paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS.iter().filter(|m| item.get(**m).is_some()).map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    let contract: BTreeSet<String> = CONTRACT.iter().map(|r| r.to_string()).collect();
    assert_eq!(documented, contract, "the document names exactly the contract's routes");

    for (path, item) in paths {
        for operation in METHODS.iter().filter_map(|m| item.get(*m)) {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let in_path = path.contains(&format!("{{{}}}", parameter["name"].as_str().unwrap()));
                assert_eq!(parameter["in"] == "path", in_path, "{path}: parameter {parameter}");
            }
        }
        let url = app.url(&path.replace("{id}", &workspace.id));
        for method in METHODS {
            let request = app
                .http
                .request(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(), &url)
                .bearer_auth(common::ADMIN_TOKEN)
                .header("x-produktly-key", &workspace.ingest_key)
                .json(&json!({"name": "x", "event": "tour_start", "userId": "u", "anonymousId": "a", "properties": {"tour_id": "t"}}));
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            if item.get(method).is_some() {
                assert!(
                    status != 405 && !body.contains("no such endpoint"),
                    "{method} {path} is documented but answered {status} {body}"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented but answered {status}");
            }
        }
    }
    let unknown = app.http.get(app.url("/v1/page")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    // The event schema is the catalog's, under the identity rule.
    let event = &document["components"]["schemas"]["Event"];
    assert_eq!(event["allOf"][0]["anyOf"][0]["required"], json!(["userId"]));
    let variants = event["allOf"][1]["oneOf"].as_array().unwrap();
    let names: Vec<&str> = variants.iter().map(|v| v["properties"]["event"]["enum"][0].as_str().unwrap()).collect();
    let catalog_names: Vec<&str> = catalog::EVENTS.iter().map(|e| e.name).collect();
    assert_eq!(names, catalog_names);
    let tour_step = &variants[catalog_names.iter().position(|n| *n == "tour_step").unwrap()];
    assert_eq!(tour_step["properties"]["properties"]["required"], json!(["tour_id", "step_id", "step_index"]));
    let batch = &document["components"]["schemas"]["BatchRequest"]["properties"]["batch"];
    assert_eq!((batch["minItems"].as_u64(), batch["maxItems"].as_u64()), (Some(1), Some(500)), "the configured limit");
    assert_eq!(batch["contains"]["$ref"], "#/components/schemas/Event");
    app.stop().await;
}

fn operations(document: &Value) -> Vec<(String, &Value)> {
    let paths = document["paths"].as_object().unwrap();
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS.iter().filter_map(move |m| item.get(*m).map(|op| (format!("{} {path}", m.to_uppercase()), op)))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_documented_and_the_admin_operations_are_linked() {
    let Some(env) = Env::new(Backend::Sqlite).await else { return };
    let app = env.start_app().await;
    let document: Value = common::json_answer(app.http.get(app.url("/openapi.json"))).await;
    let operations = operations(&document);

    // Every operation has its own id, which generated clients name methods after.
    let ids: BTreeSet<&str> = operations.iter().map(|(_, op)| op["operationId"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), operations.len(), "operation ids are unique");

    // The answers every request can meet, and those of ingest and admin.
    for (route, operation) in &operations {
        let tag = operation["tags"][0].as_str().unwrap();
        let mut expected = vec!["405", "408", "413"];
        match tag {
            "ingest" => expected.extend(["202", "400", "401", "403", "415", "429", "503"]),
            "admin" => expected.extend(["400", "401", "404", "429", "503"]),
            _ => expected.push("200"),
        }
        let documented = operation["responses"].as_object().unwrap();
        for status in expected {
            assert!(documented.contains_key(status), "{route} does not document {status}");
        }
    }
    let responses = &document["components"]["responses"];
    // Each shared answer names the codes the service gives with it.
    for (name, status) in [("BadRequest", 400), ("Unauthorized", 401), ("Unavailable", 503)] {
        let description = responses[name]["description"].as_str().unwrap();
        let status = reqwest::StatusCode::from_u16(status).unwrap();
        for code in produktly_segment::http::error::ApiError::codes(status) {
            assert!(description.contains(&format!("`{code}`")), "{name} lacks {code}: {description}");
        }
    }
    let bad_request = responses["BadRequest"]["description"].as_str().unwrap();
    assert!(bad_request.contains("`unknown_event`") && bad_request.contains("`invalid_request`"), "{bad_request}");
    for name in ["RateLimited", "Unavailable"] {
        assert_eq!(responses[name]["headers"]["Retry-After"]["schema"]["type"], "integer", "{name}");
    }
    assert!(responses["MethodNotAllowed"]["headers"]["Allow"].is_object());
    assert_eq!(
        responses["BadRequest"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );

    // A stateful client can walk: create a workspace, put its integration,
    // test it, read its status, its dead letters, replay them.
    let by_id = |id: &str| operations.iter().find(|(_, op)| op["operationId"] == id).unwrap().1;
    let walk = [
        ("createWorkspace", "201", "putSegmentIntegration"),
        ("putSegmentIntegration", "200", "testSegmentIntegration"),
        ("testSegmentIntegration", "200", "getSegmentIntegration"),
        ("getSegmentIntegration", "200", "listDeadLetters"),
        ("listDeadLetters", "200", "replayDeadLetters"),
    ];
    for (from, status, to) in walk {
        let link = &by_id(from)["responses"][status]["links"][to];
        assert_eq!(link["operationId"], to, "{from} {status} links to {to}");
        assert!(link["parameters"]["id"].as_str().unwrap().starts_with('$'), "{link}");
    }
    for (route, operation) in &operations {
        for (status, response) in operation["responses"].as_object().unwrap() {
            for link in response["links"].as_object().into_iter().flat_map(|links| links.values()) {
                let target = link["operationId"].as_str().unwrap();
                assert!(ids.contains(target), "{route} {status} links to {target}, which is not an operation");
            }
        }
    }
    app.stop().await;
}
