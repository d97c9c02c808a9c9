//! Packet I/O for the Sluice dataplane. (Being written.)
