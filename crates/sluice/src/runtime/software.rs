//! The software dataplane: both data ports on AF_PACKET or AF_XDP sockets (`--software-io`)
//! and one worker thread that sleeps in `ppoll` when idle.

use std::sync::Arc;
use std::time::Duration;

use sluice_dataplane::counters::{CounterBlock, Counters};
use sluice_io::{AfPacketPort, IoError, IoStats, Port, Worker, WorkerConfig, XdpPort};
use tracing::info;

use super::port_guard::PortGuard;
use super::{Dataplane, Parts, BURST};
use crate::cli::SoftwareIo;
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

/// A data port ready for the worker, and its MAC.
type Opened = (Box<dyn Port>, [u8; 6]);

fn log_offloads(role: &str, name: &str, offloads: &[&str]) {
    if !offloads.is_empty() {
        info!(
            port = role,
            interface = %name,
            offloads = %offloads.join(","),
            "turned off receive offloads that merge frames (the port cannot take merged superframes)"
        );
    }
}

/// Opens one data port of the configured kind.
fn open_port(kind: SoftwareIo, role: &str, name: &str) -> Result<Opened, Failure> {
    let failure = |e| port_failure(role, name, e);
    match kind {
        SoftwareIo::AfPacket => {
            let port = AfPacketPort::open(name, BURST).map_err(failure)?;
            log_offloads(role, name, port.offloads_disabled());
            let mac = port.mac();
            Ok((Box::new(port), mac))
        }
        SoftwareIo::AfXdp => {
            let port = XdpPort::open(name).map_err(failure)?;
            log_offloads(role, name, port.offloads_disabled());
            info!(
                port = role,
                interface = %name,
                xdp = port.attach_mode().as_str(),
                zero_copy = port.zero_copy(),
                "AF_XDP port open: frames are redirected to the dataplane before the kernel's stack"
            );
            let mac = port.mac();
            Ok((Box::new(port), mac))
        }
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
    let internal = open_port(config.software_io, "internal", &config.internal_port)?;
    let external = open_port(config.software_io, "external", &config.external_port)?;
    let guard = PortGuard::install(&[&config.internal_port, &config.external_port]);
    let (engine, tap) = parts.engine(config, internal.1, external.1)?;
    let lane = tap.name().to_string();
    let worker = Worker::spawn(WorkerConfig {
        engine,
        internal: internal.0,
        external: external.0,
        host: Some(tap),
        burst: BURST,
        idle_timeout: Duration::from_millis(1),
        core: None,
    })
    .map_err(|e| Failure::new(Exit::PortOpen, format!("cannot start the dataplane worker: {e}")))?;
    Ok((Box::new(Software { worker, _guard: guard }), lane))
}
