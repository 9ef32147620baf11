//! `MailStore` on PostgreSQL.
//!
//! A message and its timeline change together: every state change is one statement of the
//! jobs' shape, `WITH changed AS (UPDATE mail_messages … WHERE status IN (…) RETURNING …),
//! ev AS (INSERT INTO mail_events … FROM changed) SELECT … FROM changed`. The guard in the
//! `WHERE` is what makes a transition happen once: of two concurrent updates of one row, the
//! second waits for the first, re-reads the row and no longer matches.
//!
//! Recording mail (batches of submissions, in one transaction) is in `insert.rs`; a mail's
//! attachments are in `attachments.rs`; the outbox (captures, their listing and clearing) is in
//! `outbox.rs`; suppressions are in `suppressions.rs`; providers' reports on sent messages
//! (finding the message, recording each report once) are in `feedback.rs`. Campaigns
//! (`crate::campaigns`) store their batches through `insert.rs` and change their messages with
//! `transition_count`.

mod attachments;
mod feedback;
pub(crate) mod insert;
mod outbox;
mod suppressions;

use async_trait::async_trait;
use carafe_core::jobs::JobId;
use carafe_core::mail::{
    Attachment, CampaignId, Feedback, FinishSending, Mail, MailId, Message, MessageEvent,
    MessageFilter, MessageId, MessageRef, MessageStatus, NewMail, OutboxEntry, OutboxFilter,
    OutboxId, OutboxItem, RecipientKind, SendOutcome, Suppression,
};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::MailStore;
use carafe_core::templates::TemplateRef;
use carafe_core::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{PgStore, map_err};

const MAIL_COLUMNS: &str = "id, message_id, from_addr, reply_to, to_addrs, cc_addrs, bcc_addrs, \
    subject, text_body, html_body, headers, tags, template, unsubscribe, actor, send_at, \
    created_at, campaign_id";

const MESSAGE_COLUMNS: &str = "id, mail_id, position, recipient, kind, status, attempts, reply, \
    relay_id, tags, job_id, created_at, updated_at, sent_at, event_seq";

/// The mail in `row`, with its `attachments` (read on their own).
fn mail_from_row(row: &PgRow, attachments: Vec<Attachment>) -> StoreResult<Mail> {
    let list = |col: &str| -> StoreResult<Vec<String>> {
        Ok(row.try_get::<Json<Vec<String>>, _>(col).map_err(map_err)?.0)
    };
    let headers: Json<Vec<(String, String)>> = row.try_get("headers").map_err(map_err)?;
    let template: Option<Json<TemplateRef>> = row.try_get("template").map_err(map_err)?;
    Ok(Mail {
        id: MailId(row.try_get("id").map_err(map_err)?),
        message_id: row.try_get("message_id").map_err(map_err)?,
        from: row.try_get("from_addr").map_err(map_err)?,
        reply_to: row.try_get("reply_to").map_err(map_err)?,
        to: list("to_addrs")?,
        cc: list("cc_addrs")?,
        bcc: list("bcc_addrs")?,
        subject: row.try_get("subject").map_err(map_err)?,
        text: row.try_get("text_body").map_err(map_err)?,
        html: row.try_get("html_body").map_err(map_err)?,
        headers: headers.0,
        tags: list("tags")?,
        template: template.map(|t| t.0),
        attachments,
        unsubscribe: row.try_get("unsubscribe").map_err(map_err)?,
        campaign: row
            .try_get::<Option<Uuid>, _>("campaign_id")
            .map_err(map_err)?
            .map(CampaignId),
        actor: row.try_get("actor").map_err(map_err)?,
        send_at: row.try_get("send_at").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
    })
}

fn message_from_row(row: &PgRow) -> StoreResult<Message> {
    let kind: String = row.try_get("kind").map_err(map_err)?;
    let status: String = row.try_get("status").map_err(map_err)?;
    let attempts: i32 = row.try_get("attempts").map_err(map_err)?;
    let tags: Json<Vec<String>> = row.try_get("tags").map_err(map_err)?;
    Ok(Message {
        id: MessageId(row.try_get("id").map_err(map_err)?),
        mail: MailId(row.try_get("mail_id").map_err(map_err)?),
        recipient: row.try_get("recipient").map_err(map_err)?,
        kind: RecipientKind::parse(&kind)
            .ok_or_else(|| StoreError::corrupt("mail_messages.kind"))?,
        status: MessageStatus::parse(&status)
            .ok_or_else(|| StoreError::corrupt("mail_messages.status"))?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::corrupt("mail_messages.attempts"))?,
        reply: row.try_get("reply").map_err(map_err)?,
        relay_id: row.try_get("relay_id").map_err(map_err)?,
        tags: tags.0,
        job: row
            .try_get::<Option<i64>, _>("job_id")
            .map_err(map_err)?
            .map(JobId),
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
        sent_at: row.try_get("sent_at").map_err(map_err)?,
    })
}

