//! Peer discovery: which addresses might be peers (DESIGN.md section 6,
//! issue #4). The operator chooses a strategy, as EMQX's
//! `cluster.discovery_strategy`:
//!
//! - `manual`: only `roost ctl cluster join` adds peers;
//! - `static`: a fixed seed list of `host:port`;
//! - `dns`: the A, AAAA or SRV records of a DNS name, re-read on every call
//!   (a Kubernetes headless service, or the SRV records of a StatefulSet).
//!
//! This module only answers "whom could I connect to right now"; the
//! membership actor calls [`discover`] in the background, retries with
//! [`backoff`], and learns who a candidate *is* from the ractor_cluster
//! handshake (node identity is a name, never an address).
//!
//! Invariants:
//! - no address is cached: static seeds are never resolved here, a
//!   [`Candidate`]'s host is resolved again by the caller on every connect
//!   attempt, and every DNS lookup builds a fresh resolver with its cache off,
//!   so a pod that comes back on a new IP is found on the next call;
//! - every DNS lookup is bounded by [`DnsDiscovery::timeout`];
//! - no hickory type appears in the public API: the resolver can be swapped.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;
use rand::{Rng, RngExt};
use tracing::debug;

/// How long one DNS discovery round may take, unless configured otherwise.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// The source error of a failed DNS lookup, kept boxed so that the resolver
/// crate stays out of the public API.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// How this node finds its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryConfig {
    /// No discovery: only `roost ctl cluster join` adds peers.
    Manual,
    /// A fixed seed list, validated by [`DiscoveryConfig::parse`] and never
    /// resolved here (the caller resolves each host on every connect attempt).
    Static {
        /// The seeds, sorted and without duplicates.
        seeds: Vec<Candidate>,
    },
    /// The records of a DNS name, read again on every [`discover`] call.
    Dns(DnsDiscovery),
}

/// DNS discovery: which name and record type to query, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsDiscovery {
    /// The name to query, e.g. `roost-headless.mqtt.svc.cluster.local` for
    /// A/AAAA or `_cluster._tcp.roost-headless.mqtt.svc.cluster.local` for
    /// SRV. With the system resolver the `search` domains of
    /// /etc/resolv.conf apply, as for any lookup.
    pub name: String,
    /// Which records to read.
    pub record: DnsRecord,
    /// The cluster port of the peers found through A/AAAA records (an
    /// address record carries no port). SRV records carry their own port.
    pub port: u16,
    /// The resolver to ask, for tests and for operators who must point at a
    /// specific server; `None` reads the system config (/etc/resolv.conf) on
    /// every call. An explicit server skips /etc/hosts and search domains.
    pub nameserver: Option<SocketAddr>,
    /// The bound on one discovery round, retries included.
    pub timeout: Duration,
}

/// Which DNS records name the peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DnsRecord {
    /// IPv4 addresses (a headless service); each one is a peer on the
    /// configured port.
    A,
    /// IPv6 addresses (a headless service on an IPv6 cluster).
    Aaaa,
    /// `target:port` pairs (RFC 2782), e.g. the pod FQDNs of a StatefulSet.
    /// Priority and weight are ignored: every target is a peer.
    Srv,
}

impl fmt::Display for DnsRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DnsRecord::A => "A",
            DnsRecord::Aaaa => "AAAA",
            DnsRecord::Srv => "SRV",
        })
    }
}

/// Something to connect to. `host` is a DNS name or an IP address (IPv6
/// without brackets); the caller resolves it again on every connect attempt
/// and never keeps the resulting IP.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Candidate {
    /// A DNS name (without a trailing dot) or an IP address.
    pub host: String,
    /// The peer's cluster port.
    pub port: u16,
}

impl fmt::Display for Candidate {
    /// `host:port`, with an IPv6 host in brackets: `[fd00::1]:4370`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why discovery could not produce candidates.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The discovery settings are wrong; every problem found is listed.
    #[error("invalid cluster discovery config: {}", join_problems(.problems))]
    InvalidConfig {
        /// Every problem found, in input order.
        problems: Vec<ConfigProblem>,
    },
    /// The system resolver config (/etc/resolv.conf) could not be read.
    #[error("cannot load the system DNS resolver config")]
    ResolverConfig {
        /// What the resolver reported.
        #[source]
        source: BoxError,
    },
    /// The name does not exist (NXDOMAIN) or has no records of this type. Normal while
    /// the first pod of a StatefulSet starts: retry later.
    #[error("no {record} records for {name}")]
    NotFound {
        /// The name queried.
        name: String,
        /// The record type queried.
        record: DnsRecord,
        /// What the resolver reported.
        #[source]
        source: BoxError,
    },
    /// No answer within the configured timeout.
    #[error("DNS lookup of {record} {name} timed out after {timeout:?}")]
    Timeout {
        /// The name queried.
        name: String,
        /// The record type queried.
        record: DnsRecord,
        /// The bound that was hit.
        timeout: Duration,
    },
    /// Any other lookup failure (SERVFAIL, refused, network error).
    #[error("DNS lookup of {record} {name} failed")]
    Lookup {
        /// The name queried.
        name: String,
        /// The record type queried.
        record: DnsRecord,
        /// What the resolver reported.
        #[source]
        source: BoxError,
    },
}

