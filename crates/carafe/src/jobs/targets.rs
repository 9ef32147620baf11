//! Which addresses push deliveries may reach. Carafe usually runs inside a private network,
//! beside databases, admin consoles and the cloud's metadata service (169.254.169.254); a
//! `jobs` API key must not be a way to make Carafe call those, read their answer back as a
//! job's `result`, or tell open ports from closed ones by a job's error. So a push target must
//! resolve to public addresses only, unless the operator opens hosts or networks with
//! `push.allow_hosts`, or turns the check off with `push.allow_private_networks`.
//!
//! One policy serves both checks: at enqueue (an early, clear 422) and at delivery, where it
//! runs inside the HTTP client's resolver on the very addresses it connects to, since a name
//! that resolved to a public address at enqueue may resolve elsewhere later (DNS rebinding).
//!
//! The classifier is written out here: `std`'s `IpAddr::is_global` is still unstable, and no
//! crate in the workspace judges IPv6 forms that carry an IPv4 address (mapped, NAT64, 6to4)
//! by that address. It fails closed: IPv6 outside the global unicast block `2000::/3` is refused.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use url::Url;

/// How long the enqueue check waits for DNS before leaving the decision to delivery.
const ENQUEUE_LOOKUP: Duration = Duration::from_secs(5);

/// Why a target is refused. The text is the same whatever listens (or not) at the address:
/// Carafe never connects to a refused address, so nothing about it can be learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the target is not allowed: it resolves to a non-public address (see push.allow_hosts)")]
pub struct NotAllowed;

/// Why a name gave no addresses to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot resolve the target: {0}")]
    Lookup(std::io::Error),
    #[error(transparent)]
    NotAllowed(NotAllowed),
}

/// One entry of `push.allow_hosts`: a host name (exact, any case; allowed whatever it resolves
/// to), or an IP address or CIDR range (resolved addresses inside it are allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowHost {
    Name(String),
    Net(IpNet),
}

impl FromStr for AllowHost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(net) = s.parse::<IpNet>() {
            return Ok(AllowHost::Net(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AllowHost::Net(IpNet::from(ip)));
        }
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if s.len() <= 253 && s.split('.').all(label_ok) {
            return Ok(AllowHost::Name(s.to_ascii_lowercase()));
        }
        Err(format!(
            "push.allow_hosts: `{s}` is not a host name (such as hooks.internal), an IP address \
             or a CIDR range (such as 10.1.0.0/16); wildcards, ports and URLs are not accepted"
        ))
    }
}

impl fmt::Display for AllowHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowHost::Name(n) => f.write_str(n),
            AllowHost::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr()),
            AllowHost::Net(n) => write!(f, "{n}"),
        }
    }
}

impl Serialize for AllowHost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AllowHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The policy built from `push.allow_hosts` and `push.allow_private_networks`.
#[derive(Debug, Clone, Default)]
pub struct TargetPolicy {
    names: Vec<String>,
    nets: Vec<IpNet>,
    open: bool,
}

impl TargetPolicy {
    pub fn new(allow_hosts: &[AllowHost], allow_private_networks: bool) -> Self {
        let mut policy = TargetPolicy {
            open: allow_private_networks,
            ..TargetPolicy::default()
        };
        for entry in allow_hosts {
            match entry {
                AllowHost::Name(n) => policy.names.push(n.to_ascii_lowercase()),
                AllowHost::Net(n) => policy.nets.push(*n),
            }
        }
        policy
    }

    fn name_allowed(&self, name: &str) -> bool {
        self.names.iter().any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Whether Carafe may connect to `ip`. An IPv4-mapped address counts as its IPv4 address
    /// for the allowlist too.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        self.open
            || is_public(ip)
            || self
                .nets
                .iter()
                .any(|n| n.contains(&ip) || n.contains(&ip.to_canonical()))
    }

