//! `AuditStore` on PostgreSQL. `insert_audit` is also used inside other writes' transactions.

use async_trait::async_trait;
use carafe_core::StoreResult;
use carafe_core::audit::{ActionMatch, AuditEvent, AuditFilter, NewAuditEvent};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::AuditStore;
use carafe_core::time::{ceil_unix_ms, from_unix_ms};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

use crate::{PgStore, map_err};

pub(crate) async fn insert_audit(conn: &mut PgConnection, e: &NewAuditEvent) -> StoreResult<i64> {
    sqlx::query_scalar(
        "INSERT INTO audit_events (at, actor, action, target, request_id, details)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(e.at)
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.request_id)
    .bind(Json(&e.details))
    .fetch_one(conn)
    .await
    .map_err(map_err)
}

fn event_from_row(row: &PgRow) -> StoreResult<AuditEvent> {
    let details: Json<serde_json::Value> = row.try_get("details").map_err(map_err)?;
    Ok(AuditEvent {
        id: row.try_get("id").map_err(map_err)?,
        at: row.try_get("at").map_err(map_err)?,
        actor: row.try_get("actor").map_err(map_err)?,
        action: row.try_get("action").map_err(map_err)?,
        target: row.try_get("target").map_err(map_err)?,
        request_id: row.try_get("request_id").map_err(map_err)?,
        details: details.0,
    })
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<AuditEvent> {
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        let id = insert_audit(&mut conn, &event).await?;
        Ok(AuditEvent {
            id,
            at: event.at,
            actor: event.actor,
            action: event.action,
            target: event.target,
            request_id: event.request_id,
            details: event.details.to_value(),
        })
    }

    async fn append_audits(&self, events: &[NewAuditEvent]) -> StoreResult<()> {
        // One statement whatever the batch size: each column travels as one array, so the
        // statement is prepared once and every batch is a single round trip.
        let mut at = Vec::with_capacity(events.len());
        let mut actor = Vec::with_capacity(events.len());
        let mut action = Vec::with_capacity(events.len());
        let mut target = Vec::with_capacity(events.len());
        let mut request_id = Vec::with_capacity(events.len());
        let mut details = Vec::with_capacity(events.len());
        for e in events {
            at.push(e.at);
            actor.push(e.actor.as_str());
            action.push(e.action.as_str());
            target.push(e.target.as_deref());
            request_id.push(e.request_id.as_deref());
            details.push(e.details.as_str());
        }
        sqlx::query(
            "INSERT INTO audit_events (at, actor, action, target, request_id, details)
             SELECT at, actor, action, target, request_id, details::jsonb
             FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[])
                  WITH ORDINALITY AS e(at, actor, action, target, request_id, details, n)
             ORDER BY n",
        )
        .bind(at)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(request_id)
        .bind(details)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>> {
        let Some(before) = page.after_or(i64::MAX) else {
            return Ok(Page::empty());
        };
        let mut q = QueryBuilder::<Postgres>::new(
            "SELECT id, at, actor, action, target, request_id, details FROM audit_events
             WHERE id < ",
        );
        q.push_bind(before);
        if let Some(target) = &filter.target {
            q.push(" AND target = ").push_bind(target.clone());
        }
        // Actions compare in the "C" collation: the prefix range needs byte order (a locale
        // collation may ignore punctuation), and the `(action COLLATE "C", id)` index serves
        // both forms.
        match &filter.action {
            None => {}
            Some(ActionMatch::Exact(action)) => {
                q.push(r#" AND action COLLATE "C" = "#)
                    .push_bind(action.clone());
            }
            Some(ActionMatch::Prefix(prefix)) => {
                let (low, high) = ActionMatch::prefix_range(prefix);
                q.push(r#" AND action COLLATE "C" >= "#).push_bind(low);
                q.push(r#" AND action COLLATE "C" < "#).push_bind(high);
            }
        }
        if let Some(actor) = &filter.actor {
            q.push(" AND actor = ").push_bind(actor.clone());
        }
        // Stored times are whole milliseconds; rounding the bounds up keeps both backends exact.
        if let Some(since) = filter.since {
            q.push(" AND at >= ")
                .push_bind(from_unix_ms(ceil_unix_ms(since)));
        }
        if let Some(until) = filter.until {
            q.push(" AND at < ")
                .push_bind(from_unix_ms(ceil_unix_ms(until)));
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let events = q
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(event_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(events, page.limit, |e| {
            e.id.to_string()
        }))
    }
}
