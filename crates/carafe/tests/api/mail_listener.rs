//! The SMTP way in, driven by real clients: Python's `smtplib` (STARTTLS with the test CA,
//! AUTH with an API key, the refusals a client meets) and Flask-Mail itself, pointed at Carafe
//! as at any mail server. What they send lands as one message per recipient, with its
//! attachments, exactly as a mail sent over HTTP.

use serde_json::{Value, json};

use crate::helpers::{Backend, TestApp, json_of};

mod listener {
    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_TUSPY (the venv with Flask-Mail) and CARAFE_TEST_SMTP_CA"]
    async fn sqlite_smtp_clients_submit_through_carafe() {
        super::smtp_clients_submit_through_carafe(crate::helpers::Backend::Sqlite).await
    }

    #[tokio::test]
    #[ignore = "needs CARAFE_TEST_TUSPY, CARAFE_TEST_SMTP_CA and CARAFE_TEST_POSTGRES_URL"]
    async fn postgres_smtp_clients_submit_through_carafe() {
        super::smtp_clients_submit_through_carafe(crate::helpers::Backend::Postgres).await
    }
}

const SMTPLIB: &str = r#"
import base64, json, smtplib, ssl, sys
from email.message import EmailMessage
host, port, key, ca, size_cap = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
out = {}
s = smtplib.SMTP(host, port, timeout=20)
s.ehlo("client.test")
out["starttls_offered"] = s.has_extn("starttls")
out["size"] = int(s.esmtp_features.get("size", "0"))
out["mail_before_auth"] = s.mail("shop@example.com")[0]
s.rset()
s.starttls(context=ssl.create_default_context(cafile=ca))
s.ehlo("client.test")
try:
    s.login("anyone", "ck_not_a_real_key")
    out["bad_login"] = 235
except smtplib.SMTPAuthenticationError as e:
    out["bad_login"] = e.smtp_code
s.login("anyone", key)
msg = EmailMessage()
msg["From"] = "Shop <shop@example.com>"
msg["To"] = "Ana <ana@example.com>"
msg["Cc"] = "bo@example.com"
msg["Subject"] = "주문 42"
msg["X-Carafe-Tags"] = "smtp"
msg["X-Order"] = "42"
msg.set_content("plain body")
msg.add_alternative("<p>html body</p>", subtype="html")
msg.add_attachment(b"%PDF-1.4 x", maintype="application", subtype="pdf", filename="r.pdf")
s.mail("shop@example.com")
for r in ["ana@example.com", "bo@example.com", "audit@example.com"]:
    s.rcpt(r)
code, resp = s.data(msg.as_bytes())
out["data"] = [code, resp.decode()]
s.mail("shop@example.com")
out["rcpt_51"] = [s.rcpt("r%d@example.com" % i)[0] for i in range(51)][-1]
s.rset()
out["mail_too_big"] = s.mail("shop@example.com", ["SIZE=%d" % (size_cap + 1)])[0]
s.rset()
s.mail("shop@example.com")
s.rcpt("ana@example.com")
out["data_too_big"] = s.data(b"Subject: big\r\n\r\n" + b"x" * (size_cap + 10))[0]
s.quit()
# Three failed logins end the session.
s = smtplib.SMTP(host, port, timeout=20)
s.ehlo("client.test")
bad = base64.b64encode(b"\0anyone\0ck_not_a_real_key").decode()
out["three_bad_logins"] = [s.docmd("AUTH", "PLAIN " + bad)[0] for _ in range(3)]
try:
    out["after_three"] = s.noop()[0]
except smtplib.SMTPServerDisconnected:
    out["after_three"] = "closed"
print(json.dumps(out))
"#;

const FLASK_MAIL: &str = r#"
import sys
from flask import Flask
from flask_mail import Mail, Message
host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
app = Flask(__name__)
app.config.update(MAIL_SERVER=host, MAIL_PORT=port, MAIL_USE_TLS=True,
                  MAIL_USERNAME="flask-app", MAIL_PASSWORD=key,
                  MAIL_DEFAULT_SENDER="Flask App <noreply@example.com>")
