//! Files: who may read them (keys, owners, public buckets, signed links), how user content is
//! served safely, deletion and the audit trail, and bucket policies.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::files::{pdf, upload_raw, upload_ready};
use crate::helpers::{Backend, TestApp, eventually, problem};

file_tests!(
    access_follows_keys_owners_and_public_buckets,
    signed_links_work_until_changed_or_expired,
    html_is_always_an_attachment_and_content_is_sandboxed,
    deleted_files_disappear_and_their_bytes_are_purged,
    uploads_downloads_links_and_deletes_are_audited,
    buckets_are_validated_and_listed,
);

async fn access_follows_keys_owners_and_public_buckets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = upload_raw(
        &app,
        &app.admin_key,
        "?owner=alice&wait=30",
        "a.pdf",
        pdf("alice"),
    )
    .await;
    let file: Value = res.json().await.unwrap();
    let id = file["id"].as_str().unwrap();
    let content = format!("/api/v1/files/{id}/content");
    let alice = app.user_token("alice", &["files"]).await;
    let bob = app.user_token("bob", &["files"]).await;
    assert_eq!(app.get(&content, Some(&alice)).await.status(), 200);
    // Tokens also work in the URL (for <img src>), API keys never do.
    assert_eq!(
        app.get(&format!("{content}?access_token={alice}"), None)
            .await
            .status(),
        200
    );
    problem(
        app.get(&format!("{content}?access_token={}", app.admin_key), None)
            .await,
        401,
        "invalid_credentials",
    )
    .await;
    problem(app.get(&content, Some(&bob)).await, 404, "not_found").await;
    problem(
        app.get(&format!("/api/v1/files/{id}"), Some(&bob)).await,
        404,
        "not_found",
    )
    .await;
    problem(app.get(&content, None).await, 401, "unauthenticated").await;
    let jobs_only = app.new_key(&["jobs"]).await;
    problem(
        app.get(&content, Some(&jobs_only)).await,
        403,
        "insufficient_scope",
    )
    .await;
    // Public buckets are readable by anyone.
    let res = app
        .request(
            Method::PUT,
            "/api/v1/buckets/public-docs",
            Some(&app.admin_key),
        )
        .json(&json!({"visibility": "public", "allowed_types": ["pdf"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = upload_raw(
        &app,
        &app.admin_key,
        "?bucket=public-docs&wait=30",
        "p.pdf",
        pdf("public"),
    )
    .await;
    let public: Value = res.json().await.unwrap();
    let res = app
        .get(
            &format!("/api/v1/files/{}/content", public["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "public, max-age=3600");
}

async fn signed_links_work_until_changed_or_expired(backend: Backend) {
    use carafe::files::serve::disposition::DispositionKind;
    use carafe::files::serve::links::LinkSigner;
    let app = TestApp::spawn(backend).await;
    let file = upload_ready(&app, "contract.pdf", pdf("contract")).await;
    let id = file["id"].as_str().unwrap();
    let other = upload_ready(&app, "other.pdf", pdf("other")).await;
    let other_id = other["id"].as_str().unwrap();
    let res = app
        .post_json(
            &format!("/api/v1/files/{id}/links"),
            Some(&app.admin_key),
            &json!({"expires_in": 600, "disposition": "attachment", "filename": "계약서.pdf"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let link: Value = res.json().await.unwrap();
    let url = link["url"].as_str().unwrap().to_owned();
    assert!(link["expires_at"].is_string());
    // The signature is random base64url and may spell anything: look for the key itself.
    assert!(
        !url.contains("alice") && !url.contains(app.admin_key.as_str()),
        "nothing personal in {url}"
    );
    let res = app.client.get(&url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cd = res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        cd.starts_with("attachment") && cd.contains("%EA%B3%84%EC%95%BD%EC%84%9C.pdf"),
        "{cd}"
    );
    assert_eq!(res.bytes().await.unwrap(), pdf("contract"));
    // Another file's id, a changed expiry or disposition, a foreign secret: refused.
    let moved = url.replace(id, other_id);
    problem(
        app.client.get(&moved).send().await.unwrap(),
        403,
        "link_invalid",
    )
    .await;
    let expiry = link["expires_at"].as_str().unwrap();
    let at = time::OffsetDateTime::parse(expiry, &time::format_description::well_known::Rfc3339)
        .unwrap();
    let later = url.replace(
        &format!("expires={}", at.unix_timestamp()),
        &format!("expires={}", at.unix_timestamp() + 999),
    );
    assert_ne!(later, url);
    problem(
        app.client.get(&later).send().await.unwrap(),
        403,
        "link_invalid",
    )
    .await;
    let inline = url.replace("disposition=attachment", "disposition=inline");
    problem(
        app.client.get(&inline).send().await.unwrap(),
        403,
        "link_invalid",
    )
    .await;
    let file_id: carafe_core::files::FileId = id.parse().unwrap();
    let foreign =
        LinkSigner::new([9; 32]).sign(file_id, at.unix_timestamp(), DispositionKind::Inline, None);
    let res = app
        .get(&format!("/api/v1/files/{id}/content?{foreign}"), None)
        .await;
    problem(res, 403, "link_invalid").await;
    // A genuine link past its time.
    let key = carafe::secrets::Secrets::from_text(crate::helpers::SECRET).link_key();
    let past = carafe_core::time::now().unix_timestamp() - 10;
    let expired = LinkSigner::new(key).sign(file_id, past, DispositionKind::Inline, None);
    let res = app
        .get(&format!("/api/v1/files/{id}/content?{expired}"), None)
        .await;
    problem(res, 403, "link_expired").await;
    // Expiry is capped; processing files cannot be linked.
    let res = app
        .post_json(
            &format!("/api/v1/files/{id}/links"),
            Some(&app.admin_key),
            &json!({"expires_in": 400 * 24 * 3600}),
        )
        .await;
    problem(res, 422, "validation_failed").await;
}

async fn html_is_always_an_attachment_and_content_is_sandboxed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let res = app
        .request(Method::PUT, "/api/v1/buckets/web", Some(&app.admin_key))
        .json(&json!({"allowed_types": ["html", "svg", "txt"], "scan": "off"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let upload = |name: &'static str, bytes: &'static [u8]| {
        let app = &app;
        async move {
            let res = upload_raw(
                app,
                &app.admin_key,
                "?bucket=web&wait=30",
                name,
                bytes.to_vec(),
            )
            .await;
            assert_eq!(res.status(), 201, "{name}");
            res.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let html = upload("page.html", b"<!doctype html><html><body>hi</body></html>").await;
    let svg = upload(
        "logo.svg",
        b"<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>",
    )
    .await;
    let txt = upload("readme.txt", b"just text").await;
    for id in [&html, &svg] {
        let res = app
            .get(&format!("/api/v1/files/{id}/content"), Some(&app.admin_key))
            .await;
        let h = res.headers();
        assert!(
            h["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment")
        );
        assert!(
            h["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("sandbox")
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    let res = app
        .get(
            &format!("/api/v1/files/{txt}/content"),
            Some(&app.admin_key),
        )
        .await;
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("inline")
    );
    let res = app
        .get(
            &format!("/api/v1/files/{txt}/content?download=1"),
            Some(&app.admin_key),
        )
        .await;
    assert!(
        res.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment")
    );
}

async fn deleted_files_disappear_and_their_bytes_are_purged(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let file = upload_ready(&app, "gone.pdf", pdf("gone")).await;
    let id = file["id"].as_str().unwrap();
    let object = format!("objects/{id}");
    assert!(app.has_object(&object).await);
    // Warm the caches, then delete.
    assert_eq!(
        app.get(&format!("/api/v1/files/{id}/content"), Some(&app.admin_key))
            .await
            .status(),
        200
    );
    let bob = app.user_token("bob", &["files"]).await;
    let res = app
        .request(Method::DELETE, &format!("/api/v1/files/{id}"), Some(&bob))
        .send()
        .await
        .unwrap();
    problem(res, 404, "not_found").await;
    let res = app
        .request(
            Method::DELETE,
            &format!("/api/v1/files/{id}"),
            Some(&app.admin_key),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    problem(
        app.get(&format!("/api/v1/files/{id}"), Some(&app.admin_key))
            .await,
        404,
        "not_found",
    )
    .await;
    problem(
        app.get(&format!("/api/v1/files/{id}/content"), Some(&app.admin_key))
            .await,
        404,
        "not_found",
    )
    .await;
    let res = app
        .request(
            Method::DELETE,
            &format!("/api/v1/files/{id}"),
            Some(&app.admin_key),
        )
        .send()
        .await
        .unwrap();
    problem(res, 404, "not_found").await;
    eventually(Duration::from_secs(20), || async {
        !app.has_object(&object).await
    })
    .await;
}

async fn uploads_downloads_links_and_deletes_are_audited(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let file = upload_ready(&app, "audited.pdf", pdf("audit me")).await;
    let id = file["id"].as_str().unwrap();
    let res = app
        .request(
            Method::GET,
            &format!("/api/v1/files/{id}/content"),
            Some(&app.admin_key),
        )
        .header("user-agent", "carafe-test/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let link: Value = app
        .post_json(
            &format!("/api/v1/files/{id}/links"),
            Some(&app.admin_key),
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        app.client
            .get(link["url"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let res = app
        .request(
            Method::DELETE,
            &format!("/api/v1/files/{id}"),
            Some(&app.admin_key),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    app.state.files.audit.flush().await;
    let target = format!("file:{id}");
    let events: Value = app
        .audit(&app.admin_key, "?limit=100")
        .await
        .json()
        .await
        .unwrap();
    let mine: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == target.as_str())
        .collect();
    // Downloads are written in batches, so their rows may follow later events: compare
    // the set of actions, and the time order of the events each request wrote itself.
    let mut actions: Vec<&str> = mine.iter().map(|e| e["action"].as_str().unwrap()).collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        [
            "file.delete",
            "file.download",
            "file.download",
            "file.link",
            "file.scan",
            "file.upload",
        ]
    );
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let mut by_time: Vec<(time::OffsetDateTime, &str)> = mine
        .iter()
        .map(|e| {
            let at = time::OffsetDateTime::parse(e["at"].as_str().unwrap(), rfc3339).unwrap();
            (at, e["action"].as_str().unwrap())
        })
        .collect();
    by_time.sort_unstable();
    let at = |action: &str| by_time.iter().find(|(_, a)| *a == action).unwrap().0;
    assert_eq!(by_time.first().unwrap().1, "file.upload");
    assert_eq!(
        at("file.delete"),
        by_time.last().unwrap().0,
        "the delete came last"
    );
    let download = mine
        .iter()
        .find(|e| e["action"] == "file.download" && e["details"]["via"] == "key")
        .unwrap();
    assert!(download["actor"].as_str().unwrap().starts_with("key:"));
    assert_eq!(download["details"]["ip"], "127.0.0.1");
    assert!(download["request_id"].is_string());
    let by_link = mine
        .iter()
        .filter(|e| e["action"] == "file.download")
        .find(|e| e["details"]["via"] == "link");
    assert!(by_link.is_some(), "link downloads are audited as such");
    let ua = mine
        .iter()
        .filter(|e| e["action"] == "file.download")
        .any(|e| e["details"]["user_agent"] == "carafe-test/1.0");
    assert!(ua);
}

async fn buckets_are_validated_and_listed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.admin_key.clone();
    let put = |name: &str, body: Value| {
        app.request(Method::PUT, &format!("/api/v1/buckets/{name}"), Some(&key))
            .json(&body)
            .send()
    };
    let res = put("bad", json!({"allowed_types": ["png", "exe2"], "max_size": 0, "thumbnails": [{"name": "x", "width": 0, "height": 10}]})).await.unwrap();
    let body = problem(res, 422, "validation_failed").await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["/max_size", "/allowed_types/1", "/thumbnails/0"]);
    let nine: Vec<Value> = (0..9)
        .map(|i| json!({"name": format!("t{i}"), "width": 10, "height": 10}))
        .collect();
    let res = put("many", json!({"thumbnails": nine})).await.unwrap();
    let body = problem(res, 422, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "/thumbnails");
    let res = put("Bad Name", json!({})).await.unwrap();
    problem(res, 422, "validation_failed").await;
    let res = put("docs", json!({"allowed_types": ["pdf"], "unknown": 1}))
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let res = put("docs", json!({"allowed_types": ["pdf"]}))
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = put("docs", json!({"allowed_types": ["pdf", "txt"]}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let list: Value = app
        .get("/api/v1/buckets", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "docs"]);
    let default: Value = app
        .get("/api/v1/buckets/default", Some(&key))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(default["policy"]["max_size"], 50 * 1024 * 1024);
    assert_eq!(
        default["policy"]["allowed_types"],
        json!(["png", "jpeg", "gif", "webp", "pdf", "csv", "txt"])
    );
    let user = app.user_token("u", &["files"]).await;
    problem(
        app.get("/api/v1/buckets", Some(&user)).await,
        403,
        "api_key_required",
    )
    .await;
}
