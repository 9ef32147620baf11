//! Conformance checks for `ScheduleStore`: schedules are stored, listed, replaced, and fired
//! once per tick however many instances try.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use time::OffsetDateTime;

use crate::jobs::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::now;

fn schedule(name: &str, next: OffsetDateTime) -> Schedule {
    let t = now();
    Schedule {
        name: name.into(),
        cron: "0 9 * * *".into(),
        timezone: "Asia/Seoul".into(),
        job: json!({"queue": "reports", "args": {"kind": "daily"}}),
        paused: false,
        next_fire_at: next,
        last_fire_at: None,
        last_job_id: None,
        created_at: t,
        updated_at: t,
    }
}

pub async fn schedules_are_stored_listed_and_fired_once(store: Arc<dyn Store>) {
    let t = now();
    let daily = schedule("daily-report", t - Duration::from_secs(5));
    assert!(store.put_schedule(daily.clone()).await.unwrap(), "created");
    assert_eq!(
        store.get_schedule("daily-report").await.unwrap(),
        Some(daily.clone())
    );
    let mut later = schedule("later", t + Duration::from_secs(3600));
    assert!(store.put_schedule(later.clone()).await.unwrap());
    let mut paused = schedule("paused", t - Duration::from_secs(5));
    paused.paused = true;
    store.put_schedule(paused).await.unwrap();

    let due = store.due_schedules(t, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["daily-report"]
    );
    let next = t + Duration::from_secs(86_400);
    let fired = store
        .mark_fired("daily-report", daily.next_fire_at, t, Some(JobId(42)), next)
        .await
        .unwrap();
    assert!(fired);
    // A second leader that read the same tick changes nothing.
    let again = store
        .mark_fired("daily-report", daily.next_fire_at, t, Some(JobId(43)), next)
        .await
        .unwrap();
    assert!(!again);
    let saved = store.get_schedule("daily-report").await.unwrap().unwrap();
    assert_eq!(
        (saved.next_fire_at, saved.last_fire_at, saved.last_job_id),
        (next, Some(t), Some(JobId(42)))
    );
    assert!(store.due_schedules(t, 10).await.unwrap().is_empty());

    // Replacing keeps the creation time and the history; it is not "created".
    let created = later.created_at;
    later.cron = "*/5 * * * *".into();
    later.created_at = t + Duration::from_secs(99);
    assert!(!store.put_schedule(later.clone()).await.unwrap());
    let saved = store.get_schedule("later").await.unwrap().unwrap();
    assert_eq!(
        (saved.cron.as_str(), saved.created_at),
        ("*/5 * * * *", created)
    );

    let first = store.list_schedules(&PageRequest::first(2)).await.unwrap();
    let names: Vec<_> = first.items.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["daily-report", "later"]);
    let rest = store
        .list_schedules(&PageRequest {
            after: first.next_after.clone(),
            limit: 2,
        })
        .await
        .unwrap();
    assert_eq!(
        rest.items
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["paused"]
    );
    assert!(store.delete_schedule("later").await.unwrap());
    assert!(!store.delete_schedule("later").await.unwrap());
    assert_eq!(store.get_schedule("later").await.unwrap(), None);
}
