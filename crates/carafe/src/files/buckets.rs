//! Buckets: the rules a bucket policy must follow wherever it comes from (the API or the
//! configuration file), which buckets cannot take uploads without a scanner, and buckets as
//! callers read and change them (server API keys only; a bucket the configuration file
//! defines is changed there, never through the API).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use carafe_core::files::{Bucket, BucketName, BucketPolicy};
use carafe_core::keys::Scope;
use carafe_core::time::now;
use carafe_core::{StoreError, StoreResult};
use serde_json::json;

use super::Files;
use super::check::sniff::Kind;
use crate::context::{Actor, Denied, FieldError, Principal};

/// Why a request about a bucket is refused.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("no such bucket")]
    NotFound,
    /// The configuration file defines this bucket: it is changed there.
    #[error("the bucket is defined in the configuration file")]
    ManagedByConfig,
    #[error("the policy has invalid fields")]
    Invalid(Vec<FieldError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Most thumbnail sizes per bucket, and the largest side of one.
const MAX_THUMBNAILS: usize = 8;
const MAX_THUMBNAIL_SIDE: u32 = 4096;

/// Checks a policy; each problem names its field.
/// `can_encrypt`: whether a master key is configured.
pub fn validate(
    policy: &BucketPolicy,
    settings: &super::Settings,
    can_encrypt: bool,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: String| errors.push(FieldError::new(field, message));
    if policy.max_size == 0 || policy.max_size > settings.max_upload_bytes {
        bad(
            "/max_size",
            format!(
                "between 1 and {} (files.max_upload_bytes)",
                settings.max_upload_bytes
            ),
        );
    }
    if policy.allowed_types.is_empty() {
        bad("/allowed_types", "name at least one type".into());
    }
    for (i, t) in policy.allowed_types.iter().enumerate() {
        if Kind::from_name(t).is_none_or(|k| k == Kind::Unknown) {
            let known: Vec<&str> = Kind::all()
                .filter(|k| *k != Kind::Unknown)
                .map(Kind::name)
                .collect();
            bad(
                &format!("/allowed_types/{i}"),
                format!("unknown type; known: {}", known.join(", ")),
            );
        }
    }
    if policy.thumbnails.len() > MAX_THUMBNAILS {
        bad("/thumbnails", format!("at most {MAX_THUMBNAILS}"));
    }
    let mut names = HashSet::new();
    for (i, t) in policy.thumbnails.iter().enumerate() {
        let name_ok = !t.name.is_empty()
            && t.name.len() <= 32
            && t.name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
        if !name_ok || !names.insert(t.name.as_str()) {
            bad(
                &format!("/thumbnails/{i}/name"),
                "unique, 1-32 of a-z, 0-9, '_' and '-'".into(),
            );
        }
        if !(1..=MAX_THUMBNAIL_SIDE).contains(&t.width)
            || !(1..=MAX_THUMBNAIL_SIDE).contains(&t.height)
        {
            bad(
                &format!("/thumbnails/{i}"),
                format!("width and height between 1 and {MAX_THUMBNAIL_SIDE}"),
            );
        }
    }
    if policy
        .retention_days
        .is_some_and(|d| !(1..=36_500).contains(&d))
    {
        bad("/retention_days", "between 1 and 36500".into());
    }
    if policy.encrypt && !can_encrypt {
        bad(
            "/encrypt",
            "encryption at rest needs a master key: set `master_key` in the configuration".into(),
        );
    }
    if let Some(cc) = &policy.cache_control
        && (cc.is_empty() || cc.len() > 200 || !cc.bytes().all(|b| (0x20..0x7f).contains(&b)))
    {
        bad("/cache_control", "1-200 printable ASCII characters".into());
    }
    errors
}

/// Names of the buckets whose policy requires scanning, as they are once the configuration
/// file's buckets are applied over the `stored` ones: while no scanner is configured, these
/// refuse every upload.
pub fn requiring_scanner(stored: &[Bucket], settings: &super::Settings) -> Vec<String> {
    let mut policies: BTreeMap<&str, &BucketPolicy> = stored
        .iter()
        .map(|b| (b.name.as_str(), &b.policy))
        .collect();
    policies.extend(settings.buckets.iter().map(|(n, p)| (n.as_str(), p)));
    policies
        .into_iter()
        .filter(|(_, p)| p.scan.needs_scanner())
        .map(|(n, _)| n.to_owned())
        .collect()
}

impl Files {
    /// Creates the `default` bucket and the buckets of the configuration file.
    pub async fn ensure_buckets(&self) -> StoreResult<()> {
        let at = now();
        let default = BucketName::default_bucket();
        let mut configured = self.settings.buckets.clone();
        let default_policy = configured.remove(default.as_str());
        let mut put = vec![(
            default.clone(),
            default_policy.clone(),
            default_policy.is_some(),
        )];
        for (name, policy) in configured {
            if let Ok(name) = BucketName::parse(&name) {
                put.push((name, Some(policy), true));
            }
        }
        for (name, policy, replace) in put {
            let bucket = Bucket {
                name,
                policy: policy.unwrap_or_default(),
                created_at: at,
                updated_at: at,
            };
            self.store.put_bucket(bucket, replace).await?;
        }
        Ok(())
    }

    /// A bucket, from a short-lived cache.
    pub async fn bucket(&self, name: &BucketName) -> StoreResult<Option<Arc<Bucket>>> {
        if let Some(b) = self.buckets.get(name).await {
            return Ok(Some(b));
        }
        let Some(bucket) = self.store.get_bucket(name).await? else {
            return Ok(None);
        };
        let bucket = Arc::new(bucket);
        self.buckets.insert(name.clone(), bucket.clone()).await;
        Ok(Some(bucket))
    }

    /// Creates or replaces the bucket `name` with `policy`; true when it was created.
    pub async fn put_bucket(
        &self,
        principal: &Principal,
        name: &str,
        policy: BucketPolicy,
        actor: Actor,
    ) -> Result<(Bucket, bool), BucketError> {
        principal.require_key(Scope::Files)?;
        let name = BucketName::parse(name)
            .map_err(|e| BucketError::Invalid(vec![FieldError::new("name", e)]))?;
        if self.settings.buckets.contains_key(name.as_str()) {
            return Err(BucketError::ManagedByConfig);
        }
        let errors = validate(&policy, &self.settings, self.keys.can_encrypt());
        if !errors.is_empty() {
            return Err(BucketError::Invalid(errors));
        }
        let at = now();
        let bucket = Bucket {
            name: name.clone(),
            policy,
            created_at: at,
            updated_at: at,
        };
        let (bucket, created) = self.store.put_bucket(bucket, true).await?;
        self.buckets.invalidate(&name).await;
        let event = actor.event(
            "bucket.put",
            Some(format!("bucket:{name}")),
            json!(bucket.policy),
        );
        self.store.append_audit(event).await?;
        Ok((bucket, created))
    }

    /// A bucket as it is stored now (not from the cache).
    pub async fn get_bucket(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<Bucket, BucketError> {
        principal.require_key(Scope::Files)?;
        let name = BucketName::parse(name).map_err(|_| BucketError::NotFound)?;
        self.store
            .get_bucket(&name)
            .await?
            .ok_or(BucketError::NotFound)
    }

    /// Every bucket, by name.
    pub async fn list_buckets(&self, principal: &Principal) -> Result<Vec<Bucket>, BucketError> {
        principal.require_key(Scope::Files)?;
        Ok(self.store.list_buckets().await?)
    }
}
