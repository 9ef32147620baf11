//! Reading a stored message back as a mail client shows it (for the outbox): its headers in
//! order, its text and HTML bodies, and its attachments. A well-kept MIME parser
//! (mail-parser) does the work.

use mail_parser::{HeaderValue, Message, MessageParser, MessagePart, MimeHeaders};

/// A message's headers and bodies.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    /// `[name, value]` in order: free-text headers (Subject, …) decoded, the rest as written,
    /// unfolded.
    pub headers: Vec<(String, String)>,
    /// The text/plain body, when the message has one.
    pub text: Option<String>,
    /// The text/html body, when the message has one.
    pub html: Option<String>,
    /// Attachments and inline parts (not the bodies), in order.
    pub attachments: Vec<PartInfo>,
}

/// An attachment or inline part of a parsed message.
#[derive(Debug, Clone, PartialEq)]
pub struct PartInfo {
    pub filename: Option<String>,
    pub content_type: String,
    pub size: u64,
    /// Its Content-ID (without angle brackets), for inline parts.
    pub cid: Option<String>,
}

/// A message's text/plain and text/html bodies: only parts that really are of those types
/// (the parser would otherwise convert one into the other).
pub fn bodies(message: &Message<'_>) -> (Option<String>, Option<String>) {
    let text = message
        .text_bodies()
        .find(|p| p.is_text() && !p.is_text_html())
        .and_then(|p| p.text_contents().map(str::to_owned));
    let html = message
        .html_bodies()
        .find(|p| p.is_text_html())
        .and_then(|p| p.text_contents().map(str::to_owned));
    (text, html)
}

/// A part's media type (`type/subtype`), when it names one.
pub fn media_type(part: &MessagePart<'_>) -> Option<String> {
    part.content_type()
        .map(|ct| format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("octet-stream")))
}

pub fn parse(raw: &[u8]) -> Parsed {
    let Some(message) = MessageParser::default().parse(raw) else {
        return Parsed::default();
    };
    let unfold = |v: &str| {
        v.split(['\r', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let raw_values: Vec<(&str, &str)> = message.headers_raw().collect();
    let headers = message
        .headers()
        .iter()
        .zip(raw_values)
        .map(|(h, (_, raw))| {
            let value = match h.value() {
                HeaderValue::Text(t) => unfold(t),
                HeaderValue::TextList(l) => unfold(&l.join(", ")),
                _ => unfold(raw),
            };
            (h.name().to_string(), value)
        })
        .collect();
    let (text, html) = bodies(&message);
    let attachments = message
        .attachments()
        .map(|p| PartInfo {
            filename: p.attachment_name().map(str::to_owned),
            content_type: media_type(p).unwrap_or_else(|| "application/octet-stream".to_owned()),
            size: p.contents().len() as u64,
            cid: p
                .content_id()
                .map(|c| c.trim_matches(['<', '>']).to_owned()),
        })
        .collect();
    Parsed {
        headers,
        text,
        html,
        attachments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_both_bodies_come_back() {
        let raw = b"From: a@x.example\r\nSubject: =?utf-8?b?7JWI64WV?=\r\nX-Long: one\r\n two\r\n\
            MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b\"\r\n\r\n\
            --b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n\
            --b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>hello</p>\r\n--b--\r\n";
        let p = parse(raw);
        assert_eq!(p.headers[0], ("From".into(), "a@x.example".into()));
        assert_eq!(p.headers[1], ("Subject".into(), "안녕".into()));
        assert_eq!(p.headers[2], ("X-Long".into(), "one two".into()));
        assert_eq!(p.text.as_deref().map(str::trim), Some("hello"));
        assert_eq!(p.html.as_deref().map(str::trim), Some("<p>hello</p>"));
    }

    #[test]
    fn a_text_only_message_has_no_html() {
        let p = parse(b"Subject: hi\r\nContent-Type: text/plain\r\n\r\njust text\r\n");
        assert_eq!(p.text.as_deref().map(str::trim), Some("just text"));
        assert_eq!(p.html, None);
    }
}
