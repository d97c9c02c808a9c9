//! `sluice run`: resolve the configuration, start logging, check the host, run the node
//! (software dataplane: [`crate::runtime`]).

use tracing::{error, info, warn};

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

/// Runs the node; returns the exit code. Configuration errors are printed as plain text
/// (logging is not configured yet); everything after goes through the log.
pub fn run(args: RunArgs) -> Exit {
    let config_file = args.config.clone();
    let config = match load_config(args) {
        Ok(c) => c,
        Err(f) => {
            eprintln!("error: {f}");
            return f.exit;
        }
    };
    logging::init(config.log_format, &config.log_level);
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
            return f.exit;
        }
    };
    match &checked.policy {
        Some(policy) => info!(groups = policy.group_count(), rules = policy.rule_count(), "policy loaded"),
        None => info!("no policy file given: the store's active policy applies, or deny-all if it has none"),
    }
    for lock in &checked.locks {
        info!(lock = %lock.path.display(), "port claimed");
    }
    info!("startup checks passed");
    runtime::run(&config, checked)
}
