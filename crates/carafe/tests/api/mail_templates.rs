//! Mail templates over HTTP: versions with locales, layouts and partials, previews, template
//! errors with their line and column, a sandbox that stops endless loops, and a mail sent from
//! a template recording the version it was rendered from.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, json_of, post_json, problem};

both_backends!(
    templates_are_versioned_with_locales_and_used_by_mail,
    template_errors_name_line_and_column_and_store_nothing
);

async fn put(app: &TestApp, key: &str, name: &str, body: Value) -> reqwest::Response {
    app.request(Method::PUT, &format!("/api/v1/templates/{name}"), Some(key))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn post(app: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    post_json(app, key, path, &body).await
}

async fn templates_are_versioned_with_locales_and_used_by_mail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    // A layout and a partial, then a template using both.
    let res = put(&app, &key, "base", json!({
        "subject": "-",
        "html": "<html><body><h1>{{ brand }}</h1>{{ content }}{% include 'footer' %}</body></html>",
        "text": "{{ content }}\n-- {{ brand }}"
    }))
    .await;
    assert_eq!(res.status(), 201);
    let res = put(
        &app,
        &key,
        "footer",
        json!({
            "subject": "-", "html": "<small>Unsubscribe at {{ brand }}</small>"
        }),
    )
    .await;
    assert_eq!(res.status(), 201);
    let res = put(
        &app,
        &key,
        "welcome",
        json!({
            "subject": "Welcome, {{ name }}",
            "html": "<p>Hello {{ name }}</p>",
            "layout": "base"
        }),
    )
    .await;
    assert_eq!(res.status(), 201);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("/api/v1/templates/welcome/versions/1")
    );
    let v1: Value = res.json().await.unwrap();
    assert_eq!(
        (v1["version"].as_u64(), v1["changed"].as_str()),
        (Some(1), Some("en"))
    );

    // A Korean variant makes version 2; English is carried forward.
    let res = put(
        &app,
        &key,
        "welcome",
        json!({
            "locale": "ko-kr",
            "subject": "{{ name }}님, 환영합니다",
            "html": "<p>안녕하세요 {{ name }}님</p>",
            "layout": "base"
        }),
    )
    .await;
    assert_eq!(res.status(), 201);
    let v2: Value = res.json().await.unwrap();
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["locales"], json!(["en", "ko-KR"]));
    let versions = json_of(&app, &key, "/api/v1/templates/welcome/versions").await;
    let numbers: Vec<u64> = versions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [2, 1]);
    assert_eq!(
        json_of(&app, &key, "/api/v1/templates/welcome/versions/1").await["locales"],
        json!(["en"])
    );
    let names: Vec<String> = json_of(&app, &key, "/api/v1/templates").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["base", "footer", "welcome"]);

    // Preview: `ko-KR` is found; `ko` falls back to... nothing but `en` (no `ko` variant).
    let data = json!({"name": "<Kim>", "brand": "A&B"});
    let res = post(
        &app,
        &key,
        "/api/v1/templates/welcome/preview",
        json!({"locale": "ko-KR", "data": data}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let p: Value = res.json().await.unwrap();
    assert_eq!(p["subject"], "<Kim>님, 환영합니다");
    assert_eq!(
        p["html"],
        "<html><body><h1>A&amp;B</h1><p>안녕하세요 &lt;Kim&gt;님</p><small>Unsubscribe at A&amp;B</small></body></html>"
    );
    assert_eq!(
        p["template"],
        json!({"name": "welcome", "version": 2, "locale": "ko-KR"})
    );
    let text = p["text"].as_str().unwrap();
    assert!(
        text.contains("안녕하세요 <Kim>님") && !text.contains("<p>"),
        "{text}"
    );
    let p: Value = post(
        &app,
        &key,
        "/api/v1/templates/welcome/preview",
        json!({"locale": "fr-CA", "data": data, "version": 1}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(p["subject"], "Welcome, <Kim>");
    assert_eq!(
        p["template"],
        json!({"name": "welcome", "version": 1, "locale": "en"})
    );

    // A mail from the template records the version and locale it was rendered from.
    let res = post(
        &app,
        &key,
        "/api/v1/mail",
        json!({
            "to": "kim@example.com",
            "template": {"name": "welcome", "locale": "ko-KR", "data": data}
        }),
    )
    .await;
    assert_eq!(res.status(), 202);
    let mail: Value = res.json().await.unwrap();
    assert_eq!(
        mail["template"],
        json!({"name": "welcome", "version": 2, "locale": "ko-KR"})
    );
    assert_eq!(mail["subject"], "<Kim>님, 환영합니다");
    let found = json_of(&app, &key, "/api/v1/outbox?to=kim@example.com&wait=20").await;
    let item = &found["items"][0];
    let detail = json_of(
        &app,
        &key,
        &format!("/api/v1/outbox/{}", item["id"].as_str().unwrap()),
    )
    .await;
    assert!(
        detail["html"]
            .as_str()
            .unwrap()
            .contains("<h1>A&amp;B</h1>")
    );
    // A later version does not change what was sent.
    put(
        &app,
        &key,
        "welcome",
        json!({"locale": "ko-KR", "subject": "v3", "text": "v3"}),
    )
    .await;
    let again = json_of(
        &app,
        &key,
        &format!("/api/v1/mail/{}", mail["id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(again["template"]["version"], 2);

    // A template and raw content together, an unknown template, and a missing variable.
    let p = problem(
        post(
            &app,
            &key,
            "/api/v1/mail",
            json!({
                "to": "a@example.com", "subject": "x", "template": {"name": "welcome"}
            }),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/template");
    let p = problem(
        post(
            &app,
            &key,
            "/api/v1/mail",
            json!({
                "to": "a@example.com", "template": {"name": "nope"}
            }),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/template/name");
    let p = problem(post_json(&app, &key, "/api/v1/mail", &json!({
        "to": "a@example.com", "template": {"name": "welcome", "version": 1, "data": {"brand": "x"}}
    })).await, 422, "template_error").await;
    assert_eq!(p["errors"][0]["field"], "/template");
    assert_eq!(
        (
            p["errors"][0]["line"].as_u64(),
            p["errors"][0]["column"].as_u64()
        ),
        (Some(1), Some(13))
    );

    // Deleting removes every version.
    let res = app
        .request(Method::DELETE, "/api/v1/templates/welcome", Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    problem(
        app.get("/api/v1/templates/welcome", Some(&key)).await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.get("/api/v1/templates/welcome/versions", Some(&key))
            .await,
        404,
        "not_found",
    )
    .await;
    // Templates are for `mail` keys only.
    let other = app.new_key(&["jobs"]).await;
    assert_eq!(
        app.get("/api/v1/templates", Some(&other)).await.status(),
        403
    );
}

async fn template_errors_name_line_and_column_and_store_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    // A syntax error: the field, line and column, and no version is stored.
    let p = problem(
        put(
            &app,
            &key,
            "bad",
            json!({
                "subject": "ok",
                "html": "<p>\n  Hello {{ name }\n</p>"
            }),
        )
        .await,
        422,
        "template_error",
    )
    .await;
    let e = &p["errors"][0];
    assert_eq!(
        (e["field"].as_str(), e["line"].as_u64()),
        (Some("/html"), Some(2))
    );
    assert!(e["column"].as_u64().is_some_and(|c| c >= 9), "{p}");
    problem(
        app.get("/api/v1/templates/bad", Some(&key)).await,
        404,
        "not_found",
    )
    .await;
    // Bad names, locales, layouts; nothing to render.
    let p = problem(
        put(&app, &key, "Bad Name", json!({"subject": "s", "text": "t"})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "name");
    let long = "x".repeat(5000);
    let p = problem(
        put(&app, &key, "t", json!({"subject": long, "text": "t"})).await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/subject");
    let p = problem(
        put(
            &app,
            &key,
            "t",
            json!({
                "subject": "s", "locale": "english!", "layout": "missing"
            }),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["/locale", "/text", "/layout"]);

    // An endless loop runs out of fuel: a clear 422 in well under a second of work, and the
    // server keeps answering.
    let res = put(&app, &key, "spin", json!({
        "subject": "s",
        "text": "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}"
    }))
    .await;
    assert_eq!(res.status(), 201);
    let started = std::time::Instant::now();
    let p = problem(
        post_json(&app, &key, "/api/v1/templates/spin/preview", &json!({})).await,
        422,
        "template_error",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let message = p["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("fuel"), "{message}");
    assert_eq!(p["errors"][0]["line"], 1);
    // A template whose partial does not exist.
    put(
        &app,
        &key,
        "partial",
        json!({"subject": "s", "html": "{% include 'nowhere' %}"}),
    )
    .await;
    let p = problem(
        post_json(&app, &key, "/api/v1/templates/partial/preview", &json!({})).await,
        422,
        "template_error",
    )
    .await;
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nowhere"),
        "{p}"
    );
    // Data must be an object; a missing locale variant is named.
    let p = problem(
        post(
            &app,
            &key,
            "/api/v1/templates/partial/preview",
            json!({"data": [1]}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/data");
    put(
        &app,
        &key,
        "only-ko",
        json!({"subject": "s", "text": "t", "locale": "ko"}),
    )
    .await;
    let p = problem(
        post(
            &app,
            &key,
            "/api/v1/templates/only-ko/preview",
            json!({"locale": "fr"}),
        )
        .await,
        422,
        "validation_failed",
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "/locale");
    assert_eq!(app.get("/api/v1/templates", Some(&key)).await.status(), 200);
}