fn event_from_row(row: &PgRow) -> StoreResult<MessageEvent> {
    let seq: i64 = row.try_get("seq").map_err(map_err)?;
    let data: Json<Value> = row.try_get("data").map_err(map_err)?;
    Ok(MessageEvent {
        seq: u32::try_from(seq).map_err(|_| StoreError::corrupt("mail_events.seq"))?,
        at: row.try_get("at").map_err(map_err)?,
        kind: row.try_get("kind").map_err(map_err)?,
        data: data.0,
    })
}

/// Moves the messages `guard` selects (a `WHERE` clause on `mail_messages`, binding `$1`) to
/// what `set` says (binding from `$2`), and appends to each the event `kind` with `data`, at
/// `at`: one statement. Returns the changed messages in their mail's order.
fn transition(guard: &str, set: &str, at: &str, kind: &str, data: &str) -> String {
    format!(
        "{} SELECT {MESSAGE_COLUMNS} FROM changed ORDER BY position",
        changes(guard, set, at, kind, data)
    )
}

/// As `transition`, but returns only how many messages changed (for changes of many messages
/// at once, which need not be read back).
pub(crate) fn transition_count(guard: &str, set: &str, at: &str, kind: &str, data: &str) -> String {
    format!(
        "{} SELECT count(*) FROM changed",
        changes(guard, set, at, kind, data)
    )
}

/// The `WITH changed AS (UPDATE …), ev AS (INSERT INTO mail_events …)` of a transition.
fn changes(guard: &str, set: &str, at: &str, kind: &str, data: &str) -> String {
    format!(
        "WITH changed AS (
             UPDATE mail_messages SET {set}, event_seq = event_seq + 1
             WHERE {guard}
             RETURNING {MESSAGE_COLUMNS}),
         ev AS (
             INSERT INTO mail_events (message_id, seq, at, kind, data)
             SELECT id, event_seq, {at}, {kind}, {data} FROM changed)"
    )
}

