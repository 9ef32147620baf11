//! Files' records as callers may see them: applications' backends (API keys with `files`) see
//! every file, end users (tokens with `files`) only the files they own. A file the caller may
//! not see is not found, never forbidden: that would say it exists.

use std::sync::Arc;

use carafe_core::StoreError;
use carafe_core::files::{FileFilter, FileId, FileRecord};
use carafe_core::keys::Scope;
use carafe_core::page::{Page, PageRequest};

use super::Files;
use crate::context::{Denied, FieldError, Principal};

/// Why a request about a file is refused.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Denied(#[from] Denied),
    /// No such file, or not one the caller may see.
    #[error("no such file")]
    NotFound,
    /// Only ready files can be linked.
    #[error("the file is not ready")]
    NotReady,
    /// Under legal hold, a file is never deleted.
    #[error("the file is under legal hold")]
    LegalHold,
    #[error("{}: {}", .0.field, .0.message)]
    Invalid(FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Files {
    /// A file the caller may see, as it is stored now, whatever its status.
    pub async fn get_visible(
        &self,
        principal: &Principal,
        id: FileId,
    ) -> Result<FileRecord, RecordError> {
        principal.require(Scope::Files)?;
        // Read through the store: the cache only holds ready files, and this shows any status.
        match self.store.get_file(id).await? {
            Some(f) if principal.may_see(Scope::Files, f.owner.as_deref()) => Ok(f),
            _ => Err(RecordError::NotFound),
        }
    }

    /// A file the caller may see; ready files come from the short-lived cache.
    pub(super) async fn visible(
        &self,
        principal: &Principal,
        id: FileId,
    ) -> Result<Arc<FileRecord>, RecordError> {
        principal.require(Scope::Files)?;
        match self.file(id).await? {
            Some(f) if principal.may_see(Scope::Files, f.owner.as_deref()) => Ok(f),
            _ => Err(RecordError::NotFound),
        }
    }

    /// The files matching `filter` that the caller may see, newest first: an end user's list
    /// holds only their own, whatever owner the filter names.
    pub async fn list(
        &self,
        principal: &Principal,
        mut filter: FileFilter,
        page: &PageRequest,
    ) -> Result<Page<FileRecord>, RecordError> {
        principal.require(Scope::Files)?;
        if let Principal::User(u) = principal {
            filter.owner = Some(u.id.clone());
        }
        Ok(self.store.list_files(&filter, page).await?)
    }
}
