//! Attachments and inline parts. Checked when a mail is accepted: a Carafe file must be one
//! the caller may read and `ready` (scanned clean, never quarantined or still processing);
//! bytes given inline are decoded; names, types and Content-IDs are clean; counts and the total
//! size are within limits. Read again when each message is built (a file deleted or
//! quarantined since then fails the message), and placed in the MIME tree: inline parts beside
//! the HTML in `multipart/related`, attachments in `multipart/mixed`.

use base64::Engine as _;
use carafe_core::files::{FileId, FileRecord, FileStatus};
use carafe_core::mail::{Attachment, AttachmentContent, Mail};
use lettre::message::header::ContentType;
use lettre::message::{Attachment as LettreAttachment, MultiPart, SinglePart};

use super::{Error, Mailer};
use crate::context::{FieldError, Principal};

/// Most attachments and inline parts of one mail, together.
pub const MAX_ATTACHMENTS: usize = 20;
/// The longest file name and Content-ID.
pub const MAX_FILENAME_CHARS: usize = 200;
pub const MAX_CID_BYTES: usize = 100;

/// An attachment or inline part as a client gives it: a Carafe file, or bytes in base64.
#[derive(Debug, Clone, Default)]
pub struct AttachmentSpec {
    pub file_id: Option<String>,
    pub filename: Option<String>,
    pub content_base64: Option<String>,
    /// Bytes already decoded (a part of a message received over SMTP).
    pub content: Option<Vec<u8>>,
    pub content_type: Option<String>,
    /// Set for inline parts: the HTML refers to it as `cid:…`.
    pub cid: Option<String>,
}

/// One part's bytes, ready for the MIME tree.
#[derive(Debug, Clone)]
pub struct FilePart {
    pub filename: String,
    pub content_type: ContentType,
    pub cid: Option<String>,
    pub bytes: Vec<u8>,
}

fn check_filename(name: &str) -> Result<(), &'static str> {
    if name.trim().is_empty() || name.chars().count() > MAX_FILENAME_CHARS {
        return Err("a file name of 1-200 characters");
    }
    if name.chars().any(|c| c.is_control() || "/\\\"".contains(c)) {
        return Err("a file name without control characters, slashes or quotes");
    }
    Ok(())
}

fn check_content_type(ct: &str) -> Result<ContentType, &'static str> {
    let essence = ct.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match essence.split_once('/') {
        Some((a, b)) if token(a) && token(b) && !ct.contains(['\r', '\n']) => {
            ContentType::parse(ct).map_err(|_| "a media type such as application/pdf")
        }
        _ => Err("a media type such as application/pdf"),
    }
}

fn check_cid(cid: &str) -> Result<(), &'static str> {
    let ok = !cid.is_empty()
        && cid.len() <= MAX_CID_BYTES
        && cid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err("1-100 of a-z A-Z 0-9 . _ - @")
    }
}

