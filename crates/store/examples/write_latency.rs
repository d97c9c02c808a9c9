//! A quick, indicative figure (not a benchmark suite): latency of acknowledged policy writes
//! on one node, each committed with an fsync, in a temporary directory.
//!
//! `cargo run --release -p sluice-store --example write_latency [writes] [document KiB]`

use std::time::Instant;

use sluice_store::state::Command;
use sluice_store::{Store, StoreConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let writes: usize = args.next().map_or(300, |n| n.parse().expect("writes is a number"));
    let kib: usize = args.next().map_or(1, |n| n.parse().expect("document KiB is a number"));
    let document = format!("{{\"padding\":\"{}\"}}", "x".repeat(kib * 1024));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut micros = runtime.block_on(async {
        let store = Store::open_single_node(StoreConfig::single_node(dir.path())).await.expect("the store opens");
        let mut micros = Vec::with_capacity(writes);
        for _ in 0..writes {
            let command = Command::PutPolicy { document: document.clone(), comment: String::new() };
            let started = Instant::now();
            store.write("bench", command).await.expect("committed");
            micros.push(started.elapsed().as_micros() as u64);
        }
        store.shutdown().await.expect("clean shutdown");
        micros
    });
    micros.sort_unstable();
    let percentile = |p: usize| micros[(micros.len() - 1) * p / 100];
    let total: u64 = micros.iter().sum();
    println!(
        "{writes} writes of {kib} KiB: p50 {} us, p99 {} us, {:.0} writes/s",
        percentile(50),
        percentile(99),
        writes as f64 / (total as f64 / 1e6)
    );
}
