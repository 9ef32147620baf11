//! Master-key rotation on PostgreSQL: files and uploads in progress both keep a wrapped data
//! key in an `encryption` column, and rotation reads and rewrites them the same way. One pair
//! of queries (one per table, each a literal) serves both.

use carafe_core::StoreResult;
use carafe_core::files::FileEncryption;
use sqlx::types::Json;

use crate::{PgStore, map_err};

/// A table whose rows may carry a wrapped data key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Keyed {
    Files,
    Uploads,
}

impl Keyed {
    fn select(self) -> &'static str {
        match self {
            Keyed::Files => {
                "SELECT id, encryption FROM files WHERE encryption IS NOT NULL \
                 AND encryption->>'kid' <> $1 AND ($2::uuid IS NULL OR id > $2) \
                 ORDER BY id LIMIT $3"
            }
            Keyed::Uploads => {
                "SELECT id, encryption FROM uploads WHERE encryption IS NOT NULL \
                 AND encryption->>'kid' <> $1 AND ($2::uuid IS NULL OR id > $2) \
                 ORDER BY id LIMIT $3"
            }
        }
    }

    fn update(self) -> &'static str {
        match self {
            Keyed::Files => "UPDATE files SET encryption = $1 WHERE id = $2",
            Keyed::Uploads => "UPDATE uploads SET encryption = $1 WHERE id = $2",
        }
    }
}

/// Up to `limit` rows of `keyed` (by id, after `after`) whose key is wrapped under a master
/// key other than `kid`.
pub(crate) async fn not_under_key(
    store: &PgStore,
    keyed: Keyed,
    kid: &str,
    after: Option<uuid::Uuid>,
    limit: u32,
) -> StoreResult<Vec<(uuid::Uuid, FileEncryption)>> {
    let rows: Vec<(uuid::Uuid, Json<FileEncryption>)> = sqlx::query_as(keyed.select())
        .bind(kid)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&store.pool)
        .await
        .map_err(map_err)?;
    Ok(rows.into_iter().map(|(id, e)| (id, e.0)).collect())
}

/// Stores the rewrapped keys of `rows` (whose ids `uuid` reads) in one transaction.
pub(crate) async fn set_encryption<Id>(
    store: &PgStore,
    keyed: Keyed,
    rows: &[(Id, FileEncryption)],
    uuid: fn(&Id) -> uuid::Uuid,
) -> StoreResult<()> {
    let mut tx = store.pool.begin().await.map_err(map_err)?;
    for (id, enc) in rows {
        sqlx::query(keyed.update())
            .bind(Json(enc))
            .bind(uuid(id))
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)
}
