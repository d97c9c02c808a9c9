//! The node's counters as a JSON file, `<data-dir>/stats.json`, rewritten every second while
//! `sluice run` runs (and once more at exit), so labs, demos and scripts can read them
//! without an API. The file is replaced atomically (written to `stats.json.tmp`, then
//! renamed), so a reader never sees a partial document. The management API serves the same
//! document under `node` in `GET /api/v1/stats`.
//!
//! ```json
//! { "pid": 4242, "time_unix_ms": 1795000000000, "uptime_ms": 12000, "running": true,
//!   "workers": 1, "policy_generation": 2, "service_lane": "sl-lane0", "port_io": "af-packet",
//!   "counters": { "internal_rx_packets": 10, "...": 0, "policy_denied": 3 },
//!   "ports": { "internal": { "rx_packets": 10, "...": 0 }, "external": {}, "host": {} },
//!   "dns": { "counters": { "answered": 5, "nxdomain_policy": 1, "...": 0 },
//!            "upstream_latency": { "le_250us": 0, "le_500us": 4, "...": 0 } } }
//! ```
//!
//! `dns` is there when the DNS proxy runs. `port_io` is how the data ports are driven:
//! `af-packet` or `af-xdp` (software dataplane), `dpdk`.
//!
//! `counters` holds every engine counter and drop reason by name, summed over workers
//! (`policy_generation` inside it is what the workers enforce; the top-level one is the
//! last generation published). `ports` holds what the ports count that the engine cannot
//! see (truncated frames, transmit drops).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sluice_dataplane::counters::Counters;
use sluice_dns::DnsCounters;
use sluice_io::PortStats;

/// The document's parts, gathered by the runtime.
pub struct Snapshot<'a> {
    pub uptime_ms: u64,
    pub running: bool,
    pub workers: usize,
    pub policy_generation: u32,
    pub service_lane: &'a str,
    /// `af-packet`, `af-xdp` or `dpdk`.
    pub port_io: &'a str,
    /// Counter names and values, summed over workers.
    pub counters: &'a [(&'static str, u64)],
    pub ports: [(&'static str, PortStats); 3],
    /// The ports' driver counters under `dpdk` (DPDK dataplane only).
    pub driver: Option<Value>,
    /// The DNS proxy's counters and upstream latency histogram, under `dns` (proxy on only).
    pub dns: Option<&'a DnsCounters>,
}

pub fn to_json(s: &Snapshot<'_>) -> Value {
    let counters: Map<String, Value> = s.counters.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let ports: Map<String, Value> = s
        .ports
        .iter()
        .map(|(name, p)| {
            (
                name.to_string(),
                json!({
                    "rx_packets": p.rx_packets,
                    "rx_dropped": p.rx_dropped,
                    "rx_truncated": p.rx_truncated,
                    "rx_errors": p.rx_errors,
                    "rx_checksum_partial": p.rx_checksum_partial,
                    "tx_packets": p.tx_packets,
                    "tx_bytes": p.tx_bytes,
                    "tx_dropped": p.tx_dropped,
                    "tx_errors": p.tx_errors,
                }),
            )
        })
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut doc = json!({
        "pid": std::process::id(),
        "time_unix_ms": now_ms,
        "uptime_ms": s.uptime_ms,
        "running": s.running,
        "workers": s.workers,
        "policy_generation": s.policy_generation,
        "service_lane": s.service_lane,
        "port_io": s.port_io,
        "counters": counters,
        "ports": ports,
    });
    if let Some(driver) = &s.driver {
        doc["dpdk"] = driver.clone();
    }
    if let Some(dns) = s.dns {
        let counters: Map<String, Value> = dns.snapshot().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
        let latency: Map<String, Value> = dns.latency_histogram().into_iter().map(|(k, v)| (k, json!(v))).collect();
        doc["dns"] = json!({ "counters": counters, "upstream_latency": latency });
    }
    doc
}

/// Named counters of one engine, in the order of [`sluice_dataplane::counters::aggregate`].
pub fn named(c: &Counters) -> Vec<(&'static str, u64)> {
    use sluice_dataplane::counters::{Counter, DropReason};
    Counter::ALL
        .iter()
        .map(|&k| (k.name(), c.get(k)))
        .chain(DropReason::ALL.iter().map(|&r| (r.name(), c.dropped(r))))
        .collect()
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("stats.json")
}

/// Replaces `<data_dir>/stats.json` with `doc` atomically.
pub fn write(data_dir: &Path, doc: &Value) -> std::io::Result<()> {
    let target = path(data_dir);
    let tmp = data_dir.join("stats.json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    serde_json::to_writer_pretty(&mut f, doc)?;
    f.write_all(b"\n")?;
    drop(f);
    std::fs::rename(&tmp, &target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_dataplane::counters::{Counter, DropReason};

    #[test]
    fn document_has_every_counter_and_is_replaced_atomically() {
        let mut c = Counters::default();
        c.add(Counter::FlowsOpened, 3);
        c.drop(DropReason::PolicyDenied);
        let named = named(&c);
        let rx = PortStats { rx_packets: 7, ..PortStats::default() };
        let snap = Snapshot {
            uptime_ms: 5,
            running: true,
            workers: 1,
            policy_generation: 2,
            service_lane: "sl-lane0",
            port_io: "af-xdp",
            counters: &named,
            ports: [("internal", rx), ("external", PortStats::default()), ("host", PortStats::default())],
            driver: None,
            dns: None,
        };
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &to_json(&snap)).unwrap();
        let back: Value = serde_json::from_str(&std::fs::read_to_string(path(dir.path())).unwrap()).unwrap();
        assert_eq!(back["counters"]["flows_opened"], 3);
        assert_eq!(back["counters"]["policy_denied"], 1);
        assert_eq!(back["counters"]["dropped_packets"], 1);
        assert_eq!(back["ports"]["internal"]["rx_packets"], 7);
        assert_eq!(back["port_io"], "af-xdp");
        assert_eq!((back["policy_generation"].as_u64(), back["running"].as_bool()), (Some(2), Some(true)));
        let names = sluice_dataplane::counters::aggregate(&[]);
        assert_eq!(named.len(), names.len());
        assert!(names.iter().all(|(k, _)| back["counters"].get(k).is_some()), "every counter is in the file");
        assert!(!dir.path().join("stats.json.tmp").exists());
    }
}
