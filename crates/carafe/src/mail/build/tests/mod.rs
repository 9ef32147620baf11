//! What `build` writes, read back with a real parser (mail-parser), and what it refuses.

use mail_parser::{MessageParser, MimeHeaders, PartType};
use time::macros::datetime;

use super::*;
use crate::mail::address::parse_mailbox;

mod headers;

const ID: &str = "0190f1d2-7c1e-7000-8000-000000000001@mail.example";
const DATE: OffsetDateTime = datetime!(2024-01-02 0:00 UTC);

fn draft() -> Draft {
    Draft {
        from: parse_mailbox("Zoë Dupré <noreply@app.example>").unwrap(),
        reply_to: Some(parse_mailbox("Support <support@app.example>").unwrap()),
        to: vec![parse_mailbox("Ann <ann@b.example>").unwrap()],
        cc: vec![parse_mailbox("cc@b.example").unwrap()],
        subject: "Your receipt".into(),
        text: Some("Thanks for your order.\n".into()),
        html: None,
        headers: vec![],
        parts: vec![],
    }
}

fn built(draft: &Draft) -> Vec<u8> {
    let bytes = build(draft, ID, datetime!(2024-01-02 05:04:05 +02:00)).unwrap();
    let text = std::str::from_utf8(&bytes).unwrap();
    assert!(text.is_ascii(), "the message is not pure ASCII");
    assert!(
        !text.replace("\r\n", "").contains(['\r', '\n']),
        "a bare CR or LF"
    );
    for line in text.split("\r\n") {
        assert!(line.len() <= 998, "a line of {} bytes", line.len());
    }
    bytes
}

fn parse(bytes: &[u8]) -> mail_parser::Message<'_> {
    MessageParser::default().parse(bytes).unwrap()
}

/// The header lines (folded lines joined), up to the blank line.
fn header_lines(bytes: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(bytes).unwrap();
    let head = text.split("\r\n\r\n").next().unwrap();
    let mut lines: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        match lines.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
            _ => lines.push(line.to_owned()),
        }
    }
    lines
}

fn named<'a>(lines: &'a [String], name: &str) -> Vec<&'a str> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim())
        .collect()
}

fn reason(result: Result<impl std::fmt::Debug, BuildError>) -> &'static str {
    result.unwrap_err().reason()
}

fn refused(draft: &Draft) -> &'static str {
    reason(build(draft, ID, DATE))
}

#[test]
fn text_only_is_a_text_plain_message_with_every_header() {
    let bytes = built(&draft());
    let lines = header_lines(&bytes);
    assert_eq!(named(&lines, "Message-ID"), [format!("<{ID}>")]);
    assert_eq!(named(&lines, "Date"), ["Tue, 02 Jan 2024 03:04:05 +0000"]);
    assert_eq!(named(&lines, "MIME-Version"), ["1.0"]);
    assert_eq!(named(&lines, "Subject"), ["Your receipt"]);

    let message = parse(&bytes);
    assert_eq!(message.message_id(), Some(ID));
    assert_eq!(message.date().unwrap().to_rfc3339(), "2024-01-02T03:04:05Z");
    let from = message.from().unwrap().first().unwrap();
    assert_eq!(
        (from.name(), from.address()),
        (Some("Zoë Dupré"), Some("noreply@app.example"))
    );
    let reply_to = message.reply_to().unwrap().first().unwrap();
    assert_eq!(reply_to.address(), Some("support@app.example"));
    assert_eq!(
        message.to().unwrap().first().unwrap().address(),
        Some("ann@b.example")
    );
    assert_eq!(
        message.cc().unwrap().first().unwrap().address(),
        Some("cc@b.example")
    );
    let content_type = message.root_part().content_type().unwrap();
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("text", Some("plain"))
    );
    assert_eq!(content_type.attribute("charset"), Some("utf-8"));
    assert_eq!(
        message.body_text(0).unwrap().trim_end(),
        "Thanks for your order."
    );
}

#[test]
fn html_only_gets_a_text_part_derived_from_it() {
    let mut draft = draft();
    draft.text = None;
    draft.html = Some(
        "<html><body><p>Hello <b>Ann</b> &amp; co,</p><p>your <a href=\"https://app.example/r/1\">\
         receipt</a>.</p><script>alert(1)</script></body></html>"
            .into(),
    );
    let bytes = built(&draft);
    let message = parse(&bytes);
    let content_type = message.root_part().content_type().unwrap();
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("multipart", Some("alternative"))
    );
    let PartType::Multipart(parts) = &message.root_part().body else {
        panic!("not multipart");
    };
    assert_eq!(parts.len(), 2);
    let text = message.body_text(0).unwrap();
    for visible in [
        "Hello",
        "Ann",
        "& co,",
        "receipt",
        "https://app.example/r/1",
    ] {
        assert!(text.contains(visible), "{visible:?} missing from {text:?}");
    }
    for hidden in ["<p>", "<b>", "</", "&amp;", "href", "alert"] {
        assert!(!text.contains(hidden), "{hidden:?} left in {text:?}");
    }
    assert_eq!(message.body_html(0).unwrap(), draft.html.unwrap());
}

