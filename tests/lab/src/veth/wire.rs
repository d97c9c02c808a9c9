//! How the veth benchmark sets the lab up around a forwarder: threaded NAPI pollers pinned
//! to chosen CPUs, the counting sink in the upstream namespace, the kernel forwarder of the
//! baseline, and the socket memory the load generator needs. Everything is undone on drop.

use std::fs;

use super::report::{self, LinkStats};
use super::{SINK_ADDR, SINK_PORT};
use crate::{err, sh, sh_in, Lab, Result, CLIENT_ADDR, GATEWAY, NODE_EXTERNAL, NODE_INTERNAL};

/// Turn GRO on for `dev` in `ns` (which puts a veth in NAPI mode: its peer's transmissions
/// are queued and polled instead of processed in the sender's context), make its NAPI
/// poller a kernel thread, and pin that thread to `cpu`. Returns the poller threads' pids.
pub fn threaded_napi(ns: &str, dev: &str, cpu: usize) -> Result<Vec<u32>> {
    sh_in(ns, &["ethtool", "-K", dev, "gro", "on"])?;
    // sysfs shows the namespace's own devices only inside it.
    sh_in(ns, &["sh", "-c", &format!("echo 1 > /sys/class/net/{dev}/threaded")])?;
    let mut pids = Vec::new();
    for _ in 0..50 {
        pids = napi_threads(dev);
        if !pids.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    if pids.is_empty() {
        return Err(err(format!("no threaded NAPI poller appeared for {dev} (kernel without veth NAPI?)")));
    }
    for pid in &pids {
        sh(&["taskset", "-p", "-c", &cpu.to_string(), &pid.to_string()])?;
    }
    Ok(pids)
}

fn napi_threads(dev: &str) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|comm| report::is_napi_thread_of(&comm, dev))
        })
        .collect()
}

/// Receive on `dev` in the transmitting CPU's softirq: GRO off (no veth NAPI poller) and no
/// RPS, so the sender queues each frame to its own CPU's backlog and nothing crosses CPUs.
pub fn receive_locally(ns: &str, dev: &str) -> Result<()> {
    sh_in(ns, &["ethtool", "-K", dev, "gro", "off"])?;
    sh_in(ns, &["sh", "-c", &format!("echo 0 > /sys/class/net/{dev}/queues/rx-0/rps_cpus")])?;
    Ok(())
}

/// Nanoseconds all threads of `pid` have run (a kernel thread is its own only thread).
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|t| fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| report::parse_schedstat(&s).ok())
        .sum()
}

/// The CPUs this process may use.
pub fn allowed_cpus() -> Result<Vec<usize>> {
    let status = fs::read_to_string("/proc/self/status").map_err(|e| err(format!("/proc/self/status: {e}")))?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .ok_or_else(|| err("no Cpus_allowed_list in /proc/self/status"))?;
    report::parse_cpu_list(list)
}

/// Packet counters of `dev` in `ns`.
pub fn link_stats(ns: &str, dev: &str) -> Result<LinkStats> {
    report::parse_link_stats(&sh(&["ip", "-n", ns, "-j", "-s", "link", "show", "dev", dev])?)
}

/// The MAC address `ns` resolved for `addr` on `dev`.
pub fn neighbor_mac(ns: &str, dev: &str, addr: &str) -> Result<String> {
    let json = sh(&["ip", "-n", ns, "-j", "neigh", "show", addr, "dev", dev])?;
    report::parse_neighbor_mac(&json).ok_or_else(|| err(format!("{ns} has not resolved {addr} on {dev}: {json}")))
}

