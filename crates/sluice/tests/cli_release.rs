//! `sluice release stage --make-current`: the first install of a data root (what the appliance
//! image build does) stages the binary and points `current` at it; on a data root that already
//! runs a release it is refused and nothing changes.

mod common;

use std::path::Path;

use common::{run, sluice};
use sluice_lifecycle::stamp::{write_variant, Fault};

const V1: &str = env!("CARGO_PKG_VERSION");

#[test]
fn make_current_installs_the_first_release_and_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let binary = env!("CARGO_BIN_EXE_sluice");
    let (code, stdout, stderr) =
        run(sluice().args(["release", "stage", binary, "--make-current", "--data-dir", data_arg]));
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let releases = data.join("releases");
    assert_eq!(std::fs::read_link(releases.join("current")).unwrap(), Path::new(V1));
    // What a service manager starts: the slot's binary, which reports the version.
    let (code, version, _) = run(std::process::Command::new(releases.join("current/sluice")).arg("version"));
    assert_eq!(code, 0);
    assert!(version.contains(V1), "{version}");
    let history = std::fs::read_to_string(releases.join("history.jsonl")).unwrap();
    assert!(history.contains("\"installed\""), "{history}");

    let v2 = dir.path().join("sluice-2");
    write_variant(Path::new(binary), &v2, "2.0.0-test", Fault::None).unwrap();
    let (code, _, stderr) =
        run(sluice().args(["release", "stage", v2.to_str().unwrap(), "--make-current", "--data-dir", data_arg]));
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("has_current") && stderr.contains("sluice upgrade apply"), "{stderr}");
    assert_eq!(std::fs::read_link(releases.join("current")).unwrap(), Path::new(V1), "current is unchanged");
    assert!(!releases.join("2.0.0-test").exists(), "nothing staged");
}
