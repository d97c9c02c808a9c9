//! Keeps the host kernel's own stack off the data ports.
//!
//! A packet socket (software ports, DPDK's `net_af_packet`) receives a copy of every frame,
//! but the kernel still hands the frame to its own stack afterwards: it would answer ARP or
//! pings for any address an administrator put on a data interface, and even without
//! addresses it looks every frame up in its routing table before dropping it (measured with
//! `cargo xtask bench veth`: a tenth of the forwarding CPU). The dataplane owns L2 and L3 on
//! these ports, so the node installs an nftables `netdev` ingress chain with policy drop on
//! each data interface. That hook runs after the packet sockets got their copy (the kernel
//! delivers to packet taps before its ingress hooks), so only the host stack loses the
//! frame. The chain is removed when the node stops; a leftover from a killed node is
//! replaced at the next start.
//!
//! Without the `nft` tool (Debian package `nftables`) the node still works and says so:
//! the guard only saves CPU and keeps the host quiet on the data ports.

use std::io::Write;
use std::process::{Command, Stdio};

use tracing::{info, warn};

/// The nftables tables this node installed, removed on drop.
pub struct PortGuard {
    tables: Vec<String>,
}

impl PortGuard {
    /// Installs a drop-everything ingress chain on each of `interfaces`; logs and skips what
    /// cannot be installed.
    pub fn install(interfaces: &[&str]) -> PortGuard {
        let mut tables = Vec::new();
        for iface in interfaces {
            let table = table_name(iface);
            // A table a killed node left behind is replaced; its absence is not an error.
            let _ = nft(&format!("delete table netdev {table}\n"));
            match nft(&ruleset(&table, iface)) {
                Ok(()) => tables.push(table),
                Err(e) => warn!(
                    interface = %iface,
                    "the host kernel keeps processing frames on this data port ({e}); install the \
                     `nftables` package so the node can keep the host stack off its data ports"
                ),
            }
        }
        if !tables.is_empty() {
            info!(tables = %tables.join(","), "host stack kept off the data ports (nftables netdev ingress drop)");
        }
        PortGuard { tables }
    }
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        for table in &self.tables {
            if let Err(e) = nft(&format!("delete table netdev {table}\n")) {
                warn!(table = %table, "could not remove the data-port guard: {e}");
            }
        }
    }
}

/// The table for one interface: a name nftables accepts whatever characters the
/// interface name holds.
pub fn table_name(iface: &str) -> String {
    let safe: String = iface.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    format!("sluice_port_{safe}")
}

/// The ruleset text for one interface. Priority -500 runs before any other ingress chain an
/// administrator may have added.
pub fn ruleset(table: &str, iface: &str) -> String {
    let device = iface.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "table netdev {table} {{\n  chain ingress {{\n    type filter hook ingress device \"{device}\" priority -500; policy drop;\n  }}\n}}\n"
    )
}

/// The interface a DPDK `net_af_packet` devargs string names (`net_af_packet0,iface=eth1`).
#[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
pub fn af_packet_iface(devargs: &str) -> Option<&str> {
    let mut parts = devargs.split(',');
    if !parts.next()?.starts_with("net_af_packet") {
        return None;
    }
    parts.find_map(|p| p.strip_prefix("iface=")).filter(|s| !s.is_empty())
}

/// Runs `nft -f -` with `script`; the error says what nft printed.
fn nft(script: &str) -> Result<(), String> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).map_err(|e| format!("cannot talk to nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("nft failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_safe_for_any_interface_name() {
        assert_eq!(table_name("eth1"), "sluice_port_eth1");
        assert_eq!(table_name("sl12x3-ni"), "sluice_port_sl12x3_ni");
        assert_eq!(table_name("a.b@c"), "sluice_port_a_b_c");
    }

    #[test]
    fn ruleset_quotes_the_device() {
        let text = ruleset("t", "we\"ird");
        assert!(text.contains(r#"device "we\"ird""#), "{text}");
        assert!(text.contains("policy drop"), "{text}");
    }

    #[test]
    fn af_packet_devargs_name_their_interface() {
        assert_eq!(af_packet_iface("net_af_packet0,iface=eth1"), Some("eth1"));
        assert_eq!(af_packet_iface("net_af_packet1,qpairs=1,iface=sl-ne"), Some("sl-ne"));
        assert_eq!(af_packet_iface("net_af_packet0"), None);
        assert_eq!(af_packet_iface("net_af_packet0,iface="), None);
        assert_eq!(af_packet_iface("0000:03:00.0"), None);
        assert_eq!(af_packet_iface("net_tap0,iface=x"), None);
    }
}
