//! Conformance checks for `TemplateStore`: versions are numbered per name and immutable, a put
//! carries the other locales forward, concurrent puts never share a number, and versions and
//! templates are paged.

use std::sync::Arc;

use crate::page::PageRequest;
use crate::store::Store;
use crate::templates::*;
use crate::time::now;

fn variant(locale: &str, subject: &str) -> TemplateVariant {
    TemplateVariant {
        locale: locale.into(),
        subject: subject.into(),
        text: Some(format!("text {subject}")),
        html: None,
        layout: None,
    }
}

pub async fn templates_are_versioned_per_name_with_their_locales(store: Arc<dyn Store>) {
    assert!(store.get_template("welcome", None).await.unwrap().is_none());
    let v1 = store
        .put_template("welcome", variant("en", "Hi"), "key:k1", now())
        .await
        .unwrap();
    assert_eq!((v1.name.as_str(), v1.version), ("welcome", 1));
    assert_eq!(v1.variants, [variant("en", "Hi")]);
    assert_eq!((v1.changed.as_str(), v1.actor.as_str()), ("en", "key:k1"));

    // A new locale is added; the English variant is carried forward.
    let mut ko = variant("ko", "안녕");
    ko.html = Some("<p>{{ name }}</p>".into());
    ko.layout = Some("base".into());
    let v2 = store
        .put_template("welcome", ko.clone(), "key:k2", now())
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(v2.variants, [variant("en", "Hi"), ko.clone()]);
    assert_eq!(v2.changed, "ko");

    // Replacing a locale leaves the others; older versions do not change.
    let v3 = store
        .put_template("welcome", variant("en", "Hello"), "key:k1", now())
        .await
        .unwrap();
    assert_eq!(v3.version, 3);
    assert_eq!(v3.variant("en").unwrap().subject, "Hello");
    assert_eq!(v3.variant("ko"), Some(&ko));
    assert_eq!(
        store.get_template("welcome", Some(1)).await.unwrap(),
        Some(v1.clone())
    );
    assert_eq!(
        store.get_template("welcome", Some(2)).await.unwrap(),
        Some(v2)
    );
    assert_eq!(
        store.get_template("welcome", None).await.unwrap(),
        Some(v3.clone())
    );
    assert!(
        store
            .get_template("welcome", Some(4))
            .await
            .unwrap()
            .is_none()
    );

    // Another name has its own numbering.
    let other = store
        .put_template("base", variant("en", "x"), "key:k1", now())
        .await
        .unwrap();
    assert_eq!(other.version, 1);

    // Versions page newest first.
    let mut seen = Vec::new();
    let mut page = PageRequest::first(2);
    loop {
        let got = store.template_versions("welcome", &page).await.unwrap();
        assert!(got.items.len() <= 2);
        seen.extend(got.items.iter().map(|v| v.version));
        match got.next_after {
            Some(after) => page.after = Some(after),
            None => break,
        }
    }
    assert_eq!(seen, [3, 2, 1]);

    // Templates page in name order, each at its latest version.
    let first = store.list_templates(&PageRequest::first(1)).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(
        (first.items[0].name.as_str(), first.items[0].version),
        ("base", 1)
    );
    let rest = store
        .list_templates(&PageRequest {
            after: first.next_after.clone(),
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(rest.items, [v3]);
    assert!(rest.next_after.is_none());

    // Deleting removes every version; the name starts over.
    assert!(store.delete_template("welcome").await.unwrap());
    assert!(!store.delete_template("welcome").await.unwrap());
    assert!(
        store
            .get_template("welcome", Some(1))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .template_versions("welcome", &PageRequest::first(10))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let again = store
        .put_template("welcome", variant("en", "Again"), "key:k1", now())
        .await
        .unwrap();
    assert_eq!(again.version, 1);
    assert_eq!(again.variants, [variant("en", "Again")]);
}

pub async fn templates_concurrent_puts_get_their_own_versions(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .put_template("race", variant(&format!("l{i}"), "s"), "key:k", now())
                .await
                .unwrap()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    let mut numbers: Vec<u32> = versions.iter().map(|v| v.version).collect();
    numbers.sort();
    assert_eq!(numbers, (1..=8).collect::<Vec<_>>());
    // The last version holds every locale: each put carried the earlier ones forward.
    let last = store.get_template("race", None).await.unwrap().unwrap();
    assert_eq!(last.version, 8);
    let mut locales: Vec<&str> = last.variants.iter().map(|v| v.locale.as_str()).collect();
    locales.sort();
    assert_eq!(locales, ["l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7"]);
    // Every version has one more variant than the one before it.
    for v in &versions {
        assert_eq!(v.variants.len(), v.version as usize);
    }
}
