use std::time::{Duration, Instant};

use carafe_core::templates::{TemplateVariant, TemplateVersion};
use serde_json::json;
use time::OffsetDateTime;

use super::*;

fn version(name: &str, variants: Vec<TemplateVariant>) -> TemplateVersion {
    TemplateVersion {
        name: name.into(),
        version: 1,
        changed: variants[0].locale.clone(),
        variants,
        actor: "key:k".into(),
        created_at: OffsetDateTime::UNIX_EPOCH,
    }
}

fn variant(locale: &str, subject: &str, text: Option<&str>, html: Option<&str>) -> TemplateVariant {
    TemplateVariant {
        locale: locale.into(),
        subject: subject.into(),
        text: text.map(Into::into),
        html: html.map(Into::into),
        layout: None,
    }
}

fn chain(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

fn failed(e: RenderError) -> TemplateError {
    match e {
        RenderError::Failed(e) => e,
        other => panic!("expected a template error, got {other:?}"),
    }
}

#[test]
fn html_is_escaped_and_text_is_not() {
    let mut lib = Library::default();
    lib.insert(version(
        "welcome",
        vec![variant(
            "en",
            "Hi\n  {{ name }}",
            Some("Hello {{ name }}"),
            Some("<p>Hello {{ name }}</p>"),
        )],
    ));
    let p = Prepared::new(&lib, "welcome", &chain(&["en"])).unwrap();
    let out = p.render(&json!({"name": "<b>Kim</b> & co"})).unwrap();
    assert_eq!(out.subject, "Hi <b>Kim</b> & co");
    assert_eq!(out.text.as_deref(), Some("Hello <b>Kim</b> & co"));
    assert_eq!(
        out.html.as_deref(),
        Some("<p>Hello &lt;b&gt;Kim&lt;&#x2f;b&gt; &amp; co</p>")
    );
    assert_eq!(
        (out.template.name.as_str(), out.template.version),
        ("welcome", 1)
    );
}

#[test]
fn an_undefined_value_is_an_error_with_its_place_but_may_be_tested() {
    let mut lib = Library::default();
    lib.insert(version(
        "t",
        vec![variant(
            "en",
            "s",
            Some("{% if nickname %}{{ nickname }}{% endif %}\nDear {{ user.name }},\n  {{ missing }}"),
            None,
        )],
    ));
    let p = Prepared::new(&lib, "t", &chain(&["en"])).unwrap();
    assert_eq!(
        p.render(&json!({"user": {"name": "Kim"}}))
            .map_err(failed)
            .unwrap_err(),
        TemplateError {
            part: Part::Text,
            template: "t".into(),
            line: Some(3),
            column: Some(6),
            message: "undefined value: `missing` is undefined".into(),
        }
    );
    let out = p
        .render(&json!({"user": {"name": "Kim"}, "missing": 1}))
        .unwrap();
    assert_eq!(out.text.as_deref(), Some("\nDear Kim,\n  1"));
}

#[test]
fn syntax_errors_name_their_line_and_column() {
    let e = check_source(Part::Html, "t", "<p>\n  Hello {{ name }\n</p>").unwrap_err();
    assert_eq!((e.part, e.line), (Part::Html, Some(2)));
    assert!(e.column.is_some_and(|c| c > 8), "{e:?}");
    assert!(e.message.starts_with("syntax error"), "{e:?}");
    assert!(check_source(Part::Subject, "t", "Hi {{ name|upper }}").is_ok());
}

#[test]
fn endless_work_runs_out_of_fuel_quickly() {
    for source in [
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{% set ns = namespace(s='x') %}{% for i in range(100000) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    ] {
        let mut lib = Library::default();
        lib.insert(version(
            "loop",
            vec![variant("en", "s", Some(source), None)],
        ));
        let p = Prepared::new(&lib, "loop", &chain(&["en"])).unwrap();
        let started = Instant::now();
        let e = p.render(&json!({})).map_err(failed).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2), "{source}");
        assert_eq!(e.part, Part::Text);
        assert!(
            e.message.contains("fuel") || e.message.contains("recursion"),
            "{source}: {e:?}"
        );
    }
}

