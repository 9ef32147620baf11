use serde_json::json;

use super::*;

fn req(v: Value) -> EnqueueJob {
    serde_json::from_value(v).unwrap()
}

fn fields(v: Value) -> Vec<String> {
    let now = carafe_core::time::now();
    match validate(req(v), "", &crate::jobs::Settings::default(), true, now) {
        Ok(_) => Vec::new(),
        Err(list) => list.into_iter().map(|(f, _)| f).collect(),
    }
}

#[test]
fn a_minimal_request_gets_the_defaults() {
    let now = carafe_core::time::now();
    let job = validate(
        req(json!({"queue": "mail"})),
        "",
        &crate::jobs::Settings::default(),
        true,
        now,
    )
    .unwrap();
    assert_eq!(job.args, json!({}));
    assert_eq!((job.priority, job.max_attempts), (5, 25));
    assert_eq!(job.timeout, Duration::from_secs(300));
    assert_eq!((job.scheduled_at, job.created_at), (now, now));
    assert!(job.unique.is_none() && job.backoff.is_none());
}

#[test]
fn schedules_and_uniqueness_are_read() {
    let now = carafe_core::time::now();
    let s = crate::jobs::Settings::default();
    let job = validate(
        req(json!({"queue": "q", "delay_ms": 1500})),
        "",
        &s,
        true,
        now,
    )
    .unwrap();
    assert_eq!(job.scheduled_at, now + Duration::from_millis(1500));
    let past = validate(
        req(json!({"queue": "q", "run_at": "2000-01-01T00:00:00Z"})),
        "",
        &s,
        true,
        now,
    )
    .unwrap();
    assert_eq!(past.scheduled_at, now, "a past run_at means now");
    let u = validate(
        req(json!({"queue": "q", "unique_key": "k", "unique_states": ["completed"], "unique_period_ms": 60000})),
        "",
        &s,
        true,
        now,
    )
    .unwrap()
    .unique
    .unwrap();
    assert_eq!(
        (u.states, u.period),
        (vec![JobState::Completed], Some(Duration::from_secs(60)))
    );
}

#[test]
fn every_bad_field_is_named() {
    let cases = [
        (json!({"queue": "Bad Queue!"}), "/queue"),
        (json!({"queue": ""}), "/queue"),
        (json!({"queue": "x".repeat(65)}), "/queue"),
        (json!({"queue": "carafe.files"}), "/queue"),
        (json!({"queue": "q", "args": [1, 2]}), "/args"),
        (json!({"queue": "q", "args": "text"}), "/args"),
        (
            json!({"queue": "q", "args": {"pad": "x".repeat(70_000)}}),
            "/args",
        ),
        (json!({"queue": "q", "delay_ms": -1}), "/delay_ms"),
        (
            json!({"queue": "q", "delay_ms": 400_i64 * 24 * 3600 * 1000}),
            "/delay_ms",
        ),
        (
            json!({"queue": "q", "delay_ms": 5, "run_at": "2030-01-01T00:00:00Z"}),
            "/delay_ms",
        ),
        (json!({"queue": "q", "run_at": "tomorrow"}), "/run_at"),
        (
            json!({"queue": "q", "run_at": "2999-01-01T00:00:00Z"}),
            "/run_at",
        ),
        (json!({"queue": "q", "priority": 10}), "/priority"),
        (json!({"queue": "q", "priority": -1}), "/priority"),
        (json!({"queue": "q", "max_attempts": 0}), "/max_attempts"),
        (json!({"queue": "q", "max_attempts": 5000}), "/max_attempts"),
        (json!({"queue": "q", "timeout_ms": 10}), "/timeout_ms"),
        (
            json!({"queue": "q", "backoff": {"type": "fixed", "delay_ms": 999_999_999_999_u64}}),
            "/backoff",
        ),
        (json!({"queue": "q", "unique_key": ""}), "/unique_key"),
        (
            json!({"queue": "q", "unique_key": "k", "unique_states": ["done"]}),
            "/unique_states/0",
        ),
        (
            json!({"queue": "q", "unique_key": "k", "unique_states": []}),
            "/unique_states",
        ),
        (json!({"queue": "q", "unique_period_ms": 5}), "/unique_key"),
        (json!({"queue": "q", "owner": ""}), "/owner"),
        (
            json!({"queue": "q", "target": "ftp://example.com/x"}),
            "/target",
        ),
        (
            json!({"queue": "q", "target": "https://user:pw@example.com/x"}),
            "/target",
        ),
        (
            json!({"queue": "q", "target": format!("https://example.com/{}", "x".repeat(2100))}),
            "/target",
        ),
    ];
    for (body, field) in cases {
        assert_eq!(fields(body.clone()), vec![field.to_owned()], "{body}");
    }
    // All problems at once, under the batch prefix.
    let now = carafe_core::time::now();
    let list = validate(
        req(json!({"queue": "!", "priority": 99})),
        "/jobs/7",
        &crate::jobs::Settings::default(),
        true,
        now,
    )
    .unwrap_err();
    let names: Vec<_> = list.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, ["/jobs/7/queue", "/jobs/7/priority"]);
}

#[test]
fn targets_need_push_delivery_turned_on() {
    let now = carafe_core::time::now();
    let body = json!({"queue": "q", "target": "https://app.example.com/jobs"});
    let off = validate(
        req(body.clone()),
        "",
        &crate::jobs::Settings::default(),
        false,
        now,
    )
    .unwrap_err();
    assert_eq!(off[0].0, "/target");
    let on = validate(req(body), "", &crate::jobs::Settings::default(), true, now).unwrap();
    assert_eq!(on.target.as_deref(), Some("https://app.example.com/jobs"));
}
