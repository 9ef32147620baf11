//! The relays mail goes out through, by name. `default` is `mail.smtp_url` (or, unset, the
//! outbox); more are named under `[mail.relays.<name>]`, and a mail or campaign picks one
//! with `relay`. Each relay has its own send queue (`carafe.mail` for `default`,
//! `carafe.mail.<name>` for the others), its own cap on sends in flight, and — when it has a
//! rate — a rate group of the job engine (`mail.relay.<name>`), which every queue sending
//! through it joins: transactional mail and each campaign's queue share the relay's rate,
//! burst and hourly/daily caps across all instances. A throttling reply (`454`, or a `4xx`
//! that says it is about rate) slows the group down; it grows back by itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use carafe_core::jobs::{QueueName, RateGroup, RateGroupState};
use serde::{Deserialize, Serialize};

use super::relay::Relay;
use super::settings::Settings;
use crate::jobs::Jobs;
use crate::values::{HumanDuration, Secret};

/// The name of the relay of `mail.smtp_url`.
pub const DEFAULT: &str = "default";

/// One more relay (`[mail.relays.<name>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    /// As `mail.smtp_url`.
    pub url: Secret,
    /// As `mail.smtp_ca_file`.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Sends in flight to this relay at once (from this process).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// How long one SMTP command may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Messages per second on average, from every instance together (unset: no limit).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Messages at once after a quiet spell (default: one second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
    /// At most this many messages per calendar hour (UTC).
    #[serde(default)]
    pub hourly_limit: Option<u64>,
    /// At most this many messages per calendar day (UTC).
    #[serde(default)]
    pub daily_limit: Option<u64>,
}

fn default_concurrency() -> usize {
    4
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// How fast a relay may be sent to, by every instance together. No `rate`: no limit (and
/// no slowing down on throttling replies; the messages are retried later).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RelayLimits {
    pub rate: Option<f64>,
    pub burst: Option<u32>,
    pub hourly_limit: Option<u64>,
    pub daily_limit: Option<u64>,
}

impl RelayLimits {
    /// The rate group these limits make for relay `name`, if they set a rate.
    pub fn group(&self, name: &str) -> Result<Option<RateGroup>, String> {
        let Some(rate) = self.rate else {
            if self.burst.is_some() || self.hourly_limit.is_some() || self.daily_limit.is_some() {
                return Err("burst, hourly_limit and daily_limit need a rate".into());
            }
            return Ok(None);
        };
        let group = RateGroup {
            name: group_name(name),
            rate_per_second: rate,
            burst: self.burst.unwrap_or_else(|| rate.ceil().max(1.0) as u32),
            hourly: self.hourly_limit,
            daily: self.daily_limit,
        };
        group.check()?;
        Ok(Some(group))
    }
}

/// The rate group of relay `name`.
pub fn group_name(name: &str) -> String {
    format!("mail.relay.{name}")
}

/// The queue relay `name`'s transactional messages are sent from.
pub fn queue_of(name: &str) -> QueueName {
    let name = if name == DEFAULT {
        super::QUEUE.to_owned()
    } else {
        format!("{}.{name}", super::QUEUE)
    };
    QueueName::parse(&name).expect("relay names make valid queue names")
}

/// Checks a relay's name: 1–32 of `a-z`, `0-9` and `-`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "relay name {name:?}: 1-32 characters of a-z, 0-9 and '-', starting with a letter or digit"
        ))
    }
}

/// What every relay is, before it is connected.
pub(super) struct Plan<'a> {
    pub name: &'a str,
    pub url: Option<&'a Secret>,
    pub ca_file: Option<&'a std::path::Path>,
    pub concurrency: usize,
    pub timeout: Duration,
    pub limits: RelayLimits,
}

/// Every relay the settings name, `default` first.
pub(super) fn plans(s: &Settings) -> Vec<Plan<'_>> {
    let default = Plan {
        name: DEFAULT,
        url: s.smtp_url.as_ref(),
        ca_file: s.smtp_ca_file.as_deref(),
        concurrency: s.smtp_concurrency,
        timeout: s.smtp_timeout.0,
        limits: RelayLimits {
            rate: s.smtp_rate,
            burst: s.smtp_burst,
            hourly_limit: s.smtp_hourly_limit,
            daily_limit: s.smtp_daily_limit,
        },
    };
    let more = s.relays.iter().map(|(name, r)| Plan {
        name,
        url: Some(&r.url),
        ca_file: r.ca_file.as_deref(),
        concurrency: r.concurrency,
        timeout: r.timeout.0,
        limits: RelayLimits {
            rate: r.rate,
            burst: r.burst,
            hourly_limit: r.hourly_limit,
            daily_limit: r.daily_limit,
        },
    });
    std::iter::once(default).chain(more).collect()
}

/// Checks every relay's settings without connecting.
pub(super) fn validate(s: &Settings) -> Result<(), String> {
    for p in plans(s) {
        let at = |e: String| format!("mail relay {:?}: {e}", p.name);
        if p.name != DEFAULT {
            check_name(p.name).map_err(at)?;
        }
        if !(1..=256).contains(&p.concurrency) {
            return Err(at("concurrency must be between 1 and 256".into()));
        }
        if p.timeout.is_zero() {
            return Err(at("the timeout must be positive".into()));
        }
        p.limits.group(p.name).map_err(at)?;
        if let Some(url) = p.url {
            super::relay::check(url.expose(), p.ca_file).map_err(at)?;
        }
    }
    Ok(())
}

