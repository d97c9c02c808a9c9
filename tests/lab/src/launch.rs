//! How the lab starts `sluice run`: ports, dataplane flags and a launcher.

use crate::Lab;

/// How [`Node::start_with`] runs `sluice run`.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Run in front of `sluice` inside the namespace, e.g. `taskset -c 1`; it must exec
    /// `sluice`, so that the node's pid is the child's.
    pub launcher: Vec<String>,
    /// `--internal-port` and `--external-port` (interface names, or DPDK devargs).
    pub internal_port: String,
    pub external_port: String,
    /// More `sluice run` flags, e.g. `--dataplane dpdk --dpdk-eal-args ...`.
    pub extra: Vec<String>,
}

impl Launch {
    /// Software mode on the lab's data-port veths.
    pub fn software(lab: &Lab) -> Launch {
        Launch {
            launcher: Vec::new(),
            internal_port: lab.node_in.clone(),
            external_port: lab.node_out.clone(),
            extra: Vec::new(),
        }
    }

    /// DPDK mode: `net_af_packet` on the same veths, without hugepages, lcores from `lcores`
    /// (e.g. `0@(0),1@(1)`: the main lcore runs the control loop, lcore 1 the dataplane).
    pub fn dpdk(lab: &Lab, lcores: &str) -> Launch {
        let eal = format!(
            "--lcores={lcores} --no-huge -m 256 --no-pci --no-shconf --no-telemetry --file-prefix {}",
            lab.prefix.trim_end_matches('-')
        );
        Launch {
            launcher: Vec::new(),
            internal_port: format!("net_af_packet0,iface={}", lab.node_in),
            external_port: format!("net_af_packet1,iface={}", lab.node_out),
            extra: vec!["--dataplane".into(), "dpdk".into(), "--dpdk-eal-args".into(), eal],
        }
    }
}
