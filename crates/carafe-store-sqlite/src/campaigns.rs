//! `CampaignStore` on SQLite.
//!
//! A campaign sends one template to many recipients, each getting a mail of their own; this
//! keeps the campaign (`mail_campaigns`) and its recipients in row order
//! (`mail_campaign_recipients`), and makes sure a recipient's mail is made once: the
//! `expanded` cursor moves with a compare-and-set in the same transaction that stores the
//! batch of mail it covers, so a stale or replayed batch stores nothing. Recipients are
//! imported in batches with `ON CONFLICT DO NOTHING`, the unique `(campaign_id, email_lower)`
//! skipping an address the campaign already has. What is done to the campaign's messages
//! (storing, counting, cancelling, requeueing) is in `mail/campaigns.rs`, beside the rest of
//! the mail tables.

use std::collections::HashSet;

use async_trait::async_trait;
use carafe_core::campaigns::{
    Campaign, CampaignCounts, CampaignId, CampaignRecipient, CampaignState,
};
use carafe_core::jobs::NewJob;
use carafe_core::mail::{MessageId, NewMail};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::CampaignStore;
use carafe_core::{StoreError, StoreResult};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::mail::campaigns as mail;
use crate::{SqliteStore, at, map_err, ms};

const COLUMNS: &str = "id, name, template, template_version, locale, from_addr, reply_to, \
    tags, data, rate, send_at, autostart, state, source_file, recipients, expanded, import, \
    actor, created_at, updated_at, started_at, relay";

/// The states in which a campaign's messages are made (`CampaignState::is_started`).
const STARTED: &str = "state IN ('sending', 'paused')";

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).expect("serializes")
}

fn parsed<T: serde::de::DeserializeOwned>(text: &str, what: &'static str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|_| StoreError::corrupt(what))
}

/// A count or row number as SQLite stores it (a signed 64-bit integer).
fn int(n: u64, what: &'static str) -> StoreResult<i64> {
    i64::try_from(n).map_err(|_| StoreError::corrupt(what))
}

fn count(row: &SqliteRow, col: &str, what: &'static str) -> StoreResult<u64> {
    u64::try_from(row.try_get::<i64, _>(col).map_err(map_err)?)
        .map_err(|_| StoreError::corrupt(what))
}

fn campaign_from_row(row: &SqliteRow) -> StoreResult<Campaign> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(map_err);
    let opt = |c: &str| row.try_get::<Option<String>, _>(c).map_err(map_err);
    let opt_at = |c: &str| {
        row.try_get::<Option<i64>, _>(c)
            .map_err(map_err)
            .map(|t| t.map(at))
    };
    Ok(Campaign {
        id: text("id")?
            .parse()
            .map_err(|_| StoreError::corrupt("mail_campaigns.id"))?,
        name: text("name")?,
        template: text("template")?,
        template_version: row
            .try_get::<Option<i64>, _>("template_version")
            .map_err(map_err)?
            .map(|v| {
                u32::try_from(v).map_err(|_| StoreError::corrupt("mail_campaigns.template_version"))
            })
            .transpose()?,
        locale: opt("locale")?,
        from: text("from_addr")?,
        reply_to: opt("reply_to")?,
        tags: parsed(&text("tags")?, "mail_campaigns.tags")?,
        data: parsed(&text("data")?, "mail_campaigns.data")?,
        rate: row.try_get("rate").map_err(map_err)?,
        relay: opt("relay")?,
        send_at: opt_at("send_at")?,
        autostart: row.try_get::<i64, _>("autostart").map_err(map_err)? != 0,
        state: CampaignState::parse(&text("state")?)
            .ok_or_else(|| StoreError::corrupt("mail_campaigns.state"))?,
        source: opt("source_file")?
            .map(|f| {
                f.parse()
                    .map_err(|_| StoreError::corrupt("mail_campaigns.source_file"))
            })
            .transpose()?,
        recipients: count(row, "recipients", "mail_campaigns.recipients")?,
        expanded: count(row, "expanded", "mail_campaigns.expanded")?,
        import: parsed(&text("import")?, "mail_campaigns.import")?,
        actor: text("actor")?,
        created_at: at(row.try_get("created_at").map_err(map_err)?),
        updated_at: at(row.try_get("updated_at").map_err(map_err)?),
        started_at: opt_at("started_at")?,
    })
}

