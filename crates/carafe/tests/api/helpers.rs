//! `TestApp`: a running server plus one method per endpoint, so tests read as API calls.

use std::future::Future;
use std::time::Duration;

use carafe::config::Secret;
use carafe::jobs::runner::Handlers;
use carafe::{App, Config};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The secret every test server uses, so tests can forge and expire tokens on purpose.
pub const SECRET: &str = "test-secret-test-secret-test-secret!";

/// Where a test server keeps its data: a database, and file bytes on local disk or on S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    S3Sqlite,
    S3Postgres,
}

impl Backend {
    pub fn postgres(self) -> bool {
        matches!(self, Backend::Postgres | Backend::S3Postgres)
    }

    pub fn s3(self) -> bool {
        matches!(self, Backend::S3Sqlite | Backend::S3Postgres)
    }
}

/// The test S3 URL with a fresh key prefix, so tests never see each other's objects.
pub fn s3_url() -> String {
    let url = std::env::var("CARAFE_TEST_S3_URL")
        .expect("CARAFE_TEST_S3_URL is not set: run scripts/services/s3 (scripts/test-all does)");
    let (base, query) = url.split_once('?').expect("the URL has a query");
    format!("{base}/t-{}?{query}", uuid::Uuid::now_v7().simple())
}

pub struct TestApp {
    pub base: String,
    pub admin_key: String,
    pub client: reqwest::Client,
    pub state: carafe::api::state::AppState,
    /// The SMTP listener's address, when `mail.smtp_listen` is set.
    pub smtp: Option<std::net::SocketAddr>,
    /// Kept so the directory lives as long as the server.
    _data_dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn test_config(backend: Backend, data_dir: &std::path::Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_path_buf(),
        secret_key: Some(Secret::new(SECRET.into())),
        database_max_connections: 4,
        ..Config::default()
    };
    if backend.postgres() {
        let url = carafe_store_postgres::testing::fresh_database_url().await;
        config.database_url = Some(Secret::new(url));
    }
    if backend.s3() {
        config.storage_url = Some(Secret::new(s3_url()));
    }
    config
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
        Self::spawn_full(backend, Handlers::new(), adjust).await
    }

    /// A server running these in-process job handlers.
    pub async fn spawn_full(
        backend: Backend,
        handlers: Handlers,
        adjust: impl FnOnce(&mut Config),
    ) -> TestApp {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(backend, data_dir.path()).await;
        adjust(&mut config);
        Self::start(config, handlers, data_dir).await
    }

    /// A second server on the same database as `self` (for multi-instance tests).
    pub async fn sibling(&self, handlers: Handlers) -> TestApp {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = self.state.config.clone();
        config.data_dir = data_dir.path().to_path_buf();
        let mut app = Self::start(config, handlers, data_dir).await;
        app.admin_key = self.admin_key.clone();
        app
    }

    /// A new server on the same database and data dir as `self`, its configuration adjusted
    /// (a restart: stop `self` first, and keep it alive to keep the data dir).
    pub async fn restarted(&self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let mut config = self.state.config.clone();
        adjust(&mut config);
        let mut app = Self::start(config, Handlers::new(), tempfile::tempdir().unwrap()).await;
        app.admin_key = self.admin_key.clone();
        app
    }

    async fn start(config: Config, handlers: Handlers, data_dir: tempfile::TempDir) -> TestApp {
        let app = App::build_with(config, handlers)
            .await
            .expect("the app builds");
        // A sibling on an existing database creates no key; it borrows its elder's.
        let admin_key = app
            .admin_key_file()
            .map(|f| std::fs::read_to_string(f).unwrap().trim().to_owned())
            .unwrap_or_default();
        let base = format!("http://{}", app.local_addr());
        let smtp = app.smtp_addr();
        let state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        TestApp {
            base,
            admin_key,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            state,
            smtp,
            _data_dir: data_dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn begin_stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn wait_stopped(&mut self) -> anyhow::Result<()> {
        let server = self.server.take().expect("running");
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("the server stops within 30 s")
            .expect("the server task does not panic")
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self._data_dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str, auth: Option<&str>) -> RequestBuilder {
        let req = self.client.request(method, self.url(path));
        match auth {
            Some(a) => req.bearer_auth(a),
            None => req,
        }
    }

    pub async fn get(&self, path: &str, auth: Option<&str>) -> Response {
        self.request(Method::GET, path, auth).send().await.unwrap()
    }

    pub async fn post_json(&self, path: &str, auth: Option<&str>, body: &Value) -> Response {
        self.request(Method::POST, path, auth)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// The files the admin key lists (the first page, newest first).
    pub async fn files(&self) -> Vec<Value> {
        let listed: Value = self
            .get("/api/v1/files", Some(&self.admin_key))
            .await
            .json()
            .await
            .unwrap();
        listed["items"].as_array().unwrap().clone()
    }

    pub async fn me(&self, auth: &str) -> Response {
        self.get("/api/v1/me", Some(auth)).await
    }

    pub async fn create_key(&self, auth: &str, name: &str, scopes: &[&str]) -> Response {
        self.post_json(
            "/api/v1/keys",
            Some(auth),
            &json!({"name": name, "scopes": scopes}),
        )
        .await
    }

    /// Creates a key with the admin key and returns its secret.
    pub async fn new_key(&self, scopes: &[&str]) -> String {
        let res = self.create_key(&self.admin_key, "test", scopes).await;
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["secret"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn list_keys(&self, auth: &str, query: &str) -> Response {
        self.get(&format!("/api/v1/keys{query}"), Some(auth)).await
    }

    pub async fn get_key(&self, auth: &str, id: &str) -> Response {
        self.get(&format!("/api/v1/keys/{id}"), Some(auth)).await
    }

    pub async fn revoke_key(&self, auth: &str, id: &str) -> Response {
        self.request(Method::DELETE, &format!("/api/v1/keys/{id}"), Some(auth))
            .send()
            .await
            .unwrap()
    }

    pub async fn create_token(&self, auth: &str, body: &Value) -> Response {
        self.post_json("/api/v1/tokens", Some(auth), body).await
    }

    /// Mints a user token with the admin key.
    pub async fn user_token(&self, user: &str, scopes: &[&str]) -> String {
        let res = self
            .create_token(&self.admin_key, &json!({"user_id": user, "scopes": scopes}))
            .await;
        assert_eq!(res.status(), 201);
        res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn audit(&self, auth: &str, query: &str) -> Response {
        self.get(&format!("/api/v1/audit{query}"), Some(auth)).await
    }

    /// The audit events `query` selects, read with the admin key.
    pub async fn audit_items(&self, query: &str) -> Vec<Value> {
        let page: Value = self
            .audit(&self.admin_key, query)
            .await
            .json()
            .await
            .unwrap();
        page["items"].as_array().unwrap().clone()
    }

    pub async fn healthz(&self) -> Response {
        self.get("/healthz", None).await
    }

    pub async fn readyz(&self) -> Response {
        self.get("/readyz", None).await
    }

    pub async fn metrics(&self, auth: Option<&str>) -> Response {
        self.get("/metrics", auth).await
    }

    pub async fn enqueue(&self, auth: &str, body: &Value) -> Response {
        self.post_json("/api/v1/jobs", Some(auth), body).await
    }

    /// Enqueues with the admin key and returns the job's id.
    pub async fn new_job(&self, body: Value) -> i64 {
        let res = self.enqueue(&self.admin_key, &body).await;
        assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
        res.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
    }

    pub async fn enqueue_batch(&self, auth: &str, body: &Value) -> Response {
        self.post_json("/api/v1/jobs/batch", Some(auth), body).await
    }

    pub async fn get_job(&self, auth: &str, id: i64) -> Response {
        self.get(&format!("/api/v1/jobs/{id}"), Some(auth)).await
    }

    /// The job as the admin key sees it.
    pub async fn job(&self, id: i64) -> Value {
        let res = self.get_job(&self.admin_key, id).await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub async fn list_jobs(&self, auth: &str, query: &str) -> Response {
        self.get(&format!("/api/v1/jobs{query}"), Some(auth)).await
    }

    pub async fn cancel_job(&self, auth: &str, id: i64) -> Response {
        self.post_json(
            &format!("/api/v1/jobs/{id}/cancel"),
            Some(auth),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn retry_job(&self, auth: &str, id: i64) -> Response {
        self.post_json(
            &format!("/api/v1/jobs/{id}/retry"),
            Some(auth),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn claim(&self, auth: &str, queue: &str, body: &Value) -> Response {
        self.post_json(&format!("/api/v1/queues/{queue}/claim"), Some(auth), body)
            .await
    }

    /// Claims with the admin key and returns the claimed jobs.
    pub async fn claim_jobs(&self, queue: &str, body: Value) -> Vec<Value> {
        let res = self.claim(&self.admin_key, queue, &body).await;
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        let body: Value = res.json().await.unwrap();
        body["jobs"].as_array().unwrap().clone()
    }

    pub async fn worker_call(&self, auth: &str, id: i64, action: &str, body: &Value) -> Response {
        self.post_json(&format!("/api/v1/jobs/{id}/{action}"), Some(auth), body)
            .await
    }

    pub async fn complete_batch(&self, auth: &str, body: &Value) -> Response {
        self.post_json("/api/v1/jobs/complete", Some(auth), body)
            .await
    }

    pub async fn queues(&self, auth: &str) -> Response {
        self.get("/api/v1/queues", Some(auth)).await
    }

    pub async fn queue_action(&self, auth: &str, queue: &str, action: &str) -> Response {
        self.post_json(
            &format!("/api/v1/queues/{queue}/{action}"),
            Some(auth),
            &serde_json::json!({}),
        )
        .await
    }

    /// Waits until the job (seen by the admin key) is in `state`; returns it.
    pub async fn wait_for_state(&self, id: i64, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let job = self.job(id).await;
            if job["state"] == state {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never became {state}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn openapi(&self) -> Value {
        let res = self.get("/api/v1/openapi.json", None).await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }
}

/// POSTs JSON with a bearer key to any Carafe (a `TestApp` or a `carafe serve` child process)
/// and returns the JSON answer.
pub async fn post_json_to(client: &reqwest::Client, url: &str, key: &str, body: &Value) -> Value {
    let res = client
        .post(url)
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .unwrap();
    res.json().await.unwrap()
}

/// Reads a problem+json answer, checking its shape, and returns it.
pub async fn problem(res: Response, status: u16, code: &str) -> Value {
    assert_eq!(
        res.status(),
        status,
        "status of {} {} (expected code {code})",
        res.url().path(),
        res.url().query().unwrap_or("")
    );
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(ct, "application/problem+json");
    let request_id = res.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], format!("urn:carafe:problem:{code}"));
    assert_eq!(
        body["request_id"],
        request_id.as_str(),
        "the problem names the request"
    );
    body
}

/// `GET path` with `key`, which must answer 200; its JSON body.
pub async fn json_of(app: &TestApp, key: &str, path: &str) -> Value {
    let res = app.get(path, Some(key)).await;
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.unwrap()
}

/// `POST path` with `key` and a JSON body.
pub async fn post_json(app: &TestApp, key: &str, path: &str, body: &Value) -> Response {
    app.request(reqwest::Method::POST, path, Some(key))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Polls `check` until it holds, failing after `within`.
pub async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
