//! `AuditStore` on PostgreSQL. `insert_audit` is also used inside other writes' transactions.

use async_trait::async_trait;
use carafe_core::StoreResult;
use carafe_core::audit::{AuditEvent, NewAuditEvent};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::AuditStore;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};

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
            details: event.details,
        })
    }

    async fn append_audits(&self, events: Vec<NewAuditEvent>) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        for event in &events {
            insert_audit(&mut tx, event).await?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn list_audit(&self, page: &PageRequest) -> StoreResult<Page<AuditEvent>> {
        let Some(before) = page.after_or(i64::MAX) else {
            return Ok(Page::empty());
        };
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, request_id, details FROM audit_events
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(events, page.limit, |e| {
            e.id.to_string()
        }))
    }
}
