//! The rules a bucket policy must follow wherever it comes from (the API or the
//! configuration file), and which buckets cannot take uploads without a scanner.

use std::collections::{BTreeMap, HashSet};

use carafe_core::files::{Bucket, BucketPolicy};

use super::check::sniff::Kind;
use crate::context::FieldError;

/// Most thumbnail sizes per bucket, and the largest side of one.
const MAX_THUMBNAILS: usize = 8;
const MAX_THUMBNAIL_SIDE: u32 = 4096;

/// Checks a policy; each problem names its field.
/// `can_encrypt`: whether a master key is configured.
pub fn validate(
    policy: &BucketPolicy,
    settings: &crate::files::Settings,
    can_encrypt: bool,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, message: String| {
        errors.push(FieldError {
            field: field.into(),
            message,
        })
    };
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
pub fn requiring_scanner(stored: &[Bucket], settings: &crate::files::Settings) -> Vec<String> {
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
