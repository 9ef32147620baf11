use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(pairs: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
    Config::load(None, &env(pairs), &Overrides::default())
}

#[test]
fn defaults_need_no_configuration() {
    let loaded = load(&[]).unwrap();
    assert_eq!(loaded.config, Config::default());
    assert!(loaded.warnings.is_empty());
}

#[test]
fn the_example_file_is_the_defaults_and_names_every_setting() {
    let parsed: Config = toml::from_str(EXAMPLE_TOML).unwrap();
    assert_eq!(parsed, Config::default());
    for key in known_keys() {
        let leaf = key.rsplit('.').next().unwrap();
        assert!(
            EXAMPLE_TOML.contains(leaf),
            "example.toml does not mention `{key}`"
        );
    }
}

#[test]
fn relays_can_be_named_in_the_environment() {
    let loaded = load(&[
        (
            "CARAFE_MAIL__RELAYS__BULK__URL",
            "smtp://u:p@127.0.0.1:2527?tls=none",
        ),
        ("CARAFE_MAIL__RELAYS__BULK__RATE", "12.5"),
        ("CARAFE_MAIL__RELAYS__BULK__DAILY_LIMIT", "1000"),
        ("CARAFE_MAIL__SMTP_RATE", "3"),
    ])
    .unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let bulk = &loaded.config.mail.relays["bulk"];
    assert_eq!(bulk.url.expose(), "smtp://u:p@127.0.0.1:2527?tls=none");
    assert_eq!(
        (bulk.rate, bulk.daily_limit, bulk.concurrency),
        (Some(12.5), Some(1000), 4)
    );
    assert_eq!(loaded.config.mail.smtp_rate, Some(3.0));
    let refused = load(&[
        (
            "CARAFE_MAIL__RELAYS__BULK__URL",
            "smtp://u:p@127.0.0.1:2527?tls=none",
        ),
        ("CARAFE_MAIL__RELAYS__BULK__SPEED", "1"),
    ]);
    assert!(refused.is_err(), "an unknown relay setting is refused");
    let refused = load(&[(
        "CARAFE_MAIL__RELAYS__BAD_NAME__URL",
        "smtp://u:p@127.0.0.1:2527?tls=none",
    )]);
    assert!(format!("{}", refused.unwrap_err()).contains("relay name"));
}

#[test]
fn environment_overrides_file_and_flags_override_both() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("carafe.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9000\"\nlog_level = \"debug\"\n",
    )
    .unwrap();
    let vars = env(&[
        ("CARAFE_LOG_LEVEL", "warn"),
        ("CARAFE_LIMITS__JSON_BODY_BYTES", "2048"),
        ("CARAFE_AUTH__TOKEN_MAX_TTL", "2h"),
        (
            "CARAFE_CORS_ORIGINS",
            "https://a.example, https://b.example:8443",
        ),
        ("CARAFE_TRUSTED_PROXIES", "10.0.0.0/8,127.0.0.1"),
        ("CARAFE_METRICS__PUBLIC", "true"),
        ("PATH", "/usr/bin"),
    ]);
    let overrides = Overrides {
        listen: Some("127.0.0.1:9100".parse().unwrap()),
        data_dir: Some("/tmp/x".into()),
    };
    let c = Config::load(Some(&file), &vars, &overrides).unwrap().config;
    assert_eq!(c.listen.port(), 9100);
    assert_eq!(c.log_level, "warn");
    assert_eq!(c.limits.json_body_bytes, 2048);
    assert_eq!(c.auth.token_max_ttl.0, Duration::from_secs(7200));
    assert_eq!(
        c.cors_origins,
        ["https://a.example", "https://b.example:8443"]
    );
    assert!(c.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
    assert!(c.trusted_proxies[1].contains("127.0.0.1".parse().unwrap()));
    assert!(!c.trusted_proxies[1].contains("127.0.0.2".parse().unwrap()));
    assert!(c.metrics.public);
    assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
    // Without the flag, the file's value stands.
    let c = Config::load(Some(&file), &[], &Overrides::default())
        .unwrap()
        .config;
    assert_eq!((c.listen.port(), c.log_level.as_str()), (9000, "debug"));
}

#[test]
fn unknown_variables_are_warned_and_test_variables_ignored() {
    let loaded = load(&[
        ("CARAFE_LISTN", "0.0.0.0:1"),
        ("CARAFE_LIMITS__NOPE", "1"),
        ("CARAFE_TEST_POSTGRES_URL", "postgres://x"),
    ])
    .unwrap();
    assert_eq!(
        loaded.warnings,
        [
            "unknown environment variable CARAFE_LISTN ignored",
            "unknown environment variable CARAFE_LIMITS__NOPE ignored"
        ]
    );
    assert_eq!(loaded.config, Config::default());
}

