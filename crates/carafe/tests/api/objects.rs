//! What a test sees of stored file bytes, read through the server's own storage, so that the
//! same assertion holds on local disk and on S3.

use std::time::Duration;

use bytes::Bytes;

use crate::helpers::TestApp;

impl TestApp {
    /// Whether an object is stored at `key` (`objects/<id>`, `incoming/<id>`, …).
    pub async fn has_object(&self, key: &str) -> bool {
        let storage = &self.state.files.storage;
        storage.size(key).await.unwrap().is_some()
    }

    /// The bytes stored at `key` (which must exist).
    pub async fn object(&self, key: &str) -> Vec<u8> {
        let storage = &self.state.files.storage;
        storage.read_all(key, u64::MAX).await.unwrap().to_vec()
    }

    /// Stores `bytes` at `key`, replacing what was there.
    pub async fn put_object(&self, key: &str, bytes: Vec<u8>) {
        let storage = &self.state.files.storage;
        storage.put_bytes(key, Bytes::from(bytes)).await.unwrap();
    }

    /// Names of the objects under `prefix/` (`objects`, `thumbs/<id>`, …), however fresh.
    pub async fn objects(&self, prefix: &str) -> Vec<String> {
        let storage = &self.state.files.storage;
        storage.list_older(prefix, Duration::ZERO).await.unwrap()
    }

    /// Names of the temporary upload files: uploads are received in a local directory first,
    /// whatever the storage.
    pub fn temp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.state.files.storage.temp_dir())
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}
