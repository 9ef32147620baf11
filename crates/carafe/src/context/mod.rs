//! What a capability is told about the request it serves, without knowing HTTP: who asks
//! (`Principal`), as whom a change is recorded (`Actor`, with the client's address in
//! `Origin`), the base of the URLs it answers with (`BaseUrl`), and how a field is refused
//! (`FieldError`). The web layer (`api`) builds these from requests; capabilities take them as
//! arguments, so they never import the web layer.

mod actor;
mod principal;

pub use actor::{Actor, Origin};
pub use principal::{Denied, Principal, User};

use serde::Serialize;
use url::Url;
use utoipa::ToSchema;

/// The base URL of a request, ending without a slash: absolute URLs in answers start with it.
#[derive(Debug, Clone)]
pub struct BaseUrl(pub Url);

impl BaseUrl {
    /// `base` + an absolute path (which may carry a query).
    pub fn join(&self, path_and_query: &str) -> String {
        let base = self.0.as_str().trim_end_matches('/');
        format!("{base}{path_and_query}")
    }
}

/// One refused field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// JSON pointer to the field (`/scopes/1`), or the query parameter's name.
    pub field: String,
    pub message: String,
    /// Where in the field's text the problem is (1-based), for fields that hold source text
    /// such as a template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
            line: None,
            column: None,
        }
    }

    /// The same refusal, pointing at a line and column of the field's text.
    pub fn at(mut self, line: Option<u32>, column: Option<u32>) -> Self {
        self.line = line;
        self.column = column;
        self
    }
}
