//! Conformance checks for `MailStore`: a submission kept with one message and one job per
//! recipient, the send state machine (a cancelled or finished message is never sent again),
//! timelines, listings with filters and pages, and the outbox.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::job;
use crate::mail::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::now;

fn mail(to: &[&str], cc: &[&str], bcc: &[&str], tags: &[&str]) -> (Mail, Vec<NewMessage>) {
    let id = MailId::new();
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mail = Mail {
        id,
        message_id: format!("{}@mail.example", id),
        from: "Carafe <noreply@mail.example>".into(),
        reply_to: Some("help@mail.example".into()),
        to: list(to),
        cc: list(cc),
        bcc: list(bcc),
        subject: "안녕하세요 — your receipt".into(),
        text: Some("Thanks!".into()),
        html: Some("<p>Thanks!</p>".into()),
        headers: vec![("X-Campaign".into(), "spring".into())],
        tags: list(tags),
        actor: "key:k1".into(),
        send_at: None,
        created_at: now(),
    };
    let mut messages = Vec::new();
    for (kind, v) in [
        (RecipientKind::To, to),
        (RecipientKind::Cc, cc),
        (RecipientKind::Bcc, bcc),
    ] {
        for r in v {
            messages.push(NewMessage {
                id: MessageId::new(),
                recipient: r.to_string(),
                kind,
            });
        }
    }
    (mail, messages)
}

async fn submit(store: &Arc<dyn Store>, mail: Mail, messages: Vec<NewMessage>) -> Vec<Message> {
    let jobs = messages
        .iter()
        .map(|m| {
            let mut j = job("carafe.mail", now());
            j.args = json!({"message": m.id});
            j
        })
        .collect();
    store.insert_mail(mail, messages, jobs).await.unwrap()
}

fn outcome(status: MessageStatus, reply: &str) -> SendOutcome {
    SendOutcome {
        status,
        reply: Some(reply.into()),
        relay_id: (status == MessageStatus::Sent).then(|| "Q123".into()),
        at: now(),
        data: json!({"code": reply.get(..3)}),
    }
}

pub async fn mail_is_kept_with_a_message_and_job_per_recipient(store: Arc<dyn Store>) {
    let (m, new) = mail(
        &["a@x.example", "B <b@x.example>"],
        &["c@x.example"],
        &["d@x.example"],
        &["receipt"],
    );
    let messages = submit(&store, m.clone(), new.clone()).await;
    assert_eq!(messages.len(), 4);
    for (got, asked) in messages.iter().zip(&new) {
        assert_eq!(
            (got.id, &got.recipient, got.kind),
            (asked.id, &asked.recipient, asked.kind)
        );
        assert_eq!(got.mail, m.id);
        assert_eq!(got.status, MessageStatus::Queued);
        assert_eq!(
            (got.attempts, got.reply.as_deref(), got.sent_at),
            (0, None, None)
        );
        assert_eq!(got.tags, vec!["receipt".to_string()]);
        let job = store
            .get_job(got.job.expect("a job"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.queue.as_str(), "carafe.mail");
        assert_eq!(job.args, json!({"message": got.id}));
    }
    let kept = store.get_mail(m.id).await.unwrap().unwrap();
    // Times are kept to the millisecond.
    assert_eq!(
        kept.created_at.unix_timestamp_nanos() / 1_000_000,
        m.created_at.unix_timestamp_nanos() / 1_000_000
    );
    assert_eq!(
        Mail {
            created_at: m.created_at,
            ..kept
        },
        m
    );
    assert_eq!(store.mail_messages(m.id).await.unwrap(), messages);
    assert_eq!(
        store.get_message(messages[1].id).await.unwrap().as_ref(),
        Some(&messages[1])
    );
    assert!(store.get_mail(MailId::new()).await.unwrap().is_none());
    assert!(store.get_message(MessageId::new()).await.unwrap().is_none());
    let events = store.message_events(messages[0].id).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].seq, events[0].kind.as_str()), (1, "queued"));
}

