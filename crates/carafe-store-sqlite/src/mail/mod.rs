//! `MailStore` on SQLite.
//!
//! A submission is one `mail` row and one `mail_messages` row per recipient, each written with
//! the job that sends it in one transaction (several submissions may share it: `insert.rs`).
//! The send state machine (start, finish, cancel) is
//! in `sending.rs`, the outbox in `outbox.rs`, suppressions in `suppressions.rs`, the mail's
//! attachments (written with it, read with it) in `attachments.rs`, what `CampaignStore` does
//! to a campaign's messages in `campaigns.rs`, providers' reports on sent messages (finding
//! the message, recording each report once) in `feedback.rs`.
//!
//! Case-insensitive matches: recipients are lowercased here, in Rust (full Unicode), both when
//! stored (`recipient_lower`) and when filtered on; SQL `lower()` and `COLLATE NOCASE`, used
//! where the stored text is compared as is, fold ASCII only.

mod attachments;
pub(crate) mod campaigns;
mod feedback;
mod insert;
mod outbox;
mod sending;
mod suppressions;

use async_trait::async_trait;
use carafe_core::jobs::JobId;
use carafe_core::mail::{
    Attachment, Feedback, FinishSending, Mail, MailId, Message, MessageEvent, MessageFilter,
    MessageId, MessageRef, MessageStatus, NewMail, OutboxEntry, OutboxFilter, OutboxId, OutboxItem,
    RecipientKind, Suppression,
};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::MailStore;
use carafe_core::{StoreError, StoreResult};
use serde_json::json;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::{SqliteStore, at, map_err};

const MAIL_COLUMNS: &str = "id, message_id, from_addr, reply_to, to_addrs, cc_addrs, \
    bcc_addrs, subject, text_body, html_body, headers, tags, template, unsubscribe, \
    campaign_id, actor, send_at, created_at";

const MESSAGE_COLUMNS: &str = "id, mail_id, recipient, kind, status, attempts, reply, \
    relay_id, tags, job_id, created_at, updated_at, sent_at";

/// The states a send attempt may start from, and a message may be cancelled in
/// (`MessageStatus::may_send`, `may_cancel`).
const WAITING: &str = "status IN ('queued', 'deferred')";

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("serializes")
}

fn parsed<T: serde::de::DeserializeOwned>(text: &str, what: &'static str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt(what))
}

fn uuid_col<T: std::str::FromStr>(
    row: &SqliteRow,
    col: &str,
    what: &'static str,
) -> StoreResult<T> {
    row.try_get::<String, _>(col)
        .map_err(map_err)?
        .parse()
        .map_err(|_| StoreError::corrupt(what))
}

/// The lowercased form recipients are stored and matched in.
fn fold(address: &str) -> String {
    address.to_lowercase()
}

fn mail_from_row(row: &SqliteRow, attachments: Vec<Attachment>) -> StoreResult<Mail> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(map_err);
    let opt = |c: &str| row.try_get::<Option<String>, _>(c).map_err(map_err);
    Ok(Mail {
        id: uuid_col(row, "id", "mail.id")?,
        message_id: text("message_id")?,
        from: text("from_addr")?,
        reply_to: opt("reply_to")?,
        to: parsed(&text("to_addrs")?, "mail.to_addrs")?,
        cc: parsed(&text("cc_addrs")?, "mail.cc_addrs")?,
        bcc: parsed(&text("bcc_addrs")?, "mail.bcc_addrs")?,
        subject: text("subject")?,
        text: opt("text_body")?,
        html: opt("html_body")?,
        headers: parsed(&text("headers")?, "mail.headers")?,
        tags: parsed(&text("tags")?, "mail.tags")?,
        template: opt("template")?
            .map(|t| parsed(&t, "mail.template"))
            .transpose()?,
        attachments,
        unsubscribe: row.try_get::<i64, _>("unsubscribe").map_err(map_err)? != 0,
        campaign: opt("campaign_id")?
            .map(|c| {
                c.parse()
                    .map_err(|_| StoreError::corrupt("mail.campaign_id"))
            })
            .transpose()?,
        actor: text("actor")?,
        send_at: row
            .try_get::<Option<i64>, _>("send_at")
            .map_err(map_err)?
            .map(at),
        created_at: at(row.try_get("created_at").map_err(map_err)?),
    })
}

fn message_from_row(row: &SqliteRow) -> StoreResult<Message> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(map_err);
    let opt = |c: &str| row.try_get::<Option<String>, _>(c).map_err(map_err);
    let kind = text("kind")?;
    let status = text("status")?;
    Ok(Message {
        id: uuid_col(row, "id", "mail_messages.id")?,
        mail: uuid_col(row, "mail_id", "mail_messages.mail_id")?,
        recipient: text("recipient")?,
        kind: RecipientKind::parse(&kind)
            .ok_or_else(|| StoreError::corrupt("mail_messages.kind"))?,
        status: MessageStatus::parse(&status)
            .ok_or_else(|| StoreError::corrupt("mail_messages.status"))?,
        attempts: row.try_get::<i64, _>("attempts").map_err(map_err)? as u32,
        reply: opt("reply")?,
        relay_id: opt("relay_id")?,
        tags: parsed(&text("tags")?, "mail_messages.tags")?,
        job: row
            .try_get::<Option<i64>, _>("job_id")
            .map_err(map_err)?
            .map(JobId),
        created_at: at(row.try_get("created_at").map_err(map_err)?),
        updated_at: at(row.try_get("updated_at").map_err(map_err)?),
        sent_at: row
            .try_get::<Option<i64>, _>("sent_at")
            .map_err(map_err)?
            .map(at),
    })
}

