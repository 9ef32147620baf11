//! Conformance checks for `MailStore`: a submission kept with one message and one job per
//! recipient, the send state machine (a cancelled or finished message is never sent again),
//! timelines, and listings with filters and pages. The outbox and suppressions are in
//! `mail_outbox.rs` and `mail_suppressions.rs`.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::job;
use crate::files::FileId;
use crate::mail::*;
use crate::page::PageRequest;
use crate::store::Store;
use crate::templates::TemplateRef;
use crate::time::now;

pub(super) fn mail(
    to: &[&str],
    cc: &[&str],
    bcc: &[&str],
    tags: &[&str],
) -> (Mail, Vec<NewMessage>) {
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
        template: Some(TemplateRef {
            name: "receipt".into(),
            version: 3,
            locale: "ko-KR".into(),
        }),
        unsubscribe: true,
        campaign: None,
        attachments: vec![
            Attachment {
                filename: "영수증 42.pdf".into(),
                content_type: "application/pdf".into(),
                cid: None,
                size: 4,
                content: AttachmentContent::Bytes(vec![0, 159, 255, 10]),
            },
            Attachment {
                filename: "logo.png".into(),
                content_type: "image/png".into(),
                cid: Some("logo".into()),
                size: 1234,
                content: AttachmentContent::File(FileId(uuid::Uuid::now_v7())),
            },
        ],
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

/// `mail` with a send job per message, ready to insert.
fn with_jobs((mail, messages): (Mail, Vec<NewMessage>)) -> NewMail {
    let jobs = messages
        .iter()
        .map(|m| {
            let mut j = job("carafe.mail", now());
            j.args = json!({"message": m.id});
            j
        })
        .collect();
    NewMail {
        mail,
        messages,
        jobs,
    }
}

pub(super) async fn submit(
    store: &Arc<dyn Store>,
    mail: Mail,
    messages: Vec<NewMessage>,
) -> Vec<Message> {
    let new = with_jobs((mail, messages));
    store
        .insert_mail(new.mail, new.messages, new.jobs)
        .await
        .unwrap()
}

pub(super) fn outcome(status: MessageStatus, reply: &str) -> SendOutcome {
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

pub async fn mail_batches_are_stored_together_or_not_at_all(store: Arc<dyn Store>) {
    let batch: Vec<NewMail> = (0..5)
        .map(|i| {
            with_jobs(mail(
                &[&format!("r{i}@x.example"), "s@x.example"],
                &[],
                &[],
                &["b"],
            ))
        })
        .collect();
    let stored = store.insert_mails(batch.clone()).await.unwrap();
    assert_eq!(stored.len(), 5);
    for (given, kept) in batch.iter().zip(&stored) {
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].recipient, given.messages[0].recipient);
        assert_eq!(kept[0].mail, given.mail.id);
        assert!(kept.iter().all(|m| m.job.is_some()));
        let got = store.get_mail(given.mail.id).await.unwrap().unwrap();
        assert_eq!(got.to, given.mail.to);
        assert_eq!(got.attachments, given.mail.attachments);
        assert_eq!(store.mail_messages(given.mail.id).await.unwrap(), *kept);
        let job = store.get_job(kept[1].job.unwrap()).await.unwrap().unwrap();
        assert_eq!(job.args, json!({"message": kept[1].id}));
    }
    // A batch with one bad mail (an id already stored) stores none of its mails.
    let fresh = with_jobs(mail(&["new@x.example"], &[], &[], &[]));
    let mut dup = with_jobs(mail(&["dup@x.example"], &[], &[], &[]));
    dup.mail.id = batch[0].mail.id;
    assert!(store.insert_mails(vec![fresh.clone(), dup]).await.is_err());
    assert!(store.get_mail(fresh.mail.id).await.unwrap().is_none());
    assert!(
        store
            .get_message(fresh.messages[0].id)
            .await
            .unwrap()
            .is_none()
    );
    // An empty batch is nothing to do.
    assert!(store.insert_mails(Vec::new()).await.unwrap().is_empty());
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
    // The mail comes with its attachments, as given.
    assert_eq!(got_mail.attachments, m.attachments);
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

pub async fn mail_sending_batches_answer_each_message(store: Arc<dyn Store>) {
    let (m, new) = mail(&["a@y.example", "b@y.example"], &[], &[], &[]);
    let messages = submit(&store, m.clone(), new).await;
    let (a, b) = (messages[0].id, messages[1].id);
    let (other, new) = mail(&["c@y.example"], &[], &[], &[]);
    let c = submit(&store, other.clone(), new).await[0].id;
    store.cancel_mail(other.id, now()).await.unwrap();
    let started = store
        .start_sendings(&[a, b, a, c, MessageId::new()], now())
        .await
        .unwrap();
    let got: Vec<Option<MessageId>> = started
        .iter()
        .map(|s| {
            s.as_ref().map(|(mail, msg)| {
                assert_eq!(mail.id, m.id);
                msg.id
            })
        })
        .collect();
    assert_eq!(
        got,
        [Some(a), Some(b), None, None, None],
        "each waiting message starts once; cancelled and missing ones do not"
    );
    let finish = |id, status, reply: &str| FinishSending {
        id,
        outcome: outcome(status, reply),
        outbox: None,
    };
    let finished = store
        .finish_sendings(vec![
            finish(a, MessageStatus::Sent, "250 ok"),
            finish(c, MessageStatus::Sent, "250 ok"),
            finish(b, MessageStatus::Deferred, "451 later"),
            finish(a, MessageStatus::Failed, "550 no"),
        ])
        .await
        .unwrap();
    let got: Vec<Option<MessageStatus>> = finished
        .iter()
        .map(|f| f.as_ref().map(|m| m.status))
        .collect();
    assert_eq!(
        got,
        [
            Some(MessageStatus::Sent),
            None,
            Some(MessageStatus::Deferred),
            None
        ],
        "only an attempt in flight ends, and once"
    );
    let kinds = |id| {
        let store = store.clone();
        async move {
            let events = store.message_events(id).await.unwrap();
            events.into_iter().map(|e| e.kind).collect::<Vec<_>>()
        }
    };
    assert_eq!(kinds(a).await, ["queued", "sending", "sent"]);
    assert_eq!(kinds(b).await, ["queued", "sending", "deferred"]);
}
