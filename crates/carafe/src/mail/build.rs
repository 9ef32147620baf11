//! Turns a draft into the RFC 5322 bytes of one message, on lettre's builder. It is pure (no
//! I/O, no clock: the caller gives the Message-ID and the Date) so the outbox can keep exactly
//! the bytes it sends, and it is the one place that keeps a caller from forging a message: the
//! header allow-list, the size limits and the checks on every mailbox, subject and id written.
//!
//! Bcc recipients are not in a [`Draft`]: they travel in the SMTP envelope only, never in a
//! header. A message with no To and no Cc says `To: undisclosed-recipients:;`.

use std::time::SystemTime;

use lettre::{
    Message,
    address::Envelope,
    message::{
        Mailbox, Mailboxes, MultiPart, SinglePart,
        dkim::DkimConfig,
        header::{self, HeaderName, HeaderValue},
    },
};
use time::OffsetDateTime;

use super::address::{self, AddressError};
use super::attach::{Body, FilePart, assemble};

/// Most recipients one message may have, To, Cc and Bcc together.
pub const MAX_RECIPIENTS: usize = 50;
/// Longest subject, in characters, before encoding (RFC 5322's line limit; lettre folds and
/// encodes it).
pub const MAX_SUBJECT_CHARS: usize = 998;
/// Longest run of ASCII characters without a space in a subject, in bytes: it has to fit on
/// the `Subject: ` line, and lettre folds only between words.
pub const MAX_SUBJECT_WORD_BYTES: usize = 998 - "Subject: ".len();
/// Largest text body, and largest HTML body, in bytes (each).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Most custom headers one message may carry.
pub const MAX_CUSTOM_HEADERS: usize = 20;
/// Longest custom header value, in bytes; `name: value` must also fit one 998-byte line.
pub const MAX_HEADER_VALUE_BYTES: usize = 998;
/// Longest custom header name, in bytes (lettre's limit, which keeps the name on the first line).
pub const MAX_HEADER_NAME_BYTES: usize = 76;
/// Longest Message-ID, in bytes, without its angle brackets.
pub const MAX_MESSAGE_ID_BYTES: usize = 250;

/// Headers a caller may set besides `X-` ones: list and threading metadata. Carafe writes every
/// other header itself.
pub const ALLOWED_HEADERS: [&str; 7] = [
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Id",
    "In-Reply-To",
    "References",
    "Auto-Submitted",
    "Precedence",
];

/// The prefix of headers Carafe writes itself, which a caller may not set.
const RESERVED_PREFIX: &str = "x-carafe-";

/// Where text derived from HTML wraps.
const TEXT_WIDTH: usize = 78;

/// One message as a caller composed it. Bcc recipients are not here: they go in the envelope.
#[derive(Debug, Clone)]
pub struct Draft {
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    pub cc: Vec<Mailbox>,
    pub subject: String,
    /// The text/plain body; derived from `html` when only that is given.
    pub text: Option<String>,
    pub html: Option<String>,
    /// Custom headers, each allowed by [`check_header`].
    pub headers: Vec<(String, String)>,
    /// Attachments and inline parts, with their bytes.
    pub parts: Vec<FilePart>,
}

