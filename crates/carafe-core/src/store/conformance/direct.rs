//! Conformance checks for `DirectStore`: a session moves from one state to the next exactly
//! once, and the expiry sweep sees only expired sessions.

use std::sync::Arc;

use serde_json::json;

use crate::files::*;
use crate::store::Store;
use crate::time::{Duration, now};

pub async fn direct_uploads_transition_once_and_expire(store: Arc<dyn Store>) {
    use crate::files::{DirectState, DirectUpload, FileId};
    let t = now();
    let session = |expires: i64| DirectUpload {
        id: FileId::new(),
        bucket: BucketName::default_bucket(),
        owner: Some("u1".into()),
        name: "report.pdf".into(),
        size: 42,
        metadata: json!({"k": "v"}),
        state: DirectState::Open,
        multipart: Some("mp-1".into()),
        created_at: t,
        expires_at: t + Duration::seconds(expires),
    };
    let live = session(3600);
    let old = session(-10);
    store.insert_direct(live.clone()).await.unwrap();
    store.insert_direct(old.clone()).await.unwrap();
    assert_eq!(store.get_direct(live.id).await.unwrap(), Some(live.clone()));
    assert_eq!(store.get_direct(FileId::new()).await.unwrap(), None);
    let (open, completing) = (DirectState::Open, DirectState::Completing);
    assert!(
        store
            .transition_direct(live.id, open, completing)
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition_direct(live.id, open, completing)
            .await
            .unwrap(),
        "only one caller moves it"
    );
    let row = store.get_direct(live.id).await.unwrap().unwrap();
    assert_eq!(row.state, DirectState::Completing);
    let expired = store.expired_directs(now(), 10).await.unwrap();
    assert_eq!(expired.iter().map(|d| d.id).collect::<Vec<_>>(), [old.id]);
    assert!(store.delete_direct(old.id).await.unwrap());
    assert!(!store.delete_direct(old.id).await.unwrap());
    assert!(store.expired_directs(now(), 10).await.unwrap().is_empty());
}
