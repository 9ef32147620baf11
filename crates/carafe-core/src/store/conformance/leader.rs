//! Conformance checks for `LeaderStore`: one holder per name, renewal, takeover of an expired
//! lease, and resignation by the holder only.

use std::sync::Arc;
use std::time::Duration;

use crate::store::Store;
use crate::time::now;

pub async fn leader_election(store: Arc<dyn Store>) {
    let t = now();
    let ttl = Duration::from_secs(10);
    assert!(store.try_lead("maint", "a", t + ttl, t).await.unwrap());
    assert!(
        store
            .try_lead("maint", "a", t + ttl * 2, t + ttl / 2)
            .await
            .unwrap(),
        "renewal"
    );
    assert!(
        !store
            .try_lead("maint", "b", t + ttl * 2, t + ttl)
            .await
            .unwrap()
    );
    assert!(
        store.try_lead("other", "b", t + ttl, t).await.unwrap(),
        "leases are per name"
    );
    let after = t + ttl * 3;
    assert!(
        store
            .try_lead("maint", "b", after + ttl, after)
            .await
            .unwrap(),
        "an expired lease is taken over"
    );
    assert!(
        !store
            .try_lead("maint", "a", after + ttl, after)
            .await
            .unwrap()
    );
    store.resign("maint", "a").await.unwrap();
    assert!(
        !store
            .try_lead("maint", "a", after + ttl, after)
            .await
            .unwrap(),
        "only the holder resigns"
    );
    store.resign("maint", "b").await.unwrap();
    assert!(
        store
            .try_lead("maint", "a", after + ttl, after)
            .await
            .unwrap()
    );
}
