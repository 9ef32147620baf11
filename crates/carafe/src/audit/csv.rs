//! The audit log as CSV, for spreadsheets and archives. An export may hold millions of rows,
//! so it is never collected: the body is a stream that fetches one keyset page of `BATCH`
//! events from the store, encodes it and hands it to the connection before fetching the next.
//! Memory stays at one page whatever the size of the log, and the database holds no cursor or
//! transaction between pages. A store error mid-export is logged and ends the body with an
//! error, so the client sees a truncated download rather than a file that looks complete.
//!
//! Cells follow RFC 4180 (CRLF rows; a cell holding `,` `"` CR or LF is quoted, `"` doubled),
//! and a cell starting with `=` `+` `-` `@` tab or CR gets a leading `'` so that spreadsheet
//! programs show it as text instead of running it as a formula (events carry client-chosen
//! text such as user agents).

use std::future::Future;
use std::io;

use bytes::Bytes;
use carafe_core::StoreResult;
use carafe_core::audit::AuditEvent;
use carafe_core::page::{Page, PageRequest};
use futures::Stream;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use tracing::Instrument;

/// Events fetched (and encoded) per store query.
pub const BATCH: u32 = 1_000;

pub const HEADER: &str = "id,at,actor,action,target,request_id,ip,user_agent,details\r\n";

enum Step {
    Header,
    Page(Option<String>),
    Done,
}

/// The header row, then one chunk per page until the store has no more (or fails).
pub fn export<F, Fut>(fetch: F) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static
where
    F: FnMut(PageRequest) -> Fut + Send + 'static,
    Fut: Future<Output = StoreResult<Page<AuditEvent>>> + Send + 'static,
{
    // The body is polled after the handler returned: keep the request's span (and its id).
    let span = tracing::Span::current();
    futures::stream::unfold((fetch, Step::Header), move |(mut fetch, step)| {
        async move {
            let after = match step {
                Step::Header => {
                    let header = Bytes::from_static(HEADER.as_bytes());
                    return Some((Ok(header), (fetch, Step::Page(None))));
                }
                Step::Page(after) => after,
                Step::Done => return None,
            };
            let rows = BATCH;
            match fetch(PageRequest { after, limit: rows }).await {
                Ok(page) if page.items.is_empty() => None,
                Ok(page) => {
                    let mut out = Vec::with_capacity(page.items.len() * 256);
                    for event in &page.items {
                        write_row(&mut out, event);
                    }
                    let next = page.next_after.map_or(Step::Done, |a| Step::Page(Some(a)));
                    Some((Ok(Bytes::from(out)), (fetch, next)))
                }
                Err(e) => {
                    let cause = std::error::Error::source(&e)
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    tracing::error!(error = %e, %cause, "audit export failed; the download is truncated");
                    let err = io::Error::other("the audit export failed");
                    Some((Err(err), (fetch, Step::Done)))
                }
            }
        }
        .instrument(span.clone())
    })
}

/// Appends one event as a CSV row.
pub fn write_row(out: &mut Vec<u8>, e: &AuditEvent) {
    let at = e.at.format(&Rfc3339).unwrap_or_default();
    let detail = |key: &str| match e.details.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let cells = [
        &e.id.to_string(),
        &at,
        &e.actor,
        &e.action,
        e.target.as_deref().unwrap_or_default(),
        e.request_id.as_deref().unwrap_or_default(),
        &detail("ip"),
        &detail("user_agent"),
        &e.details.to_string(),
    ];
    for (i, text) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_cell(out, text);
    }
    out.extend_from_slice(b"\r\n");
}

