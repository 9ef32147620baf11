//! `TestApp`: a running server plus one method per endpoint, so tests read as API calls.

use std::future::Future;
use std::time::Duration;

use carafe::config::Secret;
use carafe::{App, Config};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The secret every test server uses, so tests can forge and expire tokens on purpose.
pub const SECRET: &str = "test-secret-test-secret-test-secret!";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(Backend)` as a test on SQLite, and on PostgreSQL when asked.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs CARAFE_TEST_POSTGRES_URL"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

pub struct TestApp {
    pub base: String,
    pub admin_key: String,
    pub client: reqwest::Client,
    pub state: carafe::state::AppState,
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
    if backend == Backend::Postgres {
        let url = carafe_store_postgres::testing::fresh_database_url().await;
        config.database_url = Some(Secret::new(url));
    }
    config
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let data_dir = tempfile::tempdir().unwrap();
        let mut config = test_config(backend, data_dir.path()).await;
        adjust(&mut config);
        let app = App::build(config).await.expect("the app builds");
        let key_file = app
            .admin_key_file()
            .expect("a fresh app bootstraps a key")
            .clone();
        let admin_key = std::fs::read_to_string(key_file).unwrap().trim().to_owned();
        let base = format!("http://{}", app.local_addr());
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

    pub async fn healthz(&self) -> Response {
        self.get("/healthz", None).await
    }

    pub async fn readyz(&self) -> Response {
        self.get("/readyz", None).await
    }

    pub async fn metrics(&self, auth: Option<&str>) -> Response {
        self.get("/metrics", auth).await
    }

    pub async fn openapi(&self) -> Value {
        let res = self.get("/api/v1/openapi.json", None).await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }
}

/// Reads a problem+json answer, checking its shape, and returns it.
pub async fn problem(res: Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status(), status, "status (expected code {code})");
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
