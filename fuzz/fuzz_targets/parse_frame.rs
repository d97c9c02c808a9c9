//! Feeds arbitrary bytes to the dataplane's frame parser: every input must come back as a
//! parsed frame or a parse error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice_dataplane::parse::parse_frame(data);
});