fn write_cell(out: &mut Vec<u8>, text: &str) {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let quoted = text.contains([',', '"', '\r', '\n']);
    if quoted {
        out.push(b'"');
    }
    if formula {
        out.push(b'\'');
    }
    for part in text.split_inclusive('"') {
        out.extend_from_slice(part.as_bytes());
        if part.ends_with('"') {
            out.push(b'"');
        }
    }
    if quoted {
        out.push(b'"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carafe_core::StoreError;
    use futures::StreamExt;
    use serde_json::json;
    use std::time::Duration;

    fn cell(text: &str) -> String {
        let mut out = Vec::new();
        write_cell(&mut out, text);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cells_are_quoted_and_formulas_neutralised() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell(""), "");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("=1+2"), "'=1+2");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        for lead in ["+1", "-1", "@SUM(A1)", "\tx"] {
            assert_eq!(cell(lead), format!("'{lead}"));
        }
        assert_eq!(cell("\rx"), "\"'\rx\"");
        assert_eq!(cell("a=b"), "a=b");
    }

    fn event(id: i64) -> AuditEvent {
        AuditEvent {
            id,
            at: carafe_core::time::from_unix_ms(1_700_000_000_123),
            actor: "key:k".into(),
            action: "file.download".into(),
            target: Some("file:f".into()),
            request_id: None,
            details: json!({"ip": "127.0.0.1", "user_agent": "ua, \"quoted\"", "n": 1}),
        }
    }

    #[test]
    fn rows_take_ip_and_user_agent_from_details() {
        let mut out = Vec::new();
        write_row(&mut out, &event(7));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "7,2023-11-14T22:13:20.123Z,key:k,file.download,file:f,,127.0.0.1,\
             \"ua, \"\"quoted\"\"\",\"{\"\"ip\"\":\"\"127.0.0.1\"\",\"\"n\"\":1,\
             \"\"user_agent\"\":\"\"ua, \\\"\"quoted\\\"\"\"\"}\"\r\n"
        );
    }

    /// Pages of two events, ids counting down from `last`; fails at page `fail_at`, if any.
    fn pages(
        last: i64,
        fail_at: Option<usize>,
    ) -> impl FnMut(PageRequest) -> futures::future::Ready<StoreResult<Page<AuditEvent>>> {
        let mut calls = 0;
        move |page: PageRequest| {
            calls += 1;
            if Some(calls) == fail_at {
                let cause = io::Error::other("connection reset");
                return futures::future::ready(Err(StoreError::Unavailable(Box::new(cause))));
            }
            assert_eq!(page.limit, BATCH);
            let before = page.after_or(last + 1).unwrap();
            let items: Vec<_> = (1..before).rev().take(2).map(event).collect();
            let next = (items.len() == 2 && before > 3).then(|| (before - 2).to_string());
            futures::future::ready(Ok(Page {
                items,
                next_after: next,
            }))
        }
    }

    #[tokio::test]
    async fn the_export_pages_through_the_store() {
        let chunks: Vec<_> = export(pages(5, None)).collect().await;
        let text: String = chunks
            .into_iter()
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
            .collect();
        let ids: Vec<&str> = text.lines().skip(1).map(|l| &l[..1]).collect();
        assert!(text.starts_with(HEADER));
        assert_eq!(ids, ["5", "4", "3", "2", "1"]);
    }

    #[tokio::test]
    async fn a_store_error_ends_the_export_with_an_error() {
        let chunks: Vec<_> = export(pages(9, Some(2))).collect().await;
        assert_eq!(chunks.len(), 3, "header, one page, then the error");
        assert!(chunks[1].is_ok());
        assert!(chunks[2].is_err());
    }

    #[tokio::test]
    async fn a_failed_export_reaches_the_client_as_a_truncated_download() {
        use futures::FutureExt;
        // The second page fails after a while, once the first has gone out.
        let fetch = || {
            let mut inner = pages(9, Some(2));
            let mut calls = 0;
            move |page| {
                calls += 1;
                let answer = inner(page);
                let pause = Duration::from_millis(if calls == 2 { 200 } else { 0 });
                tokio::time::sleep(pause).then(|_| answer).boxed()
            }
        };
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(
                move || async move { axum::body::Body::from_stream(export(fetch())) },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let res = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(url)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get(http::header::CONTENT_LENGTH).is_none());
        let mut body = res.bytes_stream();
        let mut received = Vec::new();
        let error = loop {
            match body.next().await {
                Some(Ok(chunk)) => received.extend_from_slice(&chunk),
                Some(Err(e)) => break e,
                None => panic!("the body ended cleanly"),
            }
        };
        assert!(error.is_body() || error.is_decode(), "{error:?}");
        let text = String::from_utf8(received).unwrap();
        assert_eq!(
            text.lines().count(),
            3,
            "the header and the first page: {text}"
        );
    }
}
