//! Carafe's configuration: one typed struct, filled in layers — built-in defaults, then an
//! optional `carafe.toml`, then `CARAFE_*` environment variables (nested keys joined with `__`,
//! secrets also readable from a file named by `…_FILE`), then command-line flags.
//!
//! Everything that reads a setting gets it from this struct; nothing reads the environment
//! later. Unknown `CARAFE_*` variables are collected as warnings (a typo should not go silent),
//! while an unknown key in the TOML file is an error.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

mod limits;

pub use limits::{DEFAULT_IDEMPOTENCY_LOCK, Limits};

use crate::values::list;
pub use crate::values::{HumanDuration, Secret, TrustedProxy};

/// Settings whose values are secrets: masked in `carafe config`, readable from `…_FILE`.
pub const SECRET_KEYS: [&str; 6] = [
    "secret_key",
    "database_url",
    "storage_url",
    "push.secret",
    "master_key",
    "mail.smtp_url",
];

/// The example configuration printed by `carafe config example`.
pub const EXAMPLE_TOML: &str = include_str!("config/example.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// The URL clients use to reach Carafe; absolute links are built from it.
    pub public_url: Option<Url>,
    /// Proxies whose `X-Forwarded-Proto`/`X-Forwarded-Host` are believed (IPs or CIDRs).
    #[serde(deserialize_with = "list::deserialize")]
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Where Carafe keeps its SQLite database, secret key and bootstrap admin key.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; unset means SQLite in the data dir.
    pub database_url: Option<Secret>,
    /// Connections in the database pool (SQLite: readers; there is always one writer).
    pub database_max_connections: u32,
    /// Key for signing tokens and sealing stored answers (at least 32 characters); generated
    /// into the data dir when unset. Set it explicitly when several instances share a database.
    pub secret_key: Option<Secret>,
    /// Where file bytes are kept: unset means local disk under the data dir, `file:///path`
    /// another directory, `s3://bucket?endpoint=…&region=…` any S3-compatible store.
    pub storage_url: Option<Secret>,
    /// The master key of encrypted buckets: 32 random bytes as base64 (`openssl rand -base64
    /// 32`). It wraps each file's own data key; buckets with `encrypt` need it.
    pub master_key: Option<Secret>,
    /// Earlier master keys, still accepted for reading until `carafe keys rotate-master` has
    /// rewrapped every file under `master_key`.
    pub master_keys_previous: Vec<Secret>,
    /// The virus scanner (clamd): `tcp://host:3310` or `unix:///run/clamav/clamd.sock`. Unset:
    /// files are not scanned (marked `unscanned`), and buckets that require scanning refuse
    /// uploads.
    pub clamd_url: Option<String>,
    /// `error`, `warn`, `info`, `debug`, `trace`, or a full filter such as `info,sqlx=warn`.
    pub log_level: String,
    /// `json`, `pretty`, or `auto` (JSON unless standard error is a terminal).
    pub log_format: LogFormat,
    /// Browser origins allowed to call the API (`https://app.example.com`), or `*` for any.
    #[serde(deserialize_with = "list::deserialize")]
    pub cors_origins: Vec<String>,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub shutdown_timeout: HumanDuration,
    pub limits: Limits,
    pub auth: crate::access::Settings,
    pub metrics: Metrics,
    pub jobs: crate::jobs::Settings,
    pub push: crate::jobs::PushSettings,
    pub files: crate::files::Settings,
    pub mail: crate::mail::Settings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Serve `/metrics` without authentication (otherwise an admin API key is required).
    pub public: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            trusted_proxies: Vec::new(),
            data_dir: PathBuf::from("./carafe-data"),
            database_url: None,
            database_max_connections: 10,
            secret_key: None,
            log_level: "info".into(),
            log_format: LogFormat::Auto,
            cors_origins: Vec::new(),
            shutdown_timeout: HumanDuration(Duration::from_secs(30)),
            limits: Limits::default(),
            auth: Default::default(),
            metrics: Metrics::default(),
            jobs: Default::default(),
            push: Default::default(),
            files: Default::default(),
            mail: Default::default(),
            storage_url: None,
            master_key: None,
            master_keys_previous: Vec::new(),
            clamd_url: None,
        }
    }
}