#[test]
fn secrets_can_come_from_files_but_not_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{}\n", "k".repeat(40))).unwrap();
    let p = path.to_str().unwrap();
    let c = load(&[("CARAFE_SECRET_KEY_FILE", p)]).unwrap().config;
    assert_eq!(c.secret_key.unwrap().expose(), "k".repeat(40));
    let err = load(&[("CARAFE_SECRET_KEY_FILE", p), ("CARAFE_SECRET_KEY", "x")]).unwrap_err();
    assert!(err.to_string().contains("set one"), "{err}");
    let c = load(&[("CARAFE_PUSH__SECRET_FILE", p)]).unwrap().config;
    assert_eq!(
        c.push.secret.unwrap().expose(),
        "k".repeat(40),
        "nested secrets too"
    );
    let err = load(&[
        ("CARAFE_PUSH__SECRET_FILE", p),
        ("CARAFE_PUSH__SECRET", "x"),
    ])
    .unwrap_err();
    assert!(
        err.to_string().contains("CARAFE_PUSH__SECRET are set"),
        "{err}"
    );
    let err = load(&[("CARAFE_SECRET_KEY_FILE", "/nonexistent/key")]).unwrap_err();
    assert!(err.to_string().contains("cannot read"), "{err}");
}

#[test]
fn bad_values_are_refused_with_the_setting_named() {
    for (var, value, expect) in [
        ("CARAFE_SECRET_KEY", "short", "secret_key"),
        (
            "CARAFE_CORS_ORIGINS",
            "https://a.example/path",
            "cors_origins",
        ),
        ("CARAFE_PUBLIC_URL", "ftp://x", "public_url"),
        ("CARAFE_DATABASE_URL", "mysql://x", "database_url"),
        ("CARAFE_SHUTDOWN_TIMEOUT", "soon", "soon"),
        ("CARAFE_TRUSTED_PROXIES", "proxy.local", "proxy.local"),
        ("CARAFE_LIMITS__JSON_BODY_BYTES", "10", "json_body_bytes"),
        ("CARAFE_LIMITS__IDEMPOTENCY_LOCK", "0s", "idempotency_lock"),
        ("CARAFE_LIMITS__IDEMPOTENCY_LOCK", "2h", "idempotency_lock"),
        ("CARAFE_LISTEN", "nowhere", "listen"),
        ("CARAFE_MASTER_KEY", "c2hvcnQ=", "master_key"),
        (
            "CARAFE_PUSH__ALLOW_HOSTS",
            "hooks.internal,*.internal",
            "allow_hosts",
        ),
        (
            "CARAFE_PUSH__ALLOW_HOSTS",
            "http://hooks.internal",
            "allow_hosts",
        ),
    ] {
        let err = load(&[(var, value)]).unwrap_err().to_string();
        assert!(err.contains(expect), "{var}={value}: {err}");
    }
}

#[test]
fn the_masked_view_hides_secrets() {
    let mut c = Config {
        secret_key: Some(Secret::new("s".repeat(40))),
        database_url: Some(Secret::new("postgres://carafe:hunter2@db/carafe".into())),
        ..Config::default()
    };
    c.push.secret = Some(Secret::new("p".repeat(40)));
    c.master_key = Some(Secret::new("m".repeat(44)));
    c.master_keys_previous = vec![Secret::new("o".repeat(44))];
    let shown = c.to_masked_toml();
    assert!(!shown.contains(&"m".repeat(44)) && !shown.contains(&"o".repeat(44)));
    assert!(!shown.contains(&"p".repeat(40)), "{shown}");
    assert!(
        !shown.contains(&"s".repeat(40)) && !shown.contains("hunter2"),
        "{shown}"
    );
    assert!(
        shown.contains("postgres://carafe:********@db/carafe"),
        "{shown}"
    );
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn push_allowlists_read_names_addresses_and_ranges() {
    use crate::jobs::targets::AllowHost;
    let c = load(&[
        (
            "CARAFE_PUSH__ALLOW_HOSTS",
            "Hooks.Internal, 10.1.0.0/16, ::1",
        ),
        ("CARAFE_PUSH__ALLOW_PRIVATE_NETWORKS", "true"),
    ])
    .unwrap()
    .config;
    assert_eq!(
        c.push.allow_hosts,
        [
            AllowHost::Name("hooks.internal".into()),
            AllowHost::Net("10.1.0.0/16".parse().unwrap()),
            AllowHost::Net("::1/128".parse().unwrap()),
        ]
    );
    assert!(c.push.allow_private_networks);
    let shown: Config = toml::from_str(&c.to_masked_toml()).unwrap();
    assert_eq!(shown.push.allow_hosts, c.push.allow_hosts, "round trip");
    assert!(!Config::default().push.allow_private_networks);
}
