//! The pure part of the veth benchmark: reading what `ip`, `nft` and `/proc` print, the
//! trafgen packet configuration, and turning counter samples into the reported figures.

use std::fmt::Write as _;

use crate::{err, Result};

/// Packet counters of one interface (`ip -j -s link show dev X`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

/// Reads the `stats64` block of `ip -j -s link show dev X`.
pub fn parse_link_stats(json: &str) -> Result<LinkStats> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| err(format!("`ip -j -s link` printed no JSON ({e}): {json}")))?;
    let stats = v.get(0).and_then(|l| l.get("stats64")).ok_or_else(|| err(format!("no stats64 in: {json}")))?;
    let get = |dir: &str, field: &str| {
        stats
            .get(dir)
            .and_then(|d| d.get(field))
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| err(format!("no stats64.{dir}.{field} in: {json}")))
    };
    Ok(LinkStats {
        rx_packets: get("rx", "packets")?,
        tx_packets: get("tx", "packets")?,
        tx_dropped: get("tx", "dropped")?,
    })
}

/// The packet count of every named counter in `nft -j list counters table ...` output.
pub fn parse_nft_counters(json: &str) -> Result<Vec<(String, u64)>> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| err(format!("`nft -j` printed no JSON ({e}): {json}")))?;
    let items =
        v.get("nftables").and_then(serde_json::Value::as_array).ok_or_else(|| err(format!("not nft JSON: {json}")))?;
    Ok(items
        .iter()
        .filter_map(|item| item.get("counter"))
        .filter_map(|c| Some((c.get("name")?.as_str()?.to_string(), c.get("packets")?.as_u64()?)))
        .collect())
}

/// The count of counter `name` in [`parse_nft_counters`] output.
pub fn counter(counters: &[(String, u64)], name: &str) -> Result<u64> {
    counters.iter().find(|(n, _)| n == name).map(|&(_, p)| p).ok_or_else(|| err(format!("no nft counter `{name}`")))
}

/// Nanoseconds a task has run, the first field of `/proc/<pid>/task/<tid>/schedstat`.
pub fn parse_schedstat(text: &str) -> Result<u64> {
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| err(format!("unexpected schedstat: {text:?}")))
}

/// The link-layer address of the first entry of `ip -j neigh show ...`, if resolved.
pub fn parse_neighbor_mac(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.as_array()?.iter().find_map(|n| n.get("lladdr")?.as_str().map(String::from))
}

/// CPU numbers of a list such as `0-3,6` (`Cpus_allowed_list`).
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let bad = || err(format!("bad CPU list `{list}`"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(cpus)
}

/// Whether a thread's `comm` is the threaded-NAPI poller of interface `dev` (`napi/<dev>-<id>`,
/// cut to the kernel's 15 characters).
pub fn is_napi_thread_of(comm: &str, dev: &str) -> bool {
    let full = format!("napi/{dev}-");
    let comm = comm.trim_end();
    if full.len() >= 15 {
        comm == &full[..15]
    } else {
        comm.starts_with(&full) && comm[full.len()..].chars().all(|c| c.is_ascii_digit())
    }
}

/// What the load generator sends: UDP from `src_ip` ports `first_port..first_port+flows` to
/// `dst_ip:dst_port`, in Ethernet frames of 60 bytes (64 on a wire with the FCS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub src_mac: String,
    pub dst_mac: String,
    pub src_ip: String,
    pub dst_ip: String,
    pub first_port: u16,
    pub flows: u16,
    pub dst_port: u16,
}

/// Bytes of UDP payload that make a 60-byte frame: 14 Ethernet + 20 IPv4 + 8 UDP + 18.
pub const PAYLOAD_BYTES: usize = 18;

impl Load {
    /// The trafgen configuration: one packet whose source port steps through the flows;
    /// trafgen recomputes the checksums of fields it changes.
    pub fn trafgen_config(&self) -> String {
        let last = self.first_port + (self.flows - 1);
        let mut cfg = String::from("{\n");
        let _ = writeln!(cfg, "  eth(da={}, sa={}),", self.dst_mac, self.src_mac);
        let _ = writeln!(cfg, "  ipv4(sa={}, da={}, ttl=64),", self.src_ip, self.dst_ip);
        let _ = writeln!(cfg, "  udp(sp=dinc({}, {last}, 1), dp={}),", self.first_port, self.dst_port);
        let _ = writeln!(cfg, "  fill(0x00, {PAYLOAD_BYTES})");
        cfg.push_str("}\n");
        cfg
    }
}

/// Counters read at the start and end of one measured window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    pub secs: f64,
    /// Frames the receiver saw with the node's external address as source.
    pub delivered: u64,
    /// Frames the load generator handed to its interface (sent or dropped there).
    pub offered: u64,
    /// Of those, frames dropped because the node's input queue was full.
    pub input_dropped: u64,
    /// CPU time of the forwarder's threads (the node process and/or the NAPI poller).
    pub cpu_ns: u64,
    /// CPU time of the load generator.
    pub load_cpu_ns: u64,
}

