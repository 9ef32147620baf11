//! `CampaignStore` on PostgreSQL: a campaign row, its recipients in row order, and the step
//! that turns a batch of recipients into mail. It is its own module because a campaign is not
//! mail: it is the plan mail is made from, batch by batch, and its rows change on their own.
//!
//! Two row locks carry the concurrency. An import's batch locks the campaign row (`FOR
//! UPDATE`, while it is `importing`) before inserting, so a state change made meanwhile is
//! ordered before or after the whole batch. An expansion's compare-and-set on `expanded` locks
//! the row too, and holds it while the batch's mail is written in the same transaction: a
//! second server expanding from the same cursor waits, re-reads the row once the first
//! commits, no longer matches, and stores nothing.
//!
//! Counting, cancelling and requeueing the campaign's messages are in `campaigns/messages.rs`.

mod messages;

use std::collections::HashSet;

use async_trait::async_trait;
use carafe_core::campaigns::{
    Campaign, CampaignCounts, CampaignId, CampaignRecipient, CampaignState, ImportReport,
};
use carafe_core::files::FileId;
use carafe_core::jobs::NewJob;
use carafe_core::mail::{MessageId, NewMail};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::CampaignStore;
use carafe_core::{StoreError, StoreResult};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::mail::insert;
use crate::{PgStore, map_err};

/// Every column `campaign_from_row` reads, in table order.
const COLUMNS: &str = "id, name, template, template_version, locale, from_addr, reply_to, tags, \
    data, rate, send_at, autostart, state, source, recipients, expanded, import_report, actor, \
    created_at, updated_at, started_at, relay";

/// A count or row number as `bigint`; past `i64::MAX` cannot be stored.
fn int8(n: u64, what: &'static str) -> StoreResult<i64> {
    i64::try_from(n).map_err(|_| StoreError::corrupt(what))
}

/// A `bigint` read back as a count or row number; a negative one is a corrupt row.
fn uint8(row: &PgRow, col: &str) -> StoreResult<u64> {
    let n: i64 = row.try_get(col).map_err(map_err)?;
    u64::try_from(n).map_err(|_| StoreError::corrupt(format!("mail_campaigns.{col}")))
}

fn campaign_from_row(row: &PgRow) -> StoreResult<Campaign> {
    let state: String = row.try_get("state").map_err(map_err)?;
    let version: Option<i32> = row.try_get("template_version").map_err(map_err)?;
    let tags: Json<Vec<String>> = row.try_get("tags").map_err(map_err)?;
    let data: Json<Value> = row.try_get("data").map_err(map_err)?;
    let import: Json<ImportReport> = row.try_get("import_report").map_err(map_err)?;
    Ok(Campaign {
        id: CampaignId(row.try_get("id").map_err(map_err)?),
        name: row.try_get("name").map_err(map_err)?,
        template: row.try_get("template").map_err(map_err)?,
        template_version: version
            .map(u32::try_from)
            .transpose()
            .map_err(|_| StoreError::corrupt("mail_campaigns.template_version"))?,
        locale: row.try_get("locale").map_err(map_err)?,
        from: row.try_get("from_addr").map_err(map_err)?,
        reply_to: row.try_get("reply_to").map_err(map_err)?,
        tags: tags.0,
        data: data.0,
        rate: row.try_get("rate").map_err(map_err)?,
        relay: row.try_get("relay").map_err(map_err)?,
        send_at: row.try_get("send_at").map_err(map_err)?,
        autostart: row.try_get("autostart").map_err(map_err)?,
        state: CampaignState::parse(&state)
            .ok_or_else(|| StoreError::corrupt("mail_campaigns.state"))?,
        source: row
            .try_get::<Option<Uuid>, _>("source")
            .map_err(map_err)?
            .map(FileId),
        recipients: uint8(row, "recipients")?,
        expanded: uint8(row, "expanded")?,
        import: import.0,
        actor: row.try_get("actor").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
        started_at: row.try_get("started_at").map_err(map_err)?,
    })
}

