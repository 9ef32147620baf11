//! Conditional request evaluation (RFC 9110 §13.2.2) for file downloads.
//!
//! Clients revalidate cached downloads with `If-None-Match` /
//! `If-Modified-Since`, guard writes with `If-Match` /
//! `If-Unmodified-Since`, and resume downloads with `If-Range`. This module
//! decides, from the request headers and the file's validators, whether to
//! proceed, answer `304 Not Modified`, or answer `412 Precondition Failed`,
//! and whether a `Range` header may be honoured. Header values are hostile
//! input: malformed ones never match and never panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{
    IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE,
};
use http::{HeaderMap, HeaderName, Method};

/// The current validators of the file being served.
#[derive(Debug, Clone, Copy)]
pub struct Validators<'a> {
    /// Strong entity tag including quotes, e.g. `"\"abc\""`.
    pub etag: &'a str,
    /// Last modification time; compared at whole-second precision.
    pub last_modified: SystemTime,
}

/// Result of evaluating the preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Serve the request. `range_allowed` is false when `If-Range` did not
    /// match or the method is neither GET nor HEAD; the `Range` header must
    /// then be ignored and the full representation sent.
    Proceed { range_allowed: bool },
    /// `304 Not Modified`.
    NotModified,
    /// `412 Precondition Failed`.
    PreconditionFailed,
}

/// An entity tag: weakness flag and opaque part (without quotes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag<'a> {
    weak: bool,
    opaque: &'a [u8],
}

/// Evaluates the conditional headers in the order of RFC 9110 §13.2.2.
pub fn evaluate(method: &Method, headers: &HeaderMap, v: &Validators) -> Outcome {
    let own = own_tag(v.etag);
    let last_modified = whole_seconds(v.last_modified);
    let get_or_head = method == Method::GET || method == Method::HEAD;

    // Step 1 and 2: If-Match, else If-Unmodified-Since.
    if headers.contains_key(IF_MATCH) {
        if !list_matches(headers, &IF_MATCH, own, true) {
            return Outcome::PreconditionFailed;
        }
    } else if let Some(date) = single_date(headers, &IF_UNMODIFIED_SINCE)
        && last_modified > date
    {
        return Outcome::PreconditionFailed;
    }

    // Step 3 and 4: If-None-Match, else If-Modified-Since.
    if headers.contains_key(IF_NONE_MATCH) {
        if list_matches(headers, &IF_NONE_MATCH, own, false) {
            return if get_or_head {
                Outcome::NotModified
            } else {
                Outcome::PreconditionFailed
            };
        }
    } else if get_or_head
        && let Some(date) = single_date(headers, &IF_MODIFIED_SINCE)
        && last_modified <= date
    {
        return Outcome::NotModified;
    }

    // Step 5: If-Range, only meaningful together with Range.
    let range_allowed = get_or_head
        && (!headers.contains_key(RANGE)
            || !headers.contains_key(IF_RANGE)
            || if_range_matches(headers, own, last_modified));
    Outcome::Proceed { range_allowed }
}

/// Parses the server's own tag; an unquoted value is taken whole as a strong tag.
fn own_tag(etag: &str) -> Tag<'_> {
    let trimmed = etag.trim();
    match parse_tag(trimmed.as_bytes()) {
        Some((tag, [])) => tag,
        _ => Tag {
            weak: false,
            opaque: trimmed.as_bytes(),
        },
    }
}

/// Truncates a time to whole seconds since the epoch.
fn whole_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => UNIX_EPOCH + Duration::from_secs(d.as_secs()),
        Err(_) => t,
    }
}

/// The header's date if it occurs exactly once and parses as an HTTP-date.
fn single_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

/// Whether an `If-Match` (`strong`) or `If-None-Match` (weak comparison)
/// list, spread over any number of field lines, matches the own tag.
fn list_matches(headers: &HeaderMap, name: &HeaderName, own: Tag, strong: bool) -> bool {
    let values: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
    let non_empty: Vec<&[u8]> = values
        .iter()
        .map(|v| v.trim_ascii())
        .filter(|v| !v.is_empty())
        .collect();
    if let [only] = non_empty.as_slice()
        && *only == b"*"
    {
        return true;
    }
    values.iter().any(|v| {
        parse_list(v).into_iter().any(|tag| {
            if strong {
                !tag.weak && !own.weak && tag.opaque == own.opaque
            } else {
                tag.opaque == own.opaque
            }
        })
    })
}

