//! The snapshot reader on arbitrary bytes: every length and count in a file is untrusted, so
//! nothing may panic or allocate from a length field; a file that reads must also survive
//! opening its secrets (the seeds' passphrase is `fuzz`, and a wrong one must simply fail).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = sluice_snapshot::read(data) {
        assert!(file.state.len() as u64 == file.manifest.state_bytes);
        let _ = sluice_snapshot::section_offsets(data).expect("a file that reads has a section table");
        let _ = file.open_secrets(b"fuzz");
        let _ = file.open_secrets(b"not the passphrase");
    }
});
