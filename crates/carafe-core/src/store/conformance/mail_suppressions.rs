//! Conformance checks for the suppressions of `MailStore`: the first entry for an address
//! stays, and entries are read, paged in address order and removed.

use std::sync::Arc;

use crate::mail::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::now;

pub async fn mail_suppressions_are_kept_listed_and_removed(store: Arc<dyn Store>) {
    let entry = |address: &str, reason: &str| Suppression {
        address: address.into(),
        reason: reason.into(),
        source: "key:k1".into(),
        created_at: now(),
    };
    let (first, added) = store
        .put_suppression(entry("b@x.example", "bounce"))
        .await
        .unwrap();
    assert!(added);
    assert_eq!(first.reason, "bounce");
    // The first entry stays.
    let (again, added) = store
        .put_suppression(entry("b@x.example", "manual"))
        .await
        .unwrap();
    assert!(!added);
    assert_eq!(again.reason, "bounce");
    store
        .put_suppression(entry("a@x.example", "unsubscribe"))
        .await
        .unwrap();
    store
        .put_suppression(entry("c@x.example", "complaint"))
        .await
        .unwrap();
    let got = store.get_suppression("b@x.example").await.unwrap().unwrap();
    assert_eq!(
        (got.address.as_str(), got.source.as_str()),
        ("b@x.example", "key:k1")
    );
    assert!(
        store
            .get_suppression("z@x.example")
            .await
            .unwrap()
            .is_none()
    );

    let mut all = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store.list_suppressions(&page).await.unwrap();
        assert!(got.items.len() <= 2);
        all.extend(got.items.into_iter().map(|s| s.address));
        match got.next_after {
            Some(after) => page.after = Some(after),
            None => break,
        }
    }
    assert_eq!(all, ["a@x.example", "b@x.example", "c@x.example"]);

    assert!(store.delete_suppression("b@x.example").await.unwrap());
    assert!(!store.delete_suppression("b@x.example").await.unwrap());
    assert!(
        store
            .get_suppression("b@x.example")
            .await
            .unwrap()
            .is_none()
    );
}
