//! The HTTP conventions every endpoint shares: request ids, problem+json for bad input,
//! ETags, pagination with Link, absolute URLs, compression, security headers and CORS.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, problem};

both_backends!(
    request_ids_are_kept_generated_or_replaced,
    unknown_routes_and_methods_are_problems,
    malformed_json_says_where,
    wrong_content_type_is_415,
    oversize_bodies_are_413,
    invalid_fields_are_422_with_a_pointer,
    etags_give_304_and_change_with_the_resource,
    lists_paginate_with_link_headers,
    absolute_urls_never_come_from_an_untrusted_host,
    json_is_compressed_when_asked,
    security_headers_are_on_every_answer,
    cors_allows_only_configured_origins,
);

async fn request_ids_are_kept_generated_or_replaced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let sent = app
        .request(Method::GET, "/healthz", None)
        .header("x-request-id", "abc-123:trace")
        .send()
        .await
        .unwrap();
    assert_eq!(sent.headers()["x-request-id"], "abc-123:trace");

    let generated = app.healthz().await;
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert_ne!(
        app.healthz().await.headers()["x-request-id"]
            .to_str()
            .unwrap(),
        id
    );

    for absurd in ["<script>alert(1)</script>", &"x".repeat(300), "a b"] {
        let res = app
            .request(Method::GET, "/api/v1/nope", None)
            .header("x-request-id", absurd)
            .send()
            .await
            .unwrap();
        let echoed = res.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert_ne!(echoed, absurd);
        assert_eq!(echoed.len(), 32);
        // The problem body carries the replacement, never the absurd value.
        problem(res, 404, "route_not_found").await;
    }
}

async fn unknown_routes_and_methods_are_problems(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    problem(
        app.get("/api/v1/nothing/here", None).await,
        404,
        "route_not_found",
    )
    .await;
    problem(app.get("/", None).await, 404, "route_not_found").await;
    let res = app
        .request(Method::PUT, "/api/v1/me", Some(&app.admin_key))
        .send()
        .await
        .unwrap();
    let allow = res.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("GET"), "{allow}");
    problem(res, 405, "method_not_allowed").await;
    // A malformed id in a path is "no such resource", not a 400 that confirms the route shape.
    let res = app.get_key(&app.admin_key, "not-a-uuid").await;
    problem(res, 404, "not_found").await;
}

async fn malformed_json_says_where(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .request(Method::POST, "/api/v1/keys", Some(&app.admin_key))
        .header("content-type", "application/json")
        .body("{\"name\": \"a\",\n  \"scopes\": [\"files\",]}")
        .send()
        .await
        .unwrap();
    let body = problem(res, 400, "malformed_json").await;
    assert_eq!(
        (body["line"].as_u64(), body["column"].as_u64()),
        (Some(2), Some(22)),
        "{body}"
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("line 2 column 22"),
        "{body}"
    );

    let too_deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for broken in ["", "{", "[1, 2", "{\"name\": \"a\", \"scopes\": []} extra"] {
        let res = app
            .request(Method::POST, "/api/v1/keys", Some(&app.admin_key))
            .header("content-type", "application/json")
            .body(broken.to_owned())
            .send()
            .await
            .unwrap();
        problem(res, 400, "malformed_json").await;
    }
    let res = app
        .request(Method::POST, "/api/v1/keys", Some(&app.admin_key))
        .header("content-type", "application/json")
        .body(too_deep)
        .send()
        .await
        .unwrap();
    problem(res, 400, "json_too_deep").await;
}

async fn wrong_content_type_is_415(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = app
            .request(Method::POST, "/api/v1/keys", Some(&app.admin_key))
            .body("{\"name\": \"a\", \"scopes\": [\"files\"]}");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        problem(req.send().await.unwrap(), 415, "unsupported_media_type").await;
    }
    // `application/json; charset=utf-8` is JSON.
    let res = app
        .request(Method::POST, "/api/v1/keys", Some(&app.admin_key))
        .header("content-type", "application/json; charset=utf-8")
        .body("{\"name\": \"a\", \"scopes\": [\"files\"]}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

async fn oversize_bodies_are_413(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.limits.json_body_bytes = 2048).await;
    let big = json!({"name": "a", "scopes": ["files"], "pad": "x".repeat(4096)});
    let res = app
        .post_json("/api/v1/keys", Some(&app.admin_key), &big)
        .await;
    problem(res, 413, "body_too_large").await;
    // Without a Content-Length (chunked), the limit still holds while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|_| Ok(vec![b' '; 1024])).collect();
    let res = app
        .request(Method::POST, "/api/v1/keys", Some(&app.admin_key))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    problem(res, 413, "body_too_large").await;
    // Just under the limit is fine (and fails only on its content).
    let ok = json!({"name": "a", "scopes": ["files"]});
    assert_eq!(
        app.post_json("/api/v1/keys", Some(&app.admin_key), &ok)
            .await
            .status(),
        201
    );
}

async fn invalid_fields_are_422_with_a_pointer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        (
            json!({"name": "a", "scopes": ["files", "root"]}),
            "/scopes/1",
        ),
        (json!({"name": "a", "scopes": []}), "/scopes"),
        (json!({"name": "", "scopes": ["files"]}), "/name"),
        (json!({"name": 5, "scopes": ["files"]}), "/name"),
        (json!({"scopes": ["files"]}), "/"),
        (
            json!({"name": "a", "scopes": ["files"], "extra": 1}),
            "/extra",
        ),
        (json!([1, 2]), "/0"),
        (json!("text"), "/"),
    ];
    for (body, field) in cases {
        let res = app
            .post_json("/api/v1/keys", Some(&app.admin_key), &body)
            .await;
        let p = problem(res, 422, "validation_failed").await;
        assert_eq!(p["errors"][0]["field"], field, "{body}: {p}");
        assert!(!p["errors"][0]["message"].as_str().unwrap().is_empty());
    }
}

