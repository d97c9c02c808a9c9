//! `sluice run`: resolve the configuration, start logging, check the host, run the node
//! (software dataplane: [`crate::runtime`]).

use tracing::{error, info, warn};

use crate::boot;
use crate::checks;
use crate::cli::{Dataplane, RunArgs};
use crate::config::{self, FileConfig, NodeConfig};
use crate::exit::{Exit, Failure};
use crate::logging;
use crate::runtime;

/// Resolves the configuration from flags, environment and file (no logging yet).
pub fn load_config(args: RunArgs) -> Result<NodeConfig, Failure> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    config::resolve(args, file)
}

/// How `sluice run` ends: an exit code, or an exec into another release.
pub enum Ended {
    Exit(Exit),
    Exec(std::path::PathBuf),
}

/// Runs the node. Configuration errors are printed as plain text (logging is not configured
/// yet); everything after goes through the log.
pub fn run(args: RunArgs) -> Ended {
    if crate::build_info::fault() == sluice_lifecycle::stamp::Fault::CrashAtStart {
        eprintln!("this is a test release stamped crash-at-start: aborting");
        std::process::abort();
    }
    match run_node(args) {
        Ok(ended) => ended,
        Err(exit) => Ended::Exit(exit),
    }
}

fn run_node(args: RunArgs) -> Result<Ended, Exit> {
    let config_file = args.config.clone();
    let config = match load_config(args) {
        Ok(c) => c,
        Err(f) => {
            eprintln!("error: {f}");
            return Err(f.exit);
        }
    };
    logging::init(config.log_format, &config.log_level);
    let probation = match boot::on_start(&config.data_dir) {
        Ok(boot::Start::Run(probation)) => probation,
        Ok(boot::Start::Exec(binary)) => return Ok(Ended::Exec(binary)),
        Err(f) => {
            error!(exit_code = f.exit.code(), "{}", f.message);
            return Err(f.exit);
        }
    };
    info!(
        config_file = config_file.as_ref().map(|p| p.display().to_string()),
        dataplane = config.dataplane.as_str(),
        internal_port = %config.internal_port,
        external_port = %config.external_port,
        internal_address = %config.internal_address,
        external_address = %config.external_address,
        gateway = %config.gateway,
        snat = config.snat,
        flow_capacity = config.flow_capacity,
        workers = config.workers,
        data_dir = %config.data_dir.display(),
        policy = config.policy.as_ref().map(|p| p.display().to_string()),
        software_io = config.software_io.as_str(),
        dpdk_eal_args = %config.dpdk_eal_args.join(" "),
        log_format = config.log_format.as_str(),
        log_level = %config.log_level,
        http_bind = %config.http_bind,
        metrics_bind = config.metrics_bind.map(|a| a.to_string()),
        http_cert = config.http_cert.as_ref().map(|p| p.display().to_string()),
        "configuration"
    );
    if config.dataplane == Dataplane::Software && !config.dpdk_eal_args.is_empty() {
        warn!("DPDK EAL arguments are set but the dataplane is software; they are ignored");
    }
    let checked = match checks::run_all(&config) {
        Ok(c) => c,
        Err(f) => {
            error!(exit_code = f.exit.code(), "{}", f.message);
            return Err(f.exit);
        }
    };
    match &checked.policy {
        Some(policy) => info!(groups = policy.group_count(), rules = policy.rule_count(), "policy loaded"),
        None => info!("no policy file given: the store's active policy applies, or deny-all if it has none"),
    }
    for lock in &checked.locks {
        info!(lock = %lock.path.display(), "port claimed");
    }
    info!(release = %crate::build_info::version(), "startup checks passed");
    // Which process is the node: after a release returned through the boot guard it is no
    // longer the one first started.
    let pid_file = config.data_dir.join("sluice.pid");
    if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
        warn!(pid_file = %pid_file.display(), "cannot write the pid file: {e}");
    }
    match runtime::run(&config, checked, probation) {
        runtime::Stopped::Exit(exit) => Ok(Ended::Exit(exit)),
        runtime::Stopped::Restart => match boot::on_start(&config.data_dir) {
            Ok(boot::Start::Exec(binary)) => Ok(Ended::Exec(binary)),
            Ok(boot::Start::Run(_)) => {
                warn!("a restart was asked for, but no other release is to run; stopping");
                Ok(Ended::Exit(Exit::Success))
            }
            Err(f) => {
                error!(exit_code = f.exit.code(), "{}", f.message);
                Err(f.exit)
            }
        },
    }
}
