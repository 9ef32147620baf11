//! Conformance checks for `CampaignStore`: campaigns with their recipients in row order,
//! imports that skip repeated addresses, state changes only from the states named, the
//! expansion step that stores a batch of messages only with its cursor move, and counting,
//! cancelling and re-sending the campaign's messages.

use std::sync::Arc;

use serde_json::json;

use super::fixtures::job;
use super::mail::{mail, outcome};
use crate::campaigns::*;
use crate::mail::{MessageFilter, MessageStatus, NewMail, Suppression};
use crate::page::PageRequest;
use crate::store::Store;
use crate::time::now;

fn campaign(state: CampaignState) -> Campaign {
    let at = now();
    Campaign {
        id: CampaignId::new(),
        name: "Spring sale — 봄".into(),
        template: "spring".into(),
        template_version: None,
        locale: Some("ko-KR".into()),
        from: "Shop <shop@mail.example>".into(),
        reply_to: Some("help@mail.example".into()),
        tags: vec!["spring".into()],
        data: json!({"season": "spring"}),
        rate: Some(12.5),
        relay: Some("bulk".into()),
        send_at: None,
        autostart: true,
        state,
        source: None,
        recipients: 0,
        expanded: 0,
        import: ImportReport::default(),
        actor: "key:k1".into(),
        created_at: at,
        updated_at: at,
        started_at: None,
    }
}

fn recipient(row: u64, email: &str) -> CampaignRecipient {
    CampaignRecipient {
        row,
        email: email.into(),
        data: json!({"name": format!("n{row}"), "row": row}),
    }
}

/// One personalised copy for `to`, belonging to campaign `id`, with its send job.
fn copy(id: CampaignId, to: &str) -> NewMail {
    let (mut m, messages) = mail(&[to], &[], &[], &["spring"]);
    m.campaign = Some(id);
    let jobs = messages
        .iter()
        .map(|msg| {
            let mut j = job("carafe.campaign.test", now());
            j.args = json!({"message": msg.id});
            j
        })
        .collect();
    NewMail {
        mail: m,
        messages,
        jobs,
    }
}

fn in_campaign(id: CampaignId) -> MessageFilter {
    MessageFilter {
        campaign: Some(id),
        ..Default::default()
    }
}