async fn etags_give_304_and_change_with_the_resource(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.list_keys(&app.admin_key, "").await;
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with("W/\""), "{etag}");
    let again = app
        .request(Method::GET, "/api/v1/keys", Some(&app.admin_key))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());

    app.new_key(&["files"]).await;
    let changed = app
        .request(Method::GET, "/api/v1/keys", Some(&app.admin_key))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200, "a changed list is sent again");
    assert_ne!(changed.headers()["etag"], etag.as_str());
}

async fn lists_paginate_with_link_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for _ in 0..4 {
        app.new_key(&["jobs"]).await;
    }
    let mut url = app.url("/api/v1/keys?limit=2");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let res = app
            .client
            .get(&url)
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let link = res
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let body: Value = res.json().await.unwrap();
        pages += 1;
        seen.extend(
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["id"].clone()),
        );
        match link {
            Some(link) => {
                assert!(link.ends_with("; rel=\"next\""), "{link}");
                assert!(
                    link.contains("limit=2"),
                    "other parameters are kept: {link}"
                );
                assert!(body["next_cursor"].is_string());
                url = link[1..link.find('>').unwrap()].to_owned();
                assert!(url.starts_with(&app.base), "{url}");
            }
            None => {
                assert!(body.get("next_cursor").is_none());
                break;
            }
        }
    }
    assert_eq!(
        (seen.len(), pages),
        (5, 3),
        "bootstrap key + 4, two per page"
    );
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(unique.len(), 5);

    problem(
        app.list_keys(&app.admin_key, "?cursor=garbage!").await,
        400,
        "invalid_cursor",
    )
    .await;
    problem(
        app.list_keys(&app.admin_key, "?limit=0").await,
        400,
        "invalid_limit",
    )
    .await;
    problem(
        app.list_keys(&app.admin_key, "?limit=100000").await,
        400,
        "invalid_limit",
    )
    .await;
    problem(
        app.list_keys(&app.admin_key, "?limit=abc").await,
        400,
        "invalid_query",
    )
    .await;
}

async fn absolute_urls_never_come_from_an_untrusted_host(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .request(Method::POST, "/api/v1/keys", Some(&app.admin_key))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .json(&json!({"name": "a", "scopes": ["files"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(&app.base), "{location}");
    // The Location resolves to the new key.
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(location, app.url(&format!("/api/v1/keys/{id}")));
    assert_eq!(
        app.client
            .get(&location)
            .bearer_auth(&app.admin_key)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Behind a trusted proxy the forwarded host is used...
    let proxied = TestApp::spawn_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    for _ in 0..2 {
        proxied.new_key(&["files"]).await;
    }
    let res = proxied
        .request(
            Method::GET,
            "/api/v1/keys?limit=1",
            Some(&proxied.admin_key),
        )
        .header("x-forwarded-host", "carafe.example.com")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let link = res.headers()["link"].to_str().unwrap().to_owned();
    assert!(
        link.starts_with("<https://carafe.example.com/api/v1/keys?"),
        "{link}"
    );

    // ...and a configured public URL wins over everything.
    let public = TestApp::spawn_with(backend, |c| {
        c.public_url = Some("https://files.example.org".parse().unwrap());
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let res = public
        .request(Method::POST, "/api/v1/keys", Some(&public.admin_key))
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "http")
        .json(&json!({"name": "a", "scopes": ["files"]}))
        .send()
        .await
        .unwrap();
    let location = res.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("https://files.example.org/api/v1/keys/"),
        "{location}"
    );
    assert_eq!(
        res.headers()["strict-transport-security"],
        "max-age=31536000"
    );
}

async fn json_is_compressed_when_asked(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for encoding in ["gzip", "br"] {
        let res = app
            .request(Method::GET, "/api/v1/openapi.json", None)
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-encoding"], encoding);
        assert!(
            res.headers()["vary"]
                .to_str()
                .unwrap()
                .contains("accept-encoding")
        );
        let compressed = res.bytes().await.unwrap().len();
        let plain = app.get("/api/v1/openapi.json", None).await;
        assert!(plain.headers().get("content-encoding").is_none());
        let plain = plain.bytes().await.unwrap().len();
        assert!(
            compressed * 3 < plain,
            "{encoding}: {compressed} vs {plain}"
        );
    }
}

async fn security_headers_are_on_every_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for res in [
        app.healthz().await,
        app.me(&app.admin_key).await,
        app.get("/api/v1/nope", None).await,
        app.get("/api/v1/me", None).await,
    ] {
        let h = res.headers();
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        assert!(
            h.get("strict-transport-security").is_none(),
            "no HSTS over plain HTTP"
        );
    }
}

async fn cors_allows_only_configured_origins(backend: Backend) {
    let closed = TestApp::spawn(backend).await;
    let res = closed
        .request(Method::GET, "/api/v1/me", Some(&closed.admin_key))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());

    let app = TestApp::spawn_with(backend, |c| {
        c.cors_origins = vec!["https://app.example.com".into()];
    })
    .await;
    let preflight = app
        .request(Method::OPTIONS, "/api/v1/keys", None)
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, idempotency-key",
        )
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        allowed.contains("idempotency-key") && allowed.contains("authorization"),
        "{allowed}"
    );

    let res = app
        .request(Method::GET, "/api/v1/me", Some(&app.admin_key))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = res.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(
        exposed.contains("x-request-id") && exposed.contains("link"),
        "{exposed}"
    );

    let other = app
        .request(Method::GET, "/api/v1/me", Some(&app.admin_key))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}
