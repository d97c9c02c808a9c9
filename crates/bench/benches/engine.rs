//! Criterion view of the same workloads as `sluice-bench engine` (for profiling and
//! regression comparisons): `cargo bench -p sluice-bench`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_bench::*;
use sluice_dataplane::engine::PortId;

fn engine(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(BURST as u64));
    let (mut b, pool) = established(10_000);
    let mut k = 0;
    g.bench_function("established_snat_burst_10k", |bench| {
        bench.iter(|| {
            k = (k + BURST) % pool.len();
            b.run_burst(PortId::Internal, &pool, k)
        })
    });
    let (mut b, pool) = new_flows(65_536);
    let mut k = 0;
    g.bench_function("new_flow_snat_burst", |bench| {
        bench.iter(|| {
            k = (k + BURST) % pool.len();
            b.run_burst(PortId::Internal, &pool, k)
        })
    });
    g.finish();
    c.bench_function("policy_compile_200x20", |bench| {
        let json = realistic_policy_json(200, 20);
        bench.iter(|| sluice_policy::compile_json(&json).unwrap())
    });
}

criterion_group!(benches, engine);
criterion_main!(benches);