/// One relay, ready: where it sends (`None`: the outbox), its queue and its rate group.
pub struct RelayEntry {
    pub relay: Option<Relay>,
    pub queue: QueueName,
    pub group: Option<RateGroup>,
}

/// Every configured relay, by name.
pub struct Relays(BTreeMap<String, RelayEntry>);

impl Relays {
    /// Sets up every relay the settings name (needs a Tokio runtime).
    pub fn new(s: &Settings) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for p in plans(s) {
            let relay = p
                .url
                .map(|url| Relay::new(url.expose(), p.ca_file, p.concurrency, p.timeout))
                .transpose()?;
            let entry = RelayEntry {
                relay,
                queue: queue_of(p.name),
                group: p.limits.group(p.name)?,
            };
            map.insert(p.name.to_owned(), entry);
        }
        Ok(Relays(map))
    }

    pub fn get(&self, name: &str) -> Option<&RelayEntry> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &RelayEntry)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Writes each relay's rate group and puts its queue in it (or out of any, for a relay
    /// without a rate), so that every instance's claims honour what this configuration says.
    pub async fn install(&self, jobs: &Jobs) -> carafe_core::StoreResult<()> {
        for entry in self.0.values() {
            if let Some(group) = &entry.group {
                jobs.put_rate_group(group).await?;
            }
            let name = entry.group.as_ref().map(|g| g.name.as_str());
            jobs.set_rate_group(&entry.queue, name).await?;
        }
        Ok(())
    }
}

/// Whether a relay's temporary refusal (its reply `code` and text) says it is about sending
/// too fast: `454` (Amazon SES's "Throttling failure"), or a `421`/`450`/`451` whose text
/// speaks of rate, throttling or too many messages (Gmail's `421 4.7.28`, Microsoft's
/// `451 4.7.500`).
pub fn is_throttling(code: Option<&str>, text: &str) -> bool {
    match code {
        Some("454") => true,
        Some("421" | "450" | "451") => {
            let text = text.to_ascii_lowercase();
            [
                "rate",
                "throttl",
                "too many messages",
                "too many connections",
            ]
            .iter()
            .any(|w| text.contains(w))
        }
        _ => false,
    }
}

/// Where a relay's limits stand, for `GET /api/v1/mail/relays`.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayStatus {
    pub name: String,
    /// `smtp` or `outbox`.
    pub transport: &'static str,
    pub queue: String,
    /// Its rate group as of now (bucket refilled to `tokens_at`, windows moved on); `None`:
    /// no rate. `current_rate(tokens_at)` is the rate it may go at now.
    pub limits: Option<RateGroupState>,
}

impl super::Mailer {
    /// Every relay and where its limits stand.
    pub async fn relay_statuses(&self) -> Result<Vec<RelayStatus>, super::Error> {
        let at = carafe_core::time::now();
        let mut out = Vec::new();
        for (name, entry) in self.relays().iter() {
            let mut limits = None;
            if let Some(group) = &entry.group
                && let Some(state) = self.jobs().rate_group(&group.name).await?
            {
                limits = Some(state.allowance(0, at).1);
            }
            out.push(RelayStatus {
                name: name.to_owned(),
                transport: if entry.relay.is_some() {
                    "smtp"
                } else {
                    "outbox"
                },
                queue: entry.queue.to_string(),
                limits,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_replies_are_told_from_other_temporary_ones() {
        let t = |code: &str, text: &str| is_throttling(Some(code), text);
        assert!(t(
            "454",
            "4.7.0 Throttling failure: Maximum sending rate exceeded."
        ));
        assert!(t(
            "421",
            "4.7.28 Our system has detected an unusual rate of unsolicited mail"
        ));
        assert!(t("451", "4.7.500 Server busy. Too many messages"));
        assert!(!t("451", "4.3.0 Try again later"));
        assert!(!t("452", "4.5.3 Too many recipients"));
        assert!(
            !t("550", "5.7.1 rate limited"),
            "permanent: not a slow-down"
        );
        assert!(!is_throttling(None, "connecting: timed out"));
    }

    #[test]
    fn names_and_limits_are_checked() {
        assert!(check_name("bulk-eu1").is_ok());
        for bad in ["", "Bulk", "-x", "a.b", &"x".repeat(33)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let burst_only = RelayLimits {
            burst: Some(5),
            ..RelayLimits::default()
        };
        assert!(burst_only.group("x").is_err());
        let rated = RelayLimits {
            rate: Some(2.5),
            daily_limit: Some(1000),
            ..RelayLimits::default()
        };
        let g = rated.group("bulk").unwrap().unwrap();
        assert_eq!(
            (g.name.as_str(), g.burst, g.daily),
            ("mail.relay.bulk", 3, Some(1000))
        );
        assert_eq!(queue_of("bulk").as_str(), "carafe.mail.bulk");
        assert_eq!(queue_of(DEFAULT).as_str(), "carafe.mail");
    }
}