/// One window's rates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub delivered_pps: f64,
    pub offered_pps: f64,
    /// Offered frames dropped at the node's input queue, per second.
    pub input_dropped_pps: f64,
    /// CPU-seconds the forwarder used per second.
    pub cpus: f64,
    /// CPU-seconds the load generator used per second.
    pub load_cpus: f64,
}

impl Sample {
    pub fn between(a: &Snapshot, b: &Snapshot) -> Sample {
        let secs = (b.secs - a.secs).max(1e-9);
        Sample {
            delivered_pps: b.delivered.saturating_sub(a.delivered) as f64 / secs,
            offered_pps: b.offered.saturating_sub(a.offered) as f64 / secs,
            input_dropped_pps: b.input_dropped.saturating_sub(a.input_dropped) as f64 / secs,
            cpus: b.cpu_ns.saturating_sub(a.cpu_ns) as f64 / 1e9 / secs,
            load_cpus: b.load_cpu_ns.saturating_sub(a.load_cpu_ns) as f64 / 1e9 / secs,
        }
    }

    /// Delivered packets per CPU-second of the forwarder.
    pub fn pps_per_cpu(&self) -> f64 {
        if self.cpus > 0.0 {
            self.delivered_pps / self.cpus
        } else {
            0.0
        }
    }
}

/// The window with the median delivered rate (so its CPU figure belongs to the same window).
pub fn median(samples: &[Sample]) -> Option<Sample> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.delivered_pps.total_cmp(&b.delivered_pps));
    sorted.get(sorted.len() / 2).copied()
}

/// One reported figure: `BENCH <name> <value> <unit>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    pub target: &'static str,
}

impl Figure {
    fn new(name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure { name: name.into(), value, unit, target: "" }
    }

    pub fn line(&self) -> String {
        format!("BENCH {} {:.3} {}", self.name, self.value, self.unit)
    }
}

/// The figures of the measured modes (`name` is `software`, `dpdk` or `kernel`): per mode the
/// delivered pps, the forwarder's CPUs and pps per CPU-second; then each Sluice mode against
/// the kernel, plain (`<mode>_vs_kernel_ratio`: the issue's figure) and per CPU.
pub fn figures(results: &[(&str, Sample)]) -> Vec<Figure> {
    let mut out = Vec::new();
    for (mode, s) in results {
        out.push(Figure::new(format!("veth_{mode}_pps"), s.delivered_pps, "pps"));
        out.push(Figure::new(format!("veth_{mode}_offered_pps"), s.offered_pps, "pps"));
        out.push(Figure::new(format!("veth_{mode}_cpus"), s.cpus, "cpus"));
        out.push(Figure::new(format!("veth_{mode}_pps_per_cpu"), s.pps_per_cpu(), "pps"));
    }
    let kernel = results.iter().find(|(m, _)| *m == "kernel").map(|(_, s)| *s);
    if let Some(k) = kernel.filter(|k| k.delivered_pps > 0.0) {
        for (mode, s) in results.iter().filter(|(m, _)| *m != "kernel") {
            let mut plain = Figure::new(format!("{mode}_vs_kernel_ratio"), s.delivered_pps / k.delivered_pps, "ratio");
            // Both of the software mode's port kinds answer to the issue's target.
            if mode.starts_with("software") {
                plain.target = ">= 1.0";
            }
            out.push(plain);
            if k.pps_per_cpu() > 0.0 {
                out.push(Figure::new(
                    format!("{mode}_vs_kernel_per_cpu_ratio"),
                    s.pps_per_cpu() / k.pps_per_cpu(),
                    "ratio",
                ));
            }
        }
    }
    out
}