pub async fn mail_sending_moves_through_its_states_once(store: Arc<dyn Store>) {
    let (m, new) = mail(&["a@x.example", "b@x.example"], &[], &[], &[]);
    let messages = submit(&store, m.clone(), new).await;
    let (a, b) = (messages[0].id, messages[1].id);

    // Finishing needs a started attempt.
    let sent = outcome(MessageStatus::Sent, "250 2.0.0 Ok: queued as Q123");
    assert!(
        store
            .finish_sending(a, sent.clone(), None)
            .await
            .unwrap()
            .is_none()
    );
    let (got_mail, started) = store.start_sending(a, now()).await.unwrap().unwrap();
    assert_eq!(got_mail.id, m.id);
    assert_eq!(
        (started.status, started.attempts),
        (MessageStatus::Sending, 1)
    );
    // An attempt in flight is not started twice.
    assert!(store.start_sending(a, now()).await.unwrap().is_none());

    // Deferred, then sent on the next attempt.
    let deferred = outcome(MessageStatus::Deferred, "451 4.3.0 Try again later");
    let d = store
        .finish_sending(a, deferred, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, MessageStatus::Deferred);
    assert_eq!(d.reply.as_deref(), Some("451 4.3.0 Try again later"));
    assert_eq!(d.sent_at, None);
    let (_, again) = store.start_sending(a, now()).await.unwrap().unwrap();
    assert_eq!(again.attempts, 2);
    let done = store
        .finish_sending(a, sent.clone(), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, MessageStatus::Sent);
    assert_eq!(done.relay_id.as_deref(), Some("Q123"));
    assert!(done.sent_at.is_some());
    // Sent is final: no new attempt, no second finish.
    assert!(store.start_sending(a, now()).await.unwrap().is_none());
    assert!(store.finish_sending(a, sent, None).await.unwrap().is_none());
    let kinds: Vec<String> = store
        .message_events(a)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        ["queued", "sending", "deferred", "sending", "sent"].map(String::from)
    );
    let events = store.message_events(a).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(events[2].data, json!({"code": "451"}));

    // A permanent failure is final too.
    store.start_sending(b, now()).await.unwrap().unwrap();
    let failed = store
        .finish_sending(
            b,
            outcome(MessageStatus::Failed, "550 5.1.1 No such user"),
            None,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, MessageStatus::Failed);
    assert!(store.start_sending(b, now()).await.unwrap().is_none());
    assert!(
        store
            .start_sending(MessageId::new(), now())
            .await
            .unwrap()
            .is_none()
    );
}

pub async fn mail_cancellation_spares_what_is_sent_or_sending(store: Arc<dyn Store>) {
    let (m, new) = mail(
        &["a@x.example", "b@x.example", "c@x.example"],
        &[],
        &[],
        &[],
    );
    let messages = submit(&store, m.clone(), new).await;
    let (a, b, c) = (messages[0].id, messages[1].id, messages[2].id);
    store.start_sending(a, now()).await.unwrap().unwrap();
    store.start_sending(b, now()).await.unwrap().unwrap();
    store
        .finish_sending(b, outcome(MessageStatus::Deferred, "451 later"), None)
        .await
        .unwrap()
        .unwrap();

    let cancelled = store.cancel_mail(m.id, now()).await.unwrap();
    let mut ids: Vec<MessageId> = cancelled.iter().map(|m| m.id).collect();
    ids.sort();
    let mut want = vec![b, c];
    want.sort();
    assert_eq!(ids, want, "queued and deferred messages are cancelled");
    assert!(
        cancelled
            .iter()
            .all(|m| m.status == MessageStatus::Cancelled)
    );
    // The one being sent is left to finish; cancelled ones are never sent.
    assert_eq!(
        store.get_message(a).await.unwrap().unwrap().status,
        MessageStatus::Sending
    );
    assert!(store.start_sending(c, now()).await.unwrap().is_none());
    assert!(store.cancel_mail(m.id, now()).await.unwrap().is_empty());
    assert!(
        store
            .cancel_mail(MailId::new(), now())
            .await
            .unwrap()
            .is_empty()
    );
    let last = store.message_events(c).await.unwrap().pop().unwrap();
    assert_eq!(last.kind, "cancelled");
}

pub async fn mail_messages_are_listed_with_filters_and_pages(store: Arc<dyn Store>) {
    let (m1, new1) = mail(&["a@x.example", "b@x.example"], &[], &[], &["receipt"]);
    let first = submit(&store, m1.clone(), new1).await;
    let (m2, new2) = mail(&["A@X.example"], &["c@x.example"], &[], &["welcome"]);
    let second = submit(&store, m2.clone(), new2).await;
    store.start_sending(second[1].id, now()).await.unwrap();

    let all = |f: MessageFilter| {
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            let mut page = PageRequest::first(1);
            loop {
                let got = store.list_messages(&f, &page).await.unwrap();
                assert!(got.items.len() <= 1);
                out.extend(got.items.into_iter().map(|m| m.id));
                match got.next_after {
                    Some(after) => page.after = Some(after),
                    None => return out,
                }
            }
        }
    };
    // Newest first.
    let mut newest: Vec<MessageId> = first.iter().chain(&second).map(|m| m.id).collect();
    newest.reverse();
    assert_eq!(all(MessageFilter::default()).await, newest);
    assert_eq!(
        all(MessageFilter {
            to: Some("a@x.example".into()),
            ..Default::default()
        })
        .await,
        vec![second[0].id, first[0].id],
        "recipients match case-insensitively"
    );
    assert_eq!(
        all(MessageFilter {
            status: Some(MessageStatus::Sending),
            ..Default::default()
        })
        .await,
        vec![second[1].id]
    );
    assert_eq!(
        all(MessageFilter {
            tag: Some("receipt".into()),
            ..Default::default()
        })
        .await,
        vec![first[1].id, first[0].id]
    );
    assert_eq!(
        all(MessageFilter {
            mail: Some(m2.id),
            status: Some(MessageStatus::Queued),
            ..Default::default()
        })
        .await,
        vec![second[0].id]
    );
    let bad = PageRequest {
        after: Some("not-an-id".into()),
        limit: 10,
    };
    assert!(
        store
            .list_messages(&MessageFilter::default(), &bad)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

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
