//! Who may call: server API keys (only their hash is stored; scopes; cached lookups) and the
//! short-lived end-user tokens an application mints for its users.

pub mod keys;
mod settings;
pub mod tokens;

pub use keys::Keys;
pub use settings::Settings;
pub use tokens::Tokens;