fn join_problems(problems: &[ConfigProblem]) -> String {
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    texts.join("; ")
}

/// One problem in the discovery settings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// The strategy is not `manual`, `static` or `dns`.
    #[error("unknown discovery strategy {0:?} (expected manual, static or dns)")]
    UnknownStrategy(String),
    /// Static discovery without any seed.
    #[error("static discovery needs at least one seed (host:port)")]
    NoSeeds,
    /// A seed without `:port`.
    #[error("seed {0:?} has no port (expected host:port, IPv6 as [::1]:4370)")]
    SeedWithoutPort(String),
    /// A seed whose port is not in 1..=65535.
    #[error("seed {seed:?} has a bad port {port:?} (expected 1..=65535)")]
    BadSeedPort {
        /// The seed as given.
        seed: String,
        /// The port part as given.
        port: String,
    },
    /// A seed whose host is neither a DNS name nor an IP address.
    #[error("seed {0:?} has a bad host (expected a DNS name, an IPv4 address or [IPv6])")]
    BadSeedHost(String),
    /// A bare IPv6 address: its colons make the port ambiguous.
    #[error("seed {0:?}: write an IPv6 address in brackets with a port, e.g. [::1]:4370")]
    Ipv6WithoutBrackets(String),
    /// Seeds are set but the strategy is not `static`: they would be ignored.
    #[error("seeds are set but the discovery strategy is {strategy}: they would be ignored")]
    SeedsIgnored {
        /// The configured strategy.
        strategy: String,
    },
    /// DNS discovery without a name to query.
    #[error("dns discovery needs a DNS name")]
    EmptyDnsName,
    /// A DNS name that is not a valid host name.
    #[error("bad DNS name {0:?} (labels of letters, digits, '-' and '_', at most 63 bytes each)")]
    BadDnsName(String),
    /// An IP address where a DNS name is expected.
    #[error("DNS name {0:?} is an IP address: use static seeds for fixed addresses")]
    DnsNameIsIp(String),
    /// A record type other than `a`, `aaaa` or `srv`.
    #[error("unknown DNS record type {0:?} (expected a, aaaa or srv)")]
    UnknownRecordType(String),
    /// A DNS name or record type is set but the strategy is not `dns`.
    #[error("DNS discovery settings are set but the discovery strategy is {strategy}: they would be ignored")]
    DnsIgnored {
        /// The configured strategy.
        strategy: String,
    },
    /// Port 0 for peers found through address records.
    #[error("dns discovery with {0} records needs the peers' cluster port (got 0)")]
    ZeroPort(DnsRecord),
}

impl DiscoveryConfig {
    /// Builds a config from operator input, reporting every problem at once.
    ///
    /// `strategy` is `manual`, `static` or `dns` (case-insensitive).
    /// `seeds` are `host:port` (IPv6 as `[::1]:4370`); blank entries are
    /// skipped, so a trailing comma in `--seeds` is harmless. `dns_record`
    /// is `a` (the default), `aaaa` or `srv`; `port` is the peers' cluster
    /// port for A/AAAA records. The DNS timeout is [`DEFAULT_DNS_TIMEOUT`]
    /// and the resolver the system one; both are public fields to override.
    /// Seeds with a strategy other than `static`, or DNS settings with one
    /// other than `dns`, are errors: silently ignored settings hide typos.
    pub fn parse(
        strategy: &str,
        seeds: &[String],
        dns_name: Option<&str>,
        dns_record: Option<&str>,
        port: u16,
    ) -> Result<Self, DiscoveryError> {
        let mut problems = Vec::new();
        let strategy = strategy.trim().to_ascii_lowercase();
        let has_seeds = seeds.iter().any(|s| !s.trim().is_empty());
        let candidates = parse_seeds(seeds, &mut problems);
        // Blank counts as unset: config files and flags default to "".
        let dns_name = dns_name.map(str::trim).filter(|name| !name.is_empty());
        let dns_record = dns_record.map(str::trim).filter(|text| !text.is_empty());
        let record = match dns_record {
            None => Some(DnsRecord::A),
            Some(text) => parse_record(text).or_else(|| {
                problems.push(ConfigProblem::UnknownRecordType(text.to_string()));
                None
            }),
        };
        if has_seeds && strategy != "static" {
            problems.push(ConfigProblem::SeedsIgnored {
                strategy: strategy.clone(),
            });
        }
        if (dns_name.is_some() || dns_record.is_some()) && strategy != "dns" {
            problems.push(ConfigProblem::DnsIgnored {
                strategy: strategy.clone(),
            });
        }

        let config = match strategy.as_str() {
            "manual" => Some(DiscoveryConfig::Manual),
            "static" => {
                if !has_seeds {
                    problems.push(ConfigProblem::NoSeeds);
                }
                Some(DiscoveryConfig::Static { seeds: candidates })
            }
            "dns" => dns_config(dns_name, record, port, &mut problems).map(DiscoveryConfig::Dns),
            _ => {
                problems.push(ConfigProblem::UnknownStrategy(strategy.clone()));
                None
            }
        };
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(DiscoveryError::InvalidConfig { problems }),
        }
    }
}