/// Whether `If-Range` holds: a strong tag match or an exact date match.
fn if_range_matches(headers: &HeaderMap, own: Tag, last_modified: SystemTime) -> bool {
    let mut values = headers.get_all(IF_RANGE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let bytes = value.as_bytes().trim_ascii();
    if bytes.starts_with(b"\"") || bytes.starts_with(b"W/") {
        return match parse_tag(bytes) {
            Some((tag, [])) => !tag.weak && !own.weak && tag.opaque == own.opaque,
            _ => false,
        };
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .is_some_and(|date| date == last_modified)
}

/// Parses one entity tag at the start of `input`, returning it and the rest.
fn parse_tag(input: &[u8]) -> Option<(Tag<'_>, &[u8])> {
    let (weak, rest) = match input.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, input),
    };
    let rest = rest.strip_prefix(b"\"")?;
    let close = rest.iter().position(|&b| b == b'"')?;
    let opaque = &rest[..close];
    // etagc = %x21 / %x23-7E / obs-text
    if !opaque
        .iter()
        .all(|&b| b == 0x21 || (b >= 0x23 && b != 0x7F))
    {
        return None;
    }
    Some((Tag { weak, opaque }, &rest[close + 1..]))
}

/// Parses a comma-separated list of entity tags, skipping malformed elements.
fn parse_list(mut input: &[u8]) -> Vec<Tag<'_>> {
    let mut tags = Vec::new();
    loop {
        input = trim_start(input, |b| b == b' ' || b == b'\t' || b == b',');
        if input.is_empty() {
            return tags;
        }
        let after = match parse_tag(input) {
            Some((tag, rest)) => {
                let rest = trim_start(rest, |b| b == b' ' || b == b'\t');
                if rest.is_empty() || rest[0] == b',' {
                    tags.push(tag);
                }
                rest
            }
            None => input,
        };
        // Skip any garbage up to the next separator.
        let skip = after.iter().position(|&b| b == b',').unwrap_or(after.len());
        input = &after[skip..];
    }
}

