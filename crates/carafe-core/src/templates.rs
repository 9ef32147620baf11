//! Mail templates as the stores keep them: a named template has immutable, numbered
//! versions, and each version holds one variant per locale (subject, text and HTML sources,
//! and an optional layout it is wrapped in). Putting a variant creates the next version,
//! carrying the other locales forward, so a message can record exactly what it was rendered
//! from. The mail capability checks names, locales and sources before they reach these types.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Whether `name` is a template name: 1–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn is_template_name(name: &str) -> bool {
    crate::is_simple_name(name, 64)
}

/// One locale's sources in a template version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateVariant {
    /// A BCP 47 tag as Carafe writes it (`en`, `ko-KR`).
    pub locale: String,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// Another template this one's output is placed in (as its `content`).
    pub layout: Option<String>,
}

/// One immutable version of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVersion {
    pub name: String,
    /// 1, 2, 3… per name.
    pub version: u32,
    /// Its variants, in locale order.
    pub variants: Vec<TemplateVariant>,
    /// Which locale this version's put changed.
    pub changed: String,
    /// Who created this version (`key:…`).
    pub actor: String,
    pub created_at: OffsetDateTime,
}

impl TemplateVersion {
    pub fn variant(&self, locale: &str) -> Option<&TemplateVariant> {
        self.variants.iter().find(|v| v.locale == locale)
    }
}

/// What a message was rendered from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRef {
    pub name: String,
    pub version: u32,
    pub locale: String,
}
