//! Mail templates: numbered, immutable versions per name, each a set of locale variants.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::StoreResult;
use crate::page::{Page, PageRequest};
use crate::templates::{TemplateVariant, TemplateVersion};

#[async_trait]
pub trait TemplateStore: Send + Sync {
    /// Creates the next version of `name` (1 for a new name): the latest version's variants
    /// with `variant` in place of the one of the same locale (or added). Concurrent puts of
    /// one name each get their own version number, and each carries the other's locale
    /// forward only if it committed first. Returns the version as stored.
    async fn put_template(
        &self,
        name: &str,
        variant: TemplateVariant,
        actor: &str,
        now: OffsetDateTime,
    ) -> StoreResult<TemplateVersion>;
    /// A version of `name`, the latest when `version` is `None`.
    async fn get_template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> StoreResult<Option<TemplateVersion>>;
    /// The versions of `name`, newest first; `after` is a version number.
    async fn template_versions(
        &self,
        name: &str,
        page: &PageRequest,
    ) -> StoreResult<Page<TemplateVersion>>;
    /// The latest version of every template, in name order; `after` is a name.
    async fn list_templates(&self, page: &PageRequest) -> StoreResult<Page<TemplateVersion>>;
    /// Removes `name` with all its versions; false when there was none. A name put again
    /// afterwards starts over at version 1.
    async fn delete_template(&self, name: &str) -> StoreResult<bool>;
}
