//! The audit log: every change is attributed to an actor (`context::Actor`: an API key, an end
//! user, the CLI) and recorded, append-only, with the request that caused it; it is read back
//! filtered and exported as CSV.

pub mod csv;
pub mod writer;

use carafe_core::keys::Scope;

use crate::context::{Denied, Principal};

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
