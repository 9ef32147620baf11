//! Conformance checks for `AuditStore`: order, keyset pages, and every filter of
//! `AuditFilter`, alone and combined, so both backends answer the audit API alike.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::audit;
use crate::audit::{ActionMatch, AuditEvent, AuditFilter, NewAuditEvent};
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::{Duration, from_unix_ms};

/// An event with this action, target and actor at `ms` milliseconds after a fixed instant.
fn event(action: &str, target: Option<&str>, actor: &str, ms: i64) -> NewAuditEvent {
    NewAuditEvent {
        at: from_unix_ms(1_700_000_000_000 + ms),
        actor: actor.into(),
        action: action.into(),
        target: target.map(str::to_owned),
        request_id: None,
        details: json!({"ms": ms}).into(),
    }
}

/// Every event `filter` matches, following pages of `limit`.
async fn all(store: &Arc<dyn Store>, filter: &AuditFilter, limit: u32) -> Vec<AuditEvent> {
    let mut page = PageRequest::first(limit);
    let mut out = Vec::new();
    loop {
        let got = store.list_audit(filter, &page).await.unwrap();
        assert!(got.items.len() <= limit as usize);
        out.extend(got.items);
        match got.next_after {
            Some(after) => page.after = Some(after),
            None => return out,
        }
    }
}

fn actions(events: &[AuditEvent]) -> Vec<&str> {
    events.iter().map(|e| e.action.as_str()).collect()
}

/// A small log: two files, two keys, a handful of actions whose names share prefixes.
async fn seed(store: &Arc<dyn Store>) {
    let events = vec![
        event("file.upload", Some("file:a"), "key:1", 0),
        event("file.scan", Some("file:a"), "system", 10),
        event("files.sweep", None, "system", 20),
        event("file.upload", Some("file:b"), "key:2", 30),
        event("file.download", Some("file:a"), "key:2", 40),
        event("filex", Some("file:a"), "key:1", 50),
        event("key.create", Some("key:3"), "key:1", 60),
        event("file.delete", Some("file:a"), "key:1", 70),
    ];
    store.append_audits(&events).await.unwrap();
}

