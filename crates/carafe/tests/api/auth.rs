//! Authentication and authorization: API keys with scopes, end-user tokens, and every way a
//! credential can be missing, malformed, forged, expired, revoked or short of a scope.

use carafe::secrets::Secrets;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Backend, SECRET, TestApp, problem};

both_backends!(
    me_describes_a_key,
    me_describes_a_user,
    missing_and_malformed_credentials_are_401,
    unknown_and_forged_credentials_are_401,
    expired_tokens_are_401_with_their_own_code,
    revoked_keys_stop_working_at_once,
    missing_scopes_are_403,
    minting_tokens_is_validated,
    query_tokens_are_not_accepted_on_ordinary_endpoints,
    streaming_endpoints_accept_user_tokens_in_the_query,
);

async fn me_describes_a_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.me(&app.admin_key).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["kind"], "api_key");
    assert_eq!(body["name"], "bootstrap admin");
    assert_eq!(body["scopes"], json!(["admin"]));

    let files = app.new_key(&["files", "jobs"]).await;
    let body: Value = app.me(&files).await.json().await.unwrap();
    assert_eq!(body["scopes"], json!(["files", "jobs"]));
    assert_ne!(body["id"], Value::Null);
}

async fn me_describes_a_user(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .create_token(
            &app.admin_key,
            &json!({"user_id": "user-7", "ttl_seconds": 120, "scopes": ["files"]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let minted: Value = res.json().await.unwrap();
    assert_eq!(minted["token_type"], "Bearer");
    let token = minted["token"].as_str().unwrap();
    let body: Value = app.me(token).await.json().await.unwrap();
    assert_eq!(body["kind"], "user");
    assert_eq!(body["id"], "user-7");
    assert_eq!(body["scopes"], json!(["files"]));
    assert_eq!(body["expires_at"], minted["expires_at"]);
}

async fn missing_and_malformed_credentials_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app.get("/api/v1/me", None).await;
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"carafe\"");
    problem(res, 401, "unauthenticated").await;
    for header in [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer    ",
        "token abc",
        "ck_abc",
    ] {
        let res = app
            .request(Method::GET, "/api/v1/me", None)
            .header("authorization", header)
            .send()
            .await
            .unwrap();
        problem(res, 401, "unauthenticated").await;
    }
}

async fn unknown_and_forged_credentials_are_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let unknown_key = format!("ck_{}", "A".repeat(40));
    let short_key = "ck_short";
    // A token signed with another server's secret.
    let foreign = carafe::access::Tokens::new(
        &Secrets::from_text("another-secret-another-secret-another"),
        &Default::default(),
    )
    .mint("user-1", None, Default::default())
    .unwrap()
    .token;
    // A token claiming admin, correctly signed: end-user tokens can never be admin.
    let admin_claim = sign(json!({
        "sub": "u", "aud": "carafe", "iss": "carafe", "iat": now(), "exp": now() + 60,
        "scope": "admin", "jti": "x"
    }));
    // Right secret, wrong audience.
    let wrong_aud = sign(json!({
        "sub": "u", "aud": "someone-else", "iss": "carafe", "iat": now(), "exp": now() + 60,
        "scope": "", "jti": "x"
    }));
    for credential in [
        unknown_key.as_str(),
        short_key,
        &foreign,
        &admin_claim,
        &wrong_aud,
        "a.b.c",
    ] {
        let res = app.me(credential).await;
        let challenge = res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(challenge.contains("invalid_token"), "{challenge}");
        problem(res, 401, "invalid_credentials").await;
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn sign(claims: Value) -> String {
    let key = EncodingKey::from_secret(&Secrets::from_text(SECRET).token_key());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

async fn expired_tokens_are_401_with_their_own_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let expired = sign(json!({
        "sub": "u", "aud": "carafe", "iss": "carafe", "iat": now() - 3600, "exp": now() - 60,
        "scope": "files", "jti": "x"
    }));
    problem(app.me(&expired).await, 401, "token_expired").await;
    // The same claims, still valid, pass: only the expiry made the difference.
    let valid = sign(json!({
        "sub": "u", "aud": "carafe", "iss": "carafe", "iat": now(), "exp": now() + 60,
        "scope": "files", "jti": "x"
    }));
    assert_eq!(app.me(&valid).await.status(), 200);
}

async fn revoked_keys_stop_working_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .create_key(&app.admin_key, "short-lived", &["files"])
        .await;
    let created: Value = res.json().await.unwrap();
    let (id, secret) = (
        created["id"].as_str().unwrap(),
        created["secret"].as_str().unwrap(),
    );
    // Use it once so its lookup is cached.
    assert_eq!(app.me(secret).await.status(), 200);
    assert_eq!(app.revoke_key(&app.admin_key, id).await.status(), 204);
    problem(app.me(secret).await, 401, "invalid_credentials").await;
    // Revoking again is harmless; an unknown id is 404.
    assert_eq!(app.revoke_key(&app.admin_key, id).await.status(), 204);
    let unknown = "01900000-0000-7000-8000-000000000000";
    problem(
        app.revoke_key(&app.admin_key, unknown).await,
        404,
        "not_found",
    )
    .await;
}

async fn missing_scopes_are_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let files = app.new_key(&["files"]).await;
    let res = app.create_key(&files, "escalate", &["admin"]).await;
    let challenge = res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("insufficient_scope") && challenge.contains("admin"),
        "{challenge}"
    );
    let body = problem(res, 403, "insufficient_scope").await;
    assert_eq!(body["required_scope"], "admin");
    problem(app.list_keys(&files, "").await, 403, "insufficient_scope").await;
    problem(app.audit(&files, "").await, 403, "insufficient_scope").await;
    problem(app.metrics(Some(&files)).await, 403, "insufficient_scope").await;
    let user = app.user_token("u1", &["files", "jobs"]).await;
    problem(
        app.create_key(&user, "x", &["files"]).await,
        403,
        "insufficient_scope",
    )
    .await;
    let res = app.create_token(&user, &json!({"user_id": "other"})).await;
    problem(res, 403, "insufficient_scope").await;
}

