//! `/openapi.json` documents every route the service serves, and the service
//! serves every route the document names.

mod common;

use std::collections::BTreeSet;

use common::{Backend, Env};
use produktly_segment::catalog;
use reqwest::Method;
use serde_json::{Value, json};

/// The contract's routes (shared API.md), as `METHOD path`.
const CONTRACT: &[&str] = &[
    "POST /v1/track",
    "POST /v1/batch",
    "POST /v1/identify",
    "POST /admin/v1/workspaces",
    "PUT /admin/v1/workspaces/{id}",
    "GET /admin/v1/workspaces/{id}",
    "POST /admin/v1/workspaces/{id}/ingest-key/rotate",
    "PUT /admin/v1/workspaces/{id}/integrations/segment",
    "GET /admin/v1/workspaces/{id}/integrations/segment",
    "DELETE /admin/v1/workspaces/{id}/integrations/segment",
    "POST /admin/v1/workspaces/{id}/integrations/segment/test",
    "GET /admin/v1/workspaces/{id}/dead-letters",
    "POST /admin/v1/workspaces/{id}/dead-letters/replay",
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
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

    // The event schema is the catalog's.
    let variants = document["components"]["schemas"]["Event"]["oneOf"].as_array().unwrap();
    let names: Vec<&str> = variants.iter().map(|v| v["properties"]["event"]["enum"][0].as_str().unwrap()).collect();
    let catalog_names: Vec<&str> = catalog::EVENTS.iter().map(|e| e.name).collect();
    assert_eq!(names, catalog_names);
    let tour_step = &variants[catalog_names.iter().position(|n| *n == "tour_step").unwrap()];
    assert_eq!(tour_step["properties"]["properties"]["required"], json!(["tour_id", "step_id", "step_index"]));
    app.stop().await;
}
