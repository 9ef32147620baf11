//! Conformance checks for what providers report after a relay took a message: the message is
//! found by the relay's queue id or by its `Message-ID` and recipient, a report is recorded
//! once however often it is delivered, and only a `sent` message changes state.

use std::sync::Arc;

use serde_json::json;

use super::mail::{mail, outcome, submit};
use crate::mail::*;
use crate::store::Store;
use crate::time::now;

fn feedback(kind: &str, status: Option<MessageStatus>, event_id: &str) -> Feedback {
    Feedback {
        kind: kind.into(),
        status,
        event_id: event_id.into(),
        at: now(),
        data: json!({"provider": "ses", "reason": "550 5.1.1 user unknown"}),
    }
}

async fn send(store: &Arc<dyn Store>, id: MessageId, relay_id: Option<&str>) -> Message {
    store.start_sending(id, now()).await.unwrap().unwrap();
    let mut sent = outcome(MessageStatus::Sent, "250 Ok");
    sent.relay_id = relay_id.map(String::from);
    store.finish_sending(id, sent, None).await.unwrap().unwrap()
}

pub async fn mail_feedback_finds_the_message_it_names(store: Arc<dyn Store>) {
    let (m, new) = mail(&["Ann@X.example", "bob@x.example"], &[], &[], &[]);
    let messages = submit(&store, m.clone(), new).await;
    let (ann, bob) = (messages[0].id, messages[1].id);
    send(&store, ann, Some("0100abc-ses")).await;
    send(&store, bob, None).await;
    let find = |recipient: &str, relay: Option<&str>, mid: Option<&str>| MessageRef {
        recipient: recipient.into(),
        relay_id: relay.map(String::from),
        message_id: mid.map(String::from),
    };

    // By the relay's queue id, the recipient compared lowercased.
    let got = store
        .find_message(&find("ann@x.example", Some("0100abc-ses"), None))
        .await
        .unwrap();
    assert_eq!(got.map(|g| g.id), Some(ann));
    // A queue id with the wrong recipient matches nothing.
    let got = store
        .find_message(&find("bob@x.example", Some("0100abc-ses"), None))
        .await
        .unwrap();
    assert_eq!(got, None);
    // By Message-ID and recipient: each recipient's own copy.
    for (who, id) in [("ann@x.example", ann), ("bob@x.example", bob)] {
        let got = store
            .find_message(&find(who, None, Some(&m.message_id)))
            .await
            .unwrap();
        assert_eq!(got.map(|g| g.id), Some(id), "{who}");
    }
    // An unknown queue id falls back to the Message-ID.
    let got = store
        .find_message(&find("bob@x.example", Some("nope"), Some(&m.message_id)))
        .await
        .unwrap();
    assert_eq!(got.map(|g| g.id), Some(bob));
    for r in [
        find("carol@x.example", None, Some(&m.message_id)),
        find("ann@x.example", None, Some("other@mail.example")),
        find("ann@x.example", None, None),
    ] {
        assert_eq!(store.find_message(&r).await.unwrap(), None, "{r:?}");
    }
}

pub async fn mail_feedback_is_recorded_once_and_moves_only_sent_messages(store: Arc<dyn Store>) {
    let (m, new) = mail(
        &["a@x.example", "b@x.example", "c@x.example"],
        &[],
        &[],
        &[],
    );
    let messages = submit(&store, m, new).await;
    let (a, b, c) = (messages[0].id, messages[1].id, messages[2].id);
    send(&store, a, Some("Q-a")).await;
    send(&store, b, Some("Q-b")).await;

    // A delivery report adds to the timeline and leaves the state alone.
    let delivered = store
        .record_feedback(a, feedback("delivered", None, "ev-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivered.status, MessageStatus::Sent);
    // A hard bounce moves a sent message to `bounced`.
    let bounced = store
        .record_feedback(a, feedback("bounced", Some(MessageStatus::Bounced), "ev-2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bounced.status, MessageStatus::Bounced);
    // The same report again changes nothing, even when it names another state.
    let again = feedback("complained", Some(MessageStatus::Complained), "ev-2");
    assert_eq!(store.record_feedback(a, again).await.unwrap(), None);
    let got = store.get_message(a).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Bounced);
    // A later complaint about a bounced message is kept in the timeline only.
    let complaint = feedback("complained", Some(MessageStatus::Complained), "ev-3");
    let got = store.record_feedback(a, complaint).await.unwrap().unwrap();
    assert_eq!(got.status, MessageStatus::Bounced);
    let events = store.message_events(a).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "queued",
            "sending",
            "sent",
            "delivered",
            "bounced",
            "complained"
        ]
    );
    let seqs: Vec<u32> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
    assert_eq!(
        events[4].data,
        json!({"provider": "ses", "reason": "550 5.1.1 user unknown", "event_id": "ev-2"})
    );

    // Event ids are per message: another message may see the same id.
    let got = store
        .record_feedback(
            b,
            feedback("complained", Some(MessageStatus::Complained), "ev-2"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, MessageStatus::Complained);

    // A message not sent yet keeps its state; its report is still recorded.
    let got = store
        .record_feedback(c, feedback("bounced", Some(MessageStatus::Bounced), "ev-9"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.status, MessageStatus::Queued);
    assert!(store.start_sending(c, now()).await.unwrap().is_some());
    // A missing message: nothing.
    let missing = feedback("bounced", Some(MessageStatus::Bounced), "ev-10");
    assert_eq!(
        store
            .record_feedback(MessageId::new(), missing)
            .await
            .unwrap(),
        None
    );
}