async fn minting_tokens_is_validated(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.auth.token_max_ttl = carafe::config::HumanDuration(std::time::Duration::from_secs(600));
        c.auth.token_default_ttl =
            carafe::config::HumanDuration(std::time::Duration::from_secs(60));
    })
    .await;
    let cases = [
        (json!({"user_id": "u", "scopes": ["admin"]}), "/scopes"),
        (
            json!({"user_id": "u", "scopes": ["files", "nope"]}),
            "/scopes/1",
        ),
        (json!({"user_id": "u", "ttl_seconds": 601}), "/ttl_seconds"),
        (json!({"user_id": "u", "ttl_seconds": 0}), "/ttl_seconds"),
        (json!({"user_id": "u", "ttl_seconds": -5}), "/ttl_seconds"),
        (json!({"user_id": ""}), "/user_id"),
        (json!({"user_id": "x".repeat(256)}), "/user_id"),
        (json!({"ttl_seconds": 60}), "/"),
    ];
    for (body, field) in cases {
        let res = app.create_token(&app.admin_key, &body).await;
        let p = problem(res, 422, "validation_failed").await;
        assert_eq!(p["errors"][0]["field"], field, "{body}: {p}");
    }
    let res = app
        .create_token(
            &app.admin_key,
            &json!({"user_id": "사용자-1", "ttl_seconds": 600}),
        )
        .await;
    assert_eq!(res.status(), 201);
}

async fn query_tokens_are_not_accepted_on_ordinary_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.user_token("u1", &[]).await;
    let res = app
        .get(&format!("/api/v1/me?access_token={token}"), None)
        .await;
    problem(res, 401, "unauthenticated").await;
}

/// A streaming endpoint (as `EventSource` opens them) built with `StreamPrincipal`, served
/// with the real request envelope (request id, metrics, headers) on the real app state.
async fn streaming_endpoints_accept_user_tokens_in_the_query(backend: Backend) {
    use carafe::api::auth::StreamPrincipal;

    async fn whoami(StreamPrincipal(p): StreamPrincipal) -> String {
        p.actor_id()
    }
    let app = TestApp::spawn(backend).await;
    let router = axum::Router::new()
        .route("/stream", axum::routing::get(whoami))
        .layer(axum::middleware::from_fn_with_state(
            app.state.clone(),
            carafe::api::envelope::middleware,
        ))
        .with_state(app.state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/stream", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let token = app.user_token("u-stream", &["jobs"]).await;
    let res = app
        .client
        .get(format!("{base}?access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "user:u-stream");
    let res = app
        .client
        .get(&base)
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert!(res.text().await.unwrap().starts_with("key:"));

    let res = app
        .client
        .get(format!("{base}?access_token={}", app.admin_key))
        .send()
        .await
        .unwrap();
    let p = problem(res, 401, "invalid_credentials").await;
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("not accepted in URLs"),
        "{p}"
    );
    let expired = sign(json!({
        "sub": "u", "aud": "carafe", "iss": "carafe", "iat": now() - 3600, "exp": now() - 60,
        "scope": "", "jti": "x"
    }));
    let res = app
        .client
        .get(format!("{base}?access_token={expired}"))
        .send()
        .await
        .unwrap();
    problem(res, 401, "token_expired").await;
    problem(
        app.client.get(&base).send().await.unwrap(),
        401,
        "unauthenticated",
    )
    .await;
    // A bad header is not rescued by a good query token.
    let res = app
        .client
        .get(format!("{base}?access_token={token}"))
        .header("authorization", "Bearer nonsense")
        .send()
        .await
        .unwrap();
    problem(res, 401, "invalid_credentials").await;
}
