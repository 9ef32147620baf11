//! `Content-Disposition` building and parsing (RFC 6266, RFC 8187).
//!
//! Downloads carry the file's original name, which may be any Unicode text
//! chosen by a user. [`content_disposition`] turns it into a header value
//! that is always valid: an ASCII `filename` fallback for old clients plus
//! an RFC 8187 `filename*` with the exact UTF-8 name, with control and bidi
//! override characters removed so the name cannot break the header or
//! disguise its extension. [`parse_filename`] reads the name back out of a
//! client's `Content-Disposition` on raw uploads.

use http::HeaderValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// RFC 8187 `attr-char` is ALPHA / DIGIT / `!#$&+-.^_`|~`; all else is encoded.
const ATTR_CHAR_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Whether the file is shown by the browser or saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispositionKind {
    Inline,
    Attachment,
}

/// Control characters and invisible bidi controls that could reorder text.
fn is_stripped(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Builds a `Content-Disposition` value carrying `filename`.
///
/// An empty name (after stripping) yields just the disposition type.
pub fn content_disposition(kind: DispositionKind, filename: &str) -> HeaderValue {
    let kind = match kind {
        DispositionKind::Inline => "inline",
        DispositionKind::Attachment => "attachment",
    };
    let name: String = filename.chars().filter(|&c| !is_stripped(c)).collect();
    if name.is_empty() {
        return HeaderValue::from_static(kind);
    }
    // Percent signs are replaced too: some clients decode `%XX` in `filename`.
    let mut fallback: String = name
        .chars()
        .filter(|&c| c != '"' && c != '\\')
        .map(|c| if c.is_ascii() && c != '%' { c } else { '_' })
        .collect();
    let exact = fallback == name;
    if fallback.is_empty() {
        fallback.push_str("file");
    }
    let mut value = format!("{kind}; filename=\"{fallback}\"");
    if !exact {
        value.push_str("; filename*=UTF-8''");
        value.extend(utf8_percent_encode(&name, ATTR_CHAR_ENCODE));
    }
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(kind))
}

/// Extracts the file name from a request's `Content-Disposition` value.
///
/// `filename*` (RFC 8187, UTF-8 or ISO-8859-1) is preferred over
/// `filename`. The result is the raw name: it still needs sanitising before
/// being stored or displayed. Returns `None` if no non-empty name is found.
pub fn parse_filename(header: &str) -> Option<String> {
    let mut plain: Option<String> = None;
    let mut extended: Option<String> = None;
    // Skip the disposition type.
    let mut rest = header.split_once(';').map_or("", |(_, r)| r);
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_ascii_whitespace());
        if rest.is_empty() {
            break;
        }
        let name_end = rest.find(['=', ';']).unwrap_or(rest.len());
        let name = rest[..name_end].trim();
        rest = &rest[name_end..];
        let Some(after_eq) = rest.strip_prefix('=') else {
            continue;
        };
        let (value, remainder) = parse_value(after_eq.trim_start());
        rest = remainder;
        let Some(value) = value else { continue };
        if name.eq_ignore_ascii_case("filename*") {
            if extended.is_none() {
                extended = decode_ext_value(&value);
            }
        } else if name.eq_ignore_ascii_case("filename") && plain.is_none() {
            plain = Some(value);
        }
    }
    extended
        .filter(|n| !n.is_empty())
        .or(plain.filter(|n| !n.is_empty()))
}

/// Parses a quoted-string or token; returns it (if well formed) and the rest.
fn parse_value(input: &str) -> (Option<String>, &str) {
    let Some(quoted) = input.strip_prefix('"') else {
        let end = input.find(';').unwrap_or(input.len());
        return (Some(input[..end].trim().to_owned()), &input[end..]);
    };
    let mut out = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return (Some(out), &quoted[i + 1..]),
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => break,
            },
            _ => out.push(c),
        }
    }
    // Unterminated quoted-string: the parameter is malformed.
    (None, "")
}

