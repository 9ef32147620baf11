//! HTTP range requests (RFC 9110 §14) for file downloads.
//!
//! Downloads of large files are resumed and seeked with `Range` headers.
//! The header comes straight from the client, so parsing is strict about
//! syntax and bounded in cost: anything malformed or abusive makes the
//! header ignored (a full `200` response), which RFC 9110 §14.2 permits.
//! Ranges that survive are clamped, sorted and coalesced, and
//! [`multipart_layout`] precomputes the `multipart/byteranges` framing so
//! the caller can stream the parts with an exact `Content-Length`.

use bytes::Bytes;
use http::HeaderValue;

/// Longest `Range` header value that is considered at all.
const MAX_HEADER_BYTES: usize = 4096;
/// Most range specs accepted in one header, counted before coalescing.
const MAX_RANGES: usize = 64;

/// An inclusive byte range `start..=end` within a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    /// Inclusive.
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range (saturating; `0` if `end < start`).
    pub fn len(&self) -> u64 {
        self.end
            .checked_sub(self.start)
            .map_or(0, |d| d.saturating_add(1))
    }

    /// True only for an inverted range, which [`parse`] never produces.
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }
}

/// What the server should send in response to a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send the whole file with `200`.
    Full,
    /// Send these ranges with `206`: sorted, non-overlapping, non-adjacent.
    Partial(Vec<ByteRange>),
    /// Valid syntax but nothing satisfiable: `416` with [`unsatisfied_range`].
    Unsatisfiable,
}

/// One parsed range-spec before it is resolved against the file size.
enum Spec {
    /// `first-last` or `first-` (`last` is `None`).
    Bounded(u64, Option<u64>),
    /// `-suffix`.
    Suffix(u64),
}

/// Parses a `Range` header against a file of `size` bytes.
pub fn parse(header: Option<&HeaderValue>, size: u64) -> RangeRequest {
    let Some(header) = header else {
        return RangeRequest::Full;
    };
    if header.len() > MAX_HEADER_BYTES {
        return RangeRequest::Full;
    }
    let Ok(text) = header.to_str() else {
        return RangeRequest::Full;
    };
    let Some(specs) = parse_specs(text.trim()) else {
        return RangeRequest::Full;
    };

    let mut ranges: Vec<ByteRange> = specs
        .into_iter()
        .filter_map(|spec| resolve(spec, size))
        .collect();
    if ranges.is_empty() {
        return RangeRequest::Unsatisfiable;
    }
    ranges.sort_unstable_by_key(|r| (r.start, r.end));

    let mut merged: Vec<ByteRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(1) => {
                last.end = last.end.max(r.end);
            }
            _ => merged.push(r),
        }
    }

    if let [only] = merged.as_slice()
        && only.start == 0
        && only.end == size - 1
    {
        return RangeRequest::Full;
    }
    RangeRequest::Partial(merged)
}

/// Splits `bytes=<range-set>` into range specs; `None` if anything is invalid.
fn parse_specs(text: &str) -> Option<Vec<Spec>> {
    let (unit, set) = text.split_once('=')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let mut specs = Vec::new();
    for element in set.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            // RFC 9110 §5.6.1.2: empty list elements are ignored.
            continue;
        }
        if specs.len() == MAX_RANGES {
            return None;
        }
        let (first, last) = element.split_once('-')?;
        let spec = if first.is_empty() {
            Spec::Suffix(parse_digits(last)?)
        } else {
            let first = parse_digits(first)?;
            let last = if last.is_empty() {
                None
            } else {
                Some(parse_digits(last)?)
            };
            if last.is_some_and(|l| l < first) {
                return None;
            }
            Spec::Bounded(first, last)
        };
        specs.push(spec);
    }
    if specs.is_empty() { None } else { Some(specs) }
}

/// Parses a non-empty run of ASCII digits; `None` on anything else or overflow.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Resolves a spec against the file size; `None` if it is unsatisfiable.
fn resolve(spec: Spec, size: u64) -> Option<ByteRange> {
    if size == 0 {
        return None;
    }
    let last_byte = size - 1;
    match spec {
        Spec::Bounded(start, _) if start >= size => None,
        Spec::Bounded(start, end) => Some(ByteRange {
            start,
            end: end.map_or(last_byte, |e| e.min(last_byte)),
        }),
        Spec::Suffix(0) => None,
        Spec::Suffix(n) => Some(ByteRange {
            start: size.saturating_sub(n),
            end: last_byte,
        }),
    }
}

