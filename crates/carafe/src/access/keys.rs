//! API keys: how they are made, how a presented key is recognised, and the rules for creating,
//! listing and revoking them. Lookups are cached (positive and negative) for
//! `auth.key_cache_ttl`, so authenticating a request costs no database round trip; revoking
//! through this instance clears the cache at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use carafe_core::keys::{ApiKey, KeyHash, KeyId, KeyName, NewApiKey, Scope, Scopes};
use carafe_core::page::{Page, PageRequest};
use carafe_core::{Store, StoreResult};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::context::Actor;
use crate::secrets::{admin_key_path, write_private};

/// Every key starts with this, so secret scanners and humans can recognise one.
pub const PREFIX: &str = "ck_";
/// Random characters after the prefix: 40 alphanumerics ≈ 238 bits.
const RANDOM_CHARS: usize = 40;
/// Entries in the lookup cache; bounded so random guesses cannot grow memory.
const CACHE_CAPACITY: u64 = 10_000;

/// A freshly created key and its text, which is shown once and never stored.
#[derive(Debug)]
pub struct IssuedKey {
    pub key: ApiKey,
    pub secret: String,
}

pub struct Keys {
    store: Arc<dyn Store>,
    cache: moka::future::Cache<KeyHash, Option<Arc<ApiKey>>>,
}

impl Keys {
    pub fn new(store: Arc<dyn Store>, cache_ttl: Duration) -> Self {
        Keys {
            store,
            cache: moka::future::Cache::builder()
                .max_capacity(CACHE_CAPACITY)
                .time_to_live(cache_ttl)
                .build(),
        }
    }

    pub fn hash(text: &str) -> KeyHash {
        KeyHash(Sha256::digest(text.as_bytes()).into())
    }

    /// Whether `text` has the shape of a Carafe key (checked before any lookup).
    pub fn looks_like_key(text: &str) -> bool {
        text.len() == PREFIX.len() + RANDOM_CHARS
            && text.starts_with(PREFIX)
            && text[PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
    }

    /// The active key `text` names, if any.
    pub async fn authenticate(&self, text: &str) -> StoreResult<Option<Arc<ApiKey>>> {
        if !Self::looks_like_key(text) {
            return Ok(None);
        }
        let hash = Self::hash(text);
        let found = match self.cache.get(&hash).await {
            Some(cached) => cached,
            None => {
                let found = self.store.find_key_by_hash(&hash).await?.map(Arc::new);
                self.cache.insert(hash, found.clone()).await;
                found
            }
        };
        Ok(found.filter(|k| k.is_active()))
    }

    pub async fn create(
        &self,
        name: KeyName,
        scopes: Scopes,
        actor: &Actor,
    ) -> StoreResult<IssuedKey> {
        let secret = format!(
            "{PREFIX}{}",
            rand::rng()
                .sample_iter(Alphanumeric)
                .take(RANDOM_CHARS)
                .map(char::from)
                .collect::<String>()
        );
        let new = NewApiKey {
            id: KeyId::new(),
            name,
            prefix: secret[..PREFIX.len() + 8].to_owned(),
            hash: Self::hash(&secret),
            scopes,
            created_at: carafe_core::time::now(),
        };
        let event = actor.event(
            "key.create",
            Some(format!("key:{}", new.id)),
            json!({"name": new.name.as_str(), "scopes": new.scopes}),
        );
        let key = self.store.insert_key(new, event).await?;
        Ok(IssuedKey { key, secret })
    }

    pub async fn list(&self, page: &PageRequest) -> StoreResult<Page<ApiKey>> {
        self.store.list_keys(page).await
    }

    pub async fn get(&self, id: KeyId) -> StoreResult<Option<ApiKey>> {
        self.store.get_key(id).await
    }

    /// Revokes a key (idempotent); `None` when there is no such key.
    pub async fn revoke(&self, id: KeyId, actor: &Actor) -> StoreResult<Option<ApiKey>> {
        let event = actor.event("key.revoke", Some(format!("key:{id}")), json!({}));
        let revoked = self
            .store
            .revoke_key(id, carafe_core::time::now(), event)
            .await?;
        // Revocations are rare; dropping every cached lookup is simpler than indexing by id.
        self.cache.invalidate_all();
        Ok(revoked)
    }

    /// When no active key exists, creates an admin key and writes it to `<data_dir>/admin-key`
    /// (mode 0600). Returns the file's path when it did.
    pub async fn bootstrap(&self, data_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
        if self.store.count_active_keys().await? > 0 {
            return Ok(None);
        }
        let name = KeyName::parse("bootstrap admin").expect("valid name");
        let actor = Actor {
            id: "system".into(),
            request_id: None,
        };
        let issued = self
            .create(name, Scopes::empty().with(Scope::Admin), &actor)
            .await?;
        let path = admin_key_path(data_dir);
        write_private(&path, &format!("{}\n", issued.secret))?;
        Ok(Some(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_shape_is_checked_before_any_lookup() {
        let good = format!("ck_{}", "a1B2".repeat(10));
        assert!(Keys::looks_like_key(&good));
        assert!(!Keys::looks_like_key(&good[..good.len() - 1]));
        assert!(!Keys::looks_like_key(&format!("xx_{}", "a".repeat(40))));
        assert!(!Keys::looks_like_key(&format!("ck_{}-", "a".repeat(39))));
    }
}
