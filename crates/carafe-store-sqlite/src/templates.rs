//! `TemplateStore` on SQLite.
//!
//! Mail templates are versioned so that a message can record exactly what it was rendered
//! from: a version is written once and never changed. `mail_template_heads` holds each name's
//! latest number, `mail_template_versions` and `mail_template_variants` the versions and their
//! locales. A put runs in one write transaction: it takes the next number from the head (the
//! single writer connection and `BEGIN IMMEDIATE` order concurrent puts, so each sees what
//! committed before it), copies the previous version's other locales and adds its own.
//!
//! Reads are one statement each (versions joined with their variants, one row per variant),
//! so a version is never seen half-written by a reader.

use async_trait::async_trait;
use carafe_core::page::{Page, PageRequest};
use carafe_core::store::TemplateStore;
use carafe_core::templates::{TemplateVariant, TemplateVersion};
use carafe_core::{StoreError, StoreResult};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use time::OffsetDateTime;

use crate::{SqliteStore, at, map_err, ms};

/// Selects from `v` (rows shaped like `mail_template_versions`), one row per variant.
fn select(versions: &str, tail: &str) -> String {
    format!(
        "SELECT v.name, v.version, v.changed, v.actor, v.created_at, t.locale, t.subject, \
         t.text_body, t.html_body, t.layout FROM {versions} v \
         JOIN mail_template_variants t ON t.name = v.name AND t.version = v.version {tail}"
    )
}

/// Groups rows from `select` (ordered by version, then locale) into versions.
fn from_rows(rows: &[SqliteRow]) -> StoreResult<Vec<TemplateVersion>> {
    let mut versions: Vec<TemplateVersion> = Vec::new();
    for row in rows {
        let text = |c: &str| row.try_get::<String, _>(c).map_err(map_err);
        let opt = |c: &str| row.try_get::<Option<String>, _>(c).map_err(map_err);
        let name = text("name")?;
        let version = u32::try_from(row.try_get::<i64, _>("version").map_err(map_err)?)
            .map_err(|_| StoreError::corrupt("mail_template_versions.version"))?;
        let variant = TemplateVariant {
            locale: text("locale")?,
            subject: text("subject")?,
            text: opt("text_body")?,
            html: opt("html_body")?,
            layout: opt("layout")?,
        };
        match versions.last_mut() {
            Some(last) if last.name == name && last.version == version => {
                last.variants.push(variant)
            }
            _ => versions.push(TemplateVersion {
                name,
                version,
                variants: vec![variant],
                changed: text("changed")?,
                actor: text("actor")?,
                created_at: at(row.try_get("created_at").map_err(map_err)?),
            }),
        }
    }
    Ok(versions)
}

#[async_trait]
impl TemplateStore for SqliteStore {
    async fn put_template(
        &self,
        name: &str,
        variant: TemplateVariant,
        actor: &str,
        now: OffsetDateTime,
    ) -> StoreResult<TemplateVersion> {
        let mut tx = self.begin_write().await?;
        let version: i64 = sqlx::query_scalar(
            "INSERT INTO mail_template_heads (name, latest) VALUES (?, 1) \
             ON CONFLICT (name) DO UPDATE SET latest = latest + 1 RETURNING latest",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO mail_template_versions (name, version, changed, actor, created_at) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(name)
        .bind(version)
        .bind(&variant.locale)
        .bind(actor)
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        // The previous version's other locales, carried forward (none for version 1).
        sqlx::query(
            "INSERT INTO mail_template_variants \
                 (name, version, locale, subject, text_body, html_body, layout) \
             SELECT name, ?, locale, subject, text_body, html_body, layout \
             FROM mail_template_variants WHERE name = ? AND version = ? AND locale <> ?",
        )
        .bind(version)
        .bind(name)
        .bind(version - 1)
        .bind(&variant.locale)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        sqlx::query(
            "INSERT INTO mail_template_variants \
                 (name, version, locale, subject, text_body, html_body, layout) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        let sql = select(
            "mail_template_versions",
            "WHERE v.name = ? AND v.version = ? ORDER BY t.locale",
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(version)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        let stored = from_rows(&rows)?
            .pop()
            .ok_or_else(|| StoreError::corrupt("mail_template_versions"))?;
        tx.commit().await.map_err(map_err)?;
        Ok(stored)
    }

    async fn get_template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<TemplateVersion>> {
        let rows = match version {
            Some(version) => {
                let sql = select(
                    "mail_template_versions",
                    "WHERE v.name = ? AND v.version = ? ORDER BY t.locale",
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(name)
                    .bind(i64::from(version))
                    .fetch_all(&self.reader)
                    .await
            }
            None => {
                let sql = select(
                    "(SELECT ver.* FROM mail_template_heads h JOIN mail_template_versions ver \
                          ON ver.name = h.name AND ver.version = h.latest WHERE h.name = ?)",
                    "ORDER BY t.locale",
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(name)
                    .fetch_all(&self.reader)
                    .await
            }
        }
        .map_err(map_err)?;
        Ok(from_rows(&rows)?.pop())
    }

    async fn template_versions(
        &self,
        name: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<TemplateVersion>> {
        let Some(before) = page.after_or(i64::MAX) else {
            return Ok(Page::empty());
        };
        let sql = select(
            "(SELECT * FROM mail_template_versions WHERE name = ? AND version < ? \
              ORDER BY version DESC LIMIT ?)",
            "ORDER BY v.version DESC, t.locale",
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(before)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(Page::from_overfetch(from_rows(&rows)?, page.limit, |v| {
            v.version.to_string()
        }))
    }

    async fn list_templates(&self, page: &PageRequest) -> StoreResult<Page<TemplateVersion>> {
        // Every name sorts above the empty string.
        let after = page.after.as_deref().unwrap_or("");
        let sql = select(
            "(SELECT ver.* FROM mail_template_heads h JOIN mail_template_versions ver \
                  ON ver.name = h.name AND ver.version = h.latest \
              WHERE h.name > ? ORDER BY h.name LIMIT ?)",
            "ORDER BY v.name, t.locale",
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after)
            .bind(i64::from(page.limit) + 1)
            .fetch_all(&self.reader)
            .await
            .map_err(map_err)?;
        Ok(Page::from_overfetch(from_rows(&rows)?, page.limit, |v| {
            v.name.clone()
        }))
    }

    async fn delete_template(&self, name: &str) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        // Variants before versions before the head, as the foreign keys require; the head's
        // row says whether there was a template.
        let mut deleted = 0;
        for table in [
            "mail_template_variants",
            "mail_template_versions",
            "mail_template_heads",
        ] {
            let sql = format!("DELETE FROM {table} WHERE name = ?");
            deleted = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(name)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?
                .rows_affected();
        }
        tx.commit().await.map_err(map_err)?;
        Ok(deleted > 0)
    }
}
