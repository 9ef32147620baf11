//! Conformance checks for `RateGroupStore` and the claims it limits: queues in one group share
//! its bucket and caps, on top of their own limits; a group is slowed once under concurrent
//! calls and its settings change without losing where it stands.

use std::sync::Arc;
use std::time::Duration;

use super::fixtures::{claim, job, q};
use crate::jobs::*;
use crate::store::Store;
use crate::time::now;

fn group(name: &str, rate: f64, burst: u32) -> RateGroup {
    RateGroup {
        name: name.into(),
        rate_per_second: rate,
        burst,
        hourly: None,
        daily: None,
    }
}

pub async fn rate_groups_are_shared_by_their_queues(store: Arc<dyn Store>) {
    // Ten minutes into the next hour, so that the hourly cap's window cannot turn over
    // between the claims below.
    let u = now().unix_timestamp();
    let t = time::OffsetDateTime::from_unix_timestamp(u - u % 3600 + 4200).unwrap();
    for queue in ["ga", "gb", "free"] {
        let batch: Vec<_> = (0..30).map(|_| job(queue, t)).collect();
        store.insert_jobs(batch).await.unwrap();
    }
    assert_eq!(store.rate_group("relay").await.unwrap(), None);
    store
        .put_rate_group(&group("relay", 10.0, 6), t)
        .await
        .unwrap();
    for queue in ["ga", "gb"] {
        store
            .set_queue_rate_group(&q(queue), Some("relay"))
            .await
            .unwrap();
    }
    let a = claim(&store, "ga", 4, t).await.len();
    let b = claim(&store, "gb", 10, t).await.len();
    assert_eq!((a, b), (4, 2), "one bucket of 6 for both queues");
    assert!(claim(&store, "ga", 10, t).await.is_empty());
    assert_eq!(
        claim(&store, "free", 10, t).await.len(),
        10,
        "others are free"
    );
    let s = store.rate_group("relay").await.unwrap().unwrap();
    assert_eq!((s.hour_count, s.day_count), (6, 6));
    assert!(s.tokens.abs() < 1e-9, "{}", s.tokens);

    // Both limits hold: the queue's own rate of 1/s under the group's 10/s.
    let own = QueueLimits {
        rate_per_second: Some(1.0),
        ..QueueLimits::default()
    };
    store.set_queue_limits(&q("ga"), own).await.unwrap();
    let t1 = t + Duration::from_secs(1);
    assert_eq!(
        claim(&store, "ga", 10, t1).await.len(),
        1,
        "the queue's own rate"
    );
    assert_eq!(
        claim(&store, "gb", 10, t1).await.len(),
        5,
        "what the group has left"
    );
    store
        .set_queue_limits(&q("ga"), QueueLimits::default())
        .await
        .unwrap();
    let stats = store.queue_stats(t1).await.unwrap();
    let ga = stats.iter().find(|s| s.queue == "ga").unwrap();
    assert_eq!(ga.limits, QueueLimits::default());
    assert!(
        claim(&store, "ga", 10, t1).await.is_empty(),
        "setting a queue's limits keeps it in its group"
    );

    // Leaving the group frees the queue from it; a queue without settings gets none.
    store.set_queue_rate_group(&q("gb"), None).await.unwrap();
    assert_eq!(claim(&store, "gb", 5, t1).await.len(), 5);
    store.set_queue_rate_group(&q("free"), None).await.unwrap();
    let stats = store.queue_stats(t1).await.unwrap();
    let free = stats.iter().find(|s| s.queue == "free").unwrap();
    assert_eq!(free.limits, QueueLimits::default());
    store
        .set_queue_rate_group(&q("nothing"), None)
        .await
        .unwrap();
    let stats = store.queue_stats(t1).await.unwrap();
    assert!(
        stats.iter().all(|s| s.queue != "nothing"),
        "no row was made"
    );

    // Caps count what was claimed before they were set.
    let mut capped = group("relay", 1000.0, 1000);
    capped.hourly = Some(15);
    store.put_rate_group(&capped, t1).await.unwrap();
    let s = store.rate_group("relay").await.unwrap().unwrap();
    assert_eq!(
        (s.group, s.hour_count),
        (capped, 12),
        "settings change, counts stay"
    );
    let t2 = t1 + Duration::from_secs(5);
    assert_eq!(claim(&store, "ga", 30, t2).await.len(), 3, "the hourly cap");
    assert!(claim(&store, "ga", 30, t2).await.is_empty());
}

pub async fn rate_groups_slow_down_once_and_recover(store: Arc<dyn Store>) {
    let t = now();
    assert_eq!(store.slow_rate_group("none", t).await.unwrap(), None);
    store
        .put_rate_group(&group("smtp", 100.0, 50), t)
        .await
        .unwrap();
    let batch: Vec<_> = (0..200).map(|_| job("slowed", t)).collect();
    store.insert_jobs(batch).await.unwrap();
    store
        .set_queue_rate_group(&q("slowed"), Some("smtp"))
        .await
        .unwrap();
    assert_eq!(claim(&store, "slowed", 20, t).await.len(), 20);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.slow_rate_group("smtp", t).await.unwrap() })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), Some(50.0), "halved once, whoever asked");
    }
    let s = store.rate_group("smtp").await.unwrap().unwrap();
    assert_eq!((s.slowed_rate, s.slowed_at), (Some(50.0), Some(t)));
    assert!(
        claim(&store, "slowed", 20, t).await.is_empty(),
        "bucket emptied"
    );
    // 100 ms later: 5 tokens at about 50/s.
    let t1 = t + Duration::from_millis(100);
    assert_eq!(claim(&store, "slowed", 20, t1).await.len(), 5);
    let later = t + RECOVERY + Duration::from_secs(1);
    let s = store.rate_group("smtp").await.unwrap().unwrap();
    assert_eq!(s.current_rate(later), 100.0, "recovered");
    assert_eq!(
        claim(&store, "slowed", 80, later).await.len(),
        50,
        "the burst"
    );
}
