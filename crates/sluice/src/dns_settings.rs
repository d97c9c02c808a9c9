//! The DNS proxy's settings: how operators write them (`ip[:port]` upstreams, `1500ms`
//! timeouts), their defaults and consistency checks, and the proxy configuration built from
//! them.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use sluice_dns::{DnsConfig, LearnLimits};

use crate::exit::{Exit, Failure};
use crate::net::IfaceAddr;

pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_millis(1500);
pub const DEFAULT_TTL_FLOOR: u32 = 30;
pub const DEFAULT_TTL_CEILING: u32 = 3600;
pub const DEFAULT_MAX_IPS_PER_NAME: usize = 32;
/// More addresses per name than this is a typo: every one costs an allowlist entry per worker.
pub const MAX_IPS_PER_NAME: usize = 1024;

/// An upstream resolver: `ip` or `ip:port` (port 53 when left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsUpstream(pub SocketAddrV4);

impl FromStr for DnsUpstream {
    type Err = String;

    fn from_str(s: &str) -> Result<DnsUpstream, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<Ipv4Addr>() {
            return Ok(DnsUpstream(SocketAddrV4::new(ip, 53)));
        }
        match s.parse::<SocketAddrV4>() {
            Ok(addr) if addr.port() != 0 => Ok(DnsUpstream(addr)),
            Ok(_) => Err(format!("`{s}`: port 0 is not a DNS server's port")),
            Err(_) => {
                Err(format!("`{s}` is not an IPv4 address with an optional port, like 192.0.2.53 or 192.0.2.53:5353"))
            }
        }
    }
}

