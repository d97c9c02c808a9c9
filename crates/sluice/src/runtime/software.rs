//! The software dataplane: both data ports on AF_PACKET sockets and one worker thread that
//! sleeps in `ppoll` when idle.

use std::sync::Arc;
use std::time::Duration;

use sluice_dataplane::counters::{CounterBlock, Counters};
use sluice_io::{AfPacketPort, IoError, IoStats, Port, Worker, WorkerConfig};
use tracing::info;

use super::port_guard::PortGuard;
use super::{Dataplane, Parts, BURST};
use crate::config::NodeConfig;
use crate::exit::{Exit, Failure};

/// Maps a port-opening error to its exit code, keeping the port layer's message.
fn port_failure(role: &str, name: &str, e: IoError) -> Failure {
    let exit = match e {
        IoError::InterfaceMissing { .. } => Exit::InterfaceMissing,
        IoError::PermissionDenied { .. } => Exit::Permission,
        _ => Exit::PortOpen,
    };
    Failure::new(exit, format!("cannot open the {role} port `{name}`: {e}"))
}

struct Software {
    worker: Worker,
    /// Removed after the worker stops.
    _guard: PortGuard,
}

impl Dataplane for Software {
    fn counters(&self) -> Counters {
        self.worker.counters().snapshot()
    }

    fn counter_block(&self) -> Arc<CounterBlock> {
        self.worker.counters()
    }

    fn io(&self) -> Arc<IoStats> {
        self.worker.io_stats()
    }

    fn is_running(&self) -> bool {
        self.worker.is_running()
    }

    fn stop(self: Box<Self>) -> Result<Counters, String> {
        Ok(self.worker.try_stop()?.counters().clone())
    }
}

/// Opens both ports and the service lane and starts the worker.
pub(super) fn start(config: &NodeConfig, parts: Parts) -> Result<(Box<dyn Dataplane>, String), Failure> {
    if config.workers > 1 {
        return Err(Failure::new(
            Exit::Setting,
            format!(
                "--workers {}: the software dataplane runs a single worker in this build (sharding flows \
                 across workers is not implemented yet); use --workers 1",
                config.workers
            ),
        ));
    }
    let internal = AfPacketPort::open(&config.internal_port, BURST)
        .map_err(|e| port_failure("internal", &config.internal_port, e))?;
    let external = AfPacketPort::open(&config.external_port, BURST)
        .map_err(|e| port_failure("external", &config.external_port, e))?;
    for (role, port) in [("internal", &internal), ("external", &external)] {
        if !port.offloads_disabled().is_empty() {
            info!(
                port = role,
                interface = %port.name(),
                offloads = %port.offloads_disabled().join(","),
                "turned off receive offloads that merge frames (a packet socket cannot take merged superframes)"
            );
        }
    }
    let guard = PortGuard::install(&[&config.internal_port, &config.external_port]);
    let (engine, tap) = parts.engine(config, internal.mac(), external.mac())?;
    let lane = tap.name().to_string();
    let worker = Worker::spawn(WorkerConfig {
        engine,
        internal: Box::new(internal),
        external: Box::new(external),
        host: Some(tap),
        burst: BURST,
        idle_timeout: Duration::from_millis(1),
        core: None,
    })
    .map_err(|e| Failure::new(Exit::PortOpen, format!("cannot start the dataplane worker: {e}")))?;
    Ok((Box::new(Software { worker, _guard: guard }), lane))
}
