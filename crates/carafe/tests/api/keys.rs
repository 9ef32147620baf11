//! API keys over HTTP: create (shown once), get, list, revoke, and the audit trail they leave.

use serde_json::Value;

use crate::helpers::{Backend, TestApp, problem};

both_backends!(keys_are_created_shown_once_and_audited);

async fn keys_are_created_shown_once_and_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .request(reqwest::Method::POST, "/api/v1/keys", Some(&app.admin_key))
        .header("x-request-id", "create-billing-key")
        .json(
            &serde_json::json!({"name": "  billing service ", "scopes": ["mail", "jobs", "mail"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "billing service");
    assert_eq!(created["scopes"], serde_json::json!(["mail", "jobs"]));
    assert!(secret.starts_with("ck_") && secret.len() == 43, "{secret}");
    assert_eq!(created["prefix"], &secret[..11]);

    // The secret is never shown again.
    let got: Value = app.get_key(&app.admin_key, &id).await.json().await.unwrap();
    assert!(got.get("secret").is_none());
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["revoked_at"], Value::Null);
    let listed = app
        .list_keys(&app.admin_key, "")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !listed.contains(&secret[11..]),
        "no list shows a key's text"
    );

    assert_eq!(app.revoke_key(&app.admin_key, &id).await.status(), 204);
    let got: Value = app.get_key(&app.admin_key, &id).await.json().await.unwrap();
    assert!(got["revoked_at"].is_string());

    let audit: Value = app.audit(&app.admin_key, "").await.json().await.unwrap();
    let events = audit["items"].as_array().unwrap();
    let actions: Vec<_> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["key.revoke", "key.create", "key.create"]);
    let create = &events[1];
    assert_eq!(create["target"], format!("key:{id}"));
    assert_eq!(create["request_id"], "create-billing-key");
    assert!(create["actor"].as_str().unwrap().starts_with("key:"));
    assert_eq!(
        create["details"]["scopes"],
        serde_json::json!(["mail", "jobs"])
    );
    assert_eq!(
        events[2]["actor"], "system",
        "the bootstrap key is created by the system"
    );
    let whole = audit.to_string();
    assert!(!whole.contains(&secret), "the audit log never holds a key");

    problem(
        app.get_key(&app.admin_key, "01900000-0000-7000-8000-000000000000")
            .await,
        404,
        "not_found",
    )
    .await;
}