/// The mail `id` with its attachments. The two reads need no shared snapshot: a mail and its
/// attachments are written in one transaction and not changed after.
async fn mail_in(conn: &mut SqliteConnection, id: MailId) -> StoreResult<Option<Mail>> {
    let sql = format!("SELECT {MAIL_COLUMNS} FROM mail WHERE id = ?");
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?
    else {
        return Ok(None);
    };
    let attachments = attachments::of(conn, id).await?;
    mail_from_row(&row, attachments).map(Some)
}

#[async_trait]
impl MailStore for SqliteStore {
    async fn insert_mails(&self, mails: Vec<NewMail>) -> StoreResult<Vec<Vec<Message>>> {
        if mails.is_empty() {
            return Ok(Vec::new());
        }
        insert::check(&mails)?;
        let mut tx = self.begin_write().await?;
        let stored = insert::mails(&mut tx, mails).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(stored)
    }

    async fn get_mail(&self, id: MailId) -> StoreResult<Option<Mail>> {
        let mut conn = self.reader.acquire().await.map_err(map_err)?;
        mail_in(&mut conn, id).await
    }

    async fn mail_messages(&self, id: MailId) -> StoreResult<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM mail_messages WHERE mail_id = ? ORDER BY position"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?
            .iter()
            .map(message_from_row)
            .collect()
    }

    async fn get_message(&self, id: MessageId) -> StoreResult<Option<Message>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM mail_messages WHERE id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
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
        // UUIDv7 text sorts by creation: newest first is `id DESC`, and the max uuid
        // (`ffffffff-…`) sorts above every id.
        let Some(before) = page.after_or(MessageId(Uuid::max())) else {
            return Ok(Page::empty());
        };
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {MESSAGE_COLUMNS} FROM mail_messages WHERE id < "
        ));
        q.push_bind(before.to_string());
        if let Some(status) = filter.status {
            q.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(to) = &filter.to {
            q.push(" AND recipient_lower = ").push_bind(fold(to));
        }
        if let Some(tag) = &filter.tag {
            q.push(" AND EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ")
                .push_bind(tag.clone())
                .push(")");
        }
        if let Some(mail) = filter.mail {
            q.push(" AND mail_id = ").push_bind(mail.to_string());
        }
        if let Some(campaign) = filter.campaign {
            q.push(" AND campaign_id = ")
                .push_bind(campaign.to_string());
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let rows = q
            .build()
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?
            .iter()
            .map(message_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit, |m| m.id.to_string()))
    }

    async fn message_events(&self, id: MessageId) -> StoreResult<Vec<MessageEvent>> {
        let rows = sqlx::query(
            "SELECT seq, at, kind, data FROM mail_events WHERE message_id = ? ORDER BY seq",
        )
        .bind(id.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let data: String = row.try_get("data").map_err(map_err)?;
                Ok(MessageEvent {
                    seq: row.try_get::<i64, _>("seq").map_err(map_err)? as u32,
                    at: at(row.try_get("at").map_err(map_err)?),
                    kind: row.try_get("kind").map_err(map_err)?,
                    data: parsed(&data, "mail_events.data")?,
                })
            })
            .collect()
    }

    async fn start_sendings(
        &self,
        ids: &[MessageId],
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Option<(Mail, Message)>>> {
        let mut tx = self.begin_write().await?;
        let mut started = Vec::with_capacity(ids.len());
        for id in ids {
            started.push(sending::start(&mut tx, *id, now).await?);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(started)
    }

    async fn finish_sendings(
        &self,
        items: Vec<FinishSending>,
    ) -> StoreResult<Vec<Option<Message>>> {
        let mut tx = self.begin_write().await?;
        let mut finished = Vec::with_capacity(items.len());
        for item in items {
            finished.push(sending::finish(&mut tx, item.id, item.outcome, item.outbox).await?);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(finished)
    }

    async fn cancel_mail(&self, id: MailId, now: OffsetDateTime) -> StoreResult<Vec<Message>> {
        let mut tx = self.begin_write().await?;
        let cancelled = sending::cancel(&mut tx, id, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(cancelled)
    }

    async fn find_message(&self, r: &MessageRef) -> StoreResult<Option<Message>> {
        feedback::find(&self.reader, r).await
    }

    async fn record_feedback(
        &self,
        id: MessageId,
        feedback: Feedback,
    ) -> StoreResult<Option<Message>> {
        let mut tx = self.begin_write().await?;
        let recorded = feedback::record(&mut tx, id, feedback).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(recorded)
    }

    async fn list_outbox(
        &self,
        filter: &OutboxFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<OutboxItem>> {
        outbox::list(&self.reader, filter, page).await
    }

    async fn get_outbox(&self, id: OutboxId) -> StoreResult<Option<OutboxEntry>> {
        outbox::get(&self.reader, id).await
    }

    async fn delete_outbox(&self, id: Option<OutboxId>) -> StoreResult<u64> {
        outbox::delete(&self.writer, id).await
    }

    async fn put_suppression(&self, entry: Suppression) -> StoreResult<(Suppression, bool)> {
        let mut tx = self.begin_write().await?;
        let stored = suppressions::put(&mut tx, &entry).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(stored)
    }

    async fn get_suppression(&self, address: &str) -> StoreResult<Option<Suppression>> {
        suppressions::get(&self.reader, address).await
    }

    async fn list_suppressions(&self, page: &PageRequest) -> StoreResult<Page<Suppression>> {
        suppressions::list(&self.reader, page).await
    }

    async fn delete_suppression(&self, address: &str) -> StoreResult<bool> {
        suppressions::delete(&self.writer, address).await
    }
}
