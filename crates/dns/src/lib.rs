//! Sluice's DNS proxy: clients' queries are decided by hostname policy, allowed ones are
//! forwarded to the configured upstreams, and the addresses in allowed answers are put into
//! every dataplane worker's allowlist *before* the answer is released, so the client's first
//! packet to a learned address already finds it allowed.
//!
//! # Layout
//! A pure core without I/O:
//! - [`wire`]: raw-byte edits (ids, question span, TTL caps, the proxy's own answers);
//! - [`query`]: reading and checking a client's query;
//! - [`answer`]: checking an upstream's reply and taking the addresses it teaches (CNAME
//!   chain from the queried name, A records, TTL floor/ceiling, per-name cap);
//! - [`recent`]: what the workers already hold, so repeated answers skip the allowlist wait;
//! - [`counters`]: what is counted.
//!
//! And the I/O edge: [`upstream`] (our own forwarding client, with [`udp_pool`]) and [`proxy`] (listeners on a
//! runtime thread of their own, allowlist tickets).
//!
//! # Outcomes
//! - A name no hostname rule of the client's source group allows: NXDOMAIN, with an
//!   Extended DNS Error "Blocked" when the client speaks EDNS. Audit groups forward and count.
//! - Every upstream failed or timed out: SERVFAIL. So is an answer whose addresses the workers
//!   did not take in time (never release an answer the dataplane would then refuse).
//! - Malformed: FORMERR when the header is readable, dropped otherwise; responses sent to the
//!   proxy are dropped. Other opcodes: NOTIMP.
//! - An answer larger than the client's UDP limit: an empty answer with TC, so the client asks
//!   again over TCP (the addresses are already learned).

pub mod answer;
pub mod counters;
pub mod proxy;
pub mod query;
pub mod recent;
pub mod udp_pool;
pub mod upstream;
pub mod wire;

pub use answer::LearnLimits;
pub use counters::{DnsCounter, DnsCounters};
pub use proxy::{DnsConfig, DnsProxy};