/// Values given on the command line; they override every other layer.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
}

/// A loaded configuration and the warnings met while loading it (logged once logging is up).
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Invalid(String),
    #[error("configuration: {0}")]
    Figment(#[from] Box<figment::Error>),
}

impl Config {
    /// Loads the layers. `file` is an explicit `--config` path (which must exist); without it
    /// `./carafe.toml` is read when present. `env` is the process environment (passed in so
    /// tests can load configurations side by side).
    pub fn load(
        file: Option<&Path>,
        env: &[(String, String)],
        overrides: &Overrides,
    ) -> Result<Loaded, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new("carafe.toml").is_file() => {
                figment = figment.merge(Toml::file_exact("carafe.toml"))
            }
            None => {}
        }
        let (env_layer, warnings) = env_layer(env)?;
        figment = figment.merge(env_layer);
        if let Some(listen) = overrides.listen {
            figment = figment.merge(("listen", listen));
        }
        if let Some(dir) = &overrides.data_dir {
            figment = figment.merge(("data_dir", dir));
        }
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(Loaded { config, warnings })
    }

    /// Checks values that types alone cannot (also run by `App::build` for configurations
    /// built in code).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if let Some(url) = &self.public_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return bad(format!("public_url must be http(s), not {}", url.scheme()));
        }
        if let Some(key) = &self.secret_key
            && key.expose().len() < 32
        {
            return bad("secret_key must be at least 32 characters".into());
        }
        for key in self.master_key.iter().chain(&self.master_keys_previous) {
            if let Err(e) = crate::files::store::master_keys::MasterKey::parse(key.expose()) {
                return bad(format!("master_key: {e}"));
            }
        }
        if let Some(url) = &self.database_url {
            let url = url.expose();
            if !["sqlite:", "postgres://", "postgresql://"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                return bad("database_url must start with sqlite: or postgres://".into());
            }
        }
        for origin in &self.cors_origins {
            if origin != "*" && !is_origin(origin) {
                return bad(format!(
                    "cors_origins: `{origin}` is not an origin like https://app.example.com"
                ));
            }
        }
        if !(1..=1000).contains(&self.database_max_connections) {
            return bad("database_max_connections must be between 1 and 1000".into());
        }
        self.limits.validate().map_err(ConfigError::Invalid)?;
        self.jobs.validate().map_err(ConfigError::Invalid)?;
        self.push.validate().map_err(ConfigError::Invalid)?;
        self.files.validate().map_err(ConfigError::Invalid)?;
        self.mail.validate().map_err(ConfigError::Invalid)?;
        if let Some(url) = &self.storage_url {
            let url = url.expose();
            if !["file://", "s3://"].iter().any(|p| url.starts_with(p)) {
                return bad("storage_url must start with file:// or s3://".into());
            }
        }
        if let Some(url) = &self.clamd_url
            && crate::files::check::scan::parse_url(url).is_err()
        {
            return bad("clamd_url must be tcp://host:port or unix:///path".into());
        }
        self.auth.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }

    /// The server secret: `secret_key`, else the one kept in the data dir.
    pub fn secrets(&self) -> anyhow::Result<crate::secrets::Secrets> {
        crate::secrets::Secrets::load(self.secret_key.as_ref(), &self.data_dir)
    }

    /// The master keys of encrypted files, as configured.
    pub fn master_keys(&self) -> anyhow::Result<crate::files::store::master_keys::MasterKeys> {
        crate::files::store::master_keys::MasterKeys::new(
            self.master_key.as_ref(),
            &self.master_keys_previous,
        )
    }

    /// The effective configuration as TOML, secrets masked (for `carafe config`).
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        shown.secret_key = shown.secret_key.map(|_| Secret::new("********".into()));
        shown.push.secret = shown.push.secret.map(|_| Secret::new("********".into()));
        shown.master_key = shown.master_key.map(|_| Secret::new("********".into()));
        for k in &mut shown.master_keys_previous {
            *k = Secret::new("********".into());
        }
        shown.database_url = shown
            .database_url
            .map(|u| Secret::new(mask_url(u.expose())));
        shown.storage_url = shown.storage_url.map(|u| Secret::new(mask_url(u.expose())));
        toml::to_string_pretty(&shown).expect("config renders")
    }

    /// The SQLite file used when no database URL is set.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("carafe.db")
    }
}