/// Decodes an RFC 8187 `ext-value`: `charset'[language]'pct-encoded`.
fn decode_ext_value(value: &str) -> Option<String> {
    let mut pieces = value.splitn(3, '\'');
    let charset = pieces.next()?.trim();
    let _language = pieces.next()?;
    let encoded = pieces.next()?;
    let bytes: Vec<u8> = percent_decode_str(encoded).collect();
    if charset.eq_ignore_ascii_case("UTF-8") {
        String::from_utf8(bytes).ok()
    } else if charset.eq_ignore_ascii_case("ISO-8859-1") {
        Some(bytes.into_iter().map(char::from).collect())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use DispositionKind::{Attachment, Inline};

    fn cd(kind: DispositionKind, name: &str) -> String {
        content_disposition(kind, name).to_str().unwrap().to_owned()
    }

    #[test]
    fn korean_name() {
        let v = cd(Attachment, "보고서_2025Q4.pdf");
        assert_eq!(
            v,
            "attachment; filename=\"____2025Q4.pdf\"; \
             filename*=UTF-8''%EB%B3%B4%EA%B3%A0%EC%84%9C_2025Q4.pdf"
        );
        assert_eq!(parse_filename(&v).as_deref(), Some("보고서_2025Q4.pdf"));
    }

    #[test]
    fn plain_ascii_omits_extended() {
        assert_eq!(
            cd(Inline, "report-2025.pdf"),
            "inline; filename=\"report-2025.pdf\""
        );
        assert_eq!(
            cd(Inline, "my notes.txt"),
            "inline; filename=\"my notes.txt\""
        );
    }

    #[test]
    fn quotes_and_specials() {
        let v = cd(Attachment, "a \"quoted\" name.txt");
        assert_eq!(
            v,
            "attachment; filename=\"a quoted name.txt\"; \
             filename*=UTF-8''a%20%22quoted%22%20name.txt"
        );
        assert_eq!(parse_filename(&v).as_deref(), Some("a \"quoted\" name.txt"));
        let v = cd(Attachment, "résumé (final).pdf");
        assert_eq!(
            v,
            "attachment; filename=\"r_sum_ (final).pdf\"; \
             filename*=UTF-8''r%C3%A9sum%C3%A9%20%28final%29.pdf"
        );
        assert_eq!(
            cd(Attachment, "50%'*\\.txt"),
            "attachment; filename=\"50_'*.txt\"; filename*=UTF-8''50%25%27%2A%5C.txt"
        );
    }

    #[test]
    fn strips_controls_and_bidi() {
        assert_eq!(
            cd(Attachment, "evil\r\nSet-Cookie: x=1.txt"),
            "attachment; filename=\"evilSet-Cookie: x=1.txt\""
        );
        assert_eq!(
            cd(Attachment, "a\u{202E}fdp.exe\u{0}"),
            "attachment; filename=\"afdp.exe\""
        );
        assert_eq!(cd(Attachment, "\r\n\u{2066}"), "attachment");
        assert_eq!(
            cd(Attachment, "\"\\"),
            "attachment; filename=\"file\"; filename*=UTF-8''%22%5C"
        );
    }

    #[test]
    fn parses_plain_filename() {
        assert_eq!(
            parse_filename("attachment; filename=\"a \\\"b\\\" c.txt\"").as_deref(),
            Some("a \"b\" c.txt")
        );
        assert_eq!(
            parse_filename("form-data;name=x;  FILENAME = plain.txt ;size=3").as_deref(),
            Some("plain.txt")
        );
        assert_eq!(
            parse_filename("attachment; filename=\"a;b.txt\"").as_deref(),
            Some("a;b.txt")
        );
    }

    #[test]
    fn parses_extended_filename() {
        assert_eq!(
            parse_filename("attachment; filename*=utf-8'ko'%EB%B3%B4.txt").as_deref(),
            Some("보.txt")
        );
        assert_eq!(
            parse_filename("attachment; filename*=ISO-8859-1''r%E9sum%E9.pdf").as_deref(),
            Some("résumé.pdf")
        );
        // filename* wins regardless of order.
        assert_eq!(
            parse_filename("attachment; filename*=UTF-8''new.txt; filename=\"old.txt\"").as_deref(),
            Some("new.txt")
        );
        assert_eq!(
            parse_filename("attachment; filename=\"old.txt\"; filename*=UTF-8''new.txt").as_deref(),
            Some("new.txt")
        );
    }

    #[test]
    fn falls_back_on_bad_extended() {
        let h = "attachment; filename*=UTF-8''%FF%FE; filename=\"ok.txt\"";
        assert_eq!(parse_filename(h).as_deref(), Some("ok.txt"));
        let h = "attachment; filename*=KOI8-R''x; filename=ok.txt";
        assert_eq!(parse_filename(h).as_deref(), Some("ok.txt"));
        let h = "attachment; filename*=noquotes; filename=ok.txt";
        assert_eq!(parse_filename(h).as_deref(), Some("ok.txt"));
    }

    #[test]
    fn garbage() {
        for h in [
            "",
            "attachment",
            "attachment;",
            "attachment; filename",
            "attachment; filename=",
            "attachment; filename=\"unterminated",
            "attachment; filename=\"\\",
            ";;;===;\"\"\\",
            "attachment; name=\"x\"",
            "attachment; filename*=UTF-8''",
        ] {
            assert_eq!(parse_filename(h), None, "{h}");
        }
    }
}