/// The MAC address of `dev` in `ns`.
pub fn mac_of(ns: &str, dev: &str) -> Result<String> {
    let json = sh(&["ip", "-n", ns, "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| err(format!("ip -j link: {e}: {json}")))?;
    v.get(0)
        .and_then(|l| l.get("address"))
        .and_then(serde_json::Value::as_str)
        .map(String::from)
        .ok_or_else(|| err(format!("no address for {dev}: {json}")))
}

fn nft_load(ns: &str, ruleset: &str) -> Result<()> {
    let path = std::env::temp_dir().join(format!("sluice-bench-veth-{}-{ns}.nft", std::process::id()));
    fs::write(&path, ruleset).map_err(|e| err(format!("write {}: {e}", path.display())))?;
    let loaded = sh_in(ns, &["nft", "-f", &path.to_string_lossy()]);
    let _ = fs::remove_file(&path);
    loaded.map(drop).map_err(|e| err(format!("{e}\n(nft comes from the Debian package nftables)")))
}

fn nft_counters(ns: &str, family: &str, table: &str) -> Result<Vec<(String, u64)>> {
    report::parse_nft_counters(&sh_in(ns, &["nft", "-j", "list", "counters", "table", family, table])?)
}

/// The receiving end: an ingress filter on the upstream veth that counts the load's frames,
/// split by whether their source is the node's external address (translated) or not, and
/// drops them before the upstream stack would answer with ICMP port unreachable.
pub struct Sink {
    ns: String,
}

const SINK_TABLE: &str = "sluice_bench_sink";

impl Sink {
    pub fn install(lab: &Lab) -> Result<Sink> {
        let external = NODE_EXTERNAL.split('/').next().unwrap_or(NODE_EXTERNAL);
        let ruleset = format!(
            "table netdev {SINK_TABLE} {{\n\
             \x20 counter translated {{ }}\n\
             \x20 counter untranslated {{ }}\n\
             \x20 chain ingress {{\n\
             \x20   type filter hook ingress device \"{dev}\" priority 0; policy accept;\n\
             \x20   ip saddr {external} ip daddr {SINK_ADDR} udp dport {SINK_PORT} counter name \"translated\" drop\n\
             \x20   ip daddr {SINK_ADDR} udp dport {SINK_PORT} counter name \"untranslated\" drop\n\
             \x20 }}\n\
             }}\n",
            dev = lab.upstream_if()
        );
        nft_load(&lab.upstream, &ruleset)?;
        Ok(Sink { ns: lab.upstream.clone() })
    }

    /// `(translated, untranslated)` frames so far.
    pub fn counts(&self) -> Result<(u64, u64)> {
        let c = nft_counters(&self.ns, "netdev", SINK_TABLE)?;
        Ok((report::counter(&c, "translated")?, report::counter(&c, "untranslated")?))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = sh_in(&self.ns, &["nft", "delete", "table", "netdev", SINK_TABLE]);
    }
}

/// The baseline: the node namespace's kernel forwards, with the node's addresses on the data
/// ports, SNAT by masquerade, and a conntrack filter equivalent to the benchmark policy:
/// established and related traffic accepted, new flows accepted only for the load's
/// destination, everything else dropped.
pub struct KernelForwarder {
    ns: String,
    ports: [String; 2],
}

const KERNEL_TABLE: &str = "sluice_bench_forward";

impl KernelForwarder {
    pub fn start(lab: &Lab) -> Result<KernelForwarder> {
        let fwd = KernelForwarder { ns: lab.node.clone(), ports: [lab.node_in.clone(), lab.node_out.clone()] };
        let (ns, inside, outside) = (&lab.node, &lab.node_in, &lab.node_out);
        sh(&["ip", "-n", ns, "addr", "add", NODE_INTERNAL, "dev", inside])?;
        sh(&["ip", "-n", ns, "addr", "add", NODE_EXTERNAL, "dev", outside])?;
        sh(&["ip", "-n", ns, "route", "add", "default", "via", GATEWAY])?;
        sh_in(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let client_net = client_subnet();
        let ruleset = format!(
            "table ip {KERNEL_TABLE} {{\n\
             \x20 counter new_flows {{ }}\n\
             \x20 chain forwarding {{\n\
             \x20   type filter hook forward priority 0; policy drop;\n\
             \x20   ct state established,related accept\n\
             \x20   iifname \"{inside}\" oifname \"{outside}\" ip saddr {client_net} ip daddr {SINK_ADDR} \
             udp dport {SINK_PORT} ct state new counter name \"new_flows\" accept\n\
             \x20   counter drop\n\
             \x20 }}\n\
             \x20 chain postrouting {{\n\
             \x20   type nat hook postrouting priority 100;\n\
             \x20   oifname \"{outside}\" masquerade\n\
             \x20 }}\n\
             }}\n"
        );
        nft_load(ns, &ruleset)?;
        Ok(fwd)
    }

    /// Flows the filter accepted as new so far.
    pub fn new_flows(&self) -> Result<u64> {
        report::counter(&nft_counters(&self.ns, "ip", KERNEL_TABLE)?, "new_flows")
    }
}

impl Drop for KernelForwarder {
    fn drop(&mut self) {
        let ns = &self.ns;
        let _ = sh_in(ns, &["nft", "delete", "table", "ip", KERNEL_TABLE]);
        let _ = sh_in(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=0"]);
        for port in &self.ports {
            let _ = sh(&["ip", "-n", ns, "addr", "flush", "dev", port]);
        }
    }
}

/// trafgen's transmit ring stalls when the socket's send buffer (`net.core.wmem_default`,
/// a host-wide setting) is small; this raises it for the run and restores it on drop.
pub struct WmemDefault {
    before: Option<String>,
}

const WMEM_DEFAULT: &str = "/proc/sys/net/core/wmem_default";

impl WmemDefault {
    pub fn at_least(bytes: u64) -> Result<WmemDefault> {
        let now = fs::read_to_string(WMEM_DEFAULT).map_err(|e| err(format!("{WMEM_DEFAULT}: {e}")))?;
        if now.trim().parse::<u64>().is_ok_and(|n| n >= bytes) {
            return Ok(WmemDefault { before: None });
        }
        fs::write(WMEM_DEFAULT, bytes.to_string()).map_err(|e| err(format!("raise {WMEM_DEFAULT}: {e}")))?;
        Ok(WmemDefault { before: Some(now.trim().to_string()) })
    }
}

impl Drop for WmemDefault {
    fn drop(&mut self) {
        if let Some(before) = &self.before {
            let _ = fs::write(WMEM_DEFAULT, before);
        }
    }
}

/// The client's /24.
fn client_subnet() -> String {
    let net = CLIENT_ADDR.rsplit_once('.').map_or(CLIENT_ADDR, |(net, _)| net);
    format!("{net}.0/24")
}

/// The benchmark policy for Sluice: the load's flows allowed, everything else denied.
pub fn policy_json() -> String {
    let client = client_subnet();
    format!(
        r#"{{
  "default_action": "deny",
  "source_groups": [
    {{
      "id": "bench-clients",
      "priority": 10,
      "sources": {{ "cidrs": ["{client}"] }},
      "rules": [
        {{ "id": "udp-sink", "action": "allow", "match": {{ "proto": "udp", "dst_ports": [{SINK_PORT}], "dst_cidrs": ["{SINK_ADDR}/32"] }} }}
      ],
      "default_action": "deny"
    }}
  ]
}}
"#
    )
}
