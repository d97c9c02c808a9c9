//! Writes a test release: a copy of a built `sluice` binary whose release stamp reports
//! another version and optionally injects a start-up fault. `cargo xtask release-variant`
//! runs this after building the binary.
//!
//! Usage: release_variant BINARY OUT VERSION [none|never-ready|crash-at-start]

use std::path::Path;
use std::process::ExitCode;

use sluice_lifecycle::releases::sha256_file;
use sluice_lifecycle::stamp::{write_variant, Fault};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (binary, out, version) = match args.as_slice() {
        [binary, out, version] | [binary, out, version, _] => (binary, out, version),
        _ => {
            eprintln!("usage: release_variant BINARY OUT VERSION [none|never-ready|crash-at-start]");
            return ExitCode::from(2);
        }
    };
    let fault = match args.get(3).map(String::as_str) {
        None | Some("none") => Fault::None,
        Some(name) => match Fault::parse(name) {
            Some(fault) => fault,
            None => {
                eprintln!("unknown fault `{name}`: none, never-ready or crash-at-start");
                return ExitCode::from(2);
            }
        },
    };
    if let Err(e) = write_variant(Path::new(binary), Path::new(out), version, fault) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    match sha256_file(Path::new(out)) {
        Ok((sha256, bytes)) => {
            println!("{out}\n  version {version}, fault {}, {bytes} bytes, sha256 {sha256}", fault_name(fault));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn fault_name(fault: Fault) -> &'static str {
    match fault {
        Fault::None => "none",
        other => other.as_str(),
    }
}