mail = Mail(app)
with app.app_context():
    msg = Message("Welcome from Flask", recipients=["flask-user@example.com"],
                  body="hello from flask", html="<b>hello from flask</b>")
    msg.attach("notes.txt", "text/plain", b"some notes")
    mail.send(msg)
print("sent")
"#;

/// Runs a Python client (without blocking the server, which shares this runtime).
async fn python(script: &str, args: &[&str]) -> String {
    let py = std::env::var("CARAFE_TEST_TUSPY").expect("CARAFE_TEST_TUSPY");
    let out = tokio::process::Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("python runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn smtp_clients_submit_through_carafe(backend: Backend) {
    let ca = std::env::var("CARAFE_TEST_SMTP_CA").expect("CARAFE_TEST_SMTP_CA");
    let dir = std::path::Path::new(&ca).parent().unwrap().to_owned();
    let cap = 64 * 1024;
    let app = TestApp::spawn_with(backend, |c| {
        c.mail.smtp_listen = Some("127.0.0.1:0".parse().unwrap());
        c.mail.smtp_listen_cert_file = Some(dir.join("cert.pem"));
        c.mail.smtp_listen_key_file = Some(dir.join("key.pem"));
        c.mail.smtp_listen_max_bytes = cap;
    })
    .await;
    let key = app.new_key(&["mail"]).await;
    let port = app.smtp.expect("the listener").port().to_string();
    let out: Value = serde_json::from_str(
        &python(SMTPLIB, &["localhost", &port, &key, &ca, &cap.to_string()]).await,
    )
    .unwrap();
    assert_eq!(out["starttls_offered"], true);
    assert_eq!(out["size"], cap);
    assert_eq!(out["mail_before_auth"], 530);
    assert_eq!(out["bad_login"], 535);
    assert_eq!(out["rcpt_51"], 452);
    assert_eq!(out["mail_too_big"], 552);
    assert_eq!(out["data_too_big"], 552, "{out}");
    assert_eq!(out["three_bad_logins"], json!([535, 535, 535]));
    assert!(
        out["after_three"] == 421 || out["after_three"] == "closed",
        "{out}"
    );
    // 250 only once stored: the id in the reply is readable at once.
    assert_eq!(out["data"][0], 250, "{out}");
    let reply = out["data"][1].as_str().unwrap();
    let id = reply.rsplit(' ').next().unwrap();
    let mail = json_of(&app, &key, &format!("/api/v1/mail/{id}")).await;
    assert_eq!(mail["subject"], "주문 42");
    assert_eq!(mail["from"], "Shop <shop@example.com>");
    assert_eq!(mail["to"], json!(["Ana <ana@example.com>"]));
    assert_eq!(mail["cc"], json!(["bo@example.com"]));
    assert_eq!(mail["bcc"], json!(["audit@example.com"]));
    assert_eq!(mail["tags"], json!(["smtp"]));
    assert_eq!(mail["headers"], json!([["X-Order", "42"]]));
    assert_eq!(mail["text"].as_str().map(str::trim), Some("plain body"));
    assert_eq!(mail["attachments"][0]["filename"], "r.pdf");
    assert_eq!(mail["attachments"][0]["type"], "application/pdf");
    let kinds: Vec<&str> = mail["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["to", "cc", "bcc"]);
    // Nothing of the refused attempts was stored.
    let all = json_of(&app, &key, "/api/v1/mail?limit=100").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);

    // Flask-Mail, configured as for any mail server (STARTTLS, user name and password).
    assert_eq!(
        python(FLASK_MAIL, &["localhost", &port, &key]).await.trim(),
        "sent"
    );
    let found = json_of(
        &app,
        &key,
        "/api/v1/outbox?to=flask-user@example.com&wait=20",
    )
    .await;
    let item = &found["items"][0];
    assert_eq!(item["subject"], "Welcome from Flask");
    assert_eq!(item["from"], "noreply@example.com");
    let detail = json_of(
        &app,
        &key,
        &format!("/api/v1/outbox/{}", item["id"].as_str().unwrap()),
    )
    .await;
    assert!(
        detail["html"]
            .as_str()
            .unwrap()
            .contains("<b>hello from flask</b>")
    );
    assert_eq!(detail["attachments"][0]["filename"], "notes.txt");
}