fn trim_start(input: &[u8], strip: impl Fn(u8) -> bool) -> &[u8] {
    let start = input.iter().position(|&b| !strip(b)).unwrap_or(input.len());
    &input[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ETAG: &str = "\"v2\"";
    const LM: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
    const EARLIER: &str = "Tue, 20 Oct 2015 07:28:00 GMT";
    const LATER: &str = "Thu, 22 Oct 2015 07:28:00 GMT";

    fn eval_with(method: Method, pairs: &[(HeaderName, &[u8])]) -> Outcome {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(name.clone(), HeaderValue::from_bytes(value).unwrap());
        }
        let last_modified = httpdate::parse_http_date(LM).unwrap() + Duration::from_millis(400);
        evaluate(
            &method,
            &headers,
            &Validators {
                etag: ETAG,
                last_modified,
            },
        )
    }

    fn get(pairs: &[(HeaderName, &str)]) -> Outcome {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(n, v)| (n.clone(), v.as_bytes()))
            .collect();
        eval_with(Method::GET, &pairs)
    }

    const OK: Outcome = Outcome::Proceed {
        range_allowed: true,
    };
    const NO_RANGE: Outcome = Outcome::Proceed {
        range_allowed: false,
    };

    #[test]
    fn no_conditions() {
        assert_eq!(get(&[]), OK);
    }

    #[test]
    fn if_match() {
        assert_eq!(get(&[(IF_MATCH, "\"v2\"")]), OK);
        assert_eq!(get(&[(IF_MATCH, "*")]), OK);
        assert_eq!(get(&[(IF_MATCH, "\"a\", \"v2\"")]), OK);
        assert_eq!(get(&[(IF_MATCH, "\"a\""), (IF_MATCH, "\"v2\"")]), OK);
        let failed = Outcome::PreconditionFailed;
        assert_eq!(get(&[(IF_MATCH, "\"a\", \"b\"")]), failed);
        assert_eq!(get(&[(IF_MATCH, "W/\"v2\"")]), failed);
        assert_eq!(get(&[(IF_MATCH, "v2")]), failed);
        assert_eq!(get(&[(IF_MATCH, "\"v2")]), failed);
        // If-Match takes precedence over If-Unmodified-Since.
        assert_eq!(
            get(&[(IF_MATCH, "\"v2\""), (IF_UNMODIFIED_SINCE, EARLIER)]),
            OK
        );
        let put = eval_with(Method::PUT, &[(IF_MATCH, b"\"old\"")]);
        assert_eq!(put, failed);
    }

    #[test]
    fn if_unmodified_since() {
        assert_eq!(get(&[(IF_UNMODIFIED_SINCE, LM)]), OK);
        assert_eq!(get(&[(IF_UNMODIFIED_SINCE, LATER)]), OK);
        assert_eq!(
            get(&[(IF_UNMODIFIED_SINCE, EARLIER)]),
            Outcome::PreconditionFailed
        );
        assert_eq!(get(&[(IF_UNMODIFIED_SINCE, "yesterday")]), OK);
    }

    #[test]
    fn if_none_match() {
        assert_eq!(get(&[(IF_NONE_MATCH, "\"v2\"")]), Outcome::NotModified);
        assert_eq!(get(&[(IF_NONE_MATCH, "W/\"v2\"")]), Outcome::NotModified);
        assert_eq!(get(&[(IF_NONE_MATCH, "*")]), Outcome::NotModified);
        assert_eq!(
            get(&[(IF_NONE_MATCH, "\"x,y\", W/\"v2\"")]),
            Outcome::NotModified
        );
        assert_eq!(get(&[(IF_NONE_MATCH, "\"a\", \"b\"")]), OK);
        assert_eq!(get(&[(IF_NONE_MATCH, "garbage, \"v3\"")]), OK);
        assert_eq!(get(&[(IF_NONE_MATCH, "*, \"a\"")]), OK);
        assert_eq!(
            eval_with(Method::HEAD, &[(IF_NONE_MATCH, b"\"v2\"")]),
            Outcome::NotModified
        );
        assert_eq!(
            eval_with(Method::PUT, &[(IF_NONE_MATCH, b"*")]),
            Outcome::PreconditionFailed
        );
        // If-None-Match takes precedence over If-Modified-Since.
        assert_eq!(
            get(&[(IF_NONE_MATCH, "\"a\""), (IF_MODIFIED_SINCE, LM)]),
            OK
        );
        // Obs-text inside a tag is tolerated and does not panic.
        assert_eq!(eval_with(Method::GET, &[(IF_NONE_MATCH, b"\"\xff\"")]), OK);
    }

    #[test]
    fn if_modified_since() {
        assert_eq!(get(&[(IF_MODIFIED_SINCE, LM)]), Outcome::NotModified);
        assert_eq!(get(&[(IF_MODIFIED_SINCE, LATER)]), Outcome::NotModified);
        assert_eq!(get(&[(IF_MODIFIED_SINCE, EARLIER)]), OK);
        assert_eq!(get(&[(IF_MODIFIED_SINCE, "not a date")]), OK);
        assert_eq!(get(&[(IF_MODIFIED_SINCE, LM), (IF_MODIFIED_SINCE, LM)]), OK);
        // Only GET and HEAD.
        let post = eval_with(Method::POST, &[(IF_MODIFIED_SINCE, LM.as_bytes())]);
        assert_eq!(post, NO_RANGE);
    }

    #[test]
    fn if_range() {
        let range = (RANGE, "bytes=0-1");
        assert_eq!(get(&[range.clone(), (IF_RANGE, "\"v2\"")]), OK);
        assert_eq!(get(&[range.clone(), (IF_RANGE, LM)]), OK);
        assert_eq!(get(&[range.clone(), (IF_RANGE, "\"v1\"")]), NO_RANGE);
        assert_eq!(get(&[range.clone(), (IF_RANGE, "W/\"v2\"")]), NO_RANGE);
        assert_eq!(get(&[range.clone(), (IF_RANGE, EARLIER)]), NO_RANGE);
        assert_eq!(get(&[range.clone(), (IF_RANGE, LATER)]), NO_RANGE);
        assert_eq!(get(&[range.clone(), (IF_RANGE, "\"v2\" x")]), NO_RANGE);
        assert_eq!(get(&[range.clone(), (IF_RANGE, "junk")]), NO_RANGE);
        // Without Range, If-Range is ignored.
        assert_eq!(get(&[(IF_RANGE, "\"v1\"")]), OK);
        assert_eq!(get(&[range]), OK);
    }

    #[test]
    fn parses_tag_lists() {
        let tags = parse_list(b" \"a\" , W/\"b\",,bad, \"c\" junk, \"d\"");
        let opaque: Vec<&[u8]> = tags.iter().map(|t| t.opaque).collect();
        assert_eq!(opaque, vec![&b"a"[..], b"b", b"d"]);
        assert!(tags[1].weak && !tags[0].weak);
        assert_eq!(own_tag("abc").opaque, b"abc");
        assert!(own_tag("W/\"abc\"").weak);
    }
}