/// The valid seeds, sorted and without duplicates; a problem for each other
/// non-blank one.
fn parse_seeds(seeds: &[String], problems: &mut Vec<ConfigProblem>) -> Vec<Candidate> {
    let mut candidates = Vec::new();
    for seed in seeds.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match parse_seed(seed) {
            Ok(candidate) => candidates.push(candidate),
            Err(problem) => problems.push(problem),
        }
    }
    candidates.sort();
    candidates.dedup();
    candidates
}

/// The DNS settings, or `None` with the problems recorded.
fn dns_config(
    name: Option<&str>,
    record: Option<DnsRecord>,
    port: u16,
    problems: &mut Vec<ConfigProblem>,
) -> Option<DnsDiscovery> {
    let name = match name {
        None => {
            problems.push(ConfigProblem::EmptyDnsName);
            None
        }
        Some(name) => match check_dns_name(name) {
            Some(problem) => {
                problems.push(problem);
                None
            }
            None => Some(name),
        },
    };
    if let Some(address @ (DnsRecord::A | DnsRecord::Aaaa)) = record {
        if port == 0 {
            problems.push(ConfigProblem::ZeroPort(address));
        }
    }
    Some(DnsDiscovery {
        name: name?.to_string(),
        record: record?,
        port,
        nameserver: None,
        timeout: DEFAULT_DNS_TIMEOUT,
    })
}

fn parse_record(text: &str) -> Option<DnsRecord> {
    match text.to_ascii_lowercase().as_str() {
        "a" => Some(DnsRecord::A),
        "aaaa" => Some(DnsRecord::Aaaa),
        "srv" => Some(DnsRecord::Srv),
        _ => None,
    }
}

/// `None` if `name` is a usable DNS name to query.
fn check_dns_name(name: &str) -> Option<ConfigProblem> {
    if name.is_empty() {
        Some(ConfigProblem::EmptyDnsName)
    } else if name.parse::<IpAddr>().is_ok() {
        Some(ConfigProblem::DnsNameIsIp(name.to_string()))
    } else if !is_dns_name(name) {
        Some(ConfigProblem::BadDnsName(name.to_string()))
    } else {
        None
    }
}

/// Host name syntax (RFC 1123), plus `_` for SRV owner names such as
/// `_cluster._tcp.example`; one trailing dot allowed.
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Parses `host:port` or `[ipv6]:port`; checks syntax only, resolves nothing.
fn parse_seed(seed: &str) -> Result<Candidate, ConfigProblem> {
    let (host, port) = if let Some(rest) = seed.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or_else(|| ConfigProblem::BadSeedHost(seed.to_string()))?;
        let ip: Ipv6Addr = ip
            .parse()
            .map_err(|_| ConfigProblem::BadSeedHost(seed.to_string()))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| ConfigProblem::SeedWithoutPort(seed.to_string()))?;
        (ip.to_string(), port)
    } else {
        if seed.parse::<Ipv6Addr>().is_ok() {
            return Err(ConfigProblem::Ipv6WithoutBrackets(seed.to_string()));
        }
        let (host, port) = seed
            .rsplit_once(':')
            .ok_or_else(|| ConfigProblem::SeedWithoutPort(seed.to_string()))?;
        if host.contains(':') {
            return Err(if host.parse::<Ipv6Addr>().is_ok() {
                ConfigProblem::Ipv6WithoutBrackets(seed.to_string())
            } else {
                ConfigProblem::BadSeedHost(seed.to_string())
            });
        }
        if !is_dns_name(host) {
            return Err(ConfigProblem::BadSeedHost(seed.to_string()));
        }
        (host.strip_suffix('.').unwrap_or(host).to_string(), port)
    };
    if port.is_empty() {
        return Err(ConfigProblem::SeedWithoutPort(seed.to_string()));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(Candidate { host, port }),
        _ => Err(ConfigProblem::BadSeedPort {
            seed: seed.to_string(),
            port: port.to_string(),
        }),
    }
}

