use super::*;

fn public(text: &str) -> bool {
    is_public(text.parse().unwrap())
}

fn refused(list: &[&str]) {
    for ip in list {
        assert!(!public(ip), "{ip} must be refused");
    }
}

fn allowed(list: &[&str]) {
    for ip in list {
        assert!(public(ip), "{ip} must be public");
    }
}

#[test]
fn ipv4_special_ranges_are_refused_with_their_edges() {
    refused(&[
        "0.0.0.0",
        "0.255.255.255",
        "10.0.0.0",
        "10.255.255.255",
        "100.64.0.0",
        "100.127.255.255",
        "127.0.0.1",
        "127.255.255.254",
        "169.254.0.1",
        "169.254.169.254",
        "172.16.0.0",
        "172.31.255.255",
        "192.0.0.8",
        "192.0.2.1",
        "192.88.99.1",
        "192.168.0.1",
        "192.168.255.255",
        "198.18.0.0",
        "198.19.255.255",
        "198.51.100.7",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.255",
        "240.0.0.1",
        "255.255.255.255",
    ]);
    allowed(&[
        "1.1.1.1",
        "8.8.8.8",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "169.253.255.255",
        "169.255.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
    ]);
}

#[test]
fn ipv6_special_ranges_are_refused() {
    refused(&[
        "::",
        "::1",
        "fe80::1",
        "febf:ffff::1",
        "fec0::1",
        "feff::1",
        "fc00::1",
        "fdff:ffff::1",
        "ff02::1",
        "ff0e::1",
        "100::1",
        "64:ff9b:1::1",
        "2001:db8::1",
        "2001:2::1",
        "3fff::1",
        "4000::1",
        "1fff:ffff::1",
    ]);
    allowed(&[
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "2a00:1450:4001::1",
        "2001:200::1",
        "3ffe::1",
    ]);
}

#[test]
fn ipv6_forms_carrying_ipv4_are_judged_by_that_address() {
    refused(&[
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:0.0.0.0",
        "::127.0.0.1",
        "::10.1.2.3",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
        "2002:c0a8:101::",
        "2002:a00:1::",
    ]);
    allowed(&[
        "::ffff:8.8.8.8",
        "::8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ]);
}

#[test]
fn teredo_is_refused() {
    // 2001::/32; the client's address (here 127.0.0.1, inverted) is obfuscated in the last
    // 32 bits, so Teredo is refused whatever it carries.
    refused(&["2001:0:4136:e378:8000:63bf:80ff:fffe", "2001::1"]);
}

#[test]
fn allow_hosts_entries_parse_and_bad_ones_are_named() {
    let parse = |s: &str| s.parse::<AllowHost>();
    assert_eq!(
        parse("Hooks.Internal").unwrap(),
        AllowHost::Name("hooks.internal".into())
    );
    assert_eq!(
        parse("localhost").unwrap(),
        AllowHost::Name("localhost".into())
    );
    assert_eq!(
        parse("10.1.2.3/16").unwrap(),
        AllowHost::Net("10.1.0.0/16".parse().unwrap())
    );
    assert_eq!(
        parse("::1").unwrap(),
        AllowHost::Net("::1/128".parse().unwrap())
    );
    for bad in [
        "",
        "*.example.com",
        "http://hooks.internal",
        "hooks.internal:8080",
        "10.0.0.0/33",
        "a b",
        "-bad.example",
        "x..y",
    ] {
        let err = parse(bad).unwrap_err();
        assert!(err.contains("push.allow_hosts"), "{bad}: {err}");
    }
    for (text, shown) in [("127.0.0.1", "127.0.0.1"), ("10.0.0.0/8", "10.0.0.0/8")] {
        assert_eq!(parse(text).unwrap().to_string(), shown);
    }
}

fn url(text: &str) -> Url {
    Url::parse(text).unwrap()
}

#[test]
fn literals_are_judged_and_names_left_to_resolve() {
    let closed = TargetPolicy::default();
    for target in [
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://0x7f.1/",
        "http://2130706433/",
    ] {
        assert_eq!(
            closed.check_literal(&url(target)),
            Err(NotAllowed),
            "{target}"
        );
    }
    assert_eq!(closed.check_literal(&url("https://8.8.8.8/")), Ok(None));
    assert_eq!(
        closed.check_literal(&url("https://Hooks.Example.com/x")),
        Ok(Some("hooks.example.com"))
    );

    let entries: Vec<AllowHost> = ["127.0.0.1", "10.0.0.0/8", "hooks.example.com"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let opened = TargetPolicy::new(&entries, false);
    for target in [
        "http://127.0.0.1:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://10.9.8.7/",
        "https://HOOKS.example.com/",
    ] {
        assert_eq!(opened.check_literal(&url(target)), Ok(None), "{target}");
    }
    for target in ["http://127.0.0.2/", "http://[::1]/", "http://192.168.1.1/"] {
        assert_eq!(
            opened.check_literal(&url(target)),
            Err(NotAllowed),
            "{target}"
        );
    }
    let everything = TargetPolicy::new(&[], true);
    assert_eq!(everything.check_literal(&url("http://[::1]/")), Ok(None));
    assert!(everything.address_allowed("169.254.169.254".parse().unwrap()));
}

#[tokio::test]
async fn names_are_refused_whole_when_an_address_is_not_public() {
    let closed = TargetPolicy::default();
    assert!(matches!(
        closed.resolve("localhost").await,
        Err(ResolveError::NotAllowed(NotAllowed))
    ));
    assert_eq!(closed.check("http://localhost:9/").await, Err(NotAllowed));
    assert_eq!(closed.check("http://[::1]:9/").await, Err(NotAllowed));
    // A name allowed by name skips the address check; one allowed by address passes it.
    let by_name = TargetPolicy::new(&["LOCALHOST".parse().unwrap()], false);
    assert!(!by_name.resolve("localhost").await.unwrap().is_empty());
    let by_net = TargetPolicy::new(
        &["127.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
        false,
    );
    assert!(by_net.resolve("localhost").await.is_ok());
    assert_eq!(by_net.check("http://localhost:9/").await, Ok(()));
    // A name that does not resolve is left to delivery.
    assert_eq!(closed.check("http://carafe-test.invalid/").await, Ok(()));
}
