//! `sluice-bench engine [--quick] [--json PATH]`: the engine figures, one `BENCH <name>
//! <value> <unit>` line each, plus a JSON file. Run through `cargo xtask bench engine`.
//!
//! `sluice-bench dpdk [--quick] [--json PATH]` (feature `dpdk`): the engine over DPDK ports
//! against `dpdk-testpmd`; see the `dpdk` module. Run through `cargo xtask bench dpdk`.
//!
//! `sluice-bench store [--quick] [--json PATH]`: the store and the HTTPS API in-process (policy
//! PUT latency, GET rate under `wrk`, store writes per second); see the `store` module.
//!
//! For profiling and instruction counting, `--bursts N` and `--runs N` set the length of the
//! measured packet runs (each run is N bursts of 32 packets), and `--only NAME` runs one
//! workload (`engine`'s figures; `engine` or `testpmd` for `dpdk`). Counting instructions per
//! packet under valgrind from two runs that differ only in `--bursts` cancels the set-up:
//! see "Instructions per packet" in docs/benchmarks.md.

mod afpacket;
mod cluster;
mod dns;
#[cfg(feature = "dpdk")]
mod dpdk;
mod snapshot;
mod store;
mod upgrade;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sluice_bench::*;
use sluice_dataplane::engine::PortId;

/// Counts live heap bytes so `bytes_per_flow` is measured, not computed from struct sizes.
struct CountingAlloc;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

