//! The appliance's first-boot seed script (`image/rootfs/usr/lib/sluice/seed`), run for real
//! against a seed directory and a scratch root (its test mode: `SLUICE_SEED_DIR` is the
//! mounted seed, `SLUICE_SEED_ROOT` the root; udev and systemd are left alone). The release
//! it stages with is this build's `sluice`, installed as the first slot as the image does.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run, sluice};
use sluice_lifecycle::stamp::{write_variant, Fault};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../image/rootfs/usr/lib/sluice/seed")
}

fn run_seed(seed: &Path, root: &Path) -> String {
    let out = Command::new("sh")
        .arg(script())
        .env("SLUICE_SEED_DIR", seed)
        .env("SLUICE_SEED_ROOT", root)
        .output()
        .expect("sh runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the seed script failed:\n{text}");
    text
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A scratch root with the image's first release slot and default network.
fn appliance_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    let data = root.join("var/lib/sluice");
    let (code, out, err) = run(sluice()
        .args(["release", "stage", env!("CARGO_BIN_EXE_sluice"), "--make-current"])
        .arg("--data-dir")
        .arg(&data));
    assert_eq!(code, 0, "{out}{err}");
    std::fs::create_dir_all(root.join("etc/systemd/network")).unwrap();
    std::fs::write(root.join("etc/systemd/network/90-sluice-default-dhcp.network"), "[Match]\nType=ether\n").unwrap();
    root
}

#[test]
fn the_seed_configures_a_joining_node_and_stages_its_releases() {
    let dir = tempfile::tempdir().unwrap();
    let root = appliance_root(dir.path());
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(seed.join("network")).unwrap();
    std::fs::create_dir_all(seed.join("releases")).unwrap();
    std::fs::write(seed.join("sluice.toml"), "internal_port = \"int0\"\nexternal_port = \"ext0\"\n").unwrap();
    std::fs::write(seed.join("join"), "192.0.2.10:7401\n").unwrap();
    std::fs::write(seed.join("bootstrap-token"), "the-enrolment-secret").unwrap();
    std::fs::write(seed.join("hostname"), "edge-2\n").unwrap();
    std::fs::write(seed.join("console-log"), "").unwrap();
    std::fs::write(seed.join("network/10-int.link"), "[Match]\nMACAddress=52:54:00:00:00:02\n[Link]\nName=int0\n")
        .unwrap();
    write_variant(Path::new(env!("CARGO_BIN_EXE_sluice")), &seed.join("releases/sluice-2"), "2.0.0-seed", Fault::None)
        .unwrap();

    let log = run_seed(&seed, &root);
    assert!(log.contains("configuration copied from"), "{log}");
    let etc = root.join("etc/sluice");
    let toml = std::fs::read_to_string(etc.join("sluice.toml")).unwrap();
    assert!(toml.starts_with("internal_port = \"int0\"") && toml.contains("\njoin = \"192.0.2.10:7401\"\n"), "{toml}");
    assert_eq!(mode(&etc.join("sluice.toml")), 0o600);
    assert_eq!(std::fs::read_to_string(etc.join("bootstrap-token")).unwrap(), "the-enrolment-secret");
    assert_eq!(mode(&etc.join("bootstrap-token")), 0o600, "secrets are root's only");
    assert_eq!(std::fs::read_to_string(root.join("etc/hostname")).unwrap(), "edge-2\n");
    let network = root.join("etc/systemd/network");
    assert!(network.join("10-int.link").is_file());
    assert!(!network.join("90-sluice-default-dhcp.network").exists(), "the seed's network replaces the DHCP default");
    let dropin = root.join("etc/systemd/system/sluice.service.d/console-log.conf");
    assert!(std::fs::read_to_string(&dropin).unwrap().contains("StandardError=journal+console"));
    let releases = root.join("var/lib/sluice/releases");
    assert!(releases.join("2.0.0-seed/manifest.json").is_file(), "the seed's release is staged");
    assert_eq!(
        std::fs::read_link(releases.join("current")).unwrap(),
        Path::new(env!("CARGO_PKG_VERSION")),
        "and not made current"
    );

    // The next boot, with a file that names its join itself and no console-log: nothing is
    // doubled, the drop-in goes, the staged release is staged again without complaint.
    std::fs::write(seed.join("sluice.toml"), "join = \"192.0.2.11:7401\"\n").unwrap();
    std::fs::remove_file(seed.join("console-log")).unwrap();
    run_seed(&seed, &root);
    let toml = std::fs::read_to_string(etc.join("sluice.toml")).unwrap();
    assert_eq!(toml.matches("join").count(), 1, "{toml}");
    assert!(toml.contains("192.0.2.11"), "{toml}");
    assert!(!dropin.exists());
}

#[test]
fn a_seed_without_sluice_toml_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = appliance_root(dir.path());
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(seed.join("network")).unwrap();
    std::fs::write(seed.join("bootstrap-token"), "secret").unwrap();
    std::fs::write(seed.join("network/10-int.link"), "[Match]\n").unwrap();
    let log = run_seed(&seed, &root);
    assert!(log.contains("has no sluice.toml: nothing copied"), "{log}");
    assert!(!root.join("etc/sluice").exists());
    assert!(root.join("etc/systemd/network/90-sluice-default-dhcp.network").exists());
    assert!(!root.join("etc/systemd/network/10-int.link").exists());
}
