//! The Sluice packet engine: a pure library (no I/O, no clock, no locks or allocation on the
//! packet path). See `ARCHITECTURE.md` for the map and invariants, and [`engine`] for the
//! entry point.

#[macro_use]
mod named;

pub mod allowlist;
pub mod checksum;
pub mod config;
pub mod counters;
pub mod engine;
pub mod flow;
pub mod generate;
mod huge;
pub mod nat;
pub mod neighbor;
pub mod packet;
pub mod parse;
pub mod policy_handle;
mod prefetch;
pub mod ring;
pub mod tcp;
pub mod testing;
pub mod view;
