//! The audit log: every change is attributed to an actor (`context::Actor`: an API key, an end
//! user, the CLI) and recorded, append-only, with the request that caused it; it is read back
//! filtered and exported as CSV.

pub mod csv;
pub mod writer;

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use carafe_core::audit::{AuditEvent, AuditFilter};
use carafe_core::keys::Scope;
use carafe_core::page::{Page, PageRequest};
use carafe_core::{Store, StoreError};
use futures::Stream;

use crate::context::{Denied, Principal};

/// Why the log is not read.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The log as callers read it.
pub struct AuditLog {
    store: Arc<dyn Store>,
}

impl AuditLog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        AuditLog { store }
    }

    /// One page of the events `filter` matches, newest first.
    pub async fn page(
        &self,
        principal: &Principal,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEvent>, AuditError> {
        authorize(principal, filter.target.is_some())?;
        Ok(self.store.list_audit(filter, page).await?)
    }

    /// Every event `filter` matches, as CSV, fetched a page at a time as the stream is read.
    pub fn export(
        &self,
        principal: &Principal,
        filter: AuditFilter,
    ) -> Result<impl Stream<Item = io::Result<Bytes>> + Send + 'static, Denied> {
        authorize(principal, filter.target.is_some())?;
        let store = self.store.clone();
        Ok(csv::export(move |page| {
            let (store, filter) = (store.clone(), filter.clone());
            async move { store.list_audit(&filter, &page).await }
        }))
    }
}

/// Who reads which events. Admin keys read the whole log. A key with the `files` scope may
/// read the events of one file at a time (`one_file`: the filter names one file): such a key may already read,
/// link and delete any file, so a file's history tells it nothing beyond its reach, while the
/// rest of the log (keys, buckets, other capabilities) stays admin-only. End-user tokens never
/// read the log, not even for their own files: the events carry other callers' IP addresses
/// and user agents. Everyone else gets the usual 403 `insufficient_scope` naming `admin`.
pub fn authorize(principal: &Principal, one_file: bool) -> Result<(), Denied> {
    if let Principal::Key(key) = principal
        && one_file
        && key.scopes.allows(Scope::Files)
    {
        return Ok(());
    }
    principal.require(Scope::Admin)
}
