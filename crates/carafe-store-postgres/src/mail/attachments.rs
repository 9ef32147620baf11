//! A mail's attachments: one `mail_attachments` row each, numbered by `position` in the order
//! given. Bytes given with the mail are kept in `content`; a Carafe file is kept as its id in
//! `file_id` and read when the message is sent. They are written with their mail, in its
//! transaction, and read wherever a `Mail` is.

use carafe_core::files::FileId;
use carafe_core::mail::{Attachment, AttachmentContent, Mail, MailId};
use carafe_core::{StoreError, StoreResult};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgExecutor, Row};
use uuid::Uuid;

use crate::map_err;

/// Writes the attachments of every mail in `mails` in one statement; nothing when there are
/// none.
pub(super) async fn insert<'a>(
    conn: &mut PgConnection,
    mails: impl IntoIterator<Item = &'a Mail>,
) -> StoreResult<()> {
    let mut mail_ids = Vec::new();
    let mut positions = Vec::new();
    let mut filenames = Vec::new();
    let mut content_types = Vec::new();
    let mut cids = Vec::new();
    let mut sizes = Vec::new();
    let mut file_ids: Vec<Option<Uuid>> = Vec::new();
    let mut contents: Vec<Option<&[u8]>> = Vec::new();
    for mail in mails {
        for (position, a) in mail.attachments.iter().enumerate() {
            mail_ids.push(mail.id.0);
            positions.push(
                i32::try_from(position)
                    .map_err(|_| StoreError::corrupt("mail_attachments: too many"))?,
            );
            filenames.push(a.filename.as_str());
            content_types.push(a.content_type.as_str());
            cids.push(a.cid.as_deref());
            sizes.push(i64::try_from(a.size).unwrap_or(i64::MAX));
            match &a.content {
                AttachmentContent::File(id) => {
                    file_ids.push(Some(id.0));
                    contents.push(None);
                }
                AttachmentContent::Bytes(bytes) => {
                    file_ids.push(None);
                    contents.push(Some(bytes.as_slice()));
                }
            }
        }
    }
    if mail_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO mail_attachments (mail_id, position, filename, content_type, cid, size,
                                       file_id, content)
         SELECT * FROM unnest($1::uuid[], $2::int[], $3::text[], $4::text[], $5::text[],
                              $6::bigint[], $7::uuid[], $8::bytea[])",
    )
    .bind(mail_ids)
    .bind(positions)
    .bind(filenames)
    .bind(content_types)
    .bind(cids)
    .bind(sizes)
    .bind(file_ids)
    .bind(contents)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

/// The attachments of `mail`, in their order.
pub(super) async fn load<'e>(
    db: impl PgExecutor<'e>,
    mail: MailId,
) -> StoreResult<Vec<Attachment>> {
    sqlx::query(
        "SELECT filename, content_type, cid, size, file_id, content
         FROM mail_attachments WHERE mail_id = $1 ORDER BY position",
    )
    .bind(mail.0)
    .fetch_all(db)
    .await
    .map_err(map_err)?
    .iter()
    .map(from_row)
    .collect()
}

fn from_row(row: &PgRow) -> StoreResult<Attachment> {
    let size: i64 = row.try_get("size").map_err(map_err)?;
    let file_id: Option<Uuid> = row.try_get("file_id").map_err(map_err)?;
    let content: Option<Vec<u8>> = row.try_get("content").map_err(map_err)?;
    let content = match (file_id, content) {
        (Some(id), None) => AttachmentContent::File(FileId(id)),
        (None, Some(bytes)) => AttachmentContent::Bytes(bytes),
        _ => return Err(StoreError::corrupt("mail_attachments: file_id or content")),
    };
    Ok(Attachment {
        filename: row.try_get("filename").map_err(map_err)?,
        content_type: row.try_get("content_type").map_err(map_err)?,
        cid: row.try_get("cid").map_err(map_err)?,
        size: u64::try_from(size).map_err(|_| StoreError::corrupt("mail_attachments.size"))?,
        content,
    })
}