#[test]
fn layouts_receive_the_output_as_content_and_includes_are_loaded_on_demand() {
    let mut lib = Library::default();
    let mut main = variant(
        "en",
        "Welcome",
        Some("Hi {{ name }}"),
        Some("<p>Hi {{ name }}</p>{% include 'footer' %}"),
    );
    main.layout = Some("base".into());
    lib.insert(version("welcome", vec![main]));
    let p = Prepared::new(&lib, "welcome", &chain(&["en"]));
    assert_eq!(
        p.err(),
        Some(RenderError::Missing(["base".to_string()].into()))
    );
    lib.insert(version(
        "base",
        vec![variant(
            "en",
            "-",
            None,
            Some("<html><h1>{{ brand }}</h1>{{ content }}</html>"),
        )],
    ));
    let p = Prepared::new(&lib, "welcome", &chain(&["en"])).unwrap();
    let data = json!({"name": "<Kim>", "brand": "A&B"});
    assert_eq!(
        p.render(&data).err(),
        Some(RenderError::Missing(["footer".to_string()].into()))
    );
    lib.insert(version(
        "footer",
        vec![variant("en", "-", None, Some("<small>{{ brand }}</small>"))],
    ));
    let p = Prepared::new(&lib, "welcome", &chain(&["en"])).unwrap();
    let out = p.render(&data).unwrap();
    assert_eq!(
        out.html.as_deref(),
        Some("<html><h1>A&amp;B</h1><p>Hi &lt;Kim&gt;</p><small>A&amp;B</small></html>")
    );
    // The layout has no text part: the text is not wrapped.
    assert_eq!(out.text.as_deref(), Some("Hi <Kim>"));
}

#[test]
fn extends_and_blocks_work_between_templates() {
    let mut lib = Library::default();
    lib.insert(version(
        "frame",
        vec![variant(
            "en",
            "-",
            Some("[{% block body %}{% endblock %}]"),
            None,
        )],
    ));
    lib.insert(version(
        "note",
        vec![variant(
            "en",
            "Note",
            Some("{% extends 'frame' %}{% block body %}{{ n }}{% endblock %}"),
            None,
        )],
    ));
    let p = Prepared::new(&lib, "note", &chain(&["en"])).unwrap();
    assert_eq!(
        p.render(&json!({"n": 7})).unwrap().text.as_deref(),
        Some("[7]")
    );
}

#[test]
fn locales_fall_back_along_the_chain() {
    let mut lib = Library::default();
    lib.insert(version(
        "t",
        vec![
            variant("en", "Hello", Some("en"), None),
            variant("ko", "안녕하세요", Some("ko"), None),
        ],
    ));
    let p = Prepared::new(&lib, "t", &chain(&["ko-KR", "ko", "en"])).unwrap();
    let out = p.render(&json!({})).unwrap();
    assert_eq!(
        (out.subject.as_str(), out.template.locale.as_str()),
        ("안녕하세요", "ko")
    );
    let p = Prepared::new(&lib, "t", &chain(&["fr-FR", "fr", "en"])).unwrap();
    assert_eq!(p.render(&json!({})).unwrap().template.locale, "en");
    assert!(matches!(
        Prepared::new(&lib, "t", &chain(&["fr"])),
        Err(RenderError::NoLocale { .. })
    ));
}

#[test]
fn layouts_that_wrap_each_other_in_a_loop_are_refused() {
    let mut lib = Library::default();
    let looped = |name: &str, layout: &str| {
        let mut v = variant("en", "s", Some("{{ content }}"), None);
        v.layout = Some(layout.into());
        version(name, vec![v])
    };
    lib.insert(looped("a", "b"));
    lib.insert(looped("b", "c"));
    lib.insert(looped("c", "b"));
    match Prepared::new(&lib, "a", &chain(&["en"])) {
        Err(RenderError::Failed(e)) => assert!(e.message.contains("loop"), "{e:?}"),
        Err(other) => panic!("expected a refusal, got {other:?}"),
        Ok(_) => panic!("expected a refusal"),
    }
}
