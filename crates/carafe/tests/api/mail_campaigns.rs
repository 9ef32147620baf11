//! Campaigns over HTTP: one personalised copy per recipient (inline or from a CSV or XLSX
//! file, bad rows reported by number), suppressed addresses skipped, unsubscribe links in
//! every copy, live progress over SSE, pause / resume / cancel on the campaign's own queue,
//! (refusals are in `mail_campaign_refusals.rs`).

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::files::{upload_raw, upload_ready};
use crate::helpers::{Backend, TestApp, json_of, post_json, problem};
use crate::sse::read_sse;

both_backends!(
    a_campaign_sends_one_personalised_copy_per_recipient,
    a_campaign_reads_its_recipients_from_a_csv_file,
    a_campaign_reads_its_recipients_from_an_xlsx_file,
    campaigns_pause_resume_and_cancel_on_every_instance
);

/// The server's least gap between two progress events of a campaign (four a second).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

pub async fn put_template(app: &TestApp, key: &str, name: &str, body: Value) {
    let res = app
        .request(Method::PUT, &format!("/api/v1/templates/{name}"), Some(key))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

async fn spring(app: &TestApp, key: &str) {
    put_template(
        app,
        key,
        "spring",
        json!({
            "subject": "{{ name | default('friend') }}, spring is here",
            "html": "<p>Hello {{ name | default('friend') }} ({{ email }}): {{ offer }}</p>"
        }),
    )
    .await;
}

pub async fn create(app: &TestApp, key: &str, body: Value) -> Value {
    let res = post_json(app, key, "/api/v1/campaigns", &body).await;
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// Reads the campaign until `done` holds for it (within a minute); that view.
pub async fn poll_campaign(
    app: &TestApp,
    key: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let view = json_of(app, key, &format!("/api/v1/campaigns/{id}")).await;
        if done(&view) {
            return view;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not reached: {view}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the campaign is in `state`; its last view.
pub async fn wait_state(app: &TestApp, key: &str, id: &str, state: &str) -> Value {
    poll_campaign(app, key, id, |v| v["state"] == state).await
}

/// Every outbox item: recipient → how many copies, and the raw subject of each.
async fn outbox(app: &TestApp, key: &str, tag: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    let mut path = format!("/api/v1/outbox?tag={tag}&limit=500");
    loop {
        let page = json_of(app, key, &path).await;
        for item in page["items"].as_array().unwrap() {
            out.entry(item["to"].as_str().unwrap().to_owned())
                .or_default()
                .push(item["subject"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/outbox?tag={tag}&limit=500&cursor={c}"),
            None => return out,
        }
    }
}

async fn a_campaign_sends_one_personalised_copy_per_recipient(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail"]).await;
    spring(&app, &key).await;
    let res = post_json(
        &app,
        &key,
        "/api/v1/suppressions",
        &json!({"address": "gone@example.com", "reason": "manual"}),
    )
    .await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let c = create(
        &app,
        &key,
        json!({
            "name": "Spring sale",
            "template": {"name": "spring", "data": {"offer": "20% off"}},
            "from": "Shop <shop@example.com>",
            "tags": ["spring"],
            "recipients": [
                {"email": "ana@example.com", "data": {"name": "Ana"}},
                {"email": "Bo <bo@example.com>", "data": {"name": "Bo", "offer": "30% off"}},
                {"email": "ANA@example.com"},
                {"email": "gone@example.com"},
                {"email": "cy@example.com"}
            ]
        }),
    )
    .await;
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["state"], "ready");
    assert_eq!(c["counts"]["total"], 4);
    assert_eq!(c["import"]["bad"][0]["row"], 3, "{c}");
    assert_eq!(c["template_version"], Value::Null);

    // Watch it while it runs: progress events end with the completed campaign.
    let watching = std::time::Instant::now();
    let watch = app
        .request(
            Method::GET,
            &format!("/api/v1/campaigns/{id}/events"),
            Some(&key),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    assert_eq!(watch.headers()["content-type"], "text/event-stream");
    let started = post_json(
        &app,
        &key,
        &format!("/api/v1/campaigns/{id}/start"),
        &json!({}),
    )
    .await;
    assert_eq!(started.status(), 200);
    let started: Value = started.json().await.unwrap();
    assert_eq!(started["template_version"], 1);
    let events = read_sse(watch, 1000).await;
    let took = watching.elapsed();
    assert!(
        took >= PROGRESS_EVERY * (events.len() as u32 - 1),
        "{} progress events in {took:?}: more than four a second",
        events.len()
    );
    let last = &events.last().unwrap().data;
    assert_eq!(last["state"], "completed", "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e.event.as_deref() == Some("progress"))
    );
    assert_eq!(
        (
            last["counts"]["sent"].as_u64(),
            last["counts"]["suppressed"].as_u64()
        ),
        (Some(3), Some(1))
    );

    // One copy each, personalised; the suppressed address got none.
    let sent = outbox(&app, &key, "spring").await;
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert_eq!(sent["ana@example.com"], ["Ana, spring is here"]);
    assert_eq!(sent["bo@example.com"], ["Bo, spring is here"]);
    assert_eq!(sent["cy@example.com"], ["friend, spring is here"]);
    let found = json_of(&app, &key, "/api/v1/outbox?to=bo@example.com").await;
    let item = found["items"][0]["id"].as_str().unwrap();
    let detail = json_of(&app, &key, &format!("/api/v1/outbox/{item}")).await;
    assert!(
        detail["html"]
            .as_str()
            .unwrap()
            .contains("Bo (bo@example.com): 30% off"),
        "{detail}"
    );
    let raw = app
        .get(&format!("/api/v1/outbox/{item}/raw"), Some(&key))
        .await
        .text()
        .await
        .unwrap();
    assert!(raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
    assert!(raw.contains("To: bo@example.com"), "never BCC: {raw}");

    // The messages are listed by campaign; starting again is refused.
    let listed = json_of(&app, &key, &format!("/api/v1/mail?campaign={id}")).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 4);
    let again = post_json(
        &app,
        &key,
        &format!("/api/v1/campaigns/{id}/start"),
        &json!({}),
    )
    .await;
    problem(again, 409, "campaign_started").await;
    let all = json_of(&app, &key, "/api/v1/campaigns").await;
    assert_eq!(all["items"][0]["id"], id.as_str());
}

async fn a_campaign_reads_its_recipients_from_a_csv_file(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail", "files"]).await;
    spring(&app, &key).await;
    let mut csv = String::from("\u{feff}name;Email;offer\n");
    for i in 0..1500 {
        csv.push_str(&format!("User {i};u{i}@example.com;{i}% off\n"));
    }
    csv.push_str("Nobody;not an address;x\n"); // row 1502
    csv.push_str("Again;U7@example.com;y\n"); // row 1503: u7 again
    csv.push_str(";;\n"); // an empty row is skipped
    csv.push_str("Last;last@example.com;z\n"); // row 1505
    let file = upload_ready(&app, "list.csv", csv.into_bytes()).await;
    let c = create(
        &app,
        &key,
        json!({
            "name": "From CSV",
            "template": {"name": "spring"},
            "tags": ["csv"],
            "file_id": file["id"],
            "start": true
        }),
    )
    .await;
    assert_eq!(c["state"], "importing");
    let id = c["id"].as_str().unwrap().to_owned();
    let done = wait_state(&app, &key, &id, "completed").await;
    assert_eq!(done["import"]["rows"], 1503, "{}", done["import"]);
    let bad: Vec<u64> = done["import"]["bad"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["row"].as_u64().unwrap())
        .collect();
    assert_eq!(bad, [1502, 1503]);
    assert_eq!(done["counts"]["total"], 1501);
    assert_eq!(done["counts"]["sent"], 1501);
    let sent = outbox(&app, &key, "csv").await;
    assert_eq!(sent.len(), 1501);
    assert!(sent.values().all(|v| v.len() == 1), "nobody twice");
    assert_eq!(sent["u1499@example.com"], ["User 1499, spring is here"]);

    // A file without an email column fails the import, saying why.
    let file = upload_ready(&app, "bad.csv", b"name,phone\nA,1\n".to_vec()).await;
    let c = create(
        &app,
        &key,
        json!({"name": "Bad", "template": {"name": "spring"}, "file_id": file["id"]}),
    )
    .await;
    let failed = wait_state(&app, &key, c["id"].as_str().unwrap(), "failed").await;
    assert!(
        failed["import"]["error"]
            .as_str()
            .unwrap()
            .contains("email"),
        "{failed}"
    );
}

/// A minimal XLSX workbook with one sheet of inline strings.
fn xlsx(rows: &[&[&str]]) -> Vec<u8> {
    use std::io::Write;
    let mut sheet = String::from(
        r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>"#,
    );
    for (r, row) in rows.iter().enumerate() {
        sheet.push_str(&format!(r#"<row r="{}">"#, r + 1));
        for (c, cell) in row.iter().enumerate() {
            let col = (b'A' + c as u8) as char;
            if let Ok(n) = cell.parse::<i64>() {
                sheet.push_str(&format!(r#"<c r="{col}{}"><v>{n}</v></c>"#, r + 1));
            } else {
                sheet.push_str(&format!(
                    r#"<c r="{col}{}" t="inlineStr"><is><t>{cell}</t></is></c>"#,
                    r + 1
                ));
            }
        }
        sheet.push_str("</row>");
    }
    sheet.push_str("</sheetData></worksheet>");
    let parts = [
        ("[Content_Types].xml", r#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>"#.to_owned()),
        ("_rels/.rels", r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#.to_owned()),
        ("xl/workbook.xml", r#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"#.to_owned()),
        ("xl/_rels/workbook.xml.rels", r#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#.to_owned()),
        ("xl/worksheets/sheet1.xml", sheet),
    ];
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in parts {
            w.start_file(name, opts).unwrap();
            w.write_all(body.as_bytes()).unwrap();
        }
        w.finish().unwrap();
    }
    buf.into_inner()
}

async fn a_campaign_reads_its_recipients_from_an_xlsx_file(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail", "files"]).await;
    put_template(
        &app,
        &key,
        "points",
        json!({"subject": "{{ name }}: {{ points }} points", "text": "Hi {{ name }}"}),
    )
    .await;
    let book = xlsx(&[
        &["Email", "name", "points"],
        &["kim@example.com", "김민지", "1200"],
        &["oops", "Nobody", "0"],
        &["lee@example.com", "Lee", "7"],
    ]);
    // The default bucket takes CSV; a bucket for lists takes XLSX too.
    let res = app
        .request(Method::PUT, "/api/v1/buckets/lists", Some(&app.admin_key))
        .json(&json!({"allowed_types": ["csv", "xlsx"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = upload_raw(
        &app,
        &app.admin_key,
        "?bucket=lists&wait=30",
        "list.xlsx",
        book,
    )
    .await;
    assert_eq!(res.status(), 201);
    let file: Value = res.json().await.unwrap();
    let c = create(
        &app,
        &key,
        json!({"name": "XLSX", "template": {"name": "points"}, "tags": ["xlsx"],
               "file_id": file["id"], "start": true}),
    )
    .await;
    let done = wait_state(&app, &key, c["id"].as_str().unwrap(), "completed").await;
    assert_eq!(done["import"]["bad"][0]["row"], 3, "{done}");
    let sent = outbox(&app, &key, "xlsx").await;
    assert_eq!(sent["kim@example.com"], ["김민지: 1200 points"]);
    assert_eq!(sent["lee@example.com"], ["Lee: 7 points"]);
    assert_eq!(sent.len(), 2);
}

async fn campaigns_pause_resume_and_cancel_on_every_instance(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let key = app.new_key(&["mail", "admin"]).await;
    spring(&app, &key).await;
    let recipients: Vec<Value> = (0..40)
        .map(|i| json!({"email": format!("p{i}@example.com")}))
        .collect();
    // Slow (5 a second), so it is still sending when paused.
    let c = create(
        &app,
        &key,
        json!({"name": "Slow", "template": {"name": "spring", "data": {"offer": "-"}},
               "tags": ["slow"], "recipients": recipients, "rate": 5, "start": true}),
    )
    .await;
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["state"], "sending");
    let paused = post_json(
        &app,
        &key,
        &format!("/api/v1/campaigns/{id}/pause"),
        &json!({}),
    )
    .await;
    assert_eq!(paused.status(), 200);
    let paused: Value = paused.json().await.unwrap();
    assert_eq!(paused["state"], "paused");
    // The queue itself is paused, so every instance stops claiming from it.
    let queues = json_of(&app, &key, "/api/v1/queues").await;
    let queue = queues["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == paused["queue"])
        .unwrap_or_else(|| panic!("{queues}"))
        .clone();
    assert_eq!(queue["paused"], true);
    assert_eq!(queue["rate_per_second"], 5.0, "{queue}");
    // Every message is made while paused, but none of them is sent.
    let held = poll_campaign(&app, &key, &id, |v| {
        v["counts"]["messages"] == 40 && v["counts"]["sending"] == 0
    })
    .await;
    assert!(held["counts"]["sent"].as_u64().unwrap() < 40, "{held}");
    let sent_while_paused = held["counts"]["sent"].clone();
    let again = json_of(&app, &key, &format!("/api/v1/campaigns/{id}")).await;
    assert_eq!(again["counts"]["sent"], sent_while_paused);

    let resumed = post_json(
        &app,
        &key,
        &format!("/api/v1/campaigns/{id}/resume"),
        &json!({}),
    )
    .await;
    assert_eq!(resumed.status(), 200);
    let resumed: Value = resumed.json().await.unwrap();
    assert_eq!(resumed["state"], "sending");
    poll_campaign(&app, &key, &id, |v| {
        v["counts"]["sent"] != sent_while_paused
    })
    .await;

    // Cancelled: nothing more goes out, and its waiting jobs are cancelled with it.
    let cancelled = post_json(
        &app,
        &key,
        &format!("/api/v1/campaigns/{id}/cancel"),
        &json!({}),
    )
    .await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    let n = &cancelled["counts"];
    assert!(n["cancelled"].as_u64().unwrap() > 0, "{n}");
    assert_eq!(
        n["sent"].as_u64().unwrap()
            + n["cancelled"].as_u64().unwrap()
            + n["sending"].as_u64().unwrap(),
        40,
        "{n}"
    );
    let waiting = json_of(
        &app,
        &key,
        &format!(
            "/api/v1/jobs?queue={}&state=available",
            cancelled["queue"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(waiting["items"].as_array().unwrap().len(), 0, "{waiting}");
    let res = post_json(
        &app,
        &key,
        &format!("/api/v1/campaigns/{id}/resume"),
        &json!({}),
    )
    .await;
    problem(res, 409, "campaign_state").await;
}
