//! The audit log API: filters by file, action (exact or prefix), actor and time, alone and
//! combined; pages that keep their filters; 422s that name the bad field; and who may read
//! which events. CSV exports are in `audit_csv.rs`.

use carafe_core::audit::NewAuditEvent;
use carafe_core::files::FileId;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::helpers::{Backend, TestApp, problem};

both_backends!(
    filters_select_events_alone_and_combined,
    filtered_pages_keep_their_filters,
    bad_filters_are_named_in_a_422,
    files_keys_read_one_files_events_and_nothing_else,
);

/// A seeded event `minute` minutes after 2024-01-01T00:00Z.
pub fn event(action: &str, target: Option<String>, actor: &str, minute: i64) -> NewAuditEvent {
    NewAuditEvent {
        at: datetime!(2024-01-01 0:00 UTC) + time::Duration::minutes(minute),
        actor: actor.into(),
        action: action.into(),
        target,
        request_id: Some(format!("req-{minute}")),
        details: json!({"minute": minute}).into(),
    }
}

/// Two files' worth of events, plus look-alikes each filter must leave out. Returns the files.
async fn seed(app: &TestApp) -> (String, String) {
    let (f1, f2) = (FileId::new().to_string(), FileId::new().to_string());
    let file = |id: &str| Some(format!("file:{id}"));
    let events = vec![
        event("test.create", file(&f1), "key:test-a", 0),
        event("test.read", file(&f1), "key:test-b", 1),
        event("test.read", file(&f2), "key:test-a", 2),
        event("other.read", file(&f1), "key:test-a", 3),
        event("test.delete", file(&f1), "key:test-b", 4),
        event("tests.sweep", None, "key:test-a", 5),
    ];
    app.state.store.append_audits(&events).await.unwrap();
    (f1, f2)
}

/// The actions (and minutes) of the events a query returns, as the admin key sees them.
async fn listed(app: &TestApp, query: &str) -> Vec<(String, i64)> {
    let res = app.audit(&app.admin_key, query).await;
    assert_eq!(res.status(), 200, "{query}");
    let body: Value = res.json().await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let minute = e["details"]["minute"].as_i64().unwrap_or(-1);
            (e["action"].as_str().unwrap().to_owned(), minute)
        })
        .collect()
}

fn expect(items: &[(&str, i64)]) -> Vec<(String, i64)> {
    items.iter().map(|(a, m)| ((*a).to_owned(), *m)).collect()
}

async fn filters_select_events_alone_and_combined(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (f1, f2) = seed(&app).await;
    assert_eq!(
        listed(&app, &format!("?file={f1}")).await,
        expect(&[
            ("test.delete", 4),
            ("other.read", 3),
            ("test.read", 1),
            ("test.create", 0)
        ])
    );
    assert_eq!(
        listed(&app, &format!("?file={f2}")).await,
        expect(&[("test.read", 2)])
    );
    assert_eq!(
        listed(&app, "?action=test.read").await,
        expect(&[("test.read", 2), ("test.read", 1)])
    );
    // A prefix takes its namespace only: not `tests.sweep`, not `other.read`.
    assert_eq!(
        listed(&app, "?action=test.*").await,
        expect(&[
            ("test.delete", 4),
            ("test.read", 2),
            ("test.read", 1),
            ("test.create", 0)
        ])
    );
    assert_eq!(
        listed(&app, "?actor=key:test-b").await,
        expect(&[("test.delete", 4), ("test.read", 1)])
    );
    // `since` is inclusive, `until` exclusive; the real events of this server are later.
    assert_eq!(
        listed(
            &app,
            "?since=2024-01-01T00:02:00Z&until=2024-01-01T00:04:00Z"
        )
        .await,
        expect(&[("other.read", 3), ("test.read", 2)])
    );
    assert_eq!(
        listed(&app, "?until=2024-01-01T01:00:30%2B01:00").await,
        expect(&[("test.create", 0)]),
        "offsets are honoured"
    );
    assert_eq!(
        listed(&app, &format!("?file={f1}&action=test.*&actor=key:test-b")).await,
        expect(&[("test.delete", 4), ("test.read", 1)])
    );
    assert_eq!(
        listed(
            &app,
            &format!("?file={f1}&action=test.*&since=2024-01-01T00:01:00.001Z")
        )
        .await,
        expect(&[("test.delete", 4)])
    );
    assert!(
        listed(&app, &format!("?file={f2}&actor=key:test-b"))
            .await
            .is_empty()
    );
    // No filter: everything, the server's own events included.
    let everything = listed(&app, "?limit=500").await;
    assert!(everything.len() > 6);
    assert!(everything.iter().any(|(a, _)| a == "key.create"));
}

