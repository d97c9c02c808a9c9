//! Which release this binary is: the version it reports (what it was built as, unless a
//! release stamp says otherwise, see `sluice_lifecycle::stamp`), the state schemas it reads
//! and writes, and the start-up fault a test release injects.

use sluice_lifecycle::releases::BinaryInfo;
use sluice_lifecycle::stamp::{self, Fault, PAYLOAD_BYTES};
use sluice_store::state::{MIN_READABLE_SCHEMA_VERSION, SCHEMA_VERSION};

/// The stamp region: the marker, then a blank payload. `#[used]` keeps it in the binary;
/// it is read through a volatile pointer so the compiler cannot fold the blank payload in.
#[used]
static STAMP: [u8; 21 + PAYLOAD_BYTES] = {
    let mut region = [0u8; 21 + PAYLOAD_BYTES];
    let marker = *b"SLUICE-RELEASE-STAMP:";
    let mut i = 0;
    while i < marker.len() {
        region[i] = marker[i];
        i += 1;
    }
    region
};

fn stamp() -> stamp::Stamp {
    let mut payload = [0u8; PAYLOAD_BYTES];
    let base = STAMP.as_ptr();
    for (i, byte) in payload.iter_mut().enumerate() {
        // SAFETY: in bounds of STAMP; volatile so the read happens at run time.
        *byte = unsafe { std::ptr::read_volatile(base.add(21 + i)) };
    }
    stamp::parse_payload(&payload)
}

/// The release version this binary reports.
pub fn version() -> String {
    stamp().version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
}

/// The fault this (test) release injects.
pub fn fault() -> Fault {
    stamp().fault.as_deref().and_then(Fault::parse).unwrap_or(Fault::None)
}

/// What `sluice version --json` prints and staging checks.
pub fn info() -> BinaryInfo {
    BinaryInfo { version: version(), schema_min: MIN_READABLE_SCHEMA_VERSION, schema_max: SCHEMA_VERSION }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_region_starts_with_the_marker() {
        assert_eq!(&super::STAMP[..21], sluice_lifecycle::stamp::marker().as_slice());
        assert_eq!(super::version(), env!("CARGO_PKG_VERSION"));
    }
}
