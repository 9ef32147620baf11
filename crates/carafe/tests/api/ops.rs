//! Operational endpoints: health, readiness (and its failure), metrics, the OpenAPI document.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::helpers::{Backend, TestApp, problem};

both_backends!(
    health_and_readiness,
    readiness_fails_when_the_database_is_gone,
    metrics_count_requests_by_route_and_need_admin,
    the_openapi_document_lists_every_route,
);

async fn health_and_readiness(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.healthz().await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ok");
    let res = app.readyz().await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["status"], "ready");
}

async fn readiness_fails_when_the_database_is_gone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.state.store.close().await;
    problem(app.readyz().await, 503, "not_ready").await;
    assert_eq!(
        app.healthz().await.status(),
        200,
        "liveness does not depend on the database"
    );
    // A request that needs the database gets a 503 problem, not a 500 or a hang.
    let body = serde_json::json!({"name": "x", "scopes": ["files"]});
    let res = app
        .post_json("/api/v1/keys", Some(&app.admin_key), &body)
        .await;
    let p = problem(res, 503, "unavailable").await;
    assert!(
        !p.to_string().to_lowercase().contains("pool"),
        "nothing internal leaks: {p}"
    );
}

async fn metrics_count_requests_by_route_and_need_admin(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    problem(app.metrics(None).await, 401, "unauthenticated").await;
    for _ in 0..3 {
        app.me(&app.admin_key).await;
    }
    app.get("/api/v1/keys/not-an-id", Some(&app.admin_key))
        .await;
    let res = app.metrics(Some(&app.admin_key)).await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = res.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("carafe_http_requests_total")
                && l.contains("route=\"/api/v1/me\"")
                && l.contains("status=\"200\"")
        })
        .unwrap_or_else(|| panic!("no request counter for /api/v1/me:\n{text}"));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 3.0, "{line}");
    assert!(
        text.contains("route=\"/api/v1/keys/{id}\""),
        "routes are labelled by template"
    );
    assert!(
        text.contains("carafe_http_request_duration_seconds_bucket"),
        "latency histogram"
    );
    assert!(text.contains("carafe_db_pool_connections"), "pool gauges");
    assert!(text.contains("carafe_http_requests_in_flight"));

    let open = TestApp::spawn_with(backend, |c| c.metrics.public = true).await;
    assert_eq!(open.metrics(None).await.status(), 200);
}

async fn the_openapi_document_lists_every_route(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = app.openapi().await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let served: BTreeSet<String> = carafe::api::routes(&app.state)
        .openapi()
        .paths
        .paths
        .into_keys()
        .collect();
    assert_eq!(
        documented, served,
        "the routes registered and the OpenAPI document served agree"
    );
    // Every documented operation exists: no documented path/method answers 404/405.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", "01900000-0000-7000-8000-000000000000");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = app.request(m, &concrete, None).send().await.unwrap();
            assert_ne!(res.status(), 405, "{method} {path}");
            // (A 404 that is not a problem document is a route's own page, e.g. `/u/{token}`.)
            let problem = res
                .headers()
                .get("content-type")
                .is_some_and(|ct| ct.as_bytes().starts_with(b"application/problem+json"));
            if res.status() == 404 && problem {
                let body: Value = res.json().await.unwrap();
                assert_ne!(body["code"], "route_not_found", "{method} {path}");
            }
        }
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["Problem"].is_object());
}