async fn filtered_pages_keep_their_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    seed(&app).await;
    let mut path = "/api/v1/audit?action=test.*&actor=key:test-a&limit=1".to_owned();
    let mut seen = Vec::new();
    loop {
        let res = app.get(&path, Some(&app.admin_key)).await;
        assert_eq!(res.status(), 200);
        let link = res
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_owned());
        let body: Value = res.json().await.unwrap();
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        seen.push(items[0]["details"]["minute"].as_i64().unwrap());
        let Some(link) = link else {
            assert!(body.get("next_cursor").is_none());
            break;
        };
        let url = link
            .trim_start_matches('<')
            .split_once('>')
            .unwrap()
            .0
            .to_owned();
        assert!(
            url.contains("action=test.*") && url.contains("actor=key%3Atest-a"),
            "{url}"
        );
        path = url.strip_prefix(&app.base).unwrap().to_owned();
        assert!(seen.len() < 10, "pages end");
    }
    assert_eq!(seen, [2, 0], "test.* by key:test-a, newest first");
    // The body's cursor continues the same filtered list.
    let first: Value = app
        .audit(&app.admin_key, "?action=test.*&limit=2")
        .await
        .json()
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = listed(&app, &format!("?action=test.*&limit=2&cursor={cursor}")).await;
    assert_eq!(rest, expect(&[("test.read", 1), ("test.create", 0)]));
}

/// The `field`s a 422 names, in order.
async fn fields(app: &TestApp, query: &str) -> Vec<String> {
    let body = problem(
        app.audit(&app.admin_key, query).await,
        422,
        "validation_failed",
    )
    .await;
    body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

async fn bad_filters_are_named_in_a_422(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for (query, field) in [
        ("?file=not-a-uuid", "file"),
        ("?file=", "file"),
        ("?action=", "action"),
        ("?action=*", "action"),
        ("?action=file.**", "action"),
        ("?action=drop%20table", "action"),
        ("?actor=", "actor"),
        ("?since=yesterday", "since"),
        // An unencoded `+` arrives as a space.
        ("?since=2024-01-01T00:00:00+01:00", "since"),
        ("?until=2024-13-01T00:00:00Z", "until"),
        (
            "?since=2024-01-02T00:00:00Z&until=2024-01-01T00:00:00Z",
            "until",
        ),
        ("?format=xml", "format"),
        ("?format=csv&action=", "action"),
    ] {
        assert_eq!(fields(&app, query).await, [field], "{query}");
    }
    let long = "x".repeat(257);
    assert_eq!(fields(&app, &format!("?actor={long}")).await, ["actor"]);
    assert_eq!(
        fields(&app, "?file=x&action=?&since=no&until=no").await,
        ["file", "action", "since", "until"],
        "every bad field at once"
    );
    // Paging keeps the conventions every list has.
    problem(
        app.audit(&app.admin_key, "?limit=0").await,
        400,
        "invalid_limit",
    )
    .await;
    problem(
        app.audit(&app.admin_key, "?cursor=garbage").await,
        400,
        "invalid_cursor",
    )
    .await;
}

async fn files_keys_read_one_files_events_and_nothing_else(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (f1, _) = seed(&app).await;
    let files = app.new_key(&["files"]).await;
    let by_file = format!("?file={f1}&action=test.*");
    let res = app.audit(&files, &by_file).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 3);
    let res = app.audit(&files, &format!("{by_file}&format=csv")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap().lines().count(), 4);
    // A bad file id is still a 422 for them, not a 403.
    let res = app.audit(&files, "?file=nope").await;
    problem(res, 422, "validation_failed").await;
    // Without `file=` the rest of the log is admin-only, in either format.
    for query in ["", "?action=file.*", "?format=csv", "?actor=key:test-a"] {
        let body = problem(app.audit(&files, query).await, 403, "insufficient_scope").await;
        assert_eq!(body["required_scope"], "admin");
    }
    let jobs = app.new_key(&["jobs"]).await;
    problem(app.audit(&jobs, &by_file).await, 403, "insufficient_scope").await;
    let user = app.user_token("u1", &["files"]).await;
    problem(app.audit(&user, &by_file).await, 403, "insufficient_scope").await;
    let res = app.get(&format!("/api/v1/audit{by_file}"), None).await;
    problem(res, 401, "unauthenticated").await;
}

/// Parses an RFC 3339 time from a response.
pub fn rfc3339(text: &str) -> OffsetDateTime {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap()
}
