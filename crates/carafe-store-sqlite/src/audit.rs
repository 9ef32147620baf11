//! `AuditStore` on SQLite. `insert_audit` is also used inside other writes' transactions.

use async_trait::async_trait;
use carafe_core::StoreResult;
use carafe_core::audit::{ActionMatch, AuditEvent, AuditFilter, NewAuditEvent};
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::AuditStore;
use carafe_core::time::ceil_unix_ms;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use crate::{SqliteStore, at, map_err, ms};

pub(crate) async fn insert_audit(
    conn: &mut SqliteConnection,
    e: &NewAuditEvent,
) -> StoreResult<i64> {
    sqlx::query_scalar(
        "INSERT INTO audit_events (at, actor, action, target, request_id, details)
         VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(ms(e.at))
    .bind(&e.actor)
    .bind(&e.action)
    .bind(&e.target)
    .bind(&e.request_id)
    .bind(e.details.as_str())
    .fetch_one(conn)
    .await
    .map_err(map_err)
}

/// Rows per multi-row insert, largest first; the last is 1, so any batch can be cut into them.
const INSERT_ROWS: [usize; 4] = [256, 32, 4, 1];

/// The multi-row insert of each size in `INSERT_ROWS`, built once. sqlx takes `&'static str`
/// SQL, so each text is leaked once for the life of the process (four short strings).
fn insert_statements() -> &'static [(usize, &'static str); 4] {
    static STATEMENTS: std::sync::OnceLock<[(usize, &'static str); 4]> = std::sync::OnceLock::new();
    STATEMENTS.get_or_init(|| {
        INSERT_ROWS.map(|rows| {
            let values = vec!["(?, ?, ?, ?, ?, ?)"; rows].join(", ");
            let sql = format!(
                "INSERT INTO audit_events (at, actor, action, target, request_id, details) VALUES {values}"
            );
            (rows, &*Box::leak(sql.into_boxed_str()))
        })
    })
}

fn event_from_row(row: &SqliteRow) -> StoreResult<AuditEvent> {
    let details: String = row.try_get("details").map_err(map_err)?;
    Ok(AuditEvent {
        id: row.try_get("id").map_err(map_err)?,
        at: at(row.try_get("at").map_err(map_err)?),
        actor: row.try_get("actor").map_err(map_err)?,
        action: row.try_get("action").map_err(map_err)?,
        target: row.try_get("target").map_err(map_err)?,
        request_id: row.try_get("request_id").map_err(map_err)?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
    })
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, event: NewAuditEvent) -> StoreResult<AuditEvent> {
        let mut conn = self.writer.acquire().await.map_err(map_err)?;
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
        let mut tx = self.begin_write().await?;
        // Multi-row statements: a batch costs a few statements, not one per event. The rows
        // per statement come from a few fixed sizes, each one statement text made once, so
        // the statements stay prepared in the connection's cache. Six parameters per row keep
        // 256 rows under SQLite's parameter limit.
        let mut rest = events;
        while !rest.is_empty() {
            let (rows, sql) = insert_statements()
                .iter()
                .find(|(n, _)| *n <= rest.len())
                .copied()
                .unwrap_or(insert_statements()[INSERT_ROWS.len() - 1]);
            let (chunk, tail) = rest.split_at(rows);
            rest = tail;
            let mut q = sqlx::query(sql);
            for e in chunk {
                q = q
                    .bind(ms(e.at))
                    .bind(e.actor.as_str())
                    .bind(e.action.as_str())
                    .bind(e.target.as_deref())
                    .bind(e.request_id.as_deref())
                    .bind(e.details.as_str());
            }
            q.execute(&mut *tx).await.map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> StoreResult<Page<AuditEvent>> {
        let Some(before) = page.after_or(i64::MAX) else {
            return Ok(Page::empty());
        };
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT id, at, actor, action, target, request_id, details FROM audit_events
             WHERE id < ",
        );
        q.push_bind(before);
        if let Some(target) = &filter.target {
            q.push(" AND target = ").push_bind(target.clone());
        }
        match &filter.action {
            None => {}
            Some(ActionMatch::Exact(action)) => {
                q.push(" AND action = ").push_bind(action.clone());
            }
            Some(ActionMatch::Prefix(prefix)) => {
                // SQLite compares TEXT bytewise (BINARY collation), as the range needs.
                let (low, high) = ActionMatch::prefix_range(prefix);
                q.push(" AND action >= ").push_bind(low);
                q.push(" AND action < ").push_bind(high);
            }
        }
        if let Some(actor) = &filter.actor {
            q.push(" AND actor = ").push_bind(actor.clone());
        }
        if let Some(since) = filter.since {
            q.push(" AND at >= ").push_bind(ceil_unix_ms(since));
        }
        if let Some(until) = filter.until {
            q.push(" AND at < ").push_bind(ceil_unix_ms(until));
        }
        q.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(page.limit) + 1);
        let events = q
            .build()
            .fetch_all(&self.reader)
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
