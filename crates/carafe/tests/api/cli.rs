//! The `carafe` binary itself: serving on embedded defaults, key and token commands, the
//! configuration views and the doctor.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::process::{Served, carafe, serve};
use carafe::{App, Config};
use serde_json::Value;

async fn run(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = carafe(cwd);
    cmd.args(args).envs(env.iter().copied());
    cmd.output().await.unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn serve_starts_on_embedded_defaults_and_stops_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    let served = serve(cwd.path(), &[("CARAFE_LIMITS__JSON_BODY_BYTEZ", "1")]).await;
    let Served {
        mut child,
        addr,
        log,
        mut lines,
    } = served;
    let data = cwd.path().join("carafe-data");
    let key_file = data.join("admin-key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the admin key file is private");
    let key = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_owned();
    assert!(key.starts_with("ck_"));
    assert!(data.join("carafe.db").exists() && data.join("secret-key").exists());
    let whole = log
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        whole.contains("admin-key"),
        "the log says where the key is: {whole}"
    );
    assert!(!whole.contains(&key), "the log never shows the key");
    assert!(
        whole.contains("unknown environment variable CARAFE_LIMITS__JSON_BODY_BYTEZ"),
        "{whole}"
    );

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let ready = client
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let me = client
        .get(format!("http://{addr}/api/v1/me"))
        .bearer_auth(&key)
        .header("x-request-id", "find-me-in-the-log")
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // The access log line of that request carries its id.
    let line = loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the request is logged")
            .unwrap()
            .expect("serve keeps running");
        let entry: Value = serde_json::from_str(&line).unwrap();
        if entry["span"]["request_id"] == "find-me-in-the-log" {
            break entry;
        }
    };
    assert_eq!(line["route"], "/api/v1/me");
    assert_eq!(line["status"], 200);
    assert!(!line.to_string().contains(&key), "no credentials in logs");

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    // A second start keeps the existing key and writes no new one.
    let before = std::fs::read_to_string(&key_file).unwrap();
    let out = run(cwd.path(), &["check"], &[]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), before);
}