/// Writes `recipients` to campaign `id`. With `skip_known`, a recipient whose address (or row)
/// the campaign already has, or that an earlier one of `recipients` has, is skipped: answers
/// the rows skipped and how many were added. Without, such a recipient is a conflict.
async fn insert_recipients(
    conn: &mut SqliteConnection,
    id: CampaignId,
    recipients: &[CampaignRecipient],
    skip_known: bool,
) -> StoreResult<(Vec<u64>, u64)> {
    let id = id.to_string();
    let mut skipped = Vec::new();
    let mut rows = Vec::with_capacity(recipients.len());
    {
        // Repeats within the batch are left out here, so that each row sent is either stored
        // or skipped for what the campaign already has (`RETURNING` names the stored ones).
        let mut emails = HashSet::new();
        let mut numbers = HashSet::new();
        for r in recipients {
            let lower = r.email.to_lowercase();
            if skip_known && (emails.contains(&lower) || numbers.contains(&r.row)) {
                skipped.push(r.row);
                continue;
            }
            emails.insert(lower.clone());
            numbers.insert(r.row);
            let row = int(r.row, "campaign recipient row out of range")?;
            rows.push((row, r, lower, r.data.to_string()));
        }
    }
    let mut added = 0;
    // Five parameters per row keep each statement far below SQLite's 32,766 limit.
    for chunk in rows.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO mail_campaign_recipients (campaign_id, row, email, email_lower, data) ",
        );
        q.push_values(chunk, |mut b, (row, r, lower, data)| {
            b.push_bind(id.as_str())
                .push_bind(*row)
                .push_bind(r.email.as_str())
                .push_bind(lower.as_str())
                .push_bind(data.as_str());
        });
        if skip_known {
            q.push(" ON CONFLICT DO NOTHING RETURNING row");
            let stored: HashSet<i64> = q
                .build_query_scalar::<i64>()
                .fetch_all(&mut *conn)
                .await
                .map_err(map_err)?
                .into_iter()
                .collect();
            added += stored.len() as u64;
            skipped.extend(
                chunk
                    .iter()
                    .filter(|(row, _, _, _)| !stored.contains(row))
                    .map(|(_, r, _, _)| r.row),
            );
        } else {
            added += q
                .build()
                .execute(&mut *conn)
                .await
                .map_err(map_err)?
                .rows_affected();
        }
    }
    skipped.sort_unstable();
    Ok((skipped, added))
}

#[async_trait]
impl CampaignStore for SqliteStore {
    async fn insert_campaign(
        &self,
        campaign: Campaign,
        recipients: Vec<CampaignRecipient>,
    ) -> StoreResult<()> {
        let c = &campaign;
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "INSERT INTO mail_campaigns ({COLUMNS}) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(c.id.to_string())
            .bind(&c.name)
            .bind(&c.template)
            .bind(c.template_version.map(i64::from))
            .bind(&c.locale)
            .bind(&c.from)
            .bind(&c.reply_to)
            .bind(json(&c.tags))
            .bind(c.data.to_string())
            .bind(c.rate)
            .bind(c.send_at.map(ms))
            .bind(i64::from(c.autostart))
            .bind(c.state.as_str())
            .bind(c.source.map(|f| f.to_string()))
            .bind(int(recipients.len() as u64, "recipients")?)
            .bind(json(&c.import))
            .bind(&c.actor)
            .bind(ms(c.created_at))
            .bind(ms(c.updated_at))
            .bind(c.started_at.map(ms))
            .bind(&c.relay)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        insert_recipients(&mut tx, c.id, &recipients, false).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_campaign(&self, id: CampaignId) -> StoreResult<Option<Campaign>> {
        let sql = format!("SELECT {COLUMNS} FROM mail_campaigns WHERE id = ?");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(campaign_from_row)
            .transpose()
    }

    async fn list_campaigns(&self, page: &PageRequest) -> StoreResult<Page<Campaign>> {
        // UUIDv7 text sorts by creation: newest first is `id DESC`, and the max uuid sorts
        // above every id.
        let Some(before) = page.after_or(CampaignId(Uuid::max())) else {
            return Ok(Page::empty());
        };
        let sql =
            format!("SELECT {COLUMNS} FROM mail_campaigns WHERE id < ? ORDER BY id DESC LIMIT ?");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(before.to_string())
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?
            .iter()
            .map(campaign_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit, |c| c.id.to_string()))
    }