impl fmt::Display for DnsUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for DnsUpstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A duration written with its unit: `1500ms`, `2s`, `30m` or `6h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenDuration(pub Duration);

impl FromStr for WrittenDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<WrittenDuration, String> {
        let s = s.trim();
        let bad = || format!("`{s}` is not a duration; write it with its unit, like 1500ms, 2s, 30m or 6h");
        let (number, unit) = if let Some(n) = s.strip_suffix("ms") {
            (n, Duration::from_millis(1))
        } else if let Some(n) = s.strip_suffix('s') {
            (n, Duration::from_secs(1))
        } else if let Some(n) = s.strip_suffix('m') {
            (n, Duration::from_secs(60))
        } else if let Some(n) = s.strip_suffix('h') {
            (n, Duration::from_secs(3600))
        } else {
            return Err(bad());
        };
        let n: u32 = number.trim().parse().map_err(|_| bad())?;
        Ok(WrittenDuration(unit * n))
    }
}

impl<'de> Deserialize<'de> for WrittenDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The proxy's settings after layering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Where clients send queries; on the service lane.
    pub target_ips: Vec<Ipv4Addr>,
    /// Empty: the proxy is off.
    pub upstreams: Vec<DnsUpstream>,
    pub timeout: Duration,
    pub ttl_floor: u32,
    pub ttl_ceiling: u32,
    pub max_ips_per_name: usize,
}

impl DnsSettings {
    /// Checks that need no access to the host; `internal` is the node's internal address.
    pub fn validate(&self, internal: IfaceAddr) -> Result<(), Failure> {
        let setting = |msg: String| Err(Failure::new(Exit::Setting, msg));
        for &ip in &self.target_ips {
            if ip != internal.ip {
                return setting(format!(
                    "--dns-target-ip {ip}: the dataplane steers only the node's internal address ({}) to the service \
                     lane where the proxy listens; give --dns-target-ip {} (the default) or leave it out",
                    internal.ip, internal.ip
                ));
            }
        }
        for up in &self.upstreams {
            let ip = *up.0.ip();
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() || ip.is_link_local() {
                return setting(format!(
                    "--dns-upstream {up}: not an address a DNS server can be reached at through the external port"
                ));
            }
            if internal.contains(ip) {
                return setting(format!(
                    "--dns-upstream {up} is on the internal network {}/{}; upstream queries leave through the \
                     external port, so give a resolver outside",
                    internal.network(),
                    internal.prefix_len
                ));
            }
        }
        if self.timeout < Duration::from_millis(10) || self.timeout > Duration::from_secs(30) {
            return setting(format!("--dns-timeout {:?} must be between 10ms and 30s", self.timeout));
        }
        if self.ttl_ceiling == 0 || self.ttl_floor > self.ttl_ceiling {
            return setting(format!(
                "--dns-ttl-floor {} and --dns-ttl-ceiling {}: the ceiling must be at least 1 and not below the floor",
                self.ttl_floor, self.ttl_ceiling
            ));
        }
        if self.max_ips_per_name == 0 || self.max_ips_per_name > MAX_IPS_PER_NAME {
            return setting(format!(
                "--dns-max-ips-per-name {} must be 1 to {MAX_IPS_PER_NAME}",
                self.max_ips_per_name
            ));
        }
        Ok(())
    }

    /// The proxy's configuration, or `None` when no upstream is configured (proxy off).
    pub fn proxy_config(&self) -> Option<DnsConfig> {
        if self.upstreams.is_empty() {
            return None;
        }
        let listen = self.target_ips.iter().map(|&ip| SocketAddr::from((ip, 53))).collect();
        let upstreams = self.upstreams.iter().map(|u| SocketAddr::V4(u.0)).collect();
        let mut config = DnsConfig::new(listen, upstreams);
        config.upstream_timeout = self.timeout;
        config.limits = LearnLimits {
            ttl_floor: self.ttl_floor,
            ttl_ceiling: self.ttl_ceiling,
            max_ips_per_name: self.max_ips_per_name,
        };
        Some(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_and_durations_are_read_as_written() {
        assert_eq!("192.0.2.53".parse::<DnsUpstream>().unwrap().to_string(), "192.0.2.53:53");
        assert_eq!("192.0.2.53:5353".parse::<DnsUpstream>().unwrap().to_string(), "192.0.2.53:5353");
        assert!("192.0.2.53:0".parse::<DnsUpstream>().unwrap_err().contains("port 0"));
        assert!("dns.example".parse::<DnsUpstream>().unwrap_err().contains("IPv4 address"));
        assert_eq!("1500ms".parse::<WrittenDuration>().unwrap().0, Duration::from_millis(1500));
        assert_eq!("2s".parse::<WrittenDuration>().unwrap().0, Duration::from_secs(2));
        assert_eq!("30m".parse::<WrittenDuration>().unwrap().0, Duration::from_secs(1800));
        assert_eq!("6h".parse::<WrittenDuration>().unwrap().0, Duration::from_secs(6 * 3600));
        assert!("6d".parse::<WrittenDuration>().is_err());
        assert!("1500".parse::<WrittenDuration>().unwrap_err().contains("with its unit"));
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_flag_named() {
        let internal: IfaceAddr = "10.10.0.1/24".parse().unwrap();
        let ok = DnsSettings {
            target_ips: vec![internal.ip],
            upstreams: vec!["198.51.100.53".parse().unwrap()],
            timeout: DEFAULT_DNS_TIMEOUT,
            ttl_floor: DEFAULT_TTL_FLOOR,
            ttl_ceiling: DEFAULT_TTL_CEILING,
            max_ips_per_name: DEFAULT_MAX_IPS_PER_NAME,
        };
        assert!(ok.validate(internal).is_ok());
        assert_eq!(ok.proxy_config().unwrap().listen, [SocketAddr::from(([10, 10, 0, 1], 53))]);
        let refused = |f: &dyn Fn(&mut DnsSettings), flag: &str| {
            let mut s = ok.clone();
            f(&mut s);
            let e = s.validate(internal).unwrap_err();
            assert_eq!(e.exit, Exit::Setting);
            assert!(e.message.contains(flag), "{e}");
        };
        refused(&|s| s.target_ips = vec![Ipv4Addr::new(10, 10, 0, 53)], "--dns-target-ip 10.10.0.53");
        refused(&|s| s.upstreams = vec!["10.10.0.9".parse().unwrap()], "internal network");
        refused(&|s| s.upstreams = vec!["127.0.0.1".parse().unwrap()], "--dns-upstream 127.0.0.1:53");
        refused(&|s| s.timeout = Duration::from_secs(60), "--dns-timeout");
        refused(&|s| s.ttl_floor = 7200, "--dns-ttl-floor");
        refused(&|s| s.max_ips_per_name = 0, "--dns-max-ips-per-name");
        let off = DnsSettings { upstreams: Vec::new(), ..ok };
        assert_eq!(off.proxy_config(), None);
    }
}