pub async fn audit_lists_newest_first(store: Arc<dyn Store>) {
    let event = |i: u32| {
        let mut e = audit(&format!("thing.{i}"));
        e.target = Some(format!("thing:{i}"));
        e
    };
    for i in 0..3 {
        let e = event(i);
        let saved = store.append_audit(e.clone()).await.unwrap();
        assert_eq!(
            (saved.action, saved.target, saved.at),
            (e.action, e.target, e.at)
        );
    }
    // A batch keeps its order.
    store.append_audits(&[event(3), event(4)]).await.unwrap();
    let none = AuditFilter::default();
    let first = store
        .list_audit(&none, &PageRequest::first(3))
        .await
        .unwrap();
    assert_eq!(actions(&first.items), ["thing.4", "thing.3", "thing.2"]);
    let next = PageRequest {
        after: first.next_after.clone(),
        limit: 3,
    };
    let second = store.list_audit(&none, &next).await.unwrap();
    assert_eq!(actions(&second.items), ["thing.1", "thing.0"]);
    assert_eq!(second.next_after, None);
    let bad = PageRequest {
        after: Some("not-a-number".into()),
        limit: 3,
    };
    assert!(
        store
            .list_audit(&none, &bad)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

pub async fn audit_filters_by_target(store: Arc<dyn Store>) {
    seed(&store).await;
    let filter = AuditFilter {
        target: Some("file:a".into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        actions(&all(&store, &filter, 50).await),
        [
            "file.delete",
            "filex",
            "file.download",
            "file.scan",
            "file.upload"
        ]
    );
    let filter = AuditFilter {
        target: Some("file:zzz".into()),
        ..AuditFilter::default()
    };
    assert!(all(&store, &filter, 50).await.is_empty());
}

pub async fn audit_filters_by_action(store: Arc<dyn Store>) {
    seed(&store).await;
    let by = |action: &str| AuditFilter {
        action: Some(ActionMatch::parse(action).unwrap()),
        ..AuditFilter::default()
    };
    let exact = all(&store, &by("file.upload"), 50).await;
    assert_eq!(actions(&exact), ["file.upload", "file.upload"]);
    // `file.*` takes every `file.` action and nothing that merely starts with `file`.
    assert_eq!(
        actions(&all(&store, &by("file.*"), 50).await),
        [
            "file.delete",
            "file.download",
            "file.upload",
            "file.scan",
            "file.upload"
        ]
    );
    assert_eq!(
        actions(&all(&store, &by("file*"), 50).await),
        [
            "file.delete",
            "filex",
            "file.download",
            "file.upload",
            "files.sweep",
            "file.scan",
            "file.upload"
        ]
    );
    // An exact action is not a prefix.
    assert!(all(&store, &by("file"), 50).await.is_empty());
    assert!(all(&store, &by("file.up"), 50).await.is_empty());
}

pub async fn audit_filters_by_actor(store: Arc<dyn Store>) {
    seed(&store).await;
    let by = |actor: &str| AuditFilter {
        actor: Some(actor.into()),
        ..AuditFilter::default()
    };
    assert_eq!(
        actions(&all(&store, &by("key:2"), 50).await),
        ["file.download", "file.upload"]
    );
    assert_eq!(
        actions(&all(&store, &by("system"), 50).await),
        ["files.sweep", "file.scan"]
    );
    assert!(all(&store, &by("key:"), 50).await.is_empty());
}

pub async fn audit_filters_by_time(store: Arc<dyn Store>) {
    seed(&store).await;
    let at = |ms: i64| from_unix_ms(1_700_000_000_000 + ms);
    // `since` is inclusive, `until` exclusive.
    let window = AuditFilter {
        since: Some(at(30)),
        until: Some(at(60)),
        ..AuditFilter::default()
    };
    assert_eq!(
        actions(&all(&store, &window, 50).await),
        ["filex", "file.download", "file.upload"]
    );
    let since = AuditFilter {
        since: Some(at(60)),
        ..AuditFilter::default()
    };
    assert_eq!(
        actions(&all(&store, &since, 50).await),
        ["file.delete", "key.create"]
    );
    let until = AuditFilter {
        until: Some(at(10)),
        ..AuditFilter::default()
    };
    assert_eq!(actions(&all(&store, &until, 50).await), ["file.upload"]);
    // A bound finer than a millisecond compares exactly with the stored milliseconds.
    let fine = AuditFilter {
        since: Some(at(60) + Duration::microseconds(500)),
        until: Some(at(70) + Duration::nanoseconds(1)),
        ..AuditFilter::default()
    };
    assert_eq!(actions(&all(&store, &fine, 50).await), ["file.delete"]);
}

pub async fn audit_filters_combine_and_paginate(store: Arc<dyn Store>) {
    seed(&store).await;
    let filter = AuditFilter {
        target: Some("file:a".into()),
        action: Some(ActionMatch::parse("file.*").unwrap()),
        actor: Some("key:1".into()),
        since: None,
        until: None,
    };
    assert_eq!(
        actions(&all(&store, &filter, 50).await),
        ["file.delete", "file.upload"]
    );
    // Pages of one row each walk the same filtered set, newest first.
    let filter = AuditFilter {
        target: Some("file:a".into()),
        action: Some(ActionMatch::parse("file.*").unwrap()),
        until: Some(from_unix_ms(1_700_000_000_070)),
        ..AuditFilter::default()
    };
    let first = store
        .list_audit(&filter, &PageRequest::first(1))
        .await
        .unwrap();
    assert_eq!(actions(&first.items), ["file.download"]);
    assert!(first.next_after.is_some());
    assert_eq!(
        actions(&all(&store, &filter, 1).await),
        ["file.download", "file.scan", "file.upload"]
    );
    assert_eq!(
        actions(&all(&store, &filter, 2).await),
        ["file.download", "file.scan", "file.upload"]
    );
    // A page that ends exactly at the last match says there is no next page.
    let last = store
        .list_audit(&filter, &PageRequest::first(3))
        .await
        .unwrap();
    assert_eq!(last.items.len(), 3);
    assert_eq!(last.next_after, None);
}
