//! The CLI client: `sluice status`, `sluice policy get|put|versions|rollback|validate|explain`
//! `sluice token list|mint|revoke`, `sluice settings` and `sluice audit` against a node's
//! management API.
//!
//! A command reaches the node one of two ways ([`Endpoint`]): over HTTPS with a bearer token
//! (`--api`, `--token`/`--token-file`/`SLUICE_TOKEN`, `--ca-cert`), or, with no `--api`,
//! through the admin socket of the node it runs on (root only, no token).
//!
//! Exit codes: 0 done; 1 the policy has errors (put, validate, explain); 3 the admin socket
//! could not be used; 4 the API could not be reached (connect, TLS, timeout); 5 the node
//! refused the request (404, 409, 413, 503, ...); 6 the token is missing, invalid, expired
//! or lacks the role.

mod cluster;
mod commands;
mod endpoint;
mod https;
pub(crate) mod render;

pub use cluster::cluster;
pub use commands::{audit, call, policy, settings, status, token};
pub use endpoint::{Answer, Endpoint};
pub use https::{HttpsClient, ServerUrl, DEFAULT_API_PORT};
pub use render::{refusal, timestamp};