/// The peers to try now: none for `Manual`, the seeds for `Static` (not
/// resolved), and for `Dns` the records read now from DNS, without
/// duplicates and sorted. Each call queries DNS again; nothing is cached.
pub async fn discover(cfg: &DiscoveryConfig) -> Result<Vec<Candidate>, DiscoveryError> {
    match cfg {
        DiscoveryConfig::Manual => Ok(Vec::new()),
        DiscoveryConfig::Static { seeds } => Ok(seeds.clone()),
        DiscoveryConfig::Dns(dns) => discover_dns(dns).await,
    }
}

async fn discover_dns(dns: &DnsDiscovery) -> Result<Vec<Candidate>, DiscoveryError> {
    let resolver = build_resolver(dns)?;
    let record_type = match dns.record {
        DnsRecord::A => RecordType::A,
        DnsRecord::Aaaa => RecordType::AAAA,
        DnsRecord::Srv => RecordType::SRV,
    };
    let lookup = tokio::time::timeout(dns.timeout, resolver.lookup(dns.name.as_str(), record_type))
        .await
        .map_err(|_| timeout_error(dns))?
        .map_err(|err| lookup_error(dns, err))?;
    let mut candidates: Vec<Candidate> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::A(a) if dns.record == DnsRecord::A => Some(Candidate {
                host: a.0.to_string(),
                port: dns.port,
            }),
            RData::AAAA(aaaa) if dns.record == DnsRecord::Aaaa => Some(Candidate {
                host: aaaa.0.to_string(),
                port: dns.port,
            }),
            // RFC 2782: a target of "." means "no service here".
            RData::SRV(srv) if dns.record == DnsRecord::Srv && !srv.target.is_root() => {
                let target = srv.target.to_ascii();
                Some(Candidate {
                    host: target.strip_suffix('.').unwrap_or(&target).to_string(),
                    port: srv.port,
                })
            }
            // CNAMEs on the way, other types: not peers.
            _ => None,
        })
        .collect();
    candidates.sort();
    candidates.dedup();
    debug!(
        name = %dns.name,
        record = %dns.record,
        candidates = candidates.len(),
        "dns_discovery_resolved"
    );
    Ok(candidates)
}

/// A fresh resolver per call, cache off: records are re-read every time.
fn build_resolver(dns: &DnsDiscovery) -> Result<TokioResolver, DiscoveryError> {
    let mut builder = match dns.nameserver {
        Some(addr) => {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut server.connections {
                connection.port = addr.port();
            }
            let config = ResolverConfig::from_name_servers(vec![server]);
            let mut builder =
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
            builder.options_mut().use_hosts_file = ResolveHosts::Never;
            builder
        }
        None => TokioResolver::builder_tokio().map_err(|err| DiscoveryError::ResolverConfig {
            source: Box::new(err),
        })?,
    };
    let options = builder.options_mut();
    options.cache_size = 0;
    // Two tries (one retry for a lost UDP datagram) within the round's bound.
    options.timeout = dns.timeout / 2;
    options.attempts = 1;
    builder
        .build()
        .map_err(|err| DiscoveryError::ResolverConfig {
            source: Box::new(err),
        })
}

fn timeout_error(dns: &DnsDiscovery) -> DiscoveryError {
    DiscoveryError::Timeout {
        name: dns.name.clone(),
        record: dns.record,
        timeout: dns.timeout,
    }
}

fn lookup_error(dns: &DnsDiscovery, err: NetError) -> DiscoveryError {
    let name = dns.name.clone();
    let record = dns.record;
    if err.is_no_records_found() {
        DiscoveryError::NotFound {
            name,
            record,
            source: Box::new(err),
        }
    } else if matches!(err, NetError::Timeout) {
        timeout_error(dns)
    } else {
        DiscoveryError::Lookup {
            name,
            record,
            source: Box::new(err),
        }
    }
}

/// The delay before retry number `attempt` (0 for the first retry):
/// exponential backoff with full jitter, uniform in
/// `0..=min(max, base * 2^attempt)` ("Exponential Backoff And Jitter",
/// AWS Architecture Blog, 2015). Full jitter spreads the reconnects of nodes
/// that all restarted at once. Never exceeds `max`, never overflows.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    full_jitter(backoff_ceiling(attempt, base, max), &mut rand::rng())
}

/// The upper bound of [`backoff`] for `attempt`: `min(max, base * 2^attempt)`,
/// saturating.
pub fn backoff_ceiling(attempt: u32, base: Duration, max: Duration) -> Duration {
    1u32.checked_shl(attempt)
        .and_then(|factor| base.checked_mul(factor))
        .map_or(max, |delay| delay.min(max))
}

fn full_jitter(ceiling: Duration, rng: &mut impl Rng) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(0..=nanos))
}

#[cfg(test)]
mod tests;