    /// Judges what needs no DNS: IP literals (HTTP clients connect to those without asking
    /// any resolver) and allowlisted names. `Ok(Some(name))` is a name still to be resolved
    /// and checked; `Ok(None)` is allowed as it stands.
    pub fn check_literal<'u>(&self, url: &'u Url) -> Result<Option<&'u str>, NotAllowed> {
        if self.open {
            return Ok(None);
        }
        let ip = match url.host() {
            None => return Err(NotAllowed),
            Some(url::Host::Domain(name)) if self.name_allowed(name) => return Ok(None),
            Some(url::Host::Domain(name)) => return Ok(Some(name)),
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        };
        if self.address_allowed(ip) {
            Ok(None)
        } else {
            Err(NotAllowed)
        }
    }

    /// Resolves `name` and refuses it whole if any of its addresses is not allowed (a client
    /// may try every address it is given). The port of the answers is 0; callers set theirs.
    pub async fn resolve(&self, name: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name, 0))
            .await
            .map_err(ResolveError::Lookup)?
            .collect();
        if self.open
            || self.name_allowed(name)
            || addrs.iter().all(|a| self.address_allowed(a.ip()))
        {
            Ok(addrs)
        } else {
            Err(ResolveError::NotAllowed(NotAllowed))
        }
    }

    /// The enqueue check of a target URL. A name that cannot be resolved now (or not within
    /// a few seconds) is accepted: DNS may be down for a moment, and delivery checks again.
    pub async fn check(&self, target: &str) -> Result<(), NotAllowed> {
        let url = Url::parse(target).map_err(|_| NotAllowed)?;
        let Some(name) = self.check_literal(&url)? else {
            return Ok(());
        };
        match tokio::time::timeout(ENQUEUE_LOOKUP, self.resolve(name)).await {
            Ok(Err(ResolveError::NotAllowed(e))) => Err(e),
            Ok(Err(ResolveError::Lookup(_)) | Ok(_)) | Err(_) => Ok(()),
        }
    }
}

/// Whether `ip` is a public unicast address: not private, loopback, link-local, multicast,
/// reserved, documentation or any other special-purpose range (IANA's registries), and for
/// IPv6 forms that carry an IPv4 address, whether that address is.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

/// IPv4 ranges that are not public, as (network, prefix length).
const REFUSED_V4: [(Ipv4Addr, u8); 15] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8),       // "this network", 0.0.0.0
    (Ipv4Addr::new(10, 0, 0, 0), 8),      // private
    (Ipv4Addr::new(100, 64, 0, 0), 10),   // carrier-grade NAT
    (Ipv4Addr::new(127, 0, 0, 0), 8),     // loopback
    (Ipv4Addr::new(169, 254, 0, 0), 16),  // link-local, cloud metadata
    (Ipv4Addr::new(172, 16, 0, 0), 12),   // private
    (Ipv4Addr::new(192, 0, 0, 0), 24),    // IETF protocol assignments
    (Ipv4Addr::new(192, 0, 2, 0), 24),    // documentation (TEST-NET-1)
    (Ipv4Addr::new(192, 88, 99, 0), 24),  // 6to4 relay anycast (deprecated)
    (Ipv4Addr::new(192, 168, 0, 0), 16),  // private
    (Ipv4Addr::new(198, 18, 0, 0), 15),   // benchmarking
    (Ipv4Addr::new(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (Ipv4Addr::new(203, 0, 113, 0), 24),  // documentation (TEST-NET-3)
    (Ipv4Addr::new(224, 0, 0, 0), 4),     // multicast
    (Ipv4Addr::new(240, 0, 0, 0), 4),     // reserved, and the broadcast 255.255.255.255
];

/// IPv6 ranges inside `2000::/3` that are not public.
const REFUSED_V6: [(Ipv6Addr, u8); 3] = [
    // IETF protocol assignments: Teredo (2001::/32), benchmarking (2001:2::/48), ORCHID, …
    (Ipv6Addr::new(0x2001, 0, 0, 0, 0, 0, 0, 0), 23),
    (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (Ipv6Addr::new(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),     // documentation (RFC 9637)
];

/// IPv6 ranges whose last 32 bits are an IPv4 address, judged as that address.
const CARRY_V4: [(Ipv6Addr, u8); 3] = [
    (Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96), // IPv4-mapped
    (Ipv6Addr::UNSPECIFIED, 96),                      // IPv4-compatible (deprecated)
    (Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96), // NAT64
];

fn in_v4(ip: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}

fn in_v6(ip: Ipv6Addr, (net, len): (Ipv6Addr, u8)) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == u128::from(net) & mask
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    !REFUSED_V4.iter().any(|&range| in_v4(ip, range))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    let prefix = |net: Ipv6Addr, len: u8| in_v6(ip, (net, len));
    if ip.is_unspecified() || ip.is_loopback() {
        false
    } else if CARRY_V4.iter().any(|&range| in_v6(ip, range)) {
        is_public_v4(Ipv4Addr::from(bits as u32))
    } else if prefix(Ipv6Addr::new(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        // 6to4: the IPv4 address is bits 16–47.
        is_public_v4(Ipv4Addr::from((bits >> 80) as u32))
    } else {
        // Global unicast only: this refuses unique-local fc00::/7, link-local fe80::/10,
        // site-local fec0::/10, multicast ff00::/8, discard 100::/64, local NAT64
        // 64:ff9b:1::/48 and everything unassigned.
        prefix(Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 3)
            && !REFUSED_V6.iter().any(|&range| in_v6(ip, range))
    }
}

#[cfg(test)]
mod tests;
