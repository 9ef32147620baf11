//! Campaign-store behaviour the conformance suite cannot reach on its own: several servers
//! expanding one campaign at once, and the batch sizes of a real import and send. Needs
//! `CARAFE_TEST_POSTGRES_URL`; ignored otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use carafe_core::Store;
use carafe_core::campaigns::{Campaign, CampaignId, CampaignRecipient, CampaignState};
use carafe_core::jobs::{NewJob, QueueName};
use carafe_core::mail::{Mail, MailId, MessageFilter, MessageId, NewMail, NewMessage};
use carafe_core::mail::{MessageStatus, RecipientKind};
use carafe_core::page::PageRequest;
use carafe_core::store::prelude::*;
use carafe_core::time::now;
use carafe_store_postgres::PgStore;
use carafe_store_postgres::testing::fresh_database_url;
use serde_json::json;

fn campaign(state: CampaignState) -> Campaign {
    let at = now();
    Campaign {
        id: CampaignId::new(),
        name: "bulk".into(),
        template: "bulk".into(),
        template_version: Some(1),
        locale: None,
        from: "shop@mail.example".into(),
        reply_to: None,
        tags: vec!["bulk".into()],
        data: json!({}),
        rate: None,
        relay: None,
        send_at: None,
        autostart: false,
        state,
        source: None,
        recipients: 0,
        expanded: 0,
        import: Default::default(),
        actor: "key:k1".into(),
        created_at: at,
        updated_at: at,
        started_at: None,
    }
}

fn send_job(message: MessageId) -> NewJob {
    let at = now();
    NewJob {
        queue: QueueName::parse("carafe.campaign.test").unwrap(),
        args: json!({"message": message}),
        priority: 0,
        max_attempts: 3,
        backoff: None,
        timeout: Duration::from_secs(30),
        scheduled_at: at,
        unique: None,
        owner: None,
        target: None,
        created_at: at,
    }
}

/// One recipient's copy in campaign `id`, with its send job.
fn copy(id: CampaignId, to: &str) -> NewMail {
    let mail_id = MailId::new();
    let message = NewMessage {
        id: MessageId::new(),
        recipient: to.into(),
        kind: RecipientKind::To,
    };
    NewMail {
        mail: Mail {
            id: mail_id,
            message_id: format!("{mail_id}@mail.example"),
            from: "shop@mail.example".into(),
            reply_to: None,
            to: vec![to.into()],
            cc: Vec::new(),
            bcc: Vec::new(),
            subject: "Hello".into(),
            text: Some("Hi".into()),
            html: None,
            headers: Vec::new(),
            tags: vec!["bulk".into()],
            template: None,
            attachments: Vec::new(),
            unsubscribe: true,
            campaign: Some(id),
            actor: "key:k1".into(),
            send_at: None,
            created_at: now(),
        },
        jobs: vec![send_job(message.id)],
        messages: vec![message],
    }
}

async fn stores(n: usize) -> Vec<Arc<dyn Store>> {
    let url = fresh_database_url().await;
    let first = PgStore::connect(&url, 4).await.unwrap();
    first.migrate().await.unwrap();
    let mut stores: Vec<Arc<dyn Store>> = vec![Arc::new(first)];
    for _ in 1..n {
        stores.push(Arc::new(PgStore::connect(&url, 4).await.unwrap()));
    }
    stores
}

#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn concurrent_expansions_from_one_cursor_store_one_batch() {
    let stores = stores(2).await;
    let c = campaign(CampaignState::Sending);
    stores[0]
        .insert_campaign(c.clone(), Vec::new())
        .await
        .unwrap();
    // Eight tasks on two "servers" each try to store their own batch from cursor 0.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = stores[i % 2].clone();
        let batch: Vec<NewMail> = (0..50)
            .map(|n| copy(c.id, &format!("r{n}@x.example")))
            .collect();
        tasks.push(tokio::spawn(async move {
            store.expand_campaign(c.id, 0, 50, batch).await.unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
    let counts = stores[0].campaign_counts(c.id).await.unwrap();
    assert_eq!(counts.messages(), 50);
    assert_eq!(
        stores[0]
            .get_campaign(c.id)
            .await
            .unwrap()
            .unwrap()
            .expanded,
        50
    );
}

#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn imports_and_sends_go_in_large_batches() {
    let stores = stores(1).await;
    let store = &stores[0];
    let c = campaign(CampaignState::Importing);
    store.insert_campaign(c.clone(), Vec::new()).await.unwrap();

    // 10 batches of 1,000 rows; every tenth address repeats an earlier one in another case.
    let started = Instant::now();
    let mut skipped = Vec::new();
    for batch in 0..10u64 {
        let rows: Vec<CampaignRecipient> = (0..1000u64)
            .map(|i| {
                let row = batch * 1000 + i + 2;
                let email = if row % 10 == 0 {
                    format!("R{}@X.example", row - 5)
                } else {
                    format!("r{row}@x.example")
                };
                CampaignRecipient {
                    row,
                    email,
                    data: json!({"row": row}),
                }
            })
            .collect();
        skipped.extend(store.add_recipients(c.id, rows).await.unwrap().unwrap());
    }
    eprintln!("imported 10,000 rows in {:?}", started.elapsed());
    assert_eq!(skipped.len(), 1000);
    assert!(skipped.iter().all(|r| r % 10 == 0));
    let got = store.get_campaign(c.id).await.unwrap().unwrap();
    assert_eq!(got.recipients, 9000);

    let mut sending = got.clone();
    sending.state = CampaignState::Sending;
    assert!(
        store
            .update_campaign(&sending, &[CampaignState::Importing])
            .await
            .unwrap()
    );
    // Expand in batches of 500, as the server does.
    let started = Instant::now();
    let mut cursor = 0;
    loop {
        let batch = store.campaign_recipients(c.id, cursor, 500).await.unwrap();
        let Some(last) = batch.last() else { break };
        let to = last.row;
        let mails = batch.iter().map(|r| copy(c.id, &r.email)).collect();
        // The cursor is opaque to the store: here, the last row expanded.
        assert!(
            store
                .expand_campaign(c.id, cursor, to, mails)
                .await
                .unwrap()
        );
        cursor = to;
    }
    eprintln!("expanded 9,000 messages in {:?}", started.elapsed());
    let counts = store.campaign_counts(c.id).await.unwrap();
    assert_eq!(counts.status(MessageStatus::Queued), 9000);

    let page = store
        .list_messages(
            &MessageFilter {
                campaign: Some(c.id),
                ..Default::default()
            },
            &PageRequest::first(100),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 100);
    assert!(page.next_after.is_some());

    let started = Instant::now();
    assert_eq!(
        store.cancel_campaign_messages(c.id, now()).await.unwrap(),
        9000
    );
    eprintln!("cancelled 9,000 messages in {:?}", started.elapsed());
}
