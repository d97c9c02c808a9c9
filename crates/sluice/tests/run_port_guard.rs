//! The node keeps the host kernel's own stack off its data ports while it runs (an nftables
//! netdev ingress drop after the packet sockets' copy), and removes that guard when it stops.
//!
//! Seen from the wire: an address the administrator left on the external data interface
//! answers pings from the upstream side before the node starts and after it stops, but not
//! while the node owns the port. These tests need root; without it they fail and say so.

mod node_harness;

use std::process::Command;
use std::time::Duration;

use node_harness::{require_root, Lab, Launch, Mode, Sluice};

/// An address the host kernel holds on the external data interface, beside the node's own.
const HOST_ADDRESS: &str = "203.0.113.99";

fn upstream_pings_host_address(lab: &Lab) -> bool {
    Command::new("ip")
        .args(["netns", "exec", &lab.upstream, "ping", "-c", "1", "-W", "1", HOST_ADDRESS])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn netdev_tables(lab: &Lab) -> String {
    let out = Command::new("ip").args(["netns", "exec", &lab.node, "nft", "list", "tables", "netdev"]).output();
    let out = out.expect("run nft (package nftables)");
    assert!(out.status.success(), "nft list tables: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host_stack_is_kept_off_the_data_ports(mode: Mode) {
    require_root();
    let lab = Lab::new();
    let add = Command::new("ip")
        .args(["netns", "exec", &lab.node, "ip", "addr", "add", &format!("{HOST_ADDRESS}/24"), "dev", &lab.node_out])
        .status()
        .expect("ip addr add");
    assert!(add.success());
    assert!(upstream_pings_host_address(&lab), "before the node runs, the host kernel answers on the interface");

    let dir = tempfile::tempdir().unwrap();
    let mut node = Sluice::start(&lab, dir.path(), &Launch { mode, ..Launch::default() });
    let tables = netdev_tables(&lab);
    for iface in [&lab.node_in, &lab.node_out] {
        let table = format!("sluice_port_{}", iface.replace('-', "_"));
        assert!(tables.contains(&table), "{table} installed while running: {tables}");
    }
    assert!(!upstream_pings_host_address(&lab), "while the node runs, the host stack never sees the data port");
    assert!(node.log_text().contains("host stack kept off the data ports"), "{}", node.log_text());

    let (status, _) = node.stop(libc::SIGTERM, Duration::from_secs(5));
    assert!(status.success(), "{status}");
    let tables = netdev_tables(&lab);
    assert!(!tables.contains("sluice_port_"), "the guard is removed at stop: {tables}");
    assert!(upstream_pings_host_address(&lab), "after the node stops, the host kernel answers again");
}

#[test]
fn software_node_keeps_the_host_stack_off_its_data_ports() {
    host_stack_is_kept_off_the_data_ports(Mode::Software);
}

#[cfg(feature = "dpdk")]
#[test]
fn dpdk_node_keeps_the_host_stack_off_its_data_ports() {
    host_stack_is_kept_off_the_data_ports(Mode::Dpdk);
}