fn recipient_from_row(row: &PgRow) -> StoreResult<CampaignRecipient> {
    let n: i64 = row.try_get("row").map_err(map_err)?;
    let data: Json<Value> = row.try_get("data").map_err(map_err)?;
    Ok(CampaignRecipient {
        row: u64::try_from(n).map_err(|_| StoreError::corrupt("mail_campaign_recipients.row"))?,
        email: row.try_get("email").map_err(map_err)?,
        data: data.0,
    })
}

/// A template version as `integer`, as `mail_template_versions` keeps it.
fn version(v: Option<u32>) -> StoreResult<Option<i32>> {
    v.map(i32::try_from)
        .transpose()
        .map_err(|_| StoreError::corrupt("mail_campaigns.template_version"))
}

/// Inserts `recipients` of campaign `id` in one statement; with `skip_repeated`, those whose
/// address the campaign already has (or an earlier one of `recipients` has) are left out.
/// Returns the rows inserted. Addresses compare by their Unicode lowercase, computed here so
/// that it does not depend on the database's locale.
async fn insert_recipients(
    conn: &mut PgConnection,
    id: CampaignId,
    recipients: &[CampaignRecipient],
    skip_repeated: bool,
) -> StoreResult<Vec<i64>> {
    if recipients.is_empty() {
        return Ok(Vec::new());
    }
    // `ORDER BY ord` inserts in the order given, so of two repeated addresses in one batch the
    // first is kept: `ON CONFLICT DO NOTHING` sees rows the same statement inserted.
    let sql = format!(
        "INSERT INTO mail_campaign_recipients (campaign_id, row, email, email_lower, data)
         SELECT $1, row, email, email_lower, data
         FROM unnest($2::bigint[], $3::text[], $4::text[], $5::jsonb[])
              WITH ORDINALITY AS n(row, email, email_lower, data, ord)
         ORDER BY ord
         {}
         RETURNING row",
        if skip_repeated {
            "ON CONFLICT (campaign_id, email_lower) DO NOTHING"
        } else {
            ""
        }
    );
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(id.0)
        .bind(
            recipients
                .iter()
                .map(|r| int8(r.row, "mail_campaign_recipients.row"))
                .collect::<StoreResult<Vec<_>>>()?,
        )
        .bind(
            recipients
                .iter()
                .map(|r| r.email.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            recipients
                .iter()
                .map(|r| r.email.to_lowercase())
                .collect::<Vec<_>>(),
        )
        .bind(recipients.iter().map(|r| Json(&r.data)).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await
        .map_err(map_err)
}

#[async_trait]
impl CampaignStore for PgStore {
    async fn insert_campaign(
        &self,
        campaign: Campaign,
        recipients: Vec<CampaignRecipient>,
    ) -> StoreResult<()> {
        let c = &campaign;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        let sql = format!(
            "INSERT INTO mail_campaigns ({COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 0, $16,
                     $17, $18, $19, $20, $21)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(c.id.0)
            .bind(&c.name)
            .bind(&c.template)
            .bind(version(c.template_version)?)
            .bind(&c.locale)
            .bind(&c.from)
            .bind(&c.reply_to)
            .bind(Json(&c.tags))
            .bind(Json(&c.data))
            .bind(c.rate)
            .bind(c.send_at)
            .bind(c.autostart)
            .bind(c.state.as_str())
            .bind(c.source.map(|f| f.0))
            .bind(int8(recipients.len() as u64, "mail_campaigns.recipients")?)
            .bind(Json(&c.import))
            .bind(&c.actor)
            .bind(c.created_at)
            .bind(c.updated_at)
            .bind(c.started_at)
            .bind(&c.relay)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        // Given inline, the addresses are already distinct: a repeated one is an error.
        insert_recipients(&mut tx, c.id, &recipients, false).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_campaign(&self, id: CampaignId) -> StoreResult<Option<Campaign>> {
        let sql = format!("SELECT {COLUMNS} FROM mail_campaigns WHERE id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(campaign_from_row)
            .transpose()
    }

    async fn list_campaigns(&self, page: &PageRequest) -> StoreResult<Page<Campaign>> {
        let Some(before) = page.after_or(CampaignId(Uuid::max())) else {
            return Ok(Page::empty());
        };
        let sql =
            format!("SELECT {COLUMNS} FROM mail_campaigns WHERE id < $1 ORDER BY id DESC LIMIT $2");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(before.0)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(campaign_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit, |c| c.id.to_string()))
    }

    /// Oldest first is `id` order (UUIDv7: creation order).
    async fn started_campaigns(&self) -> StoreResult<Vec<CampaignId>> {
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM mail_campaigns WHERE state IN ('sending', 'paused') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(ids.into_iter().map(CampaignId).collect())
    }

    async fn add_recipients(
        &self,
        id: CampaignId,
        recipients: Vec<CampaignRecipient>,
    ) -> StoreResult<Option<Vec<u64>>> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // Under READ COMMITTED the lock re-reads a row changed meanwhile, so a campaign moved
        // out of `importing` by a commit we waited for is not found.
        let found = sqlx::query(
            "SELECT 1 FROM mail_campaigns WHERE id = $1 AND state = 'importing' FOR UPDATE",
        )
        .bind(id.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        if found.is_none() {
            return Ok(None);
        }
        let added = insert_recipients(&mut tx, id, &recipients, true).await?;
        if !added.is_empty() {
            sqlx::query("UPDATE mail_campaigns SET recipients = recipients + $2 WHERE id = $1")
                .bind(id.0)
                .bind(added.len() as i64)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        let added: HashSet<i64> = added.into_iter().collect();
        Ok(Some(
            recipients
                .iter()
                .map(|r| r.row)
                .filter(|&row| i64::try_from(row).map_or(true, |n| !added.contains(&n)))
                .collect(),
        ))
    }

    async fn campaign_recipients(
        &self,
        id: CampaignId,
        after: u64,
        limit: u32,
    ) -> StoreResult<Vec<CampaignRecipient>> {
        // Rows are `bigint`: past its range there is nothing to read.
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        sqlx::query(
            "SELECT row, email, data FROM mail_campaign_recipients
             WHERE campaign_id = $1 AND row > $2 ORDER BY row LIMIT $3",
        )
        .bind(id.0)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(recipient_from_row)
        .collect()
    }

    async fn update_campaign(
        &self,
        campaign: &Campaign,
        from: &[CampaignState],
    ) -> StoreResult<bool> {
        let done = sqlx::query(
            "UPDATE mail_campaigns
             SET state = $2, template_version = $3, import_report = $4, started_at = $5,
                 updated_at = $6
             WHERE id = $1 AND state = ANY($7)",
        )
        .bind(campaign.id.0)
        .bind(campaign.state.as_str())
        .bind(version(campaign.template_version)?)
        .bind(Json(&campaign.import))
        .bind(campaign.started_at)
        .bind(campaign.updated_at)
        .bind(from.iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn expand_campaign(
        &self,
        id: CampaignId,
        from: u64,
        to: u64,
        mails: Vec<NewMail>,
    ) -> StoreResult<bool> {
        insert::check(&mails)?;
        let from = int8(from, "mail_campaigns.expanded")?;
        let to = int8(to, "mail_campaigns.expanded")?;
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // The row lock taken here is held until commit: a concurrent expansion from the same
        // cursor waits, then re-evaluates `expanded = $3` against our commit and misses.
        let moved = sqlx::query(
            "UPDATE mail_campaigns SET expanded = $2
             WHERE id = $1 AND expanded = $3 AND state IN ('sending', 'paused')",
        )
        .bind(id.0)
        .bind(to)
        .bind(from)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if moved.rows_affected() == 0 {
            return Ok(false);
        }
        insert::insert_in(&mut tx, &mails).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn campaign_counts(&self, id: CampaignId) -> StoreResult<CampaignCounts> {
        messages::counts(&self.pool, id).await
    }

    async fn cancel_campaign_messages(
        &self,
        id: CampaignId,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        messages::cancel(&self.pool, id, now).await
    }

    async fn requeue_messages(
        &self,
        messages: Vec<MessageId>,
        jobs: Vec<NewJob>,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        messages::requeue(&self.pool, messages, jobs, now).await
    }
}