/// The JSON document `--json` writes (the same shape as the other suites').
pub fn json(quick: bool, figures: &[Figure]) -> String {
    let entries: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| serde_json::json!({"name": f.name, "value": f.value, "unit": f.unit, "target": f.target}))
        .collect();
    let doc = serde_json::json!({"suite": "veth", "quick": quick, "figures": entries});
    serde_json::to_string_pretty(&doc).expect("JSON of plain values")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ip_link_stats() {
        let json = r#"[{"ifindex":2,"ifname":"sv-ci","stats64":{"rx":{"bytes":838,"packets":11,"errors":0,
            "dropped":0},"tx":{"bytes":23054,"packets":497,"errors":0,"dropped":3,"carrier_errors":0}}}]"#;
        assert_eq!(parse_link_stats(json).unwrap(), LinkStats { rx_packets: 11, tx_packets: 497, tx_dropped: 3 });
        assert!(parse_link_stats("[]").is_err());
        assert!(parse_link_stats("Device does not exist").is_err());
    }

    #[test]
    fn reads_nft_counters() {
        let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
            {"counter": {"family": "netdev", "name": "translated", "table": "sv_sink", "handle": 2,
            "packets": 102886, "bytes": 4732756}},
            {"counter": {"family": "netdev", "name": "untranslated", "table": "sv_sink", "handle": 3,
            "packets": 0, "bytes": 0}}]}"#;
        let c = parse_nft_counters(json).unwrap();
        assert_eq!(counter(&c, "translated").unwrap(), 102886);
        assert_eq!(counter(&c, "untranslated").unwrap(), 0);
        assert!(counter(&c, "other").is_err());
        assert!(parse_nft_counters("Error: No such file or directory").is_err());
    }

    #[test]
    fn reads_proc_and_neighbors() {
        assert_eq!(parse_schedstat("2963825000 1200 340\n").unwrap(), 2_963_825_000);
        assert!(parse_schedstat("").is_err());
        let neigh = r#"[{"dst":"10.10.0.1","dev":"sv-ci","lladdr":"d6:e1:c7:64:d0:d9","state":["REACHABLE"]}]"#;
        assert_eq!(parse_neighbor_mac(neigh).as_deref(), Some("d6:e1:c7:64:d0:d9"));
        assert_eq!(parse_neighbor_mac(r#"[{"dst":"10.10.0.1","dev":"sv-ci","state":["FAILED"]}]"#), None);
        assert_eq!(parse_cpu_list("0-1\n").unwrap(), [0, 1]);
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), [0, 2, 3, 4]);
        assert!(parse_cpu_list("0-x").is_err());
    }

    #[test]
    fn recognises_napi_threads() {
        assert!(is_napi_thread_of("napi/sv-ni-258\n", "sv-ni"));
        assert!(!is_napi_thread_of("napi/sv-ni2-258", "sv-ni"));
        assert!(!is_napi_thread_of("napi/sv-ne-258", "sv-ni"));
        // Long names are cut to 15 characters by the kernel.
        assert!(is_napi_thread_of("napi/sl123x4-ni", "sl123x4-ni"));
    }

    #[test]
    fn trafgen_config_steps_through_the_flows() {
        let load = Load {
            src_mac: "22:2b:ec:5d:59:9d".into(),
            dst_mac: "d6:e1:c7:64:d0:d9".into(),
            src_ip: "10.10.0.2".into(),
            dst_ip: "198.51.100.10".into(),
            first_port: 20000,
            flows: 1024,
            dst_port: 9,
        };
        let cfg = load.trafgen_config();
        assert!(cfg.contains("eth(da=d6:e1:c7:64:d0:d9, sa=22:2b:ec:5d:59:9d)"), "{cfg}");
        assert!(cfg.contains("udp(sp=dinc(20000, 21023, 1), dp=9)"), "{cfg}");
        assert_eq!(14 + 20 + 8 + PAYLOAD_BYTES, 60);
    }

    #[test]
    fn rates_medians_and_ratios() {
        let a = Snapshot { secs: 1.0, delivered: 1000, offered: 5000, input_dropped: 0, cpu_ns: 0, load_cpu_ns: 0 };
        let b = Snapshot {
            secs: 3.0,
            delivered: 201_000,
            offered: 1_005_000,
            input_dropped: 600_000,
            cpu_ns: 1_000_000_000,
            load_cpu_ns: 2_000_000_000,
        };
        let s = Sample::between(&a, &b);
        assert_eq!((s.delivered_pps, s.offered_pps, s.cpus), (100_000.0, 500_000.0, 0.5));
        assert_eq!((s.input_dropped_pps, s.load_cpus), (300_000.0, 1.0));
        assert_eq!(s.pps_per_cpu(), 200_000.0);
        let slow = Sample { delivered_pps: 50_000.0, ..s };
        let fast = Sample { delivered_pps: 150_000.0, ..s };
        assert_eq!(median(&[fast, slow, s]).unwrap().delivered_pps, 100_000.0);
        assert_eq!(median(&[]), None);

        let kernel =
            Sample { delivered_pps: 200_000.0, offered_pps: 1e6, input_dropped_pps: 0.0, cpus: 1.0, load_cpus: 1.0 };
        let f = figures(&[("software", s), ("software_xdp", fast), ("kernel", kernel)]);
        let get = |n: &str| f.iter().find(|f| f.name == n).unwrap_or_else(|| panic!("{n}: {f:?}")).clone();
        assert_eq!(get("software_vs_kernel_ratio").value, 0.5);
        assert_eq!(get("software_vs_kernel_ratio").target, ">= 1.0");
        assert_eq!(get("software_vs_kernel_per_cpu_ratio").value, 1.0);
        assert_eq!(get("software_xdp_vs_kernel_ratio").value, 0.75);
        assert_eq!(get("software_xdp_vs_kernel_ratio").target, ">= 1.0");
        assert_eq!(get("veth_kernel_pps").line(), "BENCH veth_kernel_pps 200000.000 pps");
        // Without a kernel run there is nothing to compare against.
        assert!(figures(&[("software", s)]).iter().all(|f| !f.name.ends_with("_ratio")));
        let doc: serde_json::Value = serde_json::from_str(&json(true, &f)).unwrap();
        assert_eq!(doc["suite"], "veth");
        assert_eq!(doc["figures"].as_array().unwrap().len(), f.len());
    }
}