struct Figure {
    name: &'static str,
    value: f64,
    unit: &'static str,
    target: &'static str,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Packets per second through the engine over `bursts` bursts from `pool`, median of `runs`.
fn measure_mpps(b: &mut Bench, pool: &FramePool, bursts: usize, runs: usize) -> f64 {
    let mut results = Vec::with_capacity(runs);
    let mut cursor = 0usize;
    for _ in 0..runs {
        let start = Instant::now();
        let mut forwarded = 0usize;
        for _ in 0..bursts {
            forwarded += b.run_burst(PortId::Internal, pool, cursor);
            cursor = (cursor + BURST) % pool.len();
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(forwarded, bursts * BURST, "every measured packet must be forwarded");
        results.push((bursts * BURST) as f64 / secs / 1e6);
    }
    median(results)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let suite = args.first().map(String::as_str).unwrap_or("engine");
    if suite == "--help" || suite == "-h" {
        println!("usage: sluice-bench engine [--quick] [--json PATH] [--only FIGURE] [--bursts N] [--runs N]");
        println!("       sluice-bench dpdk [--quick] [--json PATH] [--only engine|testpmd] [--bursts N] [--runs N]");
        println!("                   (feature `dpdk`)");
        println!("       sluice-bench afpacket [--quick] [--json PATH]   (root: netns, veth)");
        println!("       sluice-bench dns [--quick] [--json PATH]   (root: the lab, dnsperf, dnsmasq, sluice binary)");
        println!("       sluice-bench store [--quick] [--json PATH]   (wrk; data on a disk under target/bench)");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let json_path = args.iter().position(|a| a == "--json").and_then(|i| args.get(i + 1)).cloned();
    // `--only NAME` runs one workload (for profiling).
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let number = |flag: &str| -> Option<usize> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args.get(i + 1).and_then(|v| v.parse().ok()).filter(|&n: &usize| n > 0);
        Some(v.unwrap_or_else(|| {
            eprintln!("{flag} needs a positive number");
            std::process::exit(2);
        }))
    };
    let (default_bursts, default_runs) = if quick { (20_000, 3) } else { (300_000, 7) };
    let bursts = number("--bursts").unwrap_or(default_bursts);
    let runs = number("--runs").unwrap_or(default_runs);
    if suite == "dpdk" {
        run_dpdk(quick, bursts, runs, only.as_deref(), json_path);
        return;
    }
    if suite == "afpacket" {
        run_afpacket(quick, json_path);
        return;
    }
    if suite == "dns" {
        run_dns(quick, json_path);
        return;
    }
    if suite == "store" {
        run_store(quick, json_path);
        return;
    }
    if suite == "cluster" {
        run_cluster(quick, json_path);
        return;
    }
    if suite == "snapshot" {
        run_snapshot(quick, json_path);
        return;
    }
    if suite == "upgrade" {
        run_upgrade(quick, json_path);
        return;
    }
    if suite != "engine" {
        eprintln!("unknown suite `{suite}`; known: engine, dpdk, afpacket, dns, store, cluster, snapshot, upgrade");
        std::process::exit(2);
    }
    let wants = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut figures = Vec::new();

    let mut mpps_10k = None;
    let mut mpps_1m = None;
    if wants("established_snat_mpps") {
        let (mut b, pool) = established(10_000);
        let mpps = measure_mpps(&mut b, &pool, bursts, runs);
        mpps_10k = Some(mpps);
        figures.push(Figure { name: "established_snat_mpps", value: mpps, unit: "Mpps", target: ">= 15" });
    }
    if wants("new_flow_snat_mpps") {
        // Every packet a SYN: verified before and after the measured runs.
        let (mut b, pool) = new_flows(65_536);
        verify_new_flows(&mut b, &pool);
        let mpps = measure_mpps(&mut b, &pool, bursts / 2, runs);
        verify_new_flows(&mut b, &pool);
        figures.push(Figure { name: "new_flow_snat_mpps", value: mpps, unit: "Mpps", target: ">= 3" });
    }
    if wants("established_snat_mpps_1m") {
        let (mut b, pool) = established(1_000_000);
        let mpps = measure_mpps(&mut b, &pool, bursts, runs);
        mpps_1m = Some(mpps);
        figures.push(Figure { name: "established_snat_mpps_1m", value: mpps, unit: "Mpps", target: ">= half of 10k" });
    }
    if wants("bytes_per_flow") {
        // Heap growth of an engine from 1 K to 1 M flows of capacity, measured by the
        // counting allocator.
        let small_before = LIVE_BYTES.load(Ordering::Relaxed);
        let small = Bench::new(engine_config(1 << 10), realistic_policy());
        let small_bytes = LIVE_BYTES.load(Ordering::Relaxed) - small_before;
        let big_before = LIVE_BYTES.load(Ordering::Relaxed);
        let big = Bench::new(engine_config(1 << 20), realistic_policy());
        let big_bytes = LIVE_BYTES.load(Ordering::Relaxed) - big_before;
        let per_flow = (big_bytes - small_bytes) as f64 / ((1 << 20) - (1 << 10)) as f64;
        assert!(big.engine.flows().capacity() >= 1 << 20);
        drop((small, big));
        figures.push(Figure { name: "bytes_per_flow", value: per_flow, unit: "bytes", target: "<= 128" });
    }
    if wants("policy_compile_ms") {
        let json = realistic_policy_json(200, 20);
        let mut times = Vec::new();
        for _ in 0..if quick { 3 } else { 11 } {
            let start = Instant::now();
            let p = sluice_policy::compile_json(&json).expect("compiles");
            times.push(start.elapsed().as_secs_f64() * 1e3);
            assert_eq!(p.rule_count(), 200 * 20);
            assert_eq!(p.hostname_rule_count(), 200 * 2, "10 % hostname rules");
        }
        figures.push(Figure { name: "policy_compile_ms", value: median(times), unit: "ms", target: "" });
    }

    for f in &figures {
        println!("BENCH {} {:.3} {}", f.name, f.value, f.unit);
    }
    if let (Some(a), Some(b)) = (mpps_10k, mpps_1m) {
        println!("# 1M/10k established ratio {:.2} (target >= 0.5)", b / a);
    }
    if let Some(path) = json_path {
        write_json(&path, "engine", quick, &figures);
    }
}

fn write_json(path: &str, suite: &str, quick: bool, figures: &[Figure]) {
    let entries: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| serde_json::json!({"name": f.name, "value": f.value, "unit": f.unit, "target": f.target}))
        .collect();
    let doc = serde_json::json!({"suite": suite, "quick": quick, "figures": entries});
    std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).expect("write JSON");
}

