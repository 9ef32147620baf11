//! Conformance checks for the outbox of `MailStore`: a capture is written only with the finish
//! that applies, its bytes come back exactly, it is searched and paged, and clearing it keeps
//! the send log.

use std::sync::Arc;

use super::mail::{mail, outcome, submit};
use crate::mail::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::now;

fn captured(message: &Message, mail: &Mail, raw: &[u8]) -> OutboxEntry {
    OutboxEntry {
        item: OutboxItem {
            id: OutboxId::new(),
            message: message.id,
            mail: mail.id,
            envelope_from: "noreply@mail.example".into(),
            recipient: message.recipient.clone(),
            subject: mail.subject.clone(),
            message_id: mail.message_id.clone(),
            tags: mail.tags.clone(),
            size: raw.len() as u64,
            created_at: now(),
        },
        raw: raw.to_vec(),
    }
}

pub async fn mail_outbox_captures_lists_and_clears(store: Arc<dyn Store>) {
    let (m, new) = mail(&["a@x.example", "b@x.example"], &[], &[], &["receipt"]);
    let messages = submit(&store, m.clone(), new).await;
    let mut entries = Vec::new();
    for msg in &messages {
        let raw = format!(
            "Subject: hi\r\nTo: {}\r\n\r\nbody\u{0}\u{ff}",
            msg.recipient
        );
        let entry = captured(msg, &m, raw.as_bytes());
        store.start_sending(msg.id, now()).await.unwrap();
        let done = store
            .finish_sending(
                msg.id,
                outcome(MessageStatus::Sent, "250 captured"),
                Some(entry.clone()),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(done.status, MessageStatus::Sent);
        entries.push(entry);
    }
    // A finish that does not apply captures nothing.
    let stray = captured(&messages[0], &m, b"stray");
    assert!(
        store
            .finish_sending(
                messages[0].id,
                outcome(MessageStatus::Sent, "250"),
                Some(stray.clone())
            )
            .await
            .unwrap()
            .is_none()
    );
    assert!(store.get_outbox(stray.item.id).await.unwrap().is_none());

    let got = store.get_outbox(entries[1].item.id).await.unwrap().unwrap();
    assert_eq!(got.raw, entries[1].raw, "the bytes are kept exactly");
    assert_eq!(got.item.recipient, "b@x.example");
    assert_eq!(got.item.message_id, m.message_id);
    assert_eq!(got.item.size, entries[1].raw.len() as u64);

    let list = |f: OutboxFilter| {
        let store = store.clone();
        async move {
            store
                .list_outbox(&f, &PageRequest::first(10))
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        }
    };
    let (e0, e1) = (entries[0].item.id, entries[1].item.id);
    assert_eq!(list(OutboxFilter::default()).await, vec![e1, e0]);
    assert_eq!(
        list(OutboxFilter {
            to: Some("B@X.EXAMPLE".into()),
            ..Default::default()
        })
        .await,
        vec![e1]
    );
    assert_eq!(
        list(OutboxFilter {
            subject: Some("RECEIPT".into()),
            ..Default::default()
        })
        .await,
        vec![e1, e0],
        "subject matches a substring, case-insensitively"
    );
    assert_eq!(
        list(OutboxFilter {
            tag: Some("nope".into()),
            ..Default::default()
        })
        .await,
        Vec::<OutboxId>::new()
    );
    assert_eq!(
        list(OutboxFilter {
            message_id: Some(m.message_id.clone()),
            tag: Some("receipt".into()),
            ..Default::default()
        })
        .await,
        vec![e1, e0]
    );
    let one = store
        .list_outbox(&OutboxFilter::default(), &PageRequest::first(1))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    let rest = store
        .list_outbox(
            &OutboxFilter::default(),
            &PageRequest {
                after: one.next_after,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items[0].id, e0);

    assert_eq!(store.delete_outbox(Some(e0)).await.unwrap(), 1);
    assert_eq!(store.delete_outbox(Some(e0)).await.unwrap(), 0);
    assert_eq!(list(OutboxFilter::default()).await, vec![e1]);
    assert_eq!(store.delete_outbox(None).await.unwrap(), 1);
    assert!(list(OutboxFilter::default()).await.is_empty());
    // The send log outlives the outbox.
    assert_eq!(
        store
            .get_message(messages[0].id)
            .await
            .unwrap()
            .unwrap()
            .status,
        MessageStatus::Sent
    );
}