impl Mailer {
    /// Checks `specs` (`/attachments/…` then `/inline/…`) and returns them as stored; refusals
    /// are added to `errors`.
    pub(super) async fn check_attachments(
        &self,
        specs: &[(&str, &[AttachmentSpec])],
        principal: &Principal,
        errors: &mut Vec<FieldError>,
    ) -> Result<Vec<Attachment>, Error> {
        let count: usize = specs.iter().map(|(_, s)| s.len()).sum();
        if count > MAX_ATTACHMENTS {
            errors.push(FieldError::new(
                "/attachments",
                format!("at most {MAX_ATTACHMENTS} attachments and inline parts together"),
            ));
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut cids = std::collections::HashSet::new();
        for (list, items) in specs {
            for (i, spec) in items.iter().enumerate() {
                let at = |f: &str| format!("/{list}/{i}{f}");
                let before = errors.len();
                let mut bad = |f: &str, m: &str| errors.push(FieldError::new(at(f), m));
                if let Some(cid) = &spec.cid {
                    if let Err(m) = check_cid(cid) {
                        bad("/cid", m);
                    } else if !cids.insert(cid.clone()) {
                        bad("/cid", "given twice");
                    }
                } else if *list == "inline" {
                    bad("/cid", "an inline part needs a cid");
                }
                if let Some(name) = &spec.filename
                    && let Err(m) = check_filename(name)
                {
                    bad("/filename", m);
                }
                let given_type = match spec.content_type.as_deref().map(check_content_type) {
                    Some(Err(m)) => {
                        bad("/type", m);
                        None
                    }
                    Some(Ok(_)) => spec.content_type.clone(),
                    None => None,
                };
                let resolved = match (&spec.file_id, &spec.content_base64, &spec.content) {
                    (None, None, Some(b)) => Ok((
                        (None, None, b.len() as u64),
                        AttachmentContent::Bytes(b.clone()),
                    )),
                    (Some(id), None, None) => self.attachable_file(id, principal).await?.map(|f| {
                        let meta = (Some(f.name), Some(f.mime), f.size);
                        (meta, AttachmentContent::File(f.id))
                    }),
                    (None, Some(b64), None) => {
                        let clean: String = b64.split_ascii_whitespace().collect();
                        base64::engine::general_purpose::STANDARD
                            .decode(clean)
                            .map(|b| ((None, None, b.len() as u64), AttachmentContent::Bytes(b)))
                            .map_err(|_| "content_base64 is not valid base64")
                    }
                    _ => Err("give either file_id or content_base64"),
                };
                let ((name, mime, size), content) = match resolved {
                    Ok(r) => r,
                    Err(m) => {
                        let only_file = spec.file_id.is_some() && spec.content_base64.is_none();
                        let field = if only_file { "/file_id" } else { "" };
                        errors.push(FieldError::new(at(field), m));
                        continue;
                    }
                };
                if errors.len() > before {
                    continue;
                }
                let Some(filename) = spec.filename.clone().or(name).or(spec.cid.clone()) else {
                    errors.push(FieldError::new(at("/filename"), "give a file name"));
                    continue;
                };
                out.push(Attachment {
                    filename,
                    content_type: given_type
                        .or(mime)
                        .unwrap_or_else(|| "application/octet-stream".into()),
                    cid: spec.cid.clone(),
                    size,
                    content,
                });
            }
        }
        let total: u64 = out.iter().map(|a| a.size).sum();
        if total > self.settings().max_attachment_bytes {
            errors.push(FieldError::new(
                "/attachments",
                format!(
                    "attachments and inline parts hold at most {} bytes together (mail.max_attachment_bytes)",
                    self.settings().max_attachment_bytes
                ),
            ));
        }
        Ok(out)
    }

    /// A file `principal` may read and that is ready.
    pub(super) async fn attachable_file(
        &self,
        id: &str,
        principal: &Principal,
    ) -> Result<Result<FileRecord, &'static str>, Error> {
        let Some(files) = self.files() else {
            return Ok(Err("files are not available on this server"));
        };
        let Ok(id) = id.parse::<FileId>() else {
            return Ok(Err("not a file id"));
        };
        match files.get_visible(principal, id).await {
            Ok(f) if f.status == FileStatus::Ready => Ok(Ok(f)),
            Ok(_) => Ok(Err(
                "the file is not ready (still processing, quarantined or rejected)",
            )),
            Err(crate::files::records::RecordError::Store(e)) => Err(e.into()),
            Err(_) => Ok(Err("no such file (or the key may not read files)")),
        }
    }

    /// The parts of `mail`, read for sending. `Err(Ok(reason))`: a file is gone or no longer
    /// ready (the message cannot be sent); `Err(Err(e))`: reading failed (try again).
    pub(super) async fn parts(&self, mail: &Mail) -> Result<Vec<FilePart>, Result<String, String>> {
        let mut out = Vec::with_capacity(mail.attachments.len());
        for a in &mail.attachments {
            let bytes = match &a.content {
                AttachmentContent::Bytes(b) => b.clone(),
                AttachmentContent::File(id) => {
                    let files = self
                        .files()
                        .ok_or_else(|| Ok("files are not available".into()))?;
                    match files.ready_content(*id).await {
                        Ok(Some(b)) => b.to_vec(),
                        Ok(None) => {
                            return Err(Ok(format!(
                                "the attached file {:?} is no longer available",
                                a.filename
                            )));
                        }
                        Err(e) => return Err(Err(format!("reading {:?}: {e}", a.filename))),
                    }
                }
            };
            let content_type = ContentType::parse(&a.content_type)
                .unwrap_or_else(|_| ContentType::parse("application/octet-stream").expect("valid"));
            out.push(FilePart {
                filename: a.filename.clone(),
                content_type,
                cid: a.cid.clone(),
                bytes,
            });
        }
        Ok(out)
    }
}

/// A message body: one part, or several.
pub enum Body {
    Single(SinglePart),
    Multi(MultiPart),
}

/// `body` with `parts` around it: inline parts join it in `multipart/related`, then
/// attachments in `multipart/mixed`.
pub fn assemble(body: Body, parts: &[FilePart]) -> Body {
    let (inline, attached): (Vec<_>, Vec<_>) = parts.iter().partition(|p| p.cid.is_some());
    let mut body = body;
    if !inline.is_empty() {
        let mut related = match body {
            Body::Single(s) => MultiPart::related().singlepart(s),
            Body::Multi(m) => MultiPart::related().multipart(m),
        };
        for p in inline {
            let cid = p.cid.clone().expect("inline");
            related = related.singlepart(
                LettreAttachment::new_inline_with_name(cid, p.filename.clone())
                    .body(p.bytes.clone(), p.content_type.clone()),
            );
        }
        body = Body::Multi(related);
    }
    if !attached.is_empty() {
        let mut mixed = match body {
            Body::Single(s) => MultiPart::mixed().singlepart(s),
            Body::Multi(m) => MultiPart::mixed().multipart(m),
        };
        for p in attached {
            mixed = mixed.singlepart(
                LettreAttachment::new(p.filename.clone())
                    .body(p.bytes.clone(), p.content_type.clone()),
            );
        }
        body = Body::Multi(mixed);
    }
    body
}
