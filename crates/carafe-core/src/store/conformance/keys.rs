//! Conformance checks for `KeyStore`: keys round-trip, are unique, page in creation order, and
//! are revoked once, each change with its audit event.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::audit;
use crate::StoreError;
use crate::audit::AuditFilter;
use crate::keys::{KeyHash, KeyId, KeyName, NewApiKey, Scope, Scopes};
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::{Duration, now};

fn new_key(name: &str, hash_byte: u8) -> NewApiKey {
    NewApiKey {
        id: KeyId::new(),
        name: KeyName::parse(name).unwrap(),
        prefix: format!("ck_{hash_byte:08}"),
        hash: KeyHash([hash_byte; 32]),
        scopes: Scopes::empty().with(Scope::Files).with(Scope::Jobs),
        created_at: now(),
    }
}

pub async fn keys_round_trip(store: Arc<dyn Store>) {
    let new = new_key("deploy", 1);
    let saved = store
        .insert_key(new.clone(), audit("key.create"))
        .await
        .unwrap();
    assert_eq!(saved.id, new.id);
    assert_eq!(saved.name, new.name);
    assert_eq!(saved.prefix, new.prefix);
    assert_eq!(saved.scopes, new.scopes);
    assert_eq!(saved.created_at, new.created_at);
    assert_eq!(saved.revoked_at, None);

    let found = store.find_key_by_hash(&KeyHash([1; 32])).await.unwrap();
    assert_eq!(found.as_ref(), Some(&saved));
    assert_eq!(store.get_key(new.id).await.unwrap(), Some(saved));
    assert_eq!(
        store.find_key_by_hash(&KeyHash([2; 32])).await.unwrap(),
        None
    );
    assert_eq!(store.get_key(KeyId::new()).await.unwrap(), None);
    assert_eq!(store.count_active_keys().await.unwrap(), 1);

    let events = store
        .list_audit(&AuditFilter::default(), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(
        events.items.len(),
        1,
        "the key's audit event is written with it"
    );
    assert_eq!(events.items[0].action, "key.create");
    assert_eq!(events.items[0].details, json!({"n": 1}));
}

pub async fn keys_are_unique(store: Arc<dyn Store>) {
    let first = new_key("a", 7);
    store
        .insert_key(first.clone(), audit("key.create"))
        .await
        .unwrap();
    let same_hash = NewApiKey {
        id: KeyId::new(),
        ..first.clone()
    };
    let err = store
        .insert_key(same_hash, audit("key.create"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    let same_id = NewApiKey {
        hash: KeyHash([8; 32]),
        ..first
    };
    let err = store
        .insert_key(same_id, audit("key.create"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // A failed insert leaves no audit event behind: both are one transaction.
    let events = store
        .list_audit(&AuditFilter::default(), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(events.items.len(), 1);
}

pub async fn keys_paginate_in_creation_order(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for i in 0..5u8 {
        let k = new_key(&format!("k{i}"), 10 + i);
        ids.push(k.id);
        store.insert_key(k, audit("key.create")).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store.list_keys(&page).await.unwrap();
        assert!(got.items.len() <= 2);
        seen.extend(got.items.iter().map(|k| k.id));
        match got.next_after {
            Some(after) => page.after = Some(after),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

pub async fn revoking_is_idempotent_and_audited(store: Arc<dyn Store>) {
    let k = new_key("old", 3);
    store
        .insert_key(k.clone(), audit("key.create"))
        .await
        .unwrap();
    let t1 = now();
    let revoked = store
        .revoke_key(k.id, t1, audit("key.revoke"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revoked.revoked_at, Some(t1));
    assert!(!revoked.is_active());
    let later = t1 + Duration::seconds(5);
    let again = store
        .revoke_key(k.id, later, audit("key.revoke"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_at,
        Some(t1),
        "the first revocation time is kept"
    );
    assert_eq!(
        store
            .revoke_key(KeyId::new(), t1, audit("key.revoke"))
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.count_active_keys().await.unwrap(), 0);
    let found = store
        .find_key_by_hash(&KeyHash([3; 32]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.revoked_at, Some(t1));
    let actions: Vec<_> = store
        .list_audit(&AuditFilter::default(), &PageRequest::first(10))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(actions, ["key.revoke", "key.revoke", "key.create"]);
}
