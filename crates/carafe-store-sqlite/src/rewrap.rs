//! Master-key rotation on SQLite: files and uploads in progress both keep a wrapped data key
//! in an `encryption` column, and rotation reads and rewrites them the same way. One pair of
//! queries (one per table, each a literal) serves both.

use std::fmt::Display;
use std::str::FromStr;

use carafe_core::files::FileEncryption;
use carafe_core::{StoreError, StoreResult};

use crate::{SqliteStore, map_err};

/// A table whose rows may carry a wrapped data key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keyed {
    Files,
    Uploads,
}

impl Keyed {
    fn name(self) -> &'static str {
        match self {
            Keyed::Files => "files",
            Keyed::Uploads => "uploads",
        }
    }

    fn select(self) -> &'static str {
        match self {
            Keyed::Files => {
                "SELECT id, encryption FROM files WHERE encryption IS NOT NULL \
                 AND json_extract(encryption, '$.kid') <> ? AND id > ? ORDER BY id LIMIT ?"
            }
            Keyed::Uploads => {
                "SELECT id, encryption FROM uploads WHERE encryption IS NOT NULL \
                 AND json_extract(encryption, '$.kid') <> ? AND id > ? ORDER BY id LIMIT ?"
            }
        }
    }

    fn update(self) -> &'static str {
        match self {
            Keyed::Files => "UPDATE files SET encryption = ? WHERE id = ?",
            Keyed::Uploads => "UPDATE uploads SET encryption = ? WHERE id = ?",
        }
    }
}

/// Up to `limit` rows of `keyed` (by id, after `after`) whose key is wrapped under a master
/// key other than `kid`.
pub(crate) async fn not_under_key<Id: FromStr + Display>(
    store: &SqliteStore,
    keyed: Keyed,
    kid: &str,
    after: Option<Id>,
    limit: u32,
) -> StoreResult<Vec<(Id, FileEncryption)>> {
    let table = keyed.name();
    let rows: Vec<(String, String)> = sqlx::query_as(keyed.select())
        .bind(kid)
        .bind(after.map(|a| a.to_string()).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&store.reader)
        .await
        .map_err(map_err)?;
    rows.iter()
        .map(|(id, enc)| {
            let id = id
                .parse()
                .map_err(|_| StoreError::corrupt(format!("{table}.id")))?;
            let enc = serde_json::from_str(enc)
                .map_err(|_| StoreError::corrupt(format!("{table}.encryption")))?;
            Ok((id, enc))
        })
        .collect()
}

/// Stores the rewrapped keys of `rows` in one transaction.
pub(crate) async fn set_encryption<Id: Display>(
    store: &SqliteStore,
    keyed: Keyed,
    rows: &[(Id, FileEncryption)],
) -> StoreResult<()> {
    let mut tx = store.begin_write().await?;
    for (id, enc) in rows {
        sqlx::query(keyed.update())
            .bind(serde_json::to_string(enc).expect("serializes"))
            .bind(id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)
}
