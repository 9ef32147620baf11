//! The audit log as CSV: the columns of real file events, RFC 4180 quoting with formulas
//! neutralised, and a large export that streams every row in pieces rather than one body.

use std::time::Duration;

use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::audit::{event, rfc3339};
use crate::files::{pdf, upload_ready};
use crate::helpers::{Backend, TestApp};

file_tests!(
    a_files_events_export_with_their_client_columns;
    // Seeded events only, no file bytes: the storage plays no part.
    local: cells_are_quoted_and_formulas_neutralised, large_exports_stream_every_row,
);

const HEADER: [&str; 9] = [
    "id",
    "at",
    "actor",
    "action",
    "target",
    "request_id",
    "ip",
    "user_agent",
    "details",
];

/// Parses RFC 4180 text strictly: every record ends with CRLF; quoted cells may hold anything.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let (mut records, mut record, mut cell) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut cell)),
            (false, '\r') => {
                assert_eq!(chars.next(), Some('\n'), "records end with CRLF");
                record.push(std::mem::take(&mut cell));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => {
                assert!(c != '"' && c != '\n', "a bare {c:?} in an unquoted cell");
                cell.push(c);
            }
        }
    }
    assert!(
        cell.is_empty() && record.is_empty(),
        "the text ends with CRLF"
    );
    records
}

async fn csv(app: &TestApp, query: &str, accept: Option<&str>) -> Vec<Vec<String>> {
    let mut req = app.request(
        Method::GET,
        &format!("/api/v1/audit{query}"),
        Some(&app.admin_key),
    );
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/csv; charset=utf-8; header=present"
    );
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"carafe-audit.csv\""
    );
    let records = parse_csv(&res.text().await.unwrap());
    assert_eq!(records[0], HEADER);
    assert!(records.iter().all(|r| r.len() == HEADER.len()));
    records
}

