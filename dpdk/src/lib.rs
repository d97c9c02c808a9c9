//! Raw bindings to the system DPDK (>= 22.11, found with pkg-config), for `sluice-io`.
//!
//! Only the API Sluice uses is bound: EAL init and cleanup, lcore enumeration and launching a
//! function on a worker lcore, packet mempools, ethdev lookup, configuration, queues,
//! start/stop/close, link status, stats and xstats, mbuf handling and `rte_strerror`.
//! DPDK's fast path is made of `static inline` functions (`rte_eth_rx_burst`,
//! `rte_eth_tx_burst`, `rte_pktmbuf_alloc`, ...) that no library exports; the build script has
//! bindgen generate a C wrapper for each and compiles them with `cc`, so they are called under
//! their own names here. Three DPDK macros have hand-written accessors: [`sluice_rte_errno`]
//! (`rte_errno` is a per-lcore variable), [`sluice_pktmbuf_data`] (`rte_pktmbuf_mtod`) and
//! [`sluice_pktmbuf_data_len`].
//!
//! Building needs `libdpdk-dev`, `pkg-config` and `libclang-dev`; the build fails with a
//! message saying so when they are missing. Safe wrappers live in `sluice-io` (feature `dpdk`).

#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
#![allow(clippy::all, clippy::pedantic, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
