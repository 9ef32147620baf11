//! A mail's attachments on SQLite: one `mail_attachments` row each, numbered by `position` in
//! the order given. Bytes given with the mail are kept in `content`; a Carafe file is kept as
//! its id (`file_id`), read when the message is sent. Written with the mail, in its
//! transaction; read back whenever a `Mail` is.

use carafe_core::mail::{Attachment, AttachmentContent, MailId};
use carafe_core::{StoreError, StoreResult};
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::uuid_col;
use crate::map_err;

/// Writes each mail's attachments (`(mail, attachments)`), in the caller's transaction.
pub(super) async fn insert(
    conn: &mut SqliteConnection,
    mails: &[(MailId, &[Attachment])],
) -> StoreResult<()> {
    let mut rows = Vec::new();
    for (mail, attachments) in mails {
        let mail = mail.to_string();
        for (i, a) in attachments.iter().enumerate() {
            let size = i64::try_from(a.size)
                .map_err(|_| StoreError::corrupt("mail attachment size out of range"))?;
            let (file_id, content) = match &a.content {
                AttachmentContent::File(id) => (Some(id.to_string()), None),
                AttachmentContent::Bytes(bytes) => (None, Some(bytes.as_slice())),
            };
            rows.push((mail.clone(), i as i64, a, size, file_id, content));
        }
    }
    // Eight parameters per row keep each statement far below SQLite's 32,766 limit.
    for chunk in rows.chunks(1000) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO mail_attachments (mail_id, position, filename, content_type, cid, \
             size, file_id, content) ",
        );
        q.push_values(chunk, |mut b, (mail, i, a, size, file_id, content)| {
            b.push_bind(mail.as_str())
                .push_bind(*i)
                .push_bind(a.filename.as_str())
                .push_bind(a.content_type.as_str())
                .push_bind(a.cid.as_deref())
                .push_bind(*size)
                .push_bind(file_id.as_deref())
                .push_bind(*content);
        });
        q.build().execute(&mut *conn).await.map_err(map_err)?;
    }
    Ok(())
}

/// `mail`'s attachments, in the order given.
pub(super) async fn of(conn: &mut SqliteConnection, mail: MailId) -> StoreResult<Vec<Attachment>> {
    sqlx::query(
        "SELECT filename, content_type, cid, size, file_id, content FROM mail_attachments \
         WHERE mail_id = ? ORDER BY position",
    )
    .bind(mail.to_string())
    .fetch_all(conn)
    .await
    .map_err(map_err)?
    .iter()
    .map(attachment_from_row)
    .collect()
}

fn attachment_from_row(row: &SqliteRow) -> StoreResult<Attachment> {
    let content = match row
        .try_get::<Option<Vec<u8>>, _>("content")
        .map_err(map_err)?
    {
        Some(bytes) => AttachmentContent::Bytes(bytes),
        None => AttachmentContent::File(uuid_col(row, "file_id", "mail_attachments.file_id")?),
    };
    Ok(Attachment {
        filename: row.try_get("filename").map_err(map_err)?,
        content_type: row.try_get("content_type").map_err(map_err)?,
        cid: row.try_get("cid").map_err(map_err)?,
        size: u64::try_from(row.try_get::<i64, _>("size").map_err(map_err)?)
            .map_err(|_| StoreError::corrupt("mail_attachments.size"))?,
        content,
    })
}
