//! Live job events over SSE: every state and progress change with an id, exact resumption
//! with Last-Event-ID, end after a final state, and access for the owning user's token.

use serde_json::json;

use crate::helpers::{Backend, TestApp, problem};
use crate::sse::read_sse;

both_backends!(
    a_job_streams_every_change_and_resumes_exactly,
    event_streams_check_access
);

async fn a_job_streams_every_change_and_resumes_exactly(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .new_job(json!({"queue": "video", "owner": "alice"}))
        .await;
    let alice = app.user_token("alice", &["jobs"]).await;
    let res = app
        .get(
            &format!("/api/v1/jobs/{id}/events?access_token={alice}"),
            None,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(res.headers()["x-accel-buffering"], "no");
    assert!(res.headers().get("content-encoding").is_none());
    let reader = tokio::spawn(crate::sse::read_sse(res, 100));

    let c = app
        .claim_jobs("video", json!({"worker": "w"}))
        .await
        .remove(0);
    let lease = c["lease_token"].as_str().unwrap().to_owned();
    for step in 1..=3 {
        let body = json!({"lease_token": lease, "progress": {"current": step, "total": 3, "stage": "encode"}});
        assert_eq!(
            app.worker_call(&app.admin_key, id, "progress", &body)
                .await
                .status(),
            200
        );
    }
    app.worker_call(
        &app.admin_key,
        id,
        "complete",
        &json!({"lease_token": lease, "result": {"mp4": "v.mp4"}}),
    )
    .await;

    let events = reader.await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "state", "state", "progress", "progress", "progress", "state"
        ],
        "{events:?}"
    );
    let ids: Vec<_> = events.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(events[0].data["state"], "available");
    assert_eq!(events[1].data["state"], "running");
    assert_eq!(events[3].data["progress"]["current"], 2);
    assert_eq!(events[5].data["state"], "completed");
    assert_eq!(events[5].data["result"], json!({"mp4": "v.mp4"}));
    assert!(
        events
            .iter()
            .all(|e| e.data["job_id"] == id && e.data["at"].is_string())
    );

    // Reconnecting after event 3 gets exactly 4, 5, 6, and the stream ends.
    let res = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{id}/events"),
            Some(&app.admin_key),
        )
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    let rest = read_sse(res, 100).await;
    let ids: Vec<_> = rest.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(ids, ["4", "5", "6"]);
    // After the last event there is nothing more: the stream ends at once.
    let res = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{id}/events"),
            Some(&app.admin_key),
        )
        .header("last-event-id", "6")
        .send()
        .await
        .unwrap();
    assert!(read_sse(res, 100).await.is_empty());
}

async fn event_streams_check_access(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let id = app
        .new_job(json!({"queue": "video", "owner": "alice"}))
        .await;
    let bob = app.user_token("bob", &["jobs"]).await;
    let res = app
        .get(
            &format!("/api/v1/jobs/{id}/events?access_token={bob}"),
            None,
        )
        .await;
    problem(res, 404, "not_found").await;
    let key_in_url = app
        .get(
            &format!("/api/v1/jobs/{id}/events?access_token={}", app.admin_key),
            None,
        )
        .await;
    problem(key_in_url, 401, "invalid_credentials").await;
    problem(
        app.get(&format!("/api/v1/jobs/{id}/events"), None).await,
        401,
        "unauthenticated",
    )
    .await;
    let res = app
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{id}/events"),
            Some(&app.admin_key),
        )
        .header("last-event-id", "banana")
        .send()
        .await
        .unwrap();
    problem(res, 400, "invalid_last_event_id").await;
}

/// Two instances on one PostgreSQL: a watcher on one sees, at once, every change made through
/// the other (a NOTIFY wake-up, not a poll: the poll interval here is 30 s).
#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn watchers_see_changes_made_on_another_instance() {
    use std::time::Duration;
    let a = TestApp::spawn_with(Backend::Postgres, |c| {
        c.jobs.poll_interval = carafe::config::HumanDuration(Duration::from_secs(30));
    })
    .await;
    let b = a.sibling(Default::default()).await;
    let id = a.new_job(json!({"queue": "cross"})).await;
    let res = b
        .request(
            reqwest::Method::GET,
            &format!("/api/v1/jobs/{id}/events"),
            Some(&b.admin_key),
        )
        .send()
        .await
        .unwrap();
    let reader = tokio::spawn(read_sse(res, 10));
    let started = std::time::Instant::now();
    let job = a
        .claim_jobs("cross", json!({"worker": "w"}))
        .await
        .remove(0);
    let lease = job["lease_token"].clone();
    a.worker_call(
        &a.admin_key,
        id,
        "progress",
        &json!({"lease_token": lease, "progress": {"current": 1}}),
    )
    .await;
    a.worker_call(&a.admin_key, id, "complete", &json!({"lease_token": lease}))
        .await;
    let events = reader.await.unwrap();
    let kinds: Vec<_> = events.iter().map(|e| e.event.clone().unwrap()).collect();
    assert_eq!(kinds, ["state", "state", "progress", "state"]);
    assert_eq!(events[3].data["state"], "completed");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "woken by NOTIFY: {:?}",
        started.elapsed()
    );
}