/// Ends the attempt of `id` if it is `sending`; captures `capture` only if it was.
/// Starts an attempt: a waiting message becomes `sending`, with its event; and its mail.
async fn start(
    tx: &mut PgConnection,
    id: MessageId,
    now: OffsetDateTime,
) -> StoreResult<Option<(Mail, Message)>> {
    let sql = transition(
        "id = $1 AND status IN ('queued', 'deferred')",
        "status = 'sending', attempts = attempts + 1, updated_at = $2",
        "$2",
        "'sending'",
        "jsonb_build_object('attempt', attempts)",
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    let message = message_from_row(&row)?;
    let sql = format!("SELECT {MAIL_COLUMNS} FROM mail WHERE id = $1");
    let mail = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(message.mail.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .ok_or_else(|| StoreError::corrupt("mail_messages.mail_id"))?;
    let attachments = attachments::load(&mut *tx, message.mail).await?;
    Ok(Some((mail_from_row(&mail, attachments)?, message)))
}

async fn finish(
    conn: &mut PgConnection,
    id: MessageId,
    o: &SendOutcome,
    capture: Option<&OutboxEntry>,
) -> StoreResult<Option<Message>> {
    let sql = transition(
        "id = $1 AND status = 'sending'",
        "status = $2, reply = $3, relay_id = $4, updated_at = $5, sent_at = COALESCE($6, sent_at)",
        "$5",
        "$2",
        "$7",
    );
    let sent_at = (o.status == MessageStatus::Sent).then_some(o.at);
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .bind(o.status.as_str())
        .bind(&o.reply)
        .bind(&o.relay_id)
        .bind(o.at)
        .bind(sent_at)
        .bind(Json(&o.data))
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
    let Some(row) = row else {
        return Ok(None);
    };
    if let Some(entry) = capture {
        outbox::insert(conn, entry).await?;
    }
    message_from_row(&row).map(Some)
}

#[async_trait]
impl MailStore for PgStore {
    async fn insert_mails(&self, mails: Vec<NewMail>) -> StoreResult<Vec<Vec<Message>>> {
        insert::insert_mails(&self.pool, mails).await
    }

    async fn get_mail(&self, id: MailId) -> StoreResult<Option<Mail>> {
        let sql = format!("SELECT {MAIL_COLUMNS} FROM mail WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        // Attachments are written with their mail, so once its row is seen they are there.
        let attachments = attachments::load(&self.pool, id).await?;
        mail_from_row(&row, attachments).map(Some)
    }

    async fn mail_messages(&self, id: MailId) -> StoreResult<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM mail_messages WHERE mail_id = $1 ORDER BY position"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(message_from_row)
            .collect()
    }

    async fn get_message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM mail_messages WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(message_from_row)
            .transpose()
    }

    async fn list_messages(
        &self,
        filter: &MessageFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<Message>> {
        let Some(before) = page.after_or(MessageId(Uuid::max())) else {
            return Ok(Page::empty());
        };
        let mut q = QueryBuilder::<Postgres>::new(format!(
            "SELECT {MESSAGE_COLUMNS} FROM mail_messages WHERE id < "
        ));
        q.push_bind(before.0);
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        // `lower(recipient)`, as indexed.
        if let Some(to) = &filter.to {
            q.push(" AND lower(recipient) = lower(")
                .push_bind(to.clone())
                .push(")");
        }
        if let Some(tag) = &filter.tag {
            q.push(" AND tags ? ").push_bind(tag.clone());
        }
        if let Some(mail) = filter.mail {
            q.push(" AND mail_id = ").push_bind(mail.0);
        }
        if let Some(campaign) = filter.campaign {
            q.push(" AND campaign_id = ").push_bind(campaign.0);
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(message_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit, |m| m.id.to_string()))
    }

    async fn message_events(&self, id: MessageId) -> StoreResult<Vec<MessageEvent>> {
        sqlx::query(
            "SELECT seq, at, kind, data FROM mail_events WHERE message_id = $1 ORDER BY seq",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn start_sendings(
        &self,
        ids: &[MessageId],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Option<(Mail, Message)>>> {
        // The mails are read in the same transaction, so a failed read undoes the starts.
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let mut started = Vec::with_capacity(ids.len());
        for id in ids {
            started.push(start(&mut tx, *id, now).await?);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(started)
    }

    async fn finish_sendings(
        &self,
        items: Vec<FinishSending>,
    ) -> StoreResult<Vec<Option<Message>>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let mut finished = Vec::with_capacity(items.len());
        for item in &items {
            finished.push(finish(&mut tx, item.id, &item.outcome, item.outbox.as_ref()).await?);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(finished)
    }

    async fn cancel_mail(&self, id: MailId, now: OffsetDateTime) -> StoreResult<Vec<Message>> {
        let sql = transition(
            "mail_id = $1 AND status IN ('queued', 'deferred')",
            "status = 'cancelled', updated_at = $2",
            "$2",
            "'cancelled'",
            "jsonb_build_object()",
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(message_from_row)
            .collect()
    }

    async fn find_message(&self, r: &MessageRef) -> StoreResult<Option<Message>> {
        feedback::find(&self.pool, r).await
    }

    async fn record_feedback(
        &self,
        id: MessageId,
        feedback: Feedback,
    ) -> StoreResult<Option<Message>> {
        feedback::record(&self.pool, id, feedback).await
    }

    async fn list_outbox(
        &self,
        filter: &OutboxFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<OutboxItem>> {
        outbox::list(&self.pool, filter, page).await
    }

    async fn get_outbox(&self, id: OutboxId) -> StoreResult<Option<OutboxEntry>> {
        outbox::get(&self.pool, id).await
    }

    async fn delete_outbox(&self, id: Option<OutboxId>) -> StoreResult<u64> {
        outbox::delete(&self.pool, id).await
    }

    async fn put_suppression(&self, entry: Suppression) -> StoreResult<(Suppression, bool)> {
        suppressions::put(&self.pool, &entry).await
    }

    async fn get_suppression(&self, address: &str) -> StoreResult<Option<Suppression>> {
        suppressions::get(&self.pool, address).await
    }

    async fn list_suppressions(&self, page: &PageRequest) -> StoreResult<Page<Suppression>> {
        suppressions::list(&self.pool, page).await
    }

    async fn delete_suppression(&self, address: &str) -> StoreResult<bool> {
        suppressions::delete(&self.pool, address).await
    }
}