fn run_dns(quick: bool, json_path: Option<String>) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("sluice-bench dns needs root (it builds the lab's network namespaces)");
        std::process::exit(2);
    }
    let r = match dns::run(quick) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-bench dns failed: {e}");
            std::process::exit(1);
        }
    };
    let figures: Vec<Figure> = r
        .figures
        .iter()
        .map(|&(name, value)| {
            let (unit, target) = match name {
                "dns_vs_dnsmasq_ratio" => ("ratio", ">= 2.0 with 0% loss"),
                "dns_p99_added_ms" => ("ms", "<= 1.0"),
                "dns_cpu_per_query_ratio" => ("ratio", ""),
                n if n.ends_with("_us_per_query") => ("us", ""),
                _ => ("qps", ""),
            };
            Figure { name, value, unit, target }
        })
        .collect();
    for f in &figures {
        println!("BENCH {} {:.3} {}", f.name, f.value, f.unit);
    }
    println!("BENCH dns_sluice_loss_pct {:.3} %", r.loss.0);
    println!("BENCH dns_dnsmasq_loss_pct {:.3} %", r.loss.1);
    if let Some(path) = json_path {
        write_json(&path, "dns", quick, &figures);
    }
}

fn run_store(quick: bool, json_path: Option<String>) {
    let r = match store::run(quick) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice-bench store failed: {e}");
            std::process::exit(1);
        }
    };
    for note in &r.notes {
        println!("# {note}");
    }
    let figures: Vec<Figure> = r
        .figures
        .iter()
        .map(|&(name, value)| {
            let unit = match name {
                "api_get_rps" => "rps",
                "store_apply_per_s" => "per_s",
                _ => "ms",
            };
            Figure { name, value, unit, target: "" }
        })
        .collect();
    for f in &figures {
        println!("BENCH {} {:.3} {}", f.name, f.value, f.unit);
    }
    if let Some(path) = json_path {
        write_json(&path, "store", quick, &figures);
    }
}

/// The suite's result, or its error printed and exit 1.
fn or_exit<T>(suite: &str, result: Result<T, String>) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("sluice-bench {suite} failed: {e}");
        std::process::exit(1);
    })
}

/// Prints a suite's notes (`# ...`) and figures (`BENCH ...`) and writes its JSON.
fn report(suite: &str, quick: bool, json_path: Option<String>, notes: &[String], figures: &[Figure]) {
    for note in notes {
        println!("# {note}");
    }
    for f in figures {
        println!("BENCH {} {:.3} {}", f.name, f.value, f.unit);
    }
    if let Some(path) = json_path {
        write_json(&path, suite, quick, figures);
    }
}

fn run_snapshot(quick: bool, json_path: Option<String>) {
    let parent = std::path::Path::new("target").join("bench");
    let r = or_exit("snapshot", snapshot::run(quick, &parent));
    let figures: Vec<Figure> = r
        .figures
        .iter()
        .map(|&(name, value, unit)| Figure { name, value, unit, target: if unit == "ms" { "<= 1000" } else { "" } })
        .collect();
    report("snapshot", quick, json_path, &r.notes, &figures);
    for f in figures.iter().filter(|f| f.unit == "ms" && f.value > 1000.0) {
        println!("# {} {:.0} ms misses its 1000 ms target", f.name, f.value);
    }
}

