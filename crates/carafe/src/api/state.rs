//! What every request handler can reach: the configuration, the store, and the services built
//! on it. Cloning an `AppState` is one reference-count increment.

use std::ops::Deref;
use std::sync::Arc;

use carafe_core::Store;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::access::keys::Keys;
use crate::access::tokens::Tokens;
use crate::api::observe::Observer;
use crate::config::Config;
use crate::files::Files;
use crate::jobs::Jobs;
use crate::mail::Mailer;
use crate::secrets::Sealer;

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub audit: crate::audit::AuditLog,
    pub keys: Arc<Keys>,
    pub tokens: Tokens,
    pub sealer: Sealer,
    pub observer: Observer,
    pub jobs: Arc<Jobs>,
    pub files: Arc<Files>,
    pub mail: Arc<Mailer>,
    /// Cancelled when the server begins to shut down: long polls and event streams end.
    pub shutdown: CancellationToken,
    /// Base for absolute URLs when no `public_url` is configured and no trusted proxy said
    /// otherwise: the address the server actually bound.
    pub fallback_base: Url,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        AppState(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