async fn a_files_events_export_with_their_client_columns(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let file = upload_ready(&app, "exported.pdf", pdf("export me")).await;
    let id = file["id"].as_str().unwrap();
    let other = upload_ready(&app, "other.pdf", pdf("not me")).await;
    let res = app
        .request(
            Method::GET,
            &format!("/api/v1/files/{id}/content"),
            Some(&app.admin_key),
        )
        .header("user-agent", "carafe-test/1.0")
        .header("x-request-id", "download-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.state.files.audit.flush().await;

    let rows = csv(&app, &format!("?file={id}"), Some("text/csv")).await;
    let rows = &rows[1..];
    let actions: Vec<&str> = rows.iter().map(|r| r[3].as_str()).collect();
    assert_eq!(actions, ["file.download", "file.scan", "file.upload"]);
    let target = format!("file:{id}");
    assert!(rows.iter().all(|r| r[4] == target));
    assert!(
        !rows
            .iter()
            .any(|r| r[4].contains(other["id"].as_str().unwrap()))
    );
    let download = &rows[0];
    assert!(download[2].starts_with("key:"));
    assert_eq!(download[5], "download-1");
    assert_eq!(
        (download[6].as_str(), download[7].as_str()),
        ("127.0.0.1", "carafe-test/1.0")
    );
    let details: Value = serde_json::from_str(&download[8]).unwrap();
    assert_eq!(details["via"], "key");
    assert_eq!(details["user_agent"], "carafe-test/1.0");
    let scan = &rows[1];
    assert_eq!(scan[2], "system");
    assert_eq!((scan[6].as_str(), scan[7].as_str()), ("", ""));
    assert_eq!(rows[2][6], "127.0.0.1");

    // The same events, ids and times as the JSON list shows them.
    let json: Value = app
        .audit(&app.admin_key, &format!("?file={id}"))
        .await
        .json()
        .await
        .unwrap();
    for (row, item) in rows.iter().zip(json["items"].as_array().unwrap()) {
        assert_eq!(row[0], item["id"].as_i64().unwrap().to_string());
        assert_eq!(rfc3339(&row[1]), rfc3339(item["at"].as_str().unwrap()));
        assert_eq!(
            serde_json::from_str::<Value>(&row[8]).unwrap(),
            item["details"]
        );
    }
    // `?format=csv` is the same as `Accept: text/csv`, and wins over `Accept`; filters apply,
    // `limit` and `cursor` do not.
    let by_format = csv(
        &app,
        &format!("?file={id}&format=csv&limit=1&cursor=ignored"),
        Some("application/json"),
    )
    .await;
    assert_eq!(by_format.len(), 4);
    let one = csv(
        &app,
        &format!("?file={id}&format=csv&action=file.scan"),
        None,
    )
    .await;
    assert_eq!(one.len(), 2);
    assert_eq!(one[1][3], "file.scan");
}

async fn cells_are_quoted_and_formulas_neutralised(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let agent = "=HYPERLINK(\"http://evil.example\",\"a, b\")\r\nline 2";
    let mut nasty = event("test.quote", Some("=cmd|' /C calc'!A0".into()), "@actor", 0);
    nasty.request_id = Some("-rid".into());
    nasty.details = json!({"ip": "+1,2", "user_agent": agent, "note": "say \"hi\",\nbye"}).into();
    let plain = event("test.quote", None, "key:x", 1);
    app.state
        .store
        .append_audits(&[nasty.clone(), plain])
        .await
        .unwrap();

    let res = app
        .audit(&app.admin_key, "?format=csv&action=test.quote")
        .await;
    let text = res.text().await.unwrap();
    // The raw bytes: the agent neutralised, then quoted with its quotes doubled.
    assert!(
        text.contains(",\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"a, b\"\")\r\nline 2\","),
        "{text}"
    );
    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 3);
    let (plain, nasty_row) = (&rows[1], &rows[2]);
    assert_eq!(plain[2..6], ["key:x", "test.quote", "", "req-1"]);
    assert_eq!(nasty_row[2], "'@actor");
    assert_eq!(nasty_row[4], "'=cmd|' /C calc'!A0");
    assert_eq!(nasty_row[5], "'-rid");
    assert_eq!(nasty_row[6], "'+1,2");
    assert_eq!(nasty_row[7], format!("'{agent}"));
    // `details` is compact JSON that reads back to the stored value.
    assert!(!nasty_row[8].contains(": "));
    let details: Value = serde_json::from_str(&nasty_row[8]).unwrap();
    assert_eq!(details, nasty.details.to_value());
}

async fn large_exports_stream_every_row(backend: Backend) {
    const ROWS: i64 = 20_000;
    let app = TestApp::spawn(backend).await;
    for start in (0..ROWS).step_by(2_000) {
        let batch: Vec<_> = (start..start + 2_000)
            .map(|i| event("bulk.row", Some(format!("bulk:{i}")), "key:bulk", i))
            .collect();
        app.state.store.append_audits(&batch).await.unwrap();
    }
    let res = app.audit(&app.admin_key, "?format=csv&action=bulk.*").await;
    assert_eq!(res.status(), 200);
    // Streamed: no length known up front, sent in chunks as pages are read.
    assert!(res.headers().get("content-length").is_none());
    assert_eq!(res.headers()["transfer-encoding"], "chunked");
    let mut stream = res.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(30), stream.next())
        .await
        .expect("the first bytes come at once")
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b"id,at,"));
    let mut body = first.to_vec();
    let mut chunks = 1;
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
        chunks += 1;
    }
    assert!(chunks > 10, "{chunks} chunks");
    assert!(
        first.len() * 100 < body.len(),
        "the first piece ({} bytes) comes before the rest of the export",
        first.len()
    );
    let text = String::from_utf8(body).unwrap();
    assert_eq!(text.matches("\r\n").count() as i64, ROWS + 1);
    let rows = parse_csv(&text);
    let ids: Vec<i64> = rows[1..].iter().map(|r| r[0].parse().unwrap()).collect();
    assert_eq!(ids.len() as i64, ROWS);
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    assert_eq!(rows[1][4], format!("bulk:{}", ROWS - 1));
    assert_eq!(rows[ROWS as usize][4], "bulk:0");
}
