//! The `sluice` node binary: command line, configuration layering, startup checks, offline
//! policy tools, and the client commands that manage a node through its API
//! ([`client`]).
//!
//! # Configuration
//! Every `sluice run` setting is a flag (`--internal-port`), an environment variable
//! (`SLUICE_INTERNAL_PORT`) and a key of the TOML file given with `--config`
//! (`internal_port`). Per setting, a flag beats the variable, which beats the file, which
//! beats the default. Unknown keys in the file are errors naming the key and the file.
//!
//! # Exit codes
//! | code | meaning |
//! |---|---|
//! | 0 | success; for `run`: stopped cleanly by SIGTERM or SIGINT |
//! | 1 | `policy validate` / `policy explain`: the policy has errors or cannot be read |
//! | 2 | command line not understood |
//! | 3 | client commands without `--api`: the node's admin socket could not be used |
//! | 4 | client commands: the API could not be reached (connect, TLS, timeout) |
//! | 5 | client commands: the node refused the request (404, 409, 413, 503, ...); `status`: not ready |
//! | 6 | client commands: the token is missing, invalid or expired, or lacks the role |
//! | 10 | configuration file unreadable, not TOML, unknown key or wrong type |
//! | 11 | a setting is missing or invalid |
//! | 12 | internal and external networks overlap |
//! | 13 | gateway is not on the external network |
//! | 14 | the same interface was given for both ports |
//! | 15 | policy file unreadable or invalid |
//! | 16 | a port's network interface does not exist |
//! | 17 | not permitted: not root and lacking CAP_NET_RAW / CAP_NET_ADMIN |
//! | 18 | `--dataplane dpdk` on a binary built without the `dpdk` feature |
//! | 19 | DPDK mode without hugepages (and without `--no-huge`) |
//! | 20 | another sluice process holds one of the ports |
//! | 21 | the data directory cannot be created or written |
//! | 22 | a port or the service lane cannot be opened (not Ethernet, no TAP support, ...) |
//! | 23 | DPDK could not start (EAL arguments, lcores, buffer memory) |
//! | 24 | the DNS proxy could not start (port 53 on a target address taken, upstream routes refused) |
//! | 25 | the control plane could not start (store unreadable, API address in use, bad certificate or key) |
//! | 30 | a dataplane worker stopped on its own (it panicked); the node stops instead of staying up without forwarding |
//!
//! The same table is printed by `sluice run --help` ([`cli::EXIT_CODES_HELP`]).

pub mod boot;
pub mod build_info;
pub mod checks;
pub mod cli;
pub mod client;
pub mod cluster_settings;
pub mod config;
pub mod dns_settings;
pub mod exit;
pub mod logging;
pub mod net;
pub mod notify;
pub mod policy_cmd;
pub mod release_cmd;
pub mod run;
pub mod runtime;
pub mod signals;
pub mod snapshot_cmd;
pub mod stats;
pub mod token_cmd;
