//! Engine configuration: the node's addresses on each port, NAT, capacities and timeouts.

use std::fmt;

use crate::flow::MAX_FLOW_CAPACITY;
use crate::neighbor::NeighborConfig;
use crate::tcp::Timeouts;

/// One data port's layer-2/3 identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortConfig {
    pub mac: [u8; 6],
    /// The node's address on this port (host order).
    pub ip: u32,
    /// Prefix length of the connected network.
    pub prefix_len: u8,
    /// 802.1Q VLAN id the port's frames carry, or None for untagged.
    pub vlan: Option<u16>,
}

impl PortConfig {
    /// The network mask of `prefix_len` (0 to 32; `EngineConfig::validate` checks it), without
    /// a branch (it is on the packet path): shifting 32 ones right by the prefix length into
    /// the low half of a 64-bit word leaves that many ones at its top.
    #[inline]
    pub fn netmask(&self) -> u32 {
        debug_assert!(self.prefix_len <= 32);
        (0xFFFF_FFFF_0000_0000u64 >> self.prefix_len.min(32)) as u32
    }

    /// Whether `addr` is on this port's connected network.
    #[inline]
    pub fn contains(&self, addr: u32) -> bool {
        (addr ^ self.ip) & self.netmask() == 0
    }
}

/// The TAP service lane between the engine and the node's own host stack (where the DNS
/// proxy listens). The engine acts as every address's neighbour on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLaneConfig {
    /// The MAC the engine uses towards the host.
    pub engine_mac: [u8; 6],
    /// The MAC of the host's TAP interface.
    pub host_mac: [u8; 6],
}

#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub internal: PortConfig,
    pub external: PortConfig,
    /// Next hop for everything not on the external connected network.
    pub gateway: u32,
    pub host_lane: Option<HostLaneConfig>,
    /// Translate inside sources to the external address (on by default).
    pub snat: bool,
    pub flow_capacity: usize,
    /// Inclusive range of translated source ports (and ICMP echo ids).
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    /// Candidate ports tried per new flow before counting NAT exhaustion.
    pub nat_attempts: u32,
    pub timeouts: Timeouts,
    pub neighbor: NeighborConfig,
    /// Flow records examined for expiry per burst at least (more when flows are opening).
    pub sweep_budget: usize,
    /// Allowlist updates applied per burst.
    pub allowlist_budget: usize,
    /// Allowlist entries examined for expiry per burst.
    pub allowlist_sweep_budget: usize,
    /// Frames the engine may originate (ARP, ICMP, released pending frames) per burst.
    pub max_generated: usize,
    /// ICMP errors the node sends per second, with a burst allowance.
    pub icmp_errors_per_sec: u32,
    pub icmp_error_burst: u32,
    /// Keys the flow hash; give each worker a random one.
    pub hash_seed: u64,
}

impl EngineConfig {
    /// A configuration with defaults for everything but the addresses.
    pub fn new(internal: PortConfig, external: PortConfig, gateway: u32) -> EngineConfig {
        EngineConfig {
            internal,
            external,
            gateway,
            host_lane: None,
            snat: true,
            flow_capacity: 262_144,
            nat_port_min: 1024,
            nat_port_max: 65535,
            nat_attempts: 32,
            timeouts: Timeouts::default(),
            neighbor: NeighborConfig::default(),
            sweep_budget: 8,
            allowlist_budget: 256,
            allowlist_sweep_budget: 16,
            max_generated: 128,
            icmp_errors_per_sec: 1000,
            icmp_error_burst: 100,
            hash_seed: 0x005E_ED0F_F10E,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |what: &str| Err(ConfigError(what.to_string()));
        for (name, p) in [("internal", &self.internal), ("external", &self.external)] {
            if p.prefix_len > 32 || p.prefix_len == 0 {
                return bad(&format!("{name} prefix length {} must be 1..=32", p.prefix_len));
            }
            if p.vlan.is_some_and(|v| v == 0 || v >= 4095) {
                return bad(&format!("{name} VLAN id must be 1..=4094"));
            }
            if p.mac[0] & 1 != 0 {
                return bad(&format!("{name} MAC must be unicast"));
            }
        }
        if self.internal.contains(self.external.ip) || self.external.contains(self.internal.ip) {
            return bad("internal and external networks overlap");
        }
        if !self.external.contains(self.gateway) {
            return bad("gateway must be on the external network");
        }
        if self.flow_capacity == 0 || self.flow_capacity > MAX_FLOW_CAPACITY {
            return bad(&format!("flow capacity must be 1..={MAX_FLOW_CAPACITY}"));
        }
        if self.nat_port_min == 0 || self.nat_port_min > self.nat_port_max {
            return bad("NAT port range must be non-empty and start above 0");
        }
        if self.nat_attempts == 0 || self.sweep_budget == 0 || self.max_generated == 0 {
            return bad("nat_attempts, sweep_budget and max_generated must be positive");
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid engine configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::PortConfig;

    #[test]
    fn netmask_and_contains_for_every_prefix_length() {
        for len in 0..=32u8 {
            let p = PortConfig { mac: [0; 6], ip: 0x0A0B_0C0D, prefix_len: len, vlan: None };
            let expected = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            assert_eq!(p.netmask(), expected, "/{len}");
            assert!(p.contains(p.ip));
            // The highest bit outside the prefix flips nothing; the lowest bit inside does.
            if len < 32 {
                assert!(p.contains(p.ip ^ (1 << (31 - u32::from(len)))), "/{len}");
            }
            if len > 0 {
                assert!(!p.contains(p.ip ^ (1 << (32 - u32::from(len)))), "/{len}");
            }
        }
    }
}
