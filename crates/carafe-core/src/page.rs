//! Keyset pagination shared by every list: the caller asks for `limit` items after an opaque
//! cursor, the store answers with at most that many and the cursor of the next page, if any.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Default and maximum page sizes for every list endpoint.
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// The sort key of the last item of the previous page (already decoded from the cursor).
    pub after: Option<String>,
    pub limit: u32,
}

impl PageRequest {
    pub fn first(limit: u32) -> Self {
        PageRequest { after: None, limit }
    }

    /// The cursor's sort key as a typed value, `start` on the first page; `None` when the key
    /// does not parse (a cursor from another list), which stores answer with an empty page.
    pub fn after_or<T: std::str::FromStr>(&self, start: T) -> Option<T> {
        match &self.after {
            None => Some(start),
            Some(after) => after.parse().ok(),
        }
    }
}

impl<T> Page<T> {
    pub fn empty() -> Self {
        Page {
            items: Vec::new(),
            next_after: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The sort key to continue after, when more items may follow.
    pub next_after: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `limit + 1` fetched rows: the extra row only says that more exist.
    pub fn from_overfetch(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_after = if more { rows.last().map(key) } else { None };
        Page {
            items: rows,
            next_after,
        }
    }
}

/// Cursors are opaque to clients: the sort key, base64url-encoded with a version tag so the
/// format can change without old cursors being misread.
pub fn encode_cursor(after: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1:{after}"))
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    if cursor.len() > 512 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let text = String::from_utf8(raw).ok()?;
    text.strip_prefix("v1:").map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = encode_cursor("0193a1b2");
        assert_eq!(decode_cursor(&c).as_deref(), Some("0193a1b2"));
        assert_eq!(decode_cursor("not base64!"), None);
        assert_eq!(decode_cursor(&URL_SAFE_NO_PAD.encode("v2:x")), None);
    }

    #[test]
    fn overfetch_sets_next_only_when_more_rows_exist() {
        let p = Page::from_overfetch(vec![1, 2, 3], 2, |x| x.to_string());
        assert_eq!(p.items, vec![1, 2]);
        assert_eq!(p.next_after.as_deref(), Some("2"));
        let p = Page::from_overfetch(vec![1, 2], 2, |x| x.to_string());
        assert_eq!(p.next_after, None);
    }
}