/// `Content-Range` value for a `206` part: `bytes a-b/size`.
pub fn content_range(r: &ByteRange, size: u64) -> String {
    format!("bytes {}-{}/{}", r.start, r.end, size)
}

/// `Content-Range` value for a `416` response: `bytes */size`.
pub fn unsatisfied_range(size: u64) -> String {
    format!("bytes */{size}")
}

/// `Content-Type` of a multi-range response, quoting the boundary if needed.
pub fn multipart_content_type(boundary: &str) -> String {
    let is_token = !boundary.is_empty()
        && boundary
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if is_token {
        format!("multipart/byteranges; boundary={boundary}")
    } else {
        let clean: String = boundary.chars().filter(|c| !c.is_control()).collect();
        let quoted = clean.replace('\\', "\\\\").replace('"', "\\\"");
        format!("multipart/byteranges; boundary=\"{quoted}\"")
    }
}

/// Precomputed framing of a `multipart/byteranges` body.
///
/// The body is, in order: for each part its header block followed by the
/// file's bytes for its range; then the trailer. Its total length is exactly
/// `content_length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartLayout {
    /// Each part's header block (`CRLF --boundary CRLF`, `Content-Type`,
    /// `Content-Range`, blank line) and the range whose bytes follow it.
    pub parts: Vec<(Bytes, ByteRange)>,
    /// `CRLF --boundary-- CRLF`.
    pub trailer: Bytes,
    pub content_length: u64,
}