#[tokio::test]
async fn keys_and_tokens_are_managed_from_the_cli() {
    let cwd = tempfile::tempdir().unwrap();
    let dir = cwd.path();
    let out = run(
        dir,
        &[
            "keys",
            "create",
            "--name",
            "ci deploy",
            "--scopes",
            "files,jobs",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = text(&out.stdout).trim().to_owned();
    assert!(key.starts_with("ck_") && key.len() == 43, "{key}");

    let out = run(dir, &["keys", "list", "--json"], &[]).await;
    let keys: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(keys[0]["name"], "ci deploy");
    assert_eq!(keys[0]["scopes"], serde_json::json!(["files", "jobs"]));
    assert_eq!(keys[0]["prefix"], &key[..11]);
    let id = keys[0]["id"].as_str().unwrap().to_owned();
    let table = text(&run(dir, &["keys", "list"], &[]).await.stdout);
    assert!(
        table.contains(&id) && table.contains("ci deploy"),
        "{table}"
    );

    let out = run(
        dir,
        &["keys", "create", "--name", "x", "--scopes", "root"],
        &[],
    )
    .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("unknown scope"),
        "{}",
        text(&out.stderr)
    );

    let out = run(
        dir,
        &[
            "token", "--user", "user-9", "--ttl", "10m", "--scope", "files",
        ],
        &[],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    let out = run(dir, &["token", "--user", "u", "--scope", "admin"], &[]).await;
    assert!(!out.status.success(), "no admin tokens from the CLI either");

    // A server on the same data dir accepts both (the CLI and the server share the secret).
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("carafe-data"),
        ..Config::default()
    };
    let app = App::build(config).await.unwrap();
    assert!(
        app.admin_key_file().is_none(),
        "an active key exists, so no bootstrap key"
    );
    let base = format!("http://{}", app.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let me: Value = client
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (me["kind"].as_str(), me["id"].as_str()),
        (Some("user"), Some("user-9"))
    );
    let res = client
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let out = run(dir, &["keys", "revoke", &id], &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let keys: Value =
        serde_json::from_slice(&run(dir, &["keys", "list", "--json"], &[]).await.stdout).unwrap();
    assert!(keys[0]["revoked_at"].is_string());
    let out = run(
        dir,
        &["keys", "revoke", "01900000-0000-7000-8000-000000000000"],
        &[],
    )
    .await;
    assert!(!out.status.success());
    tx.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn config_is_shown_masked_and_has_a_commented_example() {
    let cwd = tempfile::tempdir().unwrap();
    let env = [
        ("CARAFE_SECRET_KEY", "super-secret-value-super-secret-value"),
        (
            "CARAFE_DATABASE_URL",
            "postgres://carafe:hunter2@db.internal/carafe",
        ),
        ("CARAFE_LOG_LEVEL", "debug"),
    ];
    let out = run(cwd.path(), &["config"], &env).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        !shown.contains("super-secret-value") && !shown.contains("hunter2"),
        "{shown}"
    );
    let parsed: toml::Value = toml::from_str(&shown).unwrap();
    assert_eq!(parsed["log_level"].as_str(), Some("debug"));

    let out = run(cwd.path(), &["config", "example"], &[]).await;
    let example: Config = toml::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(example, Config::default());

    std::fs::write(
        cwd.path().join("carafe.toml"),
        "listen = \"127.0.0.1:9999\"\nnot_a_setting = 1\n",
    )
    .unwrap();
    let out = run(cwd.path(), &["config"], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown key in the file is an error"
    );
    assert!(
        text(&out.stderr).contains("not_a_setting"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn check_says_what_is_wrong() {
    let cwd = tempfile::tempdir().unwrap();
    let out = run(cwd.path(), &["check"], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("FAIL  database"),
        "{}",
        text(&out.stdout)
    );

    assert!(run(cwd.path(), &["migrate"], &[]).await.status.success());
    let out = run(cwd.path(), &["check"], &[]).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("ok    migrations"),
        "{}",
        text(&out.stdout)
    );

    let down = [(
        "CARAFE_DATABASE_URL",
        "postgres://carafe@127.0.0.1:1/carafe",
    )];
    let out = run(cwd.path(), &["check"], &down).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("unreachable"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
#[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
async fn migrate_and_check_on_postgres() {
    let cwd = tempfile::tempdir().unwrap();
    let url = carafe_store_postgres::testing::fresh_database_url().await;
    let env = [("CARAFE_DATABASE_URL", url.as_str())];
    let out = run(cwd.path(), &["check"], &env).await;
    assert_eq!(out.status.code(), Some(1), "not migrated yet");
    assert!(
        text(&out.stdout).contains("pending"),
        "{}",
        text(&out.stdout)
    );
    assert!(run(cwd.path(), &["migrate"], &env).await.status.success());
    let out = run(cwd.path(), &["check"], &env).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("postgres reachable"));
}

/// `carafe worker` runs the job engine with no HTTP API: here it delivers a push job that a
/// server (now stopped) enqueued on the same database, and stops cleanly on SIGTERM.
#[tokio::test]
async fn the_worker_command_runs_the_engine_without_http() {
    use crate::helpers::{Backend, SECRET, TestApp};
    use crate::push::{PUSH_SECRET, push_to_loopback, start_receiver};

    let (base, receiver) = start_receiver().await;
    let mut app = TestApp::spawn_with(Backend::Sqlite, push_to_loopback).await;
    let id = app
        .new_job(serde_json::json!({"queue": "offline", "target": format!("{base}/hooks/ok"), "delay_ms": 2000}))
        .await;
    app.begin_stop();
    app.wait_stopped().await.unwrap();
    let data_dir = app.data_dir().to_str().unwrap().to_owned();

    let mut worker = carafe(app.data_dir())
        .arg("worker")
        .env("CARAFE_DATA_DIR", &data_dir)
        .env("CARAFE_SECRET_KEY", SECRET)
        .env("CARAFE_PUSH__SECRET", PUSH_SECRET)
        .env("CARAFE_PUSH__ALLOW_HOSTS", "127.0.0.1")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !receiver.calls.lock().unwrap().contains_key(&id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker delivers the job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid = worker.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), worker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");

    let store = carafe_store_sqlite::SqliteStore::open(&app.data_dir().join("carafe.db"), 1)
        .await
        .unwrap();
    use carafe_core::store::JobStore;
    let job = store
        .get_job(carafe_core::jobs::JobId(id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.state, carafe_core::jobs::JobState::Completed);
}

both_backends!(buckets_that_require_a_missing_scanner_are_named);

/// Without `clamd_url`, start-up warns about and `carafe check` fails on every bucket whose
/// policy requires scanning (from the configuration file or the API): uploads to them are
/// refused.
async fn buckets_that_require_a_missing_scanner_are_named(backend: crate::helpers::Backend) {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("carafe.toml"),
        "[files.buckets.configured]\nallowed_types = [\"pdf\"]\nscan = \"required\"\n\n\
         [files.buckets.relaxed]\nallowed_types = [\"pdf\"]\nscan = \"auto\"\n",
    )
    .unwrap();
    let url = match backend.postgres() {
        true => carafe_store_postgres::testing::fresh_database_url().await,
        false => String::new(),
    };
    let env: Vec<(&str, &str)> = match backend.postgres() {
        true => vec![("CARAFE_DATABASE_URL", url.as_str())],
        false => vec![],
    };
    let served = serve(cwd.path(), &env).await;
    let warning = served
        .log
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("refuse every upload"))
        })
        .unwrap_or_else(|| panic!("a warning about the buckets: {:?}", served.log));
    assert_eq!(warning["buckets"], "configured", "{warning}");

    let key = std::fs::read_to_string(cwd.path().join("carafe-data/admin-key")).unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = client
        .put(served.url("/api/v1/buckets/strict"))
        .bearer_auth(key.trim())
        .json(&serde_json::json!({"scan": "required"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);

    let out = run(cwd.path(), &["check"], &env).await;
    let report = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    let line = report
        .lines()
        .find(|l| l.starts_with("FAIL  scanning"))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(line.ends_with(": configured, strict"), "{line}");

    // With a scanner configured, nothing is said about it.
    let clamd = [("CARAFE_CLAMD_URL", "tcp://127.0.0.1:3310")];
    let out = run(cwd.path(), &["check"], &[env.as_slice(), &clamd].concat()).await;
    assert!(out.status.success(), "{}", text(&out.stdout));
}