#[test]
fn both_bodies_are_kept_text_first_then_html() {
    let mut draft = draft();
    draft.text = Some("Plain words".into());
    draft.html = Some("<p>Rich words</p>".into());
    let bytes = built(&draft);
    let message = parse(&bytes);
    let PartType::Multipart(parts) = &message.root_part().body else {
        panic!("not multipart");
    };
    let subtypes: Vec<_> = parts
        .iter()
        .map(|&i| {
            message
                .part(i)
                .unwrap()
                .content_type()
                .unwrap()
                .subtype()
                .unwrap()
        })
        .collect();
    assert_eq!(subtypes, ["plain", "html"]);
    assert_eq!(message.body_text(0).unwrap(), "Plain words");
    assert_eq!(message.body_html(0).unwrap(), "<p>Rich words</p>");
}

#[test]
fn subject_with_crlf_stays_one_encoded_header() {
    let mut draft = draft();
    draft.subject = "Hello\r\nBcc: evil@x.example\r\nX-Evil: 1".into();
    let bytes = built(&draft);
    let lines = header_lines(&bytes);
    assert_eq!(named(&lines, "Subject").len(), 1);
    assert!(named(&lines, "Subject")[0].contains("=?utf-8?"));
    assert!(named(&lines, "Bcc").is_empty() && named(&lines, "X-Evil").is_empty());
    assert_eq!(parse(&bytes).subject(), Some(draft.subject.as_str()));
}

#[test]
fn subject_limits() {
    let mut draft = draft();
    draft.subject = "a".repeat(MAX_SUBJECT_CHARS + 1);
    assert_eq!(refused(&draft), "too_large");
    let words = format!("{} {}", "a".repeat(MAX_SUBJECT_WORD_BYTES), "b".repeat(8));
    for subject in [words, "é".repeat(MAX_SUBJECT_CHARS), "aé".repeat(499)] {
        draft.subject = subject;
        let bytes = built(&draft);
        assert_eq!(parse(&bytes).subject(), Some(draft.subject.as_str()));
    }
    let long_word = format!("x {}", "a".repeat(MAX_SUBJECT_WORD_BYTES + 1));
    for subject in ["a\0b", "a\u{1b}[31mb", "a\u{7f}", long_word.as_str()] {
        draft.subject = subject.into();
        assert_eq!(refused(&draft), "invalid_subject");
    }
}

#[test]
fn forged_mailboxes_are_refused() {
    let mut forged = draft();
    forged.to[0].name = Some("Ann\r\nBcc: evil@x.example".into());
    assert_eq!(refused(&forged), "invalid_address");
    let mut forged = draft();
    forged.from.name = Some("Evil\0".into());
    let error = build(&forged, ID, DATE).unwrap_err();
    assert!(
        error.to_string().starts_with("the from address is invalid"),
        "{error}"
    );
}

#[test]
fn a_message_without_to_or_cc_is_to_undisclosed_recipients_and_never_names_bcc() {
    let mut draft = draft();
    draft.to.clear();
    draft.cc.clear();
    let bytes = built(&draft);
    let lines = header_lines(&bytes);
    assert_eq!(named(&lines, "To"), ["undisclosed-recipients:;"]);
    assert!(named(&lines, "Cc").is_empty());
    let text = String::from_utf8(bytes.clone())
        .unwrap()
        .to_ascii_lowercase();
    assert!(!text.contains("bcc"), "{text}");
    assert!(parse(&bytes).bcc().is_none());

    draft.cc = vec![parse_mailbox("cc@b.example").unwrap()];
    let lines = header_lines(&built(&draft));
    assert!(named(&lines, "To").is_empty());
    assert_eq!(named(&lines, "Cc"), ["cc@b.example"]);
}

#[test]
fn message_id_must_be_a_bare_left_at_right() {
    let long = format!("{}@b.example", "a".repeat(MAX_MESSAGE_ID_BYTES));
    for id in [
        "",
        "abc",
        "<a@b.example>",
        "a@b.example>",
        "a b@c.example",
        "a@b.example\r\nBcc: x@y",
        "a@b.example\n",
        "a@",
        "@b.example",
        "a@b@c.example",
        "a..b@c.example",
        "a@b.",
        "ä@b.example",
        long.as_str(),
    ] {
        assert_eq!(
            reason(build(&draft(), id, DATE)),
            "invalid_message_id",
            "{id:?}"
        );
    }
}

