//! X-Accel-Redirect end to end: a real nginx in front of Carafe sends the bytes of whole
//! downloads from local storage, while the headers Carafe decided (validators, disposition,
//! the sandboxing CSP) still reach the client, and ranges, HEAD and 304s stay Carafe's.
//!
//! The tests need an nginx binary named by `CARAFE_TEST_NGINX` (scripts/test-all sets it), so
//! they are ignored without it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde_json::Value;

use crate::files::pdf;
use crate::helpers::{Backend, TestApp};

/// Runs each named `async fn(Backend)` on SQLite and PostgreSQL, both ignored without nginx.
macro_rules! nginx_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                #[ignore = "needs CARAFE_TEST_NGINX"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                #[ignore = "needs CARAFE_TEST_NGINX and CARAFE_TEST_POSTGRES_URL"]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

nginx_tests!(nginx_sends_the_bytes_with_carafes_headers);

/// The internal location Carafe names in `X-Accel-Redirect`.
const PREFIX: &str = "/_carafe_files/";

/// An nginx child process in its own directory; killed when dropped.
struct Nginx {
    child: Child,
    base: String,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx in front of `app`, serving `PREFIX` from `files_root`; waits until it
    /// answers. A port taken between choosing and binding it is retried with another.
    async fn start(app: &TestApp, files_root: &Path) -> Nginx {
        let binary = std::env::var("CARAFE_TEST_NGINX").unwrap_or_else(|_| {
            panic!(
                "CARAFE_TEST_NGINX is not set: it names an nginx binary (scripts/test-all sets it)"
            )
        });
        let upstream = app.base.trim_start_matches("http://").to_owned();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), port, &upstream, files_root)).unwrap();
            let child = Command::new(&binary)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {binary}: {e}"));
            let mut nginx = Nginx {
                child,
                base: format!("http://127.0.0.1:{port}"),
                dir,
            };
            if nginx.wait_ready(app).await {
                return nginx;
            }
            let log = nginx.log();
            assert!(
                log.contains("Address already in use"),
                "nginx did not start:\n{log}"
            );
        }
        panic!("nginx found no free port in five tries");
    }

    /// Polls until nginx proxies `/healthz` (true) or exits (false).
    async fn wait_ready(&mut self, app: &TestApp) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            let url = format!("{}/healthz", self.base);
            if let Ok(res) = app.client.get(url).send().await
                && res.status() == 200
            {
                return true;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nginx did not answer within 30 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What nginx said on stderr and in its error log.
    fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "{}{}",
            read("stderr.log").unwrap_or_default(),
            read("error.log").unwrap_or_default()
        )
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An nginx configuration proxying everything to Carafe at `upstream`, with the internal
/// location for `X-Accel-Redirect` mapped to the storage root. Every path nginx writes is
/// under `dir`; one process (no workers), so it runs as the user that owns the files.
fn config(dir: &Path, port: u16, upstream: &str, files_root: &Path) -> String {
    let dir = dir.display();
    let root = files_root.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 64m;
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://{upstream};
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
        }}
        # nginx keeps only a few of the proxied headers (Content-Type, Content-Disposition,
        # Cache-Control, Accept-Ranges) when it follows X-Accel-Redirect: Carafe's validators
        # and security headers are put back from the proxied answer, and ranges and
        # conditionals are left to Carafe, which already answered them.
        location {PREFIX} {{
            internal;
            alias {root}/;
            max_ranges 0;
            if_modified_since off;
            etag off;
            add_header ETag $upstream_http_etag;
            add_header Last-Modified $upstream_http_last_modified;
            add_header X-Content-Type-Options $upstream_http_x_content_type_options;
            add_header Content-Security-Policy $upstream_http_content_security_policy;
            add_header X-Frame-Options $upstream_http_x_frame_options;
            add_header Referrer-Policy $upstream_http_referrer_policy;
            add_header X-Request-Id $upstream_http_x_request_id;
        }}
    }}
}}
"#
    )
}

/// The local storage root: Carafe keeps objects under `data_dir/files`, and the path in
/// `X-Accel-Redirect` is an object's key below it.
fn files_root(app: &TestApp) -> PathBuf {
    app.data_dir().join("files")
}

fn through(nginx: &Nginx, app: &TestApp, method: Method, path: &str) -> RequestBuilder {
    app.client
        .request(method, format!("{}{path}", nginx.base))
        .bearer_auth(&app.admin_key)
}

fn header(res: &reqwest::Response, name: &str) -> String {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header in {:?}", res.headers()))
        .to_str()
        .unwrap()
        .to_owned()
}

