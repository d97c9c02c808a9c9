//! Bindings to the system DPDK. (Being written.)
