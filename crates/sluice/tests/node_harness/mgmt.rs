//! The management network of a multi-node lab: a bridge in its own namespace and one veth
//! per node namespace, `192.168.77.<n+1>/24` on the node side. Cluster RPC and the API use
//! it, never the data ports. Removed (namespace and links) when dropped.

use super::netns_harness::run;

pub struct Mgmt {
    ns: String,
    prefix: String,
}

impl Mgmt {
    /// Connects `nodes` (namespace names) to a new management bridge.
    pub fn new(prefix: &str, nodes: &[&str]) -> Mgmt {
        let ns = format!("{prefix}m");
        run(&["ip", "netns", "add", &ns]);
        let mgmt = Mgmt { ns: ns.clone(), prefix: prefix.to_owned() };
        run(&["ip", "-n", &ns, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &ns, "link", "set", "br0", "up"]);
        for (i, node) in nodes.iter().enumerate() {
            let (inside, outside) = (mgmt.link(i), format!("{prefix}b{i}"));
            run(&["ip", "link", "add", &inside, "netns", node, "type", "veth", "peer", "name", &outside, "netns", &ns]);
            run(&["ip", "-n", &ns, "link", "set", &outside, "master", "br0", "up"]);
            run(&["ip", "-n", node, "addr", "add", &format!("{}/24", Mgmt::address(i)), "dev", &inside]);
            run(&["ip", "-n", node, "link", "set", &inside, "up"]);
        }
        mgmt
    }

    /// Node `i`'s management address.
    pub fn address(i: usize) -> String {
        format!("192.168.77.{}", i + 1)
    }

    /// Node `i`'s management interface (in its namespace).
    pub fn link(&self, i: usize) -> String {
        format!("{}g{i}", self.prefix)
    }

    /// Cuts node `i` off the management network, or connects it again.
    pub fn set_link(&self, node_ns: &str, i: usize, up: bool) {
        run(&["ip", "-n", node_ns, "link", "set", &self.link(i), if up { "up" } else { "down" }]);
    }
}

impl Drop for Mgmt {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