/// Lays out a `multipart/byteranges` body (RFC 9110 §14.6).
///
/// Control characters in `content_type` and `boundary` are dropped so they
/// cannot inject lines into the part headers; an empty `content_type` omits
/// the part's `Content-Type` line.
pub fn multipart_layout(
    ranges: &[ByteRange],
    size: u64,
    content_type: &str,
    boundary: &str,
) -> MultipartLayout {
    let boundary: String = boundary.chars().filter(|c| !c.is_control()).collect();
    let content_type: String = content_type.chars().filter(|c| !c.is_control()).collect();
    let mut content_length: u64 = 0;
    let parts = ranges
        .iter()
        .map(|r| {
            let mut head = format!("\r\n--{boundary}\r\n");
            if !content_type.is_empty() {
                head.push_str(&format!("Content-Type: {content_type}\r\n"));
            }
            head.push_str(&format!(
                "Content-Range: {}\r\n\r\n",
                content_range(r, size)
            ));
            content_length = content_length
                .saturating_add(head.len() as u64)
                .saturating_add(r.len());
            (Bytes::from(head), *r)
        })
        .collect();
    let trailer = Bytes::from(format!("\r\n--{boundary}--\r\n"));
    content_length = content_length.saturating_add(trailer.len() as u64);
    MultipartLayout {
        parts,
        trailer,
        content_length,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(header: &str, size: u64) -> RangeRequest {
        parse(Some(&HeaderValue::from_str(header).unwrap()), size)
    }

    fn partial(ranges: &[(u64, u64)]) -> RangeRequest {
        RangeRequest::Partial(
            ranges
                .iter()
                .map(|&(start, end)| ByteRange { start, end })
                .collect(),
        )
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse(None, 1000), RangeRequest::Full);
        assert_eq!(p("bytes=0-99", 1000), partial(&[(0, 99)]));
        assert_eq!(p("BYTES=0-99", 1000), partial(&[(0, 99)]));
        assert_eq!(p("bytes=500-", 1000), partial(&[(500, 999)]));
        assert_eq!(p("bytes=-100", 1000), partial(&[(900, 999)]));
        assert_eq!(p("bytes=10-5000", 1000), partial(&[(10, 999)]));
        assert_eq!(p("bytes=5-18446744073709551615", 10), partial(&[(5, 9)]));
    }

    #[test]
    fn whole_file_is_full() {
        assert_eq!(p("bytes=0-", 1000), RangeRequest::Full);
        assert_eq!(p("bytes=-2000", 1000), RangeRequest::Full);
        assert_eq!(p("bytes=0-999", 1000), RangeRequest::Full);
        assert_eq!(p("bytes=0-499,500-", 1000), RangeRequest::Full);
    }

    #[test]
    fn unsatisfiable() {
        assert_eq!(p("bytes=-0", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=1000-", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=0-10", 0), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=-5", 0), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=2000-3000, -0", 1000), RangeRequest::Unsatisfiable);
        assert_eq!(p("bytes=0-1, 2000-3000", 1000), partial(&[(0, 1)]));
    }

    #[test]
    fn sorts_and_coalesces() {
        assert_eq!(
            p("bytes=0-99, 50-149 ,200-299", 1000),
            partial(&[(0, 149), (200, 299)])
        );
        assert_eq!(p("bytes=0-9,10-19", 1000), partial(&[(0, 19)]));
        assert_eq!(
            p("bytes=200-299,0-9,\t5-7", 1000),
            partial(&[(0, 9), (200, 299)])
        );
        assert_eq!(p("bytes=0-1,,3-4,", 10), partial(&[(0, 1), (3, 4)]));
    }

    #[test]
    fn malformed_is_ignored() {
        for bad in [
            "bytes=500-100",
            "items=0-1",
            "bytes=abc",
            "bytes=",
            "bytes= , ",
            "bytes",
            "bytes=1-2-3",
            "bytes=+1-2",
            "bytes=--1",
            "bytes=-",
            "bytes=1",
            "bytes=0-99999999999999999999999",
            "bytes =0-1",
            "bytes=0x10-20",
        ] {
            assert_eq!(p(bad, 1000), RangeRequest::Full, "{bad}");
        }
        let non_ascii = HeaderValue::from_bytes(b"bytes=0-1\xff").unwrap();
        assert_eq!(parse(Some(&non_ascii), 1000), RangeRequest::Full);
    }

    #[test]
    fn abuse_limits() {
        let many = |n: usize| {
            let specs: Vec<String> = (0..n).map(|i| format!("{}-{}", i * 2, i * 2)).collect();
            format!("bytes={}", specs.join(","))
        };
        assert!(matches!(p(&many(64), 1000), RangeRequest::Partial(v) if v.len() == 64));
        assert_eq!(p(&many(65), 1000), RangeRequest::Full);
        let long = format!("bytes=0-1,{}", " ".repeat(MAX_HEADER_BYTES));
        assert_eq!(p(&long, 1000), RangeRequest::Full);
    }

    #[test]
    fn header_strings() {
        let r = ByteRange { start: 0, end: 99 };
        assert_eq!(r.len(), 100);
        assert_eq!(content_range(&r, 1000), "bytes 0-99/1000");
        assert_eq!(unsatisfied_range(1000), "bytes */1000");
        assert_eq!(ByteRange { start: 5, end: 1 }.len(), 0);
        assert_eq!(
            multipart_content_type("abc123"),
            "multipart/byteranges; boundary=abc123"
        );
        assert_eq!(
            multipart_content_type("a b"),
            "multipart/byteranges; boundary=\"a b\""
        );
        assert_eq!(
            multipart_content_type("q\"\\\n"),
            "multipart/byteranges; boundary=\"q\\\"\\\\\""
        );
    }

    #[test]
    fn multipart_body_matches_layout() {
        let file = b"0123456789abcdef";
        let size = file.len() as u64;
        let RangeRequest::Partial(ranges) = p("bytes=10-11,0-2", size) else {
            panic!("expected partial");
        };
        let layout = multipart_layout(&ranges, size, "text/plain", "SEP");
        let mut body = Vec::new();
        for (head, r) in &layout.parts {
            body.extend_from_slice(head);
            body.extend_from_slice(&file[r.start as usize..=r.end as usize]);
        }
        body.extend_from_slice(&layout.trailer);
        let expected = "\r\n--SEP\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-2/16\r\n\r\n012\
                        \r\n--SEP\r\nContent-Type: text/plain\r\nContent-Range: bytes 10-11/16\r\n\r\nab\
                        \r\n--SEP--\r\n";
        assert_eq!(String::from_utf8(body.clone()).unwrap(), expected);
        assert_eq!(body.len() as u64, layout.content_length);
    }

    #[test]
    fn multipart_strips_injection() {
        let r = [ByteRange { start: 0, end: 0 }];
        let layout = multipart_layout(&r, 1, "text/html\r\nX-Evil: 1", "b\r\n");
        let head = std::str::from_utf8(&layout.parts[0].0).unwrap();
        assert_eq!(
            head,
            "\r\n--b\r\nContent-Type: text/htmlX-Evil: 1\r\nContent-Range: bytes 0-0/1\r\n\r\n"
        );
        let bare = multipart_layout(&r, 1, "", "b");
        assert!(
            !std::str::from_utf8(&bare.parts[0].0)
                .unwrap()
                .contains("Content-Type")
        );
    }
}