async fn nginx_sends_the_bytes_with_carafes_headers(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.files.accel_redirect = Some(PREFIX.into());
    })
    .await;
    let nginx = Nginx::start(&app, &files_root(&app)).await;

    // 600 KiB: above the memory cache's object limit, and varied enough to catch a shifted byte.
    let body: String = (0..600 * 1024)
        .map(|i: usize| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    let bytes = pdf(&body);
    let name = "보고서_2025Q4.pdf";
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
    let res = through(&nginx, &app, Method::POST, "/api/v1/files?wait=30")
        .header("content-type", "application/octet-stream")
        .header(
            "content-disposition",
            format!("attachment; filename*=UTF-8''{encoded}"),
        )
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "uploaded through nginx and processed");
    let file: Value = res.json().await.unwrap();
    assert_eq!(file["status"], "ready", "{file}");
    let id = file["id"].as_str().unwrap();
    let path = format!("/api/v1/files/{id}/content");
    let etag = format!("\"{}\"", file["sha256"].as_str().unwrap());

    // Carafe itself answers with the redirect and no body.
    let direct = app.get(&path, Some(&app.admin_key)).await;
    assert_eq!(direct.status(), 200);
    assert_eq!(
        header(&direct, "x-accel-redirect"),
        format!("{PREFIX}objects/{id}")
    );
    let carafe_headers = direct.headers().clone();
    assert!(direct.bytes().await.unwrap().is_empty());

    // Through nginx: the bytes come from disk, the headers from Carafe.
    let res = through(&nginx, &app, Method::GET, &format!("{path}?download=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("x-accel-redirect").is_none());
    assert_eq!(header(&res, "content-length"), bytes.len().to_string());
    assert_eq!(header(&res, "etag"), etag);
    assert_eq!(header(&res, "content-type"), "application/pdf");
    let disposition = header(&res, "content-disposition");
    assert!(disposition.starts_with("attachment"), "{disposition}");
    assert!(
        disposition.contains("filename*=UTF-8''%EB%B3%B4%EA%B3%A0%EC%84%9C_2025Q4.pdf"),
        "{disposition}"
    );
    for name in [
        "cache-control",
        "content-security-policy",
        "x-content-type-options",
        "last-modified",
        "x-frame-options",
        "referrer-policy",
    ] {
        assert_eq!(
            res.headers().get(name),
            carafe_headers.get(name),
            "{name} reaches the client as Carafe set it"
        );
    }
    assert_eq!(res.headers().get_all("accept-ranges").iter().count(), 1);
    assert_eq!(
        res.headers().get_all("etag").iter().count(),
        1,
        "Carafe's ETag only"
    );
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(header(&res, "x-content-type-options"), "nosniff");
    assert!(header(&res, "content-security-policy").contains("sandbox"));
    assert_eq!(res.bytes().await.unwrap(), bytes, "byte-identical");

    // A range is answered by Carafe (nginx only passes it on).
    let res = through(&nginx, &app, Method::GET, &path)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    assert_eq!(
        header(&res, "content-range"),
        format!("bytes 1000-1999/{}", bytes.len())
    );
    assert_eq!(header(&res, "etag"), etag);
    assert_eq!(res.bytes().await.unwrap(), bytes[1000..2000]);

    // A range for a version that is gone: Carafe sends the whole file, and so does nginx.
    let res = through(&nginx, &app, Method::GET, &path)
        .header("range", "bytes=1000-1999")
        .header("if-range", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "etag"), etag);
    assert_eq!(res.bytes().await.unwrap(), bytes);

    // So is a conditional request that matches: 304, no body.
    let res = through(&nginx, &app, Method::GET, &path)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 304);
    assert_eq!(header(&res, "etag"), etag);
    assert!(res.bytes().await.unwrap().is_empty());

    // And HEAD: the length, no body.
    let res = through(&nginx, &app, Method::HEAD, &path)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-length"), bytes.len().to_string());
    assert_eq!(header(&res, "etag"), etag);

    // The internal location cannot be asked for directly, with or without a key.
    for auth in [None, Some(app.admin_key.as_str())] {
        let url = format!("{}{PREFIX}objects/{id}", nginx.base);
        let mut req = app.client.get(url);
        if let Some(key) = auth {
            req = req.bearer_auth(key);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 404);
        let body = res.bytes().await.unwrap();
        assert!(
            !body.windows(16).any(|w| w == &bytes[..16]),
            "no file bytes"
        );
    }

    // Nor can a download without credentials use it.
    let res = app
        .client
        .get(format!("{}{path}", nginx.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}
