//! Any S3-compatible store, through `object_store`. Objects live under an optional key prefix
//! (`s3://bucket/prefix`), so several deployments can share a bucket. Large uploads go up as
//! multipart uploads in parts (see `parts`), recorded in the database while they are under
//! way, so even one a crash interrupts is aborted later, leaving no parts behind.

mod parts;

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use carafe_core::store::MultipartRecordStore;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload};

use super::temp::Received;
use super::{ByteStream, ResponseHeaders};

/// Objects up to this size are sent in one PUT.
const SINGLE_PUT: u64 = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct S3Storage {
    store: Arc<AmazonS3>,
    prefix: String,
    tmp: PathBuf,
    /// Where the multipart uploads under way are recorded.
    records: Arc<dyn MultipartRecordStore>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("store", &self.store)
            .field("prefix", &self.prefix)
            .field("tmp", &self.tmp)
            .finish_non_exhaustive()
    }
}

fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
        e => io::Error::other(e),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl S3Storage {
    /// `s3://bucket[/prefix]?endpoint=…&region=…&access_key_id=…&secret_access_key=…`.
    /// Credentials not in the URL come from the usual `AWS_*` environment variables.
    /// Multipart uploads under way are recorded in `records`.
    pub fn open(
        url: &str,
        tmp: &Path,
        records: Arc<dyn MultipartRecordStore>,
    ) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url)?;
        let bucket = parsed
            .host_str()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| anyhow::anyhow!("storage_url: s3:// needs a bucket name"))?;
        let prefix = parsed.path().trim_matches('/').to_owned();
        // A store that is down must not hold an upload for minutes: a few quick retries, then
        // the caller gets a clear error (and processing jobs retry with their own backoff).
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 3,
            retry_timeout: Duration::from_secs(15),
        };
        let client = ClientOptions::new().with_connect_timeout(Duration::from_secs(5));
        // Client options first: the URL's `endpoint` adjusts them (plain HTTP).
        let mut builder = AmazonS3Builder::from_env()
            .with_client_options(client)
            .with_retry(retry)
            .with_bucket_name(bucket)
            .with_region("us-east-1");
        for (k, v) in parsed.query_pairs() {
            builder = match k.as_ref() {
                "endpoint" => builder
                    .with_allow_http(v.starts_with("http://"))
                    .with_endpoint(v.as_ref()),
                "region" => builder.with_region(v.as_ref()),
                "access_key_id" => builder.with_access_key_id(v.as_ref()),
                "secret_access_key" => builder.with_secret_access_key(v.as_ref()),
                "session_token" => builder.with_token(v.as_ref()),
                "virtual_hosted" => builder.with_virtual_hosted_style_request(v == "true"),
                other => anyhow::bail!("storage_url: unknown parameter `{other}`"),
            };
        }
        let store = builder.build()?;
        std::fs::create_dir_all(tmp)?;
        Ok(S3Storage {
            store: Arc::new(store),
            prefix,
            tmp: tmp.to_path_buf(),
            records,
        })
    }

    pub fn temp_dir(&self) -> PathBuf {
        self.tmp.clone()
    }

    fn path(&self, key: &str) -> ObjectPath {
        if self.prefix.is_empty() {
            ObjectPath::from(key)
        } else {
            ObjectPath::from(format!("{}/{key}", self.prefix))
        }
    }

    pub async fn put_received(&self, key: &str, received: Received) -> io::Result<()> {
        // `received` removes its temporary file when dropped, whatever happens here.
        let path = self.path(key);
        if received.size <= SINGLE_PUT {
            let bytes = tokio::fs::read(received.path()).await?;
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(io_error)?;
            return Ok(());
        }
        self.put_in_parts(key, &received).await
    }

    pub async fn put_bytes(&self, key: &str, bytes: Bytes) -> io::Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(io_error)
    }

    pub async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.store
            .rename(&self.path(from), &self.path(to))
            .await
            .map_err(io_error)
    }

    pub async fn size(&self, key: &str) -> io::Result<Option<u64>> {
        match self.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }

    pub async fn read_all(&self, key: &str, limit: u64) -> io::Result<Bytes> {
        let got = self.store.get(&self.path(key)).await.map_err(io_error)?;
        if got.meta.size > limit {
            return Err(io::Error::other("object larger than expected"));
        }
        got.bytes().await.map_err(io_error)
    }

    pub async fn read(&self, key: &str, range: Option<Range<u64>>) -> io::Result<ByteStream> {
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let got = self
            .store
            .get_opts(&self.path(key), options)
            .await
            .map_err(io_error)?;
        Ok(got.into_stream().map_err(io_error).boxed())
    }

    pub async fn delete(&self, key: &str) -> io::Result<()> {
        match self.store.delete(&self.path(key)).await {
            Err(e) if !is_not_found(&e) => Err(io_error(e)),
            _ => Ok(()),
        }
    }

    pub async fn delete_prefix(&self, prefix: &str) -> io::Result<()> {
        let found: Vec<_> = self
            .store
            .list(Some(&self.path(prefix)))
            .map_ok(|meta| meta.location)
            .try_collect()
            .await
            .map_err(io_error)?;
        for location in found {
            match self.store.delete(&location).await {
                Err(e) if !is_not_found(&e) => return Err(io_error(e)),
                _ => {}
            }
        }
        Ok(())
    }

    pub async fn list_older(&self, prefix: &str, age: Duration) -> io::Result<Vec<String>> {
        // Compared in milliseconds, as on local disk: whole seconds would hide objects up to a
        // second older than `age` (all of them, for an age of zero, within their first second).
        let now = carafe_core::time::unix_ms(carafe_core::time::now());
        let age = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let metas: Vec<_> = self
            .store
            .list(Some(&self.path(prefix)))
            .try_collect()
            .await
            .map_err(io_error)?;
        Ok(metas
            .into_iter()
            .filter(|m| now.saturating_sub(m.last_modified.timestamp_millis()) >= age)
            .filter_map(|m| m.location.filename().map(str::to_owned))
            .collect())
    }

    /// A presigned GET that makes S3 answer with these headers (its `response-*` overrides,
    /// signed with the URL, so they cannot be changed). `Content-Language` and `Expires` are
    /// not sent: Carafe knows no language, and `Cache-Control` supersedes `Expires`.
    pub async fn presigned_get(
        &self,
        key: &str,
        expires_in: Duration,
        answer: &ResponseHeaders<'_>,
    ) -> io::Result<url::Url> {
        let options = SignedUrlOptions::new().with_query([
            ("response-content-type", answer.content_type),
            ("response-content-disposition", answer.content_disposition),
            ("response-cache-control", answer.cache_control),
        ]);
        self.store
            .signed_url_opts(Method::GET, &self.path(key), expires_in, &options)
            .await
            .map_err(io_error)
    }

    /// A presigned PUT of the whole object, for direct uploads. The size is not signed
    /// (object_store signs no `Content-Length`): `complete` checks it instead.
    pub async fn presigned_put(&self, key: &str, expires_in: Duration) -> io::Result<url::Url> {
        self.store
            .signed_url(Method::PUT, &self.path(key), expires_in)
            .await
            .map_err(io_error)
    }

    /// Starts a multipart upload at `key`; returns its upload id.
    pub async fn create_multipart(&self, key: &str) -> io::Result<String> {
        self.store
            .create_multipart(&self.path(key))
            .await
            .map_err(io_error)
    }

    /// A presigned UploadPart of part `number` (1-based) of upload `upload_id`.
    pub async fn presigned_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        expires_in: Duration,
    ) -> io::Result<url::Url> {
        let number = number.to_string();
        let options = SignedUrlOptions::new()
            .with_query([("partNumber", number.as_str()), ("uploadId", upload_id)]);
        self.store
            .signed_url_opts(Method::PUT, &self.path(key), expires_in, &options)
            .await
            .map_err(io_error)
    }

    /// Completes a multipart upload from its parts' ETags, in part-number order.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: Vec<String>,
    ) -> io::Result<()> {
        let parts = etags
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        self.store
            .complete_multipart(&self.path(key), &upload_id.to_owned(), parts)
            .await
            .map(|_| ())
            .map_err(io_error)
    }

    /// Aborts a multipart upload; aborting one that is gone (S3 answers `404 NoSuchUpload`) is
    /// not an error. Any other refusal is: s3s-fs answers `403 AccessDenied` for an upload id
    /// it does not know, which cannot be told from a key without the permission to abort.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> io::Result<()> {
        match self
            .store
            .abort_multipart(&self.path(key), &upload_id.to_owned())
            .await
        {
            Err(e) if !is_not_found(&e) => Err(io_error(e)),
            _ => Ok(()),
        }
    }
}