pub async fn campaigns_keep_their_recipients_in_row_order(store: Arc<dyn Store>) {
    let mut c = campaign(CampaignState::Ready);
    c.recipients = 99; // kept by the store, not the caller
    let recipients = vec![
        recipient(1, "a@x.example"),
        recipient(2, "Bee <b@x.example>"),
        recipient(3, "c@x.example"),
    ];
    store
        .insert_campaign(c.clone(), recipients.clone())
        .await
        .unwrap();
    let got = store.get_campaign(c.id).await.unwrap().unwrap();
    assert_eq!(got.recipients, 3);
    assert_eq!(got.expanded, 0);
    assert_eq!(
        got,
        Campaign {
            recipients: 3,
            ..c.clone()
        }
    );
    assert!(
        store
            .get_campaign(CampaignId::new())
            .await
            .unwrap()
            .is_none()
    );

    assert_eq!(
        store.campaign_recipients(c.id, 0, 10).await.unwrap(),
        recipients
    );
    assert_eq!(
        store.campaign_recipients(c.id, 1, 1).await.unwrap(),
        recipients[1..2]
    );
    assert!(
        store
            .campaign_recipients(c.id, 3, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Newest first, in pages.
    let d = campaign(CampaignState::Importing);
    store.insert_campaign(d.clone(), Vec::new()).await.unwrap();
    let first = store.list_campaigns(&PageRequest::first(1)).await.unwrap();
    assert_eq!(first.items.len(), 1);
    assert_eq!(first.items[0].id, d.id);
    let next = store
        .list_campaigns(&PageRequest {
            after: first.next_after.clone(),
            limit: 1,
        })
        .await
        .unwrap();
    assert_eq!(next.items[0].id, c.id);
}

pub async fn campaigns_import_skips_repeated_addresses(store: Arc<dyn Store>) {
    let c = campaign(CampaignState::Importing);
    store.insert_campaign(c.clone(), Vec::new()).await.unwrap();
    let skipped = store
        .add_recipients(
            c.id,
            vec![
                recipient(2, "a@x.example"),
                recipient(3, "b@x.example"),
                recipient(4, "A@X.example"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(skipped, Some(vec![4]));
    let skipped = store
        .add_recipients(
            c.id,
            vec![recipient(5, "B@x.example"), recipient(6, "d@x.example")],
        )
        .await
        .unwrap();
    assert_eq!(skipped, Some(vec![5]));
    let got = store.get_campaign(c.id).await.unwrap().unwrap();
    assert_eq!(got.recipients, 3);
    let rows: Vec<u64> = store
        .campaign_recipients(c.id, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|r| r.row)
        .collect();
    assert_eq!(rows, [2, 3, 6]);

    // Only while importing.
    let mut ready = got.clone();
    ready.state = CampaignState::Ready;
    assert!(
        store
            .update_campaign(&ready, &[CampaignState::Importing])
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .add_recipients(c.id, vec![recipient(7, "e@x.example")])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .add_recipients(CampaignId::new(), vec![recipient(1, "e@x.example")])
            .await
            .unwrap(),
        None
    );
}

pub async fn campaigns_change_state_only_from_the_states_named(store: Arc<dyn Store>) {
    let c = campaign(CampaignState::Importing);
    store.insert_campaign(c.clone(), Vec::new()).await.unwrap();
    let mut next = c.clone();
    next.state = CampaignState::Sending;
    next.template_version = Some(4);
    next.import.rows = 10;
    next.import.bad_row(3, "not an address");
    next.started_at = Some(now());
    next.updated_at = now();
    // The wrong starting state changes nothing.
    assert!(
        !store
            .update_campaign(&next, &[CampaignState::Ready, CampaignState::Paused])
            .await
            .unwrap()
    );
    assert_eq!(store.get_campaign(c.id).await.unwrap().unwrap(), c);
    assert!(
        store
            .update_campaign(&next, &[CampaignState::Importing])
            .await
            .unwrap()
    );
    assert_eq!(store.get_campaign(c.id).await.unwrap().unwrap(), next);
    assert_eq!(store.started_campaigns().await.unwrap(), [c.id]);

    let mut paused = next.clone();
    paused.state = CampaignState::Paused;
    assert!(
        store
            .update_campaign(&paused, &[CampaignState::Sending])
            .await
            .unwrap()
    );
    assert_eq!(store.started_campaigns().await.unwrap(), [c.id]);
    let mut cancelled = paused.clone();
    cancelled.state = CampaignState::Cancelled;
    assert!(
        store
            .update_campaign(&cancelled, &[CampaignState::Sending, CampaignState::Paused])
            .await
            .unwrap()
    );
    assert!(store.started_campaigns().await.unwrap().is_empty());
}

pub async fn campaigns_expand_only_with_their_cursor(store: Arc<dyn Store>) {
    let c = campaign(CampaignState::Sending);
    store
        .insert_campaign(
            c.clone(),
            vec![recipient(1, "a@x.example"), recipient(2, "b@x.example")],
        )
        .await
        .unwrap();
    let first = copy(c.id, "a@x.example");
    assert!(
        store
            .expand_campaign(c.id, 0, 1, vec![first.clone()])
            .await
            .unwrap()
    );
    // A stale cursor (a second worker, or a batch replayed after a crash) stores nothing.
    let again = copy(c.id, "a@x.example");
    assert!(
        !store
            .expand_campaign(c.id, 0, 1, vec![again.clone()])
            .await
            .unwrap()
    );
    assert!(store.get_mail(again.mail.id).await.unwrap().is_none());
    assert_eq!(store.get_campaign(c.id).await.unwrap().unwrap().expanded, 1);
    let stored = store.get_mail(first.mail.id).await.unwrap().unwrap();
    assert_eq!(stored.campaign, Some(c.id));
    let messages = store.mail_messages(first.mail.id).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].job.is_some());

    // Not while ready, cancelled or unknown.
    let ready = campaign(CampaignState::Ready);
    store
        .insert_campaign(ready.clone(), Vec::new())
        .await
        .unwrap();
    assert!(
        !store
            .expand_campaign(ready.id, 0, 1, vec![copy(ready.id, "z@x.example")])
            .await
            .unwrap()
    );
    assert!(
        !store
            .expand_campaign(CampaignId::new(), 0, 1, Vec::new())
            .await
            .unwrap()
    );

    let second = copy(c.id, "b@x.example");
    assert!(
        store
            .expand_campaign(c.id, 1, 2, vec![second])
            .await
            .unwrap()
    );
    let listed = store
        .list_messages(&in_campaign(c.id), &PageRequest::first(10))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 2);
    // Other mail is not the campaign's.
    let (other, new) = mail(&["a@x.example"], &[], &[], &[]);
    super::mail::submit(&store, other, new).await;
    let counts = store.campaign_counts(c.id).await.unwrap();
    assert_eq!(counts.messages(), 2);
    assert_eq!(counts.status(MessageStatus::Queued), 2);
    assert_eq!(counts.unsubscribed, 0);
}

pub async fn campaigns_count_cancel_and_requeue_their_messages(store: Arc<dyn Store>) {
    let c = campaign(CampaignState::Sending);
    store.insert_campaign(c.clone(), Vec::new()).await.unwrap();
    let copies: Vec<NewMail> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| copy(c.id, &format!("{n}@x.example")))
        .collect();
    let ids: Vec<_> = copies.iter().map(|m| m.messages[0].id).collect();
    assert!(store.expand_campaign(c.id, 0, 4, copies).await.unwrap());

    // a: sent; b: failed; c: deferred; d: queued.
    for (id, status, reply) in [
        (ids[0], MessageStatus::Sent, "250 ok"),
        (ids[1], MessageStatus::Failed, "550 no such user"),
        (ids[2], MessageStatus::Deferred, "451 later"),
    ] {
        store.start_sending(id, now()).await.unwrap().unwrap();
        store
            .finish_sending(id, outcome(status, reply), None)
            .await
            .unwrap()
            .unwrap();
    }
    // Unsubscribing through one of its messages counts; another source does not.
    for (address, source) in [
        ("a@x.example", format!("message:{}", ids[0])),
        ("z@x.example", "api".to_string()),
    ] {
        store
            .put_suppression(Suppression {
                address: address.into(),
                reason: "unsubscribe".into(),
                source,
                created_at: now(),
            })
            .await
            .unwrap();
    }
    let counts = store.campaign_counts(c.id).await.unwrap();
    for (status, n) in [
        (MessageStatus::Sent, 1),
        (MessageStatus::Failed, 1),
        (MessageStatus::Deferred, 1),
        (MessageStatus::Queued, 1),
        (MessageStatus::Cancelled, 0),
    ] {
        assert_eq!(counts.status(status), n, "{status:?}");
    }
    assert_eq!(counts.unsubscribed, 1);

    // Requeue: only the failed message goes back, with a new job and a `requeued` event.
    let jobs: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut j = job("carafe.campaign.test", now());
            j.args = json!({"message": id});
            j
        })
        .collect();
    let before = store.get_message(ids[1]).await.unwrap().unwrap();
    assert_eq!(
        store
            .requeue_messages(ids.clone(), jobs, now())
            .await
            .unwrap(),
        1
    );
    let after = store.get_message(ids[1]).await.unwrap().unwrap();
    assert_eq!(after.status, MessageStatus::Queued);
    assert!(after.job.is_some());
    assert_ne!(after.job, before.job);
    let events = store.message_events(ids[1]).await.unwrap();
    assert_eq!(events.last().unwrap().kind, "requeued");
    assert_eq!(
        store.get_message(ids[0]).await.unwrap().unwrap().status,
        MessageStatus::Sent
    );

    // Cancel: queued and deferred ones (b, now queued again, c and d); the sent one stays.
    assert_eq!(
        store.cancel_campaign_messages(c.id, now()).await.unwrap(),
        3
    );
    let counts = store.campaign_counts(c.id).await.unwrap();
    assert_eq!(counts.status(MessageStatus::Cancelled), 3);
    assert_eq!(counts.status(MessageStatus::Sent), 1);
    assert_eq!(
        store
            .message_events(ids[3])
            .await
            .unwrap()
            .last()
            .unwrap()
            .kind,
        "cancelled"
    );
    assert_eq!(
        store.cancel_campaign_messages(c.id, now()).await.unwrap(),
        0
    );
}