/// Why a message was refused: [`BuildError::reason`] is the stable machine word, `Display` the
/// message for a person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("a message needs a text or an HTML body")]
    NoBody,
    #[error("a message has at most {MAX_RECIPIENTS} recipients (to, cc and bcc together), not {0}")]
    TooManyRecipients(usize),
    #[error("the header {name:?} cannot be set: {why}")]
    HeaderNotAllowed { name: String, why: &'static str },
    #[error("the header {name:?} is invalid: {why}")]
    HeaderInvalid { name: String, why: &'static str },
    #[error("a message carries at most {MAX_CUSTOM_HEADERS} custom headers")]
    TooManyHeaders,
    #[error("the {what} is longer than {limit} {unit}")]
    TooLarge {
        what: &'static str,
        limit: usize,
        unit: &'static str,
    },
    #[error("the subject is invalid: {0}")]
    InvalidSubject(&'static str),
    #[error("the Message-ID must look like `unique@domain` (no '<', '>' or spaces): {0}")]
    InvalidMessageId(&'static str),
    #[error("the date must be between 1970 and 9999")]
    InvalidDate,
    #[error("the {field} address is invalid: {source}")]
    InvalidAddress {
        field: &'static str,
        source: AddressError,
    },
    #[error("the message could not be built: {0}")]
    Build(String),
}

impl BuildError {
    /// The stable machine word for this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoBody => "no_body",
            Self::TooManyRecipients(_) => "too_many_recipients",
            Self::HeaderNotAllowed { .. } => "header_not_allowed",
            Self::HeaderInvalid { .. } => "header_invalid",
            Self::TooManyHeaders => "too_many_headers",
            Self::TooLarge { .. } => "too_large",
            Self::InvalidSubject(_) => "invalid_subject",
            Self::InvalidMessageId(_) => "invalid_message_id",
            Self::InvalidDate => "invalid_date",
            Self::InvalidAddress { .. } => "invalid_address",
            Self::Build(_) => "build_failed",
        }
    }
}

/// Refuses more than [`MAX_RECIPIENTS`]; the caller counts Bcc in, which a [`Draft`] lacks.
pub fn check_recipient_count(total: usize) -> Result<(), BuildError> {
    if total > MAX_RECIPIENTS {
        return Err(BuildError::TooManyRecipients(total));
    }
    Ok(())
}

/// Whether a caller may set header `name` (case-insensitive) to `value`: `X-` headers other
/// than `X-Carafe-` ones and [`ALLOWED_HEADERS`], with an RFC 5322 field name and a value
/// without control characters (a tab aside) that fits one line. The named headers are
/// structured, so their values must be ASCII; an `X-` value may be Unicode (RFC 2047-encoded).
pub fn check_header(name: &str, value: &str) -> Result<(), BuildError> {
    let invalid = |why| BuildError::HeaderInvalid {
        name: name.to_owned(),
        why,
    };
    let not_allowed = |why| BuildError::HeaderNotAllowed {
        name: name.to_owned(),
        why,
    };
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Err(invalid("a name is printable ASCII, without spaces or ':'"));
    }
    if name.len() > MAX_HEADER_NAME_BYTES {
        return Err(invalid("a name is at most 76 bytes"));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(RESERVED_PREFIX) {
        return Err(not_allowed("the X-Carafe- prefix is reserved for Carafe"));
    }
    let extension = lower.starts_with("x-") && lower.len() > 2;
    if !extension && !ALLOWED_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name)) {
        return Err(not_allowed(
            "only X- headers and List-Unsubscribe, List-Unsubscribe-Post, List-Id, In-Reply-To, \
             References, Auto-Submitted and Precedence may be set; Carafe writes the others",
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(invalid(
            "a value cannot contain CR, LF, NUL or other control characters",
        ));
    }
    if value.len() > MAX_HEADER_VALUE_BYTES {
        return Err(BuildError::TooLarge {
            what: "header value",
            limit: MAX_HEADER_VALUE_BYTES,
            unit: "bytes",
        });
    }
    if name.len() + ": ".len() + value.len() > 998 {
        return Err(invalid("`name: value` must fit one line of 998 bytes"));
    }
    if !extension && !value.is_ascii() {
        return Err(invalid("this header's value must be ASCII"));
    }
    Ok(())
}

/// Builds the message: From, Reply-To, To (or `undisclosed-recipients:;`), Cc, Subject, Date
/// (`date`, written in UTC to the second), `Message-ID: <message_id>`, the custom headers and
/// MIME-Version, then a text/plain body, or a multipart/alternative one (text first, then HTML)
/// when there is HTML, with inline parts and attachments around it (see `attach`). Lines end in CRLF; lettre picks each part's transfer encoding.
pub fn build(draft: &Draft, message_id: &str, date: OffsetDateTime) -> Result<Vec<u8>, BuildError> {
    build_signed(draft, message_id, date, None)
}

/// Every check `build` makes, without assembling the message: for copies whose parts were
/// checked already (a campaign's, rendered from one template), where assembling each one
/// only to throw it away would cost more than everything else done for it.
pub fn check_draft(
    draft: &Draft,
    message_id: &str,
    date: OffsetDateTime,
) -> Result<(), BuildError> {
    check_recipient_count(draft.to.len() + draft.cc.len())?;
    check_mailboxes(draft)?;
    check_subject(&draft.subject)?;
    let text = body("text body", draft.text.as_deref())?;
    let html = body("HTML body", draft.html.as_deref())?;
    if text.is_none() && html.is_none() {
        return Err(BuildError::NoBody);
    }
    check_message_id(message_id)?;
    system_time(date)?;
    custom_headers(&draft.headers)?;
    Ok(())
}

/// `build`, then signed with DKIM when `dkim` is given.
pub fn build_signed(
    draft: &Draft,
    message_id: &str,
    date: OffsetDateTime,
    dkim: Option<&DkimConfig>,
) -> Result<Vec<u8>, BuildError> {
    check_recipient_count(draft.to.len() + draft.cc.len())?;
    check_mailboxes(draft)?;
    check_subject(&draft.subject)?;
    let text = body("text body", draft.text.as_deref())?;
    let html = body("HTML body", draft.html.as_deref())?;
    check_message_id(message_id)?;
    let date = system_time(date)?;
    let headers = custom_headers(&draft.headers)?;

    let mut builder = Message::builder().from(draft.from.clone());
    if let Some(reply_to) = &draft.reply_to {
        builder = builder.reply_to(reply_to.clone());
    }
    // Each list is set once: adding mailboxes one by one makes lettre re-parse the header.
    if !draft.to.is_empty() {
        builder = builder.header(header::To::from(Mailboxes::from(draft.to.clone())));
    } else if draft.cc.is_empty() {
        let to = HeaderName::new_from_ascii_str("To");
        builder = builder.raw_header(HeaderValue::new(to, "undisclosed-recipients:;".to_owned()));
    }
    if !draft.cc.is_empty() {
        builder = builder.header(header::Cc::from(Mailboxes::from(draft.cc.clone())));
    }
    builder = builder
        .subject(draft.subject.clone())
        .date(date)
        .message_id(Some(format!("<{message_id}>")));
    for header in headers {
        builder = builder.raw_header(header);
    }
    // lettre wants an envelope; ours (with the Bcc recipients) is the caller's business, and
    // only the bytes are returned, so the one given here is a placeholder that is never used.
    let envelope = Envelope::new(
        Some(draft.from.email.clone()),
        vec![draft.from.email.clone()],
    )
    .map_err(|e| BuildError::Build(e.to_string()))?;
    builder = builder.envelope(envelope);

    let body = match (text, html) {
        (None, None) => return Err(BuildError::NoBody),
        (Some(text), None) => Body::Single(SinglePart::plain(text.to_owned())),
        (text, Some(html)) => {
            let text = text.map_or_else(|| html_to_text(html), str::to_owned);
            Body::Multi(MultiPart::alternative_plain_html(text, html.to_owned()))
        }
    };
    let message = match assemble(body, &draft.parts) {
        Body::Single(part) => builder.singlepart(part),
        Body::Multi(parts) => builder.multipart(parts),
    };
    let mut message = message.map_err(|e| BuildError::Build(e.to_string()))?;
    if let Some(dkim) = dkim {
        message.sign(dkim);
    }
    Ok(message.formatted())
}

/// The visible text of an HTML body, for the text/plain part of a message given only HTML:
/// tags, scripts and styles dropped, entities decoded, paragraphs and line breaks kept, links
/// as numbered references listed at the end (`[text][1]` … `[1]: url`), tables without borders
/// (html2text's plain rendering, wrapped at 78 columns).
pub fn html_to_text(html: &str) -> String {
    // Without borders: HTML mail lays itself out with tables, which are not content.
    let config = html2text::config::plain().no_table_borders();
    let text = match config.string_from_read(html.as_bytes(), TEXT_WIDTH) {
        Ok(text) => text,
        // html2text refuses what it cannot lay out (nesting deeper than the width allows):
        // keep the characters outside tags rather than fail the message.
        Err(_) => strip_tags(html),
    };
    tidy(&text)
}

/// Without the padding table cells leave at line ends and with at most one blank line in a row.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank_run = 0;
    for line in text.lines().map(str::trim_end) {
        blank_run = if line.is_empty() { blank_run + 1 } else { 0 };
        if blank_run < 2 && !(out.is_empty() && line.is_empty()) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

fn strip_tags(html: &str) -> String {
    let mut inside = false;
    let keep = |&c: &char| {
        let keep = !inside && c != '<';
        inside = (inside || c == '<') && c != '>';
        keep
    };
    html.chars().filter(keep).collect()
}

fn check_mailboxes(draft: &Draft) -> Result<(), BuildError> {
    let fields = [("from", &draft.from)]
        .into_iter()
        .chain(draft.reply_to.iter().map(|m| ("reply-to", m)))
        .chain(draft.to.iter().map(|m| ("to", m)))
        .chain(draft.cc.iter().map(|m| ("cc", m)));
    for (field, mailbox) in fields {
        address::check_mailbox(mailbox)
            .map_err(|source| BuildError::InvalidAddress { field, source })?;
    }
    Ok(())
}

/// CR and LF are allowed (lettre RFC 2047-encodes the word that holds them, so they cannot
/// start a header); other control characters would be written raw, so they are refused, and so
/// is an ASCII word too long for one line.
fn check_subject(subject: &str) -> Result<(), BuildError> {
    if subject.chars().count() > MAX_SUBJECT_CHARS {
        return Err(BuildError::TooLarge {
            what: "subject",
            limit: MAX_SUBJECT_CHARS,
            unit: "characters",
        });
    }
    if subject
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\r' | '\n' | '\t'))
    {
        return Err(BuildError::InvalidSubject(
            "it contains a control character other than a line break or a tab",
        ));
    }
    // lettre folds only between words and writes an ASCII word as it is: one that cannot fit
    // on the `Subject: ` line would make that line longer than 998 bytes.
    if subject
        .split(' ')
        .any(|word| word.is_ascii() && word.len() > MAX_SUBJECT_WORD_BYTES)
    {
        return Err(BuildError::InvalidSubject(
            "a word (a run without spaces) is longer than 989 bytes",
        ));
    }
    Ok(())
}

/// A non-empty body within [`MAX_BODY_BYTES`]; an empty one counts as absent.
fn body<'a>(what: &'static str, body: Option<&'a str>) -> Result<Option<&'a str>, BuildError> {
    match body {
        Some(body) if body.len() > MAX_BODY_BYTES => Err(BuildError::TooLarge {
            what,
            limit: MAX_BODY_BYTES,
            unit: "bytes",
        }),
        Some(body) if !body.is_empty() => Ok(Some(body)),
        _ => Ok(None),
    }
}

/// `left@right`, each side a dot-atom of RFC 5322 atext, as `uuid@domain` is.
fn check_message_id(id: &str) -> Result<(), BuildError> {
    if id.len() > MAX_MESSAGE_ID_BYTES {
        return Err(BuildError::InvalidMessageId("it is longer than 250 bytes"));
    }
    let Some((left, right)) = id.split_once('@') else {
        return Err(BuildError::InvalidMessageId("it has no '@'"));
    };
    let dot_atom = |s: &str| {
        !s.is_empty()
            && s.split('.').all(|atom| {
                !atom.is_empty()
                    && atom
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b))
            })
    };
    if !dot_atom(left) || !dot_atom(right) {
        return Err(BuildError::InvalidMessageId(
            "each side of '@' is letters, digits, dots and !#$%&'*+-/=?^_`{|}~",
        ));
    }
    Ok(())
}