/// Builds the environment layer and the warnings for variables that name no setting.
fn env_layer(env: &[(String, String)]) -> Result<(Figment, Vec<String>), ConfigError> {
    let known = known_keys();
    let mut warnings = Vec::new();
    let mut layer = Figment::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("CARAFE_") else {
            continue;
        };
        // Variables for the test suite and the benchmarks are not settings.
        if rest.starts_with("TEST_") || rest.starts_with("BENCH_") {
            continue;
        }
        let key = rest.to_ascii_lowercase().replace("__", ".");
        if let Some(secret) = key.strip_suffix("_file")
            && SECRET_KEYS.contains(&secret)
        {
            let plain = format!("CARAFE_{}", secret.to_uppercase().replace('.', "__"));
            if env.iter().any(|(n, _)| *n == plain) {
                return Err(ConfigError::Invalid(format!(
                    "both {name} and {plain} are set; set one"
                )));
            }
            let text = std::fs::read_to_string(value)
                .map_err(|e| ConfigError::Invalid(format!("{name}: cannot read {value}: {e}")))?;
            layer = layer.merge((secret, text.trim_end_matches(['\n', '\r'])));
        } else if SECRET_KEYS.contains(&key.as_str()) {
            layer = layer.merge((key, value.as_str()));
        } else if known.contains(&key) || is_relay_key(&key) {
            // Like figment's own Env provider: `true`, `42` and `[a, b]` become typed values.
            let typed: figment::value::Value =
                value.parse().expect("parsing a Value is infallible");
            layer = layer.merge((key, typed));
        } else {
            warnings.push(format!("unknown environment variable {name} ignored"));
        }
    }
    Ok((layer, warnings))
}

/// `mail.relays.<name>.<setting>`: the settings of a relay named in the environment (an
/// unknown setting is refused when the configuration is read).
fn is_relay_key(key: &str) -> bool {
    key.strip_prefix("mail.relays.")
        .is_some_and(|rest| rest.split('.').count() == 2)
}

/// Every setting's dotted key (`listen`, `limits.json_body_bytes`, …), read off the defaults.
fn known_keys() -> BTreeSet<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
        if let serde_json::Value::Object(map) = value {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                walk(&key, v, out);
                out.insert(key);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(
        "",
        &serde_json::to_value(Config::default()).expect("serializes"),
        &mut out,
    );
    out
}

fn is_origin(text: &str) -> bool {
    Url::parse(text).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some()
            && u.path() == "/"
            && !text.ends_with('/')
            && u.query().is_none()
            && u.username().is_empty()
    })
}

/// Hides the password of a database URL.
pub fn mask_url(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("********"));
            }
            // Secrets can also ride in the query (S3 storage URLs).
            let secret = |k: &str| {
                ["secret", "token", "password"]
                    .iter()
                    .any(|s| k.contains(s))
            };
            if u.query_pairs().any(|(k, _)| secret(&k)) {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if secret(&k) {
                            "********".into()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "********".into(),
    }
}

/// Lists may be written as TOML arrays or, in the environment, as comma-separated text.
#[cfg(test)]
mod tests;
