//! Conformance checks for `Idempotency-Key` records: reservation, replay, expiry, and
//! ownership — only the request holding a reservation's token may renew, complete or release
//! it, so one whose lock lapsed and was taken over cannot touch the new holder's.

use std::sync::Arc;

use crate::idempotency::{Reservation, Reserve};
use crate::store::Store;
use crate::time::{Duration, now};

fn reserve<'a>(scope: &'a str, key: &'a str, fp: u8, lock_s: i64, ttl_s: i64) -> Reserve<'a> {
    let now = now();
    Reserve {
        scope,
        key,
        fingerprint: [fp; 32],
        now,
        locked_until: now + Duration::seconds(lock_s),
        expires_at: now + Duration::seconds(ttl_s),
    }
}

pub async fn idempotency_reserve_complete_replay(store: Arc<dyn Store>) {
    let token = take(&store, reserve("key:a", "k1", 1, 60, 3600)).await;
    assert_eq!(token.len(), 32, "16 random bytes as hex: {token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let r = store
        .reserve_idempotency(reserve("key:a", "k1", 1, 60, 3600))
        .await
        .unwrap();
    assert_eq!(r, RUNNING);
    let r = store
        .reserve_idempotency(reserve("key:a", "k1", 2, 60, 3600))
        .await
        .unwrap();
    assert_eq!(r, RUNNING);
    assert!(
        store
            .complete_idempotency("key:a", "k1", &token, b"answer".to_vec())
            .await
            .unwrap()
    );
    let r = store
        .reserve_idempotency(reserve("key:a", "k1", 1, 60, 3600))
        .await
        .unwrap();
    assert_eq!(
        r,
        Reservation::Existing {
            fingerprint: [1; 32],
            response: Some(b"answer".to_vec())
        }
    );
}

pub async fn idempotency_release_expiry_and_takeover(store: Arc<dyn Store>) {
    let token = take(&store, reserve("s", "released", 1, 60, 3600)).await;
    assert!(
        store
            .release_idempotency("s", "released", &token)
            .await
            .unwrap()
    );
    // A released key is free again.
    take(&store, reserve("s", "released", 2, 60, 3600)).await;

    // A completed record past its expiry is replaced by a new request.
    let token = take(&store, reserve("s", "old", 1, 60, -1)).await;
    assert!(
        store
            .complete_idempotency("s", "old", &token, b"x".to_vec())
            .await
            .unwrap()
    );
    take(&store, reserve("s", "old", 2, 60, 3600)).await;

    // A crashed request (lock lapsed, no answer) can be retried with the same body only.
    store
        .reserve_idempotency(reserve("s", "crashed", 1, -1, 3600))
        .await
        .unwrap();
    let r = store
        .reserve_idempotency(reserve("s", "crashed", 2, 60, 3600))
        .await
        .unwrap();
    assert_eq!(r, RUNNING);
    take(&store, reserve("s", "crashed", 1, 60, 3600)).await;
}

pub async fn idempotency_scopes_are_isolated(store: Arc<dyn Store>) {
    let a = store
        .reserve_idempotency(reserve("key:a", "same", 1, 60, 3600))
        .await
        .unwrap();
    let b = store
        .reserve_idempotency(reserve("key:b", "same", 2, 60, 3600))
        .await
        .unwrap();
    assert!(
        matches!(
            (a, b),
            (Reservation::Reserved { .. }, Reservation::Reserved { .. })
        ),
        "one caller's key never blocks another's"
    );
}

pub async fn idempotency_prune_removes_only_expired(store: Arc<dyn Store>) {
    for i in 0..5 {
        let key = format!("gone{i}");
        store
            .reserve_idempotency(reserve("s", &key, 1, 60, -10))
            .await
            .unwrap();
    }
    store
        .reserve_idempotency(reserve("s", "kept", 1, 60, 3600))
        .await
        .unwrap();
    let first = store.prune_idempotency(now(), 3).await.unwrap();
    let second = store.prune_idempotency(now(), 3).await.unwrap();
    assert_eq!((first, second), (3, 2), "pruning works in bounded batches");
    assert_eq!(store.prune_idempotency(now(), 3).await.unwrap(), 0);
    let r = store
        .reserve_idempotency(reserve("s", "kept", 1, 60, 3600))
        .await
        .unwrap();
    assert!(matches!(r, Reservation::Existing { .. }));
}

/// Reserves, expecting to take the key; returns the holder's token.
async fn take(store: &Arc<dyn Store>, r: Reserve<'_>) -> String {
    match store.reserve_idempotency(r).await.unwrap() {
        Reservation::Reserved { token } => token,
        other => panic!("expected to take the key, found {other:?}"),
    }
}

/// What a request with fingerprint 1 finds on key `k` of scope `s` (it takes the key if free).
async fn seen(store: &Arc<dyn Store>, key: &str) -> Reservation {
    store
        .reserve_idempotency(reserve("s", key, 1, 60, 3600))
        .await
        .unwrap()
}

/// What a retry finds while the first request still runs: no answer yet.
const RUNNING: Reservation = Reservation::Existing {
    fingerprint: [1; 32],
    response: None,
};

/// A request whose lock lapsed (`stale`) and the retry that took its key over (`fresh`).
async fn taken_over(store: &Arc<dyn Store>, key: &str) -> (String, String) {
    let stale = take(store, reserve("s", key, 1, -1, 3600)).await;
    let fresh = take(store, reserve("s", key, 1, 60, 3600)).await;
    assert_ne!(stale, fresh, "each reservation gets its own token");
    (stale, fresh)
}

pub async fn idempotency_only_the_holder_completes(store: Arc<dyn Store>) {
    let (stale, fresh) = taken_over(&store, "k").await;
    let complete = |token: String, answer: &'static [u8]| {
        let store = store.clone();
        async move {
            store
                .complete_idempotency("s", "k", &token, answer.to_vec())
                .await
                .unwrap()
        }
    };
    assert!(!complete(stale.clone(), b"stale").await);
    assert_eq!(
        seen(&store, "k").await,
        RUNNING,
        "the stale answer is not kept"
    );
    assert!(complete(fresh.clone(), b"fresh").await);
    assert!(!complete(stale, b"late").await);
    assert!(!complete(fresh, b"twice").await, "an answer is stored once");
    assert_eq!(
        seen(&store, "k").await,
        Reservation::Existing {
            fingerprint: [1; 32],
            response: Some(b"fresh".to_vec())
        }
    );
    assert!(
        !store
            .complete_idempotency("s", "nowhere", "any", b"x".to_vec())
            .await
            .unwrap()
    );
}

