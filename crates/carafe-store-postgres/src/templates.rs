//! `TemplateStore` on PostgreSQL: mail templates as numbered, immutable versions, each with
//! its locale variants. It is its own module because templates are not part of sending: a
//! mail only records which version it was rendered from.
//!
//! A put is one transaction under READ COMMITTED. Its first statement allocates the number
//! with an upsert on `mail_template_heads`, whose row lock makes concurrent puts of one name
//! wait for each other's commit; the statements after it take fresh snapshots, so the copy of
//! the previous version's variants sees that version whole. Reads take a version and its
//! variants (aggregated to one JSON array) in one statement, so a concurrent delete cannot
//! leave one half-read.

use async_trait::async_trait;
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::TemplateStore;
use carafe_core::templates::{TemplateVariant, TemplateVersion};
use carafe_core::{StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use crate::{PgStore, map_err};

/// A version's columns (from `mail_template_versions v`) with its variants in locale order;
/// the JSON keys are `TemplateVariant`'s fields.
const VERSION_COLUMNS: &str = "v.name, v.version, v.changed, v.actor, v.created_at,
    (SELECT jsonb_agg(jsonb_build_object('locale', t.locale, 'subject', t.subject,
                                         'text', t.text_body, 'html', t.html_body,
                                         'layout', t.layout)
                      ORDER BY t.locale COLLATE \"C\")
     FROM mail_template_variants t
     WHERE t.name = v.name AND t.version = v.version) AS variants";

fn version_from_row(row: &PgRow) -> StoreResult<TemplateVersion> {
    let version: i32 = row.try_get("version").map_err(map_err)?;
    let variants: Option<Json<Vec<TemplateVariant>>> = row.try_get("variants").map_err(map_err)?;
    Ok(TemplateVersion {
        name: row.try_get("name").map_err(map_err)?,
        version: u32::try_from(version)
            .map_err(|_| StoreError::corrupt("mail_template_versions.version"))?,
        // Every version has at least the variant its put changed.
        variants: variants
            .ok_or_else(|| StoreError::corrupt("mail_template_variants: version without any"))?
            .0,
        changed: row.try_get("changed").map_err(map_err)?,
        actor: row.try_get("actor").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
    })
}

/// Version `version` of `name` as stored, read on `conn`.
async fn read_version(
    conn: &mut PgConnection,
    name: &str,
    version: i32,
) -> StoreResult<Option<TemplateVersion>> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM mail_template_versions v
         WHERE v.name = $1 AND v.version = $2"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .bind(version)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?
        .as_ref()
        .map(version_from_row)
        .transpose()
}

#[async_trait]
impl TemplateStore for PgStore {
    async fn put_template(
        &self,
        name: &str,
        variant: TemplateVariant,
        actor: &str,
        now: OffsetDateTime,
    ) -> StoreResult<TemplateVersion> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // Holds the head's row lock until commit: the next put of `name` waits here, then
        // takes the number after this one.
        let version: i32 = sqlx::query_scalar(
            "WITH head AS (
                 INSERT INTO mail_template_heads (name, latest) VALUES ($1, 1)
                 ON CONFLICT (name) DO UPDATE SET latest = mail_template_heads.latest + 1
                 RETURNING latest)
             INSERT INTO mail_template_versions (name, version, changed, actor, created_at)
             SELECT $1, latest, $2, $3, $4 FROM head
             RETURNING version",
        )
        .bind(name)
        .bind(&variant.locale)
        .bind(actor)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        // A new statement, so a new snapshot: the previous version committed before the lock
        // above was granted, and its other locales are carried forward.
        sqlx::query(
            "INSERT INTO mail_template_variants
                 (name, version, locale, subject, text_body, html_body, layout)
             SELECT name, $2, locale, subject, text_body, html_body, layout
             FROM mail_template_variants
             WHERE name = $1 AND version = $2 - 1 AND locale <> $3
             UNION ALL
             SELECT $1, $2, $3, $4, $5, $6, $7",
        )
        .bind(name)
        .bind(version)
        .bind(&variant.locale)
        .bind(&variant.subject)
        .bind(&variant.text)
        .bind(&variant.html)
        .bind(&variant.layout)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        let stored = read_version(&mut tx, name, version)
            .await?
            .ok_or_else(|| StoreError::corrupt("put_template: version not read back"))?;
        tx.commit().await.map_err(map_err)?;
        Ok(stored)
    }

    async fn get_template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<TemplateVersion>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM mail_template_versions v
             WHERE v.name = $1 AND ($2::bigint IS NULL OR v.version = $2)
             ORDER BY v.version DESC LIMIT 1"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(version.map(i64::from))
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(version_from_row)
            .transpose()
    }

    async fn template_versions(
        &self,
        name: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<TemplateVersion>> {
        let Some(before) = page.after_or(u32::MAX) else {
            return Ok(Page::empty());
        };
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM mail_template_versions v
             WHERE v.name = $1 AND v.version < $2
             ORDER BY v.version DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(i64::from(before))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(version_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit, |v| {
            v.version.to_string()
        }))
    }

    /// Templates in name (byte) order, each at the version its head names.
    async fn list_templates(&self, page: &PageRequest) -> StoreResult<Page<TemplateVersion>> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM mail_template_heads h
             JOIN mail_template_versions v ON v.name = h.name AND v.version = h.latest
             WHERE h.name > $1 ORDER BY h.name LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(page.after.as_deref().unwrap_or(""))
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(version_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Page::from_overfetch(rows, page.limit, |v| v.name.clone()))
    }

    async fn delete_template(&self, name: &str) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(map_err)?;
        // The head first: its row lock waits for a put in progress, so the statements after
        // it see that put's version and remove it too.
        let done = sqlx::query("DELETE FROM mail_template_heads WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        for sql in [
            "DELETE FROM mail_template_variants WHERE name = $1",
            "DELETE FROM mail_template_versions WHERE name = $1",
        ] {
            sqlx::query(sql)
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }
}