/// lettre's Date header takes a `SystemTime` and panics outside 1970..=9999.
fn system_time(date: OffsetDateTime) -> Result<SystemTime, BuildError> {
    const YEAR_10000: i64 = 253_402_300_800;
    if !(0..YEAR_10000).contains(&date.unix_timestamp()) {
        return Err(BuildError::InvalidDate);
    }
    Ok(SystemTime::from(date))
}

fn custom_headers(headers: &[(String, String)]) -> Result<Vec<HeaderValue>, BuildError> {
    if headers.len() > MAX_CUSTOM_HEADERS {
        return Err(BuildError::TooManyHeaders);
    }
    let mut values = Vec::with_capacity(headers.len());
    for (index, (name, value)) in headers.iter().enumerate() {
        check_header(name, value)?;
        // lettre keeps one header per name: a second would silently replace the first.
        if headers[..index]
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            return Err(BuildError::HeaderInvalid {
                name: name.clone(),
                why: "it is given more than once",
            });
        }
        let name =
            HeaderName::new_from_ascii(name.clone()).map_err(|_| BuildError::HeaderInvalid {
                name: name.clone(),
                why: "not a valid header name",
            })?;
        // `HeaderValue::new` folds at spaces and RFC 2047-encodes non-ASCII words.
        values.push(HeaderValue::new(name, value.clone()));
    }
    Ok(values)
}

#[cfg(test)]
mod tests;