pub async fn idempotency_only_the_holder_releases(store: Arc<dyn Store>) {
    let (stale, fresh) = taken_over(&store, "k").await;
    assert!(!store.release_idempotency("s", "k", &stale).await.unwrap());
    assert!(!store.release_idempotency("s", "k", "guess").await.unwrap());
    assert_eq!(
        seen(&store, "k").await,
        RUNNING,
        "the new holder keeps the key"
    );
    assert!(store.release_idempotency("s", "k", &fresh).await.unwrap());
    let token = take(&store, reserve("s", "k", 1, 60, 3600)).await;

    // An answered key is never released, not even by its holder.
    assert!(
        store
            .complete_idempotency("s", "k", &token, b"done".to_vec())
            .await
            .unwrap()
    );
    assert!(!store.release_idempotency("s", "k", &token).await.unwrap());
    assert!(matches!(
        seen(&store, "k").await,
        Reservation::Existing {
            response: Some(_),
            ..
        }
    ));
}

pub async fn idempotency_renewal_keeps_the_key(store: Arc<dyn Store>) {
    let renew = |token: String, by_s: i64| {
        let store = store.clone();
        async move {
            store
                .renew_idempotency("s", "k", &token, now() + Duration::seconds(by_s))
                .await
                .unwrap()
        }
    };
    // Reserved with a lock that has already lapsed: renewal by its holder keeps others out.
    let holder = take(&store, reserve("s", "k", 1, -1, 3600)).await;
    assert!(renew(holder.clone(), 60).await);
    assert_eq!(seen(&store, "k").await, RUNNING);

    // Renewal by anyone else changes nothing: once the holder's lock lapses, a retry takes
    // the key, and the former holder can no longer renew it.
    assert!(renew(holder.clone(), -1).await);
    assert!(!renew("intruder".into(), 60).await);
    let retry = take(&store, reserve("s", "k", 1, 60, 3600)).await;
    assert!(!renew(holder, 60).await);
    assert!(renew(retry.clone(), 60).await);

    // An answered key has nothing left to renew.
    assert!(
        store
            .complete_idempotency("s", "k", &retry, b"done".to_vec())
            .await
            .unwrap()
    );
    assert!(!renew(retry, 60).await);
    assert!(
        !store
            .renew_idempotency("s", "nowhere", "any", now() + Duration::seconds(60))
            .await
            .unwrap()
    );
}