fn run_upgrade(quick: bool, json_path: Option<String>) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("sluice-bench upgrade needs root (it builds three labs of network namespaces)");
        std::process::exit(1);
    }
    let sluice = or_exit("upgrade", dns::sluice_binary());
    let parent = std::path::Path::new("target").join("bench");
    let r = or_exit("upgrade", upgrade::run(quick, &sluice, &parent));
    let figures: Vec<Figure> = r
        .figures
        .iter()
        .map(|&(name, value, unit)| {
            let target = match name {
                "rolling_upgrade_3_nodes_s" => "<= 60",
                "failed_writes_during_upgrade" => "0",
                _ => "",
            };
            Figure { name, value, unit, target }
        })
        .collect();
    report("upgrade", quick, json_path, &r.notes, &figures);
    if let Some(f) = figures.iter().find(|f| f.name == "rolling_upgrade_3_nodes_s" && f.value > 60.0) {
        println!("# rolling_upgrade_3_nodes_s {:.1} s misses its 60 s target", f.value);
    }
    if r.lost > 0 {
        eprintln!("sluice-bench upgrade: {} acknowledged writes were lost", r.lost);
        std::process::exit(1);
    }
}

fn run_cluster(quick: bool, json_path: Option<String>) {
    let parent = std::path::Path::new("target").join("bench");
    let r = or_exit("cluster", cluster::run(quick, &parent));
    let figures: Vec<Figure> = r
        .figures
        .iter()
        .map(|&(name, value)| {
            let target = if name == "failover_ms_median" { "<= 1000" } else { "" };
            Figure { name, value, unit: "ms", target }
        })
        .collect();
    report("cluster", quick, json_path, &r.notes, &figures);
    let median = r.figures.iter().find(|(n, _)| *n == "failover_ms_median").map_or(0.0, |f| f.1);
    if median > 1000.0 {
        println!("# failover_ms_median {median:.0} ms misses its 1000 ms target");
    }
}

fn run_afpacket(quick: bool, json_path: Option<String>) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("sluice-bench afpacket needs root (it builds a network namespace and a veth pair)");
        std::process::exit(2);
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        eprintln!("sluice-bench afpacket needs two CPUs (sender and receiver); this process may use {cpus}");
        std::process::exit(2);
    }
    let r = afpacket::run(quick, (0, 1));
    let figures: Vec<Figure> = r
        .figures
        .iter()
        .map(|&(name, value)| {
            let unit = if name.ends_with("_ratio") {
                "ratio"
            } else if name.ends_with("_ns_per_frame") {
                "ns"
            } else {
                "pps"
            };
            Figure { name, value, unit, target: "" }
        })
        .collect();
    for f in &figures {
        println!("BENCH {} {:.3} {}", f.name, f.value, f.unit);
    }
    if let Some(path) = json_path {
        write_json(&path, "afpacket", quick, &figures);
    }
}

#[cfg(feature = "dpdk")]
fn run_dpdk(quick: bool, bursts: usize, runs: usize, only: Option<&str>, json_path: Option<String>) {
    let (engine, testpmd) = match only {
        None => (true, true),
        Some("engine") => (true, false),
        Some("testpmd") => (false, true),
        Some(other) => {
            eprintln!("unknown dpdk workload `{other}`; known: engine, testpmd");
            std::process::exit(2);
        }
    };
    let r = dpdk::run(quick, bursts, runs, engine, testpmd);
    let mut figures = Vec::new();
    if let Some(mpps) = r.engine_mpps {
        figures.push(Figure { name: "dpdk_engine_mpps", value: mpps, unit: "Mpps", target: "" });
    }
    if let Some(mpps) = r.testpmd_mpps {
        figures.push(Figure { name: "testpmd_io_mpps", value: mpps, unit: "Mpps", target: "" });
    }
    if let (Some(e), Some(t)) = (r.engine_mpps, r.testpmd_mpps) {
        figures.push(Figure { name: "dpdk_engine_vs_testpmd_ratio", value: e / t, unit: "ratio", target: ">= 0.5" });
    }
    for f in &figures {
        println!("BENCH {} {:.3} {}", f.name, f.value, f.unit);
    }
    if let Some(path) = json_path {
        write_json(&path, "dpdk", quick, &figures);
    }
}

#[cfg(not(feature = "dpdk"))]
fn run_dpdk(_quick: bool, _bursts: usize, _runs: usize, _only: Option<&str>, _json_path: Option<String>) {
    eprintln!("this sluice-bench was built without the `dpdk` feature; run `cargo xtask bench dpdk`");
    std::process::exit(2);
}
