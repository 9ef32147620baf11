//! Extra headers: the allow-list, injection attempts, folding and encoding, counts and
//! duplicates.

use super::*;

#[test]
fn allow_list() {
    for name in [
        "Bcc",
        "content-type",
        "DKIM-Signature",
        "X-Carafe-Foo",
        "x-carafe-id",
        "From",
        "To",
        "Cc",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Transfer-Encoding",
        "Return-Path",
        "Received",
        "Sender",
        "Reply-To",
        "X-",
    ] {
        assert_eq!(
            reason(check_header(name, "v")),
            "header_not_allowed",
            "{name}"
        );
    }
    for name in [
        "X-Campaign",
        "x-campaign",
        "List-Unsubscribe",
        "list-unsubscribe",
        "List-Unsubscribe-Post",
        "List-Id",
        "In-Reply-To",
        "References",
        "Auto-Submitted",
        "Precedence",
    ] {
        check_header(name, "value").unwrap();
    }
    let long_name = format!("X-{}", "a".repeat(MAX_HEADER_NAME_BYTES));
    for name in [
        "",
        "X Campaign",
        "X-Campaign:",
        "X-Zoë",
        "X-\tTab",
        long_name.as_str(),
    ] {
        assert_eq!(
            reason(check_header(name, "v")),
            "header_invalid",
            "{name:?}"
        );
    }
}

#[test]
fn header_values_cannot_inject() {
    for value in [
        "a\r\nBcc: evil@x.example",
        "a\nBcc: x",
        "a\rb",
        "a\0b",
        "a\u{1b}b",
    ] {
        assert_eq!(
            reason(check_header("X-Campaign", value)),
            "header_invalid",
            "{value:?}"
        );
    }
    check_header("X-Note", "tabs\tare fine, and Zoë too").unwrap();
    assert_eq!(
        reason(check_header("List-Id", "Zoë <list.b.example>")),
        "header_invalid"
    );
    let value = "a".repeat(MAX_HEADER_VALUE_BYTES + 1);
    assert_eq!(reason(check_header("X-Long", &value)), "too_large");
    let value = "a".repeat(MAX_HEADER_VALUE_BYTES - "X-Long: ".len() + 1);
    assert_eq!(reason(check_header("X-Long", &value)), "header_invalid");

    let mut draft = draft();
    draft.headers = vec![("X-Campaign".into(), "a\r\nBcc: evil@x.example".into())];
    assert_eq!(refused(&draft), "header_invalid");
}

#[test]
fn custom_headers_are_written_folded_and_encoded() {
    let long = ["word"; 150].join(" ");
    let unbroken = "u".repeat(MAX_HEADER_VALUE_BYTES - "X-Unbroken: ".len());
    let unicode = "Zoë ".repeat(100);
    let mut draft = draft();
    draft.headers = vec![
        ("X-Campaign".into(), "spring".into()),
        (
            "list-unsubscribe".into(),
            "<https://app.example/u/1>".into(),
        ),
        (
            "List-Unsubscribe-Post".into(),
            "List-Unsubscribe=One-Click".into(),
        ),
        ("X-Long".into(), long.clone()),
        ("X-Unbroken".into(), unbroken.clone()),
        ("X-Unicode".into(), unicode.trim_end().into()),
    ];
    let bytes = built(&draft);
    // RFC 2047 words decoded, as a reader would see them.
    let message = MessageParser::new()
        .with_minimal_headers()
        .default_header_text()
        .parse(&bytes)
        .unwrap();
    // Unfolding is removing each CRLF (RFC 5322 2.2.3); mail-parser leaves that to us.
    let text = |name: &str| {
        let value = message.header(name).and_then(|v| v.as_text());
        value.map(|v| v.replace("\r\n", ""))
    };
    assert_eq!(text("X-Campaign").as_deref(), Some("spring"));
    assert_eq!(text("X-Long").as_deref(), Some(long.as_str()));
    assert_eq!(text("X-Unbroken").as_deref(), Some(unbroken.as_str()));
    assert_eq!(text("X-Unicode").as_deref(), Some(unicode.trim_end()));
    assert_eq!(
        message.header_raw("List-Unsubscribe").map(str::trim),
        Some("<https://app.example/u/1>")
    );
}

#[test]
fn header_count_and_duplicates() {
    let mut draft = draft();
    draft.headers = (0..=MAX_CUSTOM_HEADERS)
        .map(|i| (format!("X-H{i}"), "v".into()))
        .collect();
    assert_eq!(refused(&draft), "too_many_headers");
    draft.headers = vec![("X-A".into(), "1".into()), ("x-a".into(), "2".into())];
    assert_eq!(refused(&draft), "header_invalid");
}
