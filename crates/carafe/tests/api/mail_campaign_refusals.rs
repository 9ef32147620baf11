//! Campaigns that cannot be made are refused with the fields at fault, before anything is
//! stored: bad fields, every limit (name, rate, inline recipients, the recipients file's
//! size), a template that fails for the first recipient, files the key may not read, and
//! campaigns that do not exist.

use serde_json::{Value, json};

use crate::files::upload_raw;
use crate::helpers::{Backend, TestApp, json_of, post_json, problem};
use crate::mail_campaigns::put_template;

both_backends!(
    bad_campaigns_are_refused_with_their_fields,
    a_recipients_file_over_64_mib_is_refused
);

/// The fields a validation problem names, in order.
fn fields_of(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect()
}

async fn bad_campaigns_are_refused_with_their_fields(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    put_template(
        &app,
        &key,
        "strict",
        json!({"subject": "Hi {{ name }}", "text": "x"}),
    )
    .await;
    let res = post_json(
        &app,
        &key,
        "/api/v1/campaigns",
        &json!({
            "name": "",
            "template": {"name": "strict"},
            "from": "bad\r\nBcc: x@example.com",
            "rate": 0,
            "recipients": [{"email": "a@example.com"}, {"email": "not an address"}]
        }),
    )
    .await;
    let body = problem(res, 422, "validation_failed").await;
    let fields = fields_of(&body);
    for f in ["/name", "/from", "/rate", "/recipients/1/email"] {
        assert!(fields.contains(&f), "{f} in {fields:?}");
    }
    // The limits: a name of 200 characters, 10,000 messages a second, 10,000 inline recipients.
    let many: Vec<Value> = (0..10_001)
        .map(|i| json!({"email": format!("m{i}@example.com")}))
        .collect();
    let res = post_json(
        &app,
        &key,
        "/api/v1/campaigns",
        &json!({"name": "n".repeat(201), "template": {"name": "strict"}, "rate": 10_001,
                "recipients": many}),
    )
    .await;
    let body = problem(res, 422, "validation_failed").await;
    let fields = fields_of(&body);
    assert_eq!(fields, ["/name", "/rate", "/recipients"]);
    // Neither recipients nor a file; both.
    let res = post_json(
        &app,
        &key,
        "/api/v1/campaigns",
        &json!({"name": "x", "template": {"name": "strict"}}),
    )
    .await;
    problem(res, 422, "validation_failed").await;
    // A template that fails for the first recipient is refused before anything is stored.
    let res = post_json(&app, &key, "/api/v1/campaigns",
        &json!({"name": "x", "template": {"name": "strict"}, "recipients": [{"email": "a@example.com"}]})).await;
    let body = problem(res, 422, "template_error").await;
    assert_eq!(body["errors"][0]["field"], "/template");
    let res = post_json(&app, &key, "/api/v1/campaigns",
        &json!({"name": "x", "template": {"name": "nope"}, "recipients": [{"email": "a@example.com"}]})).await;
    problem(res, 422, "validation_failed").await;
    // A file the key may not read.
    let res = post_json(&app, &key, "/api/v1/campaigns",
        &json!({"name": "x", "template": {"name": "strict"}, "file_id": uuid::Uuid::now_v7().to_string()})).await;
    let body = problem(res, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "/file_id");
    assert!(
        json_of(&app, &key, "/api/v1/campaigns").await["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Unknown campaigns.
    let missing = uuid::Uuid::now_v7();
    let res = app
        .get(&format!("/api/v1/campaigns/{missing}"), Some(&key))
        .await;
    problem(res, 404, "not_found").await;
    let res = post_json(
        &app,
        &key,
        &format!("/api/v1/campaigns/{missing}/start"),
        &json!({}),
    )
    .await;
    problem(res, 404, "not_found").await;
}

async fn a_recipients_file_over_64_mib_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail", "files"]).await;
    put_template(&app, &key, "t", json!({"subject": "Hi", "text": "x"})).await;
    // A valid CSV one byte past the limit (a long data column), and one exactly at it.
    let limit = 64 * 1024 * 1024;
    let csv = |size: usize| {
        let mut csv = b"email,note\na@example.com,".to_vec();
        csv.resize(size - 1, b'x');
        csv.push(b'\n');
        csv
    };
    let res = app
        .request(
            reqwest::Method::PUT,
            "/api/v1/buckets/lists",
            Some(&app.admin_key),
        )
        .json(&json!({"allowed_types": ["csv"], "max_size": 2 * limit}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let upload = |name: &'static str, bytes: Vec<u8>| {
        let app = &app;
        async move {
            let res = upload_raw(app, &app.admin_key, "?bucket=lists&wait=60", name, bytes).await;
            assert_eq!(res.status(), 201);
            res.json::<Value>().await.unwrap()
        }
    };
    let over = upload("big.csv", csv(limit + 1)).await;
    let body = json!({"name": "big", "template": {"name": "t"}, "file_id": over["id"]});
    let res = post_json(&app, &key, "/api/v1/campaigns", &body).await;
    let p = problem(res, 422, "validation_failed").await;
    assert_eq!(fields_of(&p), ["/file_id"]);
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("67108864"),
        "{p}"
    );
    let at = upload("limit.csv", csv(limit)).await;
    let body = json!({"name": "at", "template": {"name": "t"}, "file_id": at["id"]});
    let res = post_json(&app, &key, "/api/v1/campaigns", &body).await;
    assert_eq!(res.status(), 201);
}
