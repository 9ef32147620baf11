//! A message received over SMTP, turned into the same send request the HTTP API takes: the
//! envelope's recipients (each to, cc or bcc as the headers show them), the sender, subject,
//! text and HTML bodies, attachments and inline parts, and the headers Carafe lets a client
//! set. Everything else a client writes (Date, Message-ID, MIME headers, Received…) is Carafe's
//! to write when it builds each recipient's message.

use std::collections::HashMap;

use mail_parser::{Address, MessageParser, MimeHeaders};

use crate::mail::build::check_header;
use crate::mail::read::{bodies, media_type};
use crate::mail::{AttachmentSpec, SendRequest};

/// The header a client may set to tag the mail (`X-Carafe-Tags: receipt, eu`).
const TAGS_HEADER: &str = "X-Carafe-Tags";

fn mailbox(name: Option<&str>, address: &str) -> String {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        Some(n) => format!("\"{}\" <{address}>", n.replace(['"', '\\'], "")),
        None => address.to_owned(),
    }
}

/// Each address of a header with its display form (`Name <a@b>`), keyed lowercased.
fn addresses(list: Option<&Address<'_>>) -> Vec<(String, String)> {
    list.map(|a| {
        a.iter()
            .filter_map(|addr| {
                let email = addr.address()?;
                Some((email.to_lowercase(), mailbox(addr.name(), email)))
            })
            .collect()
    })
    .unwrap_or_default()
}

/// The send request for `raw`, sent by the envelope's `from` to its `recipients`; `None`
/// when `raw` is not a message at all.
pub fn to_request(raw: &[u8], from: &str, recipients: &[String]) -> Option<SendRequest> {
    let message = MessageParser::default().parse(raw)?;
    let to = addresses(message.to());
    let cc = addresses(message.cc());
    let shown: HashMap<String, (bool, String)> = to
        .iter()
        .map(|(k, v)| (k.clone(), (true, v.clone())))
        .chain(cc.iter().map(|(k, v)| (k.clone(), (false, v.clone()))))
        .collect();
    let mut req = SendRequest {
        from: addresses(message.from())
            .into_iter()
            .next()
            .map(|(_, shown)| shown)
            .or_else(|| Some(from.to_owned())),
        reply_to: addresses(message.reply_to())
            .into_iter()
            .next()
            .map(|(_, s)| s),
        subject: Some(message.subject().unwrap_or("(no subject)").to_owned()),
        ..SendRequest::default()
    };
    (req.text, req.html) = bodies(&message);
    // The envelope decides who gets a copy; the headers only how each is shown.
    for rcpt in recipients {
        match shown.get(&rcpt.to_lowercase()) {
            Some((true, display)) => req.to.push(display.clone()),
            Some((false, display)) => req.cc.push(display.clone()),
            None => req.bcc.push(rcpt.clone()),
        }
    }
    for part in message.attachments() {
        let cid = part
            .content_id()
            .map(|c| c.trim_matches(['<', '>']).to_owned());
        let inline = cid.is_some()
            && part
                .content_disposition()
                .is_none_or(|d| d.ctype().eq_ignore_ascii_case("inline"));
        let spec = AttachmentSpec {
            filename: part.attachment_name().map(str::to_owned),
            content: Some(part.contents().to_vec()),
            content_type: media_type(part),
            cid: if inline { cid } else { None },
            ..AttachmentSpec::default()
        };
        if inline {
            req.inline.push(spec);
        } else {
            req.attachments.push(spec);
        }
    }
    for (name, value) in message.headers_raw() {
        let value = value.trim();
        if name.eq_ignore_ascii_case(TAGS_HEADER) {
            req.tags.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            );
        } else if check_header(name, value).is_ok() {
            req.headers.push((name.to_owned(), value.to_owned()));
        }
    }
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_recipients_are_shown_as_the_headers_say() {
        let raw = b"From: Shop <shop@example.com>\r\nTo: Ana <ana@example.com>\r\n\
            Cc: bo@example.com\r\nSubject: =?utf-8?b?7JWI64WV?=\r\nX-Order: 42\r\n\
            X-Carafe-Tags: receipt, eu\r\nReceived: from somewhere\r\nMIME-Version: 1.0\r\n\
            Content-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n";
        let rcpts = [
            "ANA@example.com".into(),
            "bo@example.com".into(),
            "audit@example.com".into(),
        ];
        let req = to_request(raw, "bounce@example.com", &rcpts).unwrap();
        assert_eq!(req.from.as_deref(), Some("\"Shop\" <shop@example.com>"));
        assert_eq!(req.to, ["\"Ana\" <ana@example.com>"]);
        assert_eq!(req.cc, ["bo@example.com"]);
        assert_eq!(req.bcc, ["audit@example.com"]);
        assert_eq!(req.subject.as_deref(), Some("안녕"));
        assert_eq!(req.text.as_deref().map(str::trim), Some("hello"));
        assert_eq!(req.headers, [("X-Order".to_string(), "42".to_string())]);
        assert_eq!(req.tags, ["receipt", "eu"]);
    }
}