    async fn started_campaigns(&self) -> StoreResult<Vec<CampaignId>> {
        let sql = format!("SELECT id FROM mail_campaigns WHERE {STARTED} ORDER BY created_at, id");
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?
            .iter()
            .map(|id| {
                id.parse()
                    .map_err(|_| StoreError::corrupt("mail_campaigns.id"))
            })
            .collect()
    }

    async fn add_recipients(
        &self,
        id: CampaignId,
        recipients: Vec<CampaignRecipient>,
    ) -> StoreResult<Option<Vec<u64>>> {
        let mut tx = self.begin_write().await?;
        // The write lock is held from here: the state read stays true until the commit.
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM mail_campaigns WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_err)?;
        if state.as_deref() != Some(CampaignState::Importing.as_str()) {
            return Ok(None);
        }
        let (skipped, added) = insert_recipients(&mut tx, id, &recipients, true).await?;
        if added > 0 {
            sqlx::query("UPDATE mail_campaigns SET recipients = recipients + ? WHERE id = ?")
                .bind(int(added, "recipients")?)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(Some(skipped))
    }

    async fn campaign_recipients(
        &self,
        id: CampaignId,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<CampaignRecipient>> {
        // No row is stored above i64::MAX.
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT row, email, data FROM mail_campaign_recipients \
             WHERE campaign_id = ? AND row > ? ORDER BY row LIMIT ?",
        )
        .bind(id.to_string())
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(map_err)?;
        rows.iter()
            .map(|row| {
                let data: String = row.try_get("data").map_err(map_err)?;
                Ok(CampaignRecipient {
                    row: count(row, "row", "mail_campaign_recipients.row")?,
                    email: row.try_get("email").map_err(map_err)?,
                    data: parsed(&data, "mail_campaign_recipients.data")?,
                })
            })
            .collect()
    }

    async fn update_campaign(
        &self,
        campaign: &Campaign,
        from: &[CampaignState],
    ) -> StoreResult<bool> {
        if from.is_empty() {
            return Ok(false);
        }
        let c = campaign;
        let mut q = QueryBuilder::<Sqlite>::new("UPDATE mail_campaigns SET state = ");
        q.push_bind(c.state.as_str())
            .push(", template_version = ")
            .push_bind(c.template_version.map(i64::from))
            .push(", import = ")
            .push_bind(json(&c.import))
            .push(", started_at = ")
            .push_bind(c.started_at.map(ms))
            .push(", updated_at = ")
            .push_bind(ms(c.updated_at))
            .push(" WHERE id = ")
            .push_bind(c.id.to_string())
            .push(" AND state IN (");
        let mut states = q.separated(", ");
        for state in from {
            states.push_bind(state.as_str());
        }
        q.push(")");
        let changed = q
            .build()
            .execute(&self.writer)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(changed > 0)
    }

    async fn expand_campaign(
        &self,
        id: CampaignId,
        from: u64,
        to: u64,
        mails: Vec<NewMail>,
    ) -> StoreResult<bool> {
        mail::check(&mails)?;
        let (Ok(from), to) = (i64::try_from(from), int(to, "expanded out of range")?) else {
            // The cursor is never stored above i64::MAX.
            return Ok(false);
        };
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "UPDATE mail_campaigns SET expanded = ? WHERE id = ? AND expanded = ? AND {STARTED}"
        );
        let moved = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(to)
            .bind(id.to_string())
            .bind(from)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        if moved == 0 {
            // Dropping the transaction rolls it back; nothing was written.
            return Ok(false);
        }
        mail::insert(&mut tx, mails).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn campaign_counts(&self, id: CampaignId) -> StoreResult<CampaignCounts> {
        let mut tx = self.reader.begin().await.map_err(map_err)?;
        let counts = mail::counts(&mut tx, id).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(counts)
    }

    async fn cancel_campaign_messages(
        &self,
        id: CampaignId,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let cancelled = mail::cancel(&mut tx, id, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(cancelled)
    }

    async fn requeue_messages(
        &self,
        messages: Vec<MessageId>,
        jobs: Vec<NewJob>,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        let requeued = mail::requeue(&mut tx, messages, jobs, now).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(requeued)
    }
}
