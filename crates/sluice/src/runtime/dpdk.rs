//! The DPDK dataplane: the EAL started from `--dpdk-eal-args`, both data ports opened from
//! their devargs (`net_af_packet0,iface=eth1`, a PCI address, any PMD), and the worker
//! busy-polling on the first EAL worker lcore.
//!
//! # Lcores
//! The EAL pins the thread that starts it (this process's main thread, which then runs the
//! control loop) to the main lcore, and makes one thread per other lcore in `-l`/`--lcores`.
//! The dataplane needs one of those: `-l 0,1` puts control on CPU 0 and the dataplane on
//! CPU 1; `--lcores=0@0,1@0` shares one CPU (for tests); without `-l` DPDK uses every CPU,
//! the first as main. Threads started later by the control plane inherit the main lcore's
//! CPU, so they never compete with the busy-polling worker.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use sluice_dataplane::counters::{CounterBlock, Counters};
use sluice_io::dpdk::{
    DpdkError, DpdkNode, DpdkPort, DpdkWorker, DpdkWorkerConfig, Eal, Mempool, MempoolConfig, PortConfig,
    PortStatsReader,
};
use sluice_io::IoStats;
use tracing::info;

use super::port_guard::{af_packet_iface, PortGuard};
use super::{Dataplane, Parts};
use crate::config::NodeConfig;
use crate::exit::{Exit, Failure};

/// The longest time a frame from the host waits in the service lane.
pub const HOST_POLL_INTERVAL: Duration = Duration::from_micros(50);

struct Dpdk {
    worker: DpdkWorker,
    readers: [PortStatsReader; 2],
    /// Removed after the worker and the ports stop.
    _guard: PortGuard,
}

impl Dataplane for Dpdk {
    fn counters(&self) -> Counters {
        self.worker.counters().snapshot()
    }

    fn counter_block(&self) -> Arc<CounterBlock> {
        self.worker.counters()
    }

    fn io(&self) -> Arc<IoStats> {
        self.worker.io_stats()
    }

    fn driver_stats(&self) -> Option<Value> {
        let mut ports = Map::new();
        for (role, reader) in ["internal", "external"].into_iter().zip(&self.readers) {
            let mut port = Map::new();
            port.insert("device".into(), json!(reader.name()));
            match reader.stats() {
                Ok(stats) => port.extend(stats.into_iter().map(|(k, v)| (k.to_string(), json!(v)))),
                Err(e) => drop(port.insert("stats_error".into(), json!(e.to_string()))),
            }
            match reader.xstats() {
                Ok(x) => drop(
                    port.insert("xstats".into(), Value::Object(x.into_iter().map(|(k, v)| (k, json!(v))).collect())),
                ),
                Err(e) => drop(port.insert("xstats_error".into(), json!(e.to_string()))),
            }
            ports.insert(role.into(), Value::Object(port));
        }
        Some(Value::Object(ports))
    }

    fn is_running(&self) -> bool {
        self.worker.is_running()
    }

    fn stop(self: Box<Self>) -> Result<Counters, String> {
        let (node, tap) = self.worker.stop()?;
        let counters = node.engine().counters().clone();
        // Stops and closes both ports (releasing the kernel sockets of net_af_packet), then
        // deletes the TAP.
        drop(node);
        drop(tap);
        Ok(counters)
    }
}

fn eal_failure(args: &[String], e: DpdkError) -> Failure {
    Failure::new(
        Exit::DpdkInit,
        format!(
            "DPDK could not start with --dpdk-eal-args \"{}\": {e}; check the lcore list (-l), the memory \
             (-m, or --no-huge for tests), and that no other DPDK process uses the same --file-prefix",
            args.join(" ")
        ),
    )
}

fn port_failure(role: &str, device: &str, e: DpdkError) -> Failure {
    Failure::new(
        Exit::PortOpen,
        format!(
            "cannot open the {role} port `{device}` with DPDK: {e}; give a PCI address bound to a DPDK driver \
             (vfio-pci) or devargs of a virtual device, e.g. net_af_packet0,iface=eth1"
        ),
    )
}

/// Starts the EAL, opens both ports and the service lane, and launches the worker.
pub(super) fn start(config: &NodeConfig, parts: Parts) -> Result<(Box<dyn Dataplane>, String), Failure> {
    if config.workers > 1 {
        return Err(Failure::new(
            Exit::Setting,
            format!(
                "--workers {}: the DPDK dataplane runs a single worker in this build (sharding flows across \
                 workers is not implemented yet); use --workers 1",
                config.workers
            ),
        ));
    }
    let args = &config.dpdk_eal_args;
    let eal = Eal::init(args).map_err(|e| eal_failure(args, e))?;
    let Some(&lcore) = eal.worker_lcores().first() else {
        return Err(Failure::new(
            Exit::DpdkInit,
            format!(
                "DPDK mode needs a worker lcore besides the main one, and --dpdk-eal-args \"{}\" gives only lcore \
                 {}: list two, e.g. -l 0,1 (control on CPU 0, dataplane on CPU 1) or --lcores=0@0,1@0 to share \
                 one CPU",
                args.join(" "),
                eal.main_lcore()
            ),
        ));
    };
    let pool = Mempool::new(&eal, "sluice_pkts", &MempoolConfig::default()).map_err(|e| {
        Failure::new(
            Exit::DpdkInit,
            format!("cannot allocate the packet buffer pool: {e}; give DPDK more memory (-m, or more hugepages)"),
        )
    })?;
    let pool = Arc::new(pool);
    let open = |role, device: &str| {
        DpdkPort::open(&eal, device, Arc::clone(&pool), &PortConfig::default())
            .map_err(|e| port_failure(role, device, e))
    };
    let internal = open("internal", &config.internal_port)?;
    let external = open("external", &config.external_port)?;
    let mac = |role, p: &DpdkPort| p.mac().map_err(|e| port_failure(role, p.name(), e));
    let (internal_mac, external_mac) = (mac("internal", &internal)?, mac("external", &external)?);
    for (role, p) in [("internal", &internal), ("external", &external)] {
        match p.link() {
            Ok(link) => info!(
                port = role,
                device = p.name(),
                link_up = link.up,
                speed_mbps = link.speed_mbps,
                "DPDK port started"
            ),
            Err(e) => info!(port = role, device = p.name(), "DPDK port started; link status unknown: {e}"),
        }
    }
    let (engine, tap) = parts.engine(config, internal_mac, external_mac)?;
    let lane = tap.name().to_string();
    let node = DpdkNode::new(engine, internal, external, pool);
    let cfg = DpdkWorkerConfig { node, host: Some(tap), host_poll_interval: HOST_POLL_INTERVAL };
    let worker = DpdkWorker::launch(&eal, lcore, cfg)
        .map_err(|e| Failure::new(Exit::DpdkInit, format!("cannot start the dataplane on lcore {lcore}: {e}")))?;
    info!(lcore, cpu = eal.lcore_cpu(lcore), main_lcore = eal.main_lcore(), "DPDK worker busy-polling");
    let readers = worker.port_stats().clone();
    // Only af_packet ports share their interface with the host stack.
    let ifaces: Vec<&str> =
        [&config.internal_port, &config.external_port].into_iter().filter_map(|d| af_packet_iface(d)).collect();
    let guard = PortGuard::install(&ifaces);
    Ok((Box::new(Dpdk { worker, readers, _guard: guard }), lane))
}