#[test]
fn dates_outside_what_a_header_can_say_are_refused() {
    assert_eq!(
        reason(build(&draft(), ID, datetime!(1969-12-31 23:59:59 UTC))),
        "invalid_date"
    );
    build(&draft(), ID, datetime!(9999-12-31 23:59:59 UTC)).unwrap();
}

#[test]
fn recipient_and_body_limits() {
    let mut draft = draft();
    let many = |n| {
        (0..n)
            .map(|i| parse_mailbox(&format!("r{i}@b.example")).unwrap())
            .collect()
    };
    draft.to = many(MAX_RECIPIENTS);
    draft.cc.clear();
    built(&draft);
    draft.cc = many(1);
    assert_eq!(refused(&draft), "too_many_recipients");
    assert_eq!(
        reason(check_recipient_count(MAX_RECIPIENTS + 1)),
        "too_many_recipients"
    );

    let mut draft = self::draft();
    draft.text = Some("a".repeat(MAX_BODY_BYTES + 1));
    assert_eq!(refused(&draft), "too_large");
    draft.text = None;
    draft.html = Some("a".repeat(MAX_BODY_BYTES + 1));
    assert_eq!(refused(&draft), "too_large");
    draft.html = None;
    assert_eq!(refused(&draft), "no_body");
    draft.text = Some(String::new());
    draft.html = Some(String::new());
    assert_eq!(refused(&draft), "no_body");
}

#[test]
fn a_long_single_line_html_body_is_wrapped_for_transport() {
    let mut draft = draft();
    draft.text = None;
    let html = format!("<p>{}</p>", "<b>x</b>é".repeat(1200)); // ~12 KiB, one line
    draft.html = Some(html.clone());
    let bytes = built(&draft); // checks every line ≤ 998 bytes
    assert!(bytes.len() > 10 * 1024);
    assert_eq!(parse(&bytes).body_html(0).unwrap(), html);
    draft.html = Some(format!("<p>{}</p>", "y".repeat(10 * 1024)));
    built(&draft);
}

#[test]
fn html_to_text_keeps_what_a_reader_sees() {
    let text = html_to_text(
        "<h1>Title</h1><p>One &lt;two&gt; &quot;three&quot; &#233;</p><p>line<br>break</p>\
         <a href=\"https://app.example/x\">link</a><style>p{color:red}</style>",
    );
    for visible in [
        "Title",
        "One <two> \"three\" é",
        "link",
        "https://app.example/x",
    ] {
        assert!(text.contains(visible), "{visible:?} missing from {text:?}");
    }
    assert!(text.contains("line\nbreak"), "{text:?}");
    assert!(
        !text.contains("color:red") && !text.contains("<h1>"),
        "{text:?}"
    );
    let layout = "<table><tr><td><table><tr><td><p>Hello</p><p>Ann</p></td></tr></table>\
                  </td><td></td></tr></table>";
    assert_eq!(html_to_text(layout), "Hello\n\nAnn\n");
    let nested = format!("{}deep{}", "<div>".repeat(5000), "</div>".repeat(5000));
    assert!(html_to_text(&nested).contains("deep"));
    let lists = format!(
        "{}deeper{}",
        "<ul><li>".repeat(3000),
        "</li></ul>".repeat(3000)
    );
    assert!(html_to_text(&lists).contains("deeper"));
}

#[test]
fn checking_a_draft_refuses_what_building_it_refuses() {
    let long_word = format!("x {}", "a".repeat(MAX_SUBJECT_WORD_BYTES + 1));
    let mut cases: Vec<Draft> = Vec::new();
    cases.push(draft());
    for subject in ["a".repeat(MAX_SUBJECT_CHARS + 1), "a\0b".into(), long_word] {
        let mut d = draft();
        d.subject = subject;
        cases.push(d);
    }
    let mut forged = draft();
    forged.to[0].name = Some("Ann\r\nBcc: evil@x.example".into());
    cases.push(forged);
    let mut empty = draft();
    (empty.text, empty.html) = (None, None);
    cases.push(empty);
    let mut header = draft();
    header.headers = vec![("Bcc".into(), "x@x.example".into())];
    cases.push(header);
    for d in &cases {
        let checked = check_draft(d, ID, DATE).map_err(|e| e.reason());
        let built = build(d, ID, DATE).map(drop).map_err(|e| e.reason());
        assert_eq!(checked, built, "{:?}", d.subject);
    }
    assert!(check_draft(&cases[0], ID, DATE).is_ok());
}
