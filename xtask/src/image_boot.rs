//! `cargo xtask image --boot-test`: boots the built qcow2 under QEMU, as an operator would
//! launch it, and checks it serves.
//!
//! The VM gets the image (copy-on-write: the artifact is not changed), a seed disk
//! (SLUICE-SEED: sluice.toml for the DPDK dataplane on net_af_packet, the API certificate,
//! the hash of an admin token, .link files naming the NICs, and a second release for the
//! upgrade), a management NIC whose port 8443 is forwarded to 127.0.0.1 on the host, and two
//! data NICs. From the host, over HTTPS with the seed's certificate as the only trust
//! anchor, it waits for `/health`, then for `/ready` with exactly the expected checks, reads
//! the release from `/api/v1/stats`, upgrades to the seed's second release through
//! `/api/v1/upgrade` (the unit runs `releases/current`, the node execs the new one under
//! systemd's watchdog) and reads the release again. On any failure or timeout the serial
//! console's log is printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::image::{json_string, write, Built, Options};
use crate::run::{self, Error, Result};

/// The checks `/ready` lists for a single node (its body names them in key order).
pub const EXPECTED_CHECKS: &[&str] = &["dataplane", "dns", "policy", "store", "draining"];
const MGMT_MAC: &str = "52:54:00:5e:10:01";
const INTERNAL_MAC: &str = "52:54:00:5e:10:02";
const EXTERNAL_MAC: &str = "52:54:00:5e:10:03";

/// A QEMU that is killed when the test ends, however it ends.
struct Vm {
    child: std::cell::RefCell<Child>,
    serial: PathBuf,
    qemu_log: PathBuf,
}

impl Vm {
    fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.borrow_mut().try_wait().ok().flatten()
    }

    fn serial_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.serial).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn fail(&self, message: String) -> Error {
        Error::failed(format!(
            "{message}\n--- serial console ({}), last 150 lines ---\n{}\n--- end of serial console ---",
            self.serial.display(),
            self.serial_tail(150)
        ))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Whether KVM runs a guest here: `/dev/kvm` opening is not enough (a nested or partial
/// KVM can refuse the host CPU model's MSRs at vCPU start), so a tiny guest with the CPU
/// model the test uses must stay up for a few seconds.
fn kvm_usable() -> bool {
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return false;
    }
    let probe = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-cpu", "host", "-m", "64", "-nodefaults", "-display", "none"])
        .args(["-monitor", "none", "-serial", "null", "-no-reboot"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = probe else { return false };
    std::thread::sleep(Duration::from_secs(3));
    let alive = matches!(child.try_wait(), Ok(None));
    let _ = child.kill();
    let _ = child.wait();
    alive
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::failed(e.to_string()))?;
    Ok(listener.local_addr().map_err(|e| Error::failed(e.to_string()))?.port())
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").map_err(|e| Error::failed(e.to_string()))?,
        &mut buf,
    )
    .map_err(|e| Error::failed(e.to_string()))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The seed node's configuration: DPDK on the two data NICs through net_af_packet (the
/// runtime libraries and the boot-time hugepages are what this proves), the API on every
/// address with the seed's certificate.
pub fn seed_toml() -> String {
    "\
# A single node on the DPDK dataplane (net_af_packet on the data NICs named by the .link files).
dataplane = \"dpdk\"
internal_port = \"net_af_packet0,iface=int0\"
external_port = \"net_af_packet1,iface=ext0\"
dpdk_eal_args = \"-l 0-1 --in-memory -m 256 --no-pci --no-telemetry\"
internal_address = \"10.10.0.1/24\"
external_address = \"203.0.113.2/24\"
gateway = \"203.0.113.1\"
http_bind = \"0.0.0.0:8443\"
http_cert = \"/etc/sluice/api-cert.pem\"
http_key = \"/etc/sluice/api-key.pem\"
"
    .to_owned()
}

fn link_file(mac: &str, name: &str) -> String {
    format!("[Match]\nMACAddress={mac}\n\n[Link]\nName={name}\n")
}

/// Writes the seed's files into `dir`; returns the admin token's secret.
fn write_seed(dir: &Path, built: &Built, upgrade_to: &str) -> Result<String> {
    let network = dir.join("network");
    let releases = dir.join("releases");
    for d in [dir, &network, &releases] {
        std::fs::create_dir_all(d).map_err(|e| Error::failed(format!("{}: {e}", d.display())))?;
    }
    write(&dir.join("sluice.toml"), &seed_toml())?;
    write(&dir.join("hostname"), "sluice-boot-test\n")?;
    // The node's log on the serial console, which a failure prints.
    write(&dir.join("console-log"), "")?;
    let secret = format!("sluice_{}", random_hex(32)?);
    let secret_file = dir.join("..").join("admin-token");
    write(&secret_file, &secret)?;
    let hash = run::output(run::program("sha256sum").arg(&secret_file)).unwrap_or_default();
    write(&dir.join("admin-token.sha256"), hash.split_whitespace().next().unwrap_or_default())?;
    run::run(
        run::program("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=sluice-boot-test", "-addext", "subjectAltName=IP:127.0.0.1,DNS:sluice-boot-test"])
            .arg("-keyout")
            .arg(dir.join("api-key.pem"))
            .arg("-out")
            .arg(dir.join("api-cert.pem"))
            .stderr(Stdio::null()),
    )?;
    write(&network.join("10-mgmt.link"), &link_file(MGMT_MAC, "mgmt0"))?;
    write(&network.join("11-int.link"), &link_file(INTERNAL_MAC, "int0"))?;
    write(&network.join("12-ext.link"), &link_file(EXTERNAL_MAC, "ext0"))?;
    write(&network.join("20-mgmt.network"), "[Match]\nName=mgmt0\n\n[Network]\nDHCP=yes\n")?;
    write(
        &network.join("30-data.network"),
        "# The data ports belong to the dataplane: up, with no address of the host's own.\n\
         [Match]\nName=int0 ext0\n\n[Link]\nActivationPolicy=up\nRequiredForOnline=no\n\n\
         [Network]\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
    )?;
    crate::variant::stamp(&built.binary, &releases.join(format!("sluice-{upgrade_to}")), upgrade_to, "none")?;
    Ok(secret)
}

/// A FAT disk labelled SLUICE-SEED holding `dir`.
pub fn make_seed_disk(dir: &Path, disk: &Path) -> Result<()> {
    let _ = std::fs::remove_file(disk);
    run::run(run::program("mkfs.vfat").args(["-n", "SLUICE-SEED", "-C"]).arg(disk).arg("131072"))?;
    let entries = std::fs::read_dir(dir).map_err(|e| Error::failed(format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        run::run(run::program("mcopy").args(["-s", "-i"]).arg(disk).arg(entry.path()).arg("::/"))?;
    }
    Ok(())
}

fn qemu(built: &Built, seed: &Path, serial: &Path, port: u16, kvm: bool) -> Command {
    let mut cmd = run::program("qemu-system-x86_64");
    if kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        // DPDK needs SSE4.2 and more than the default qemu64 model has.
        cmd.args(["-accel", "tcg", "-cpu", "max"]);
    }
    cmd.args(["-m", "2048", "-smp", "2", "-display", "none", "-monitor", "none", "-no-reboot"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2,snapshot=on", built.qcow2.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw,readonly=on", seed.display()))
        .arg("-netdev")
        .arg(format!("user,id=mgmt,hostfwd=tcp:127.0.0.1:{port}-:8443"))
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=mgmt,mac={MGMT_MAC}"))
        .args(["-netdev", "user,id=int,restrict=on", "-device"])
        .arg(format!("virtio-net-pci,netdev=int,mac={INTERNAL_MAC}"))
        .args(["-netdev", "user,id=ext,restrict=on", "-device"])
        .arg(format!("virtio-net-pci,netdev=ext,mac={EXTERNAL_MAC}"));
    cmd
}

/// One HTTPS request from the host: (status, body). `None` when nothing answered.
fn https(
    port: u16,
    ca: &Path,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", "-X", method])
        .arg("--cacert")
        .arg(ca)
        .arg(format!("https://127.0.0.1:{port}{path}"));
    if let Some(token) = token {
        cmd.arg("-H").arg(format!("Authorization: Bearer {token}"));
    }
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data", body]);
    }
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok()?;
    (code != 0).then(|| (code, body.to_owned()))
}

/// The names of `/ready`'s checks, in order, from its JSON body.
pub fn check_names(body: &str) -> Vec<String> {
    let Some(start) = body.find("\"checks\"") else { return Vec::new() };
    let rest = &body[start + 8..];
    let Some(open) = rest.find('{') else { return Vec::new() };
    let mut names = Vec::new();
    let (mut depth, mut in_string, mut escaped, mut key_start) = (0i32, false, false, None);
    for (i, c) in rest[open..].char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    in_string = false;
                    if let Some(s) = key_start.take() {
                        names.push(rest[open + s..open + i].to_owned());
                    }
                }
                _ => {}
            }
            continue;
        }
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            '"' => {
                in_string = true;
                // A key of the checks object itself: a string opening at depth 1 after `{` or `,`.
                let before = rest[open..open + i].trim_end();
                if depth == 1 && (before.ends_with('{') || before.ends_with(',')) {
                    key_start = Some(i + 1);
                }
            }
            _ => {}
        }
    }
    names
}

fn wait_for<T>(vm: &Vm, what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = probe() {
            println!("  {what}: after {}", run::duration(start.elapsed()));
            return Ok(v);
        }
        if let Some(status) = vm.exited() {
            let qemu_log = std::fs::read_to_string(&vm.qemu_log).unwrap_or_default();
            return Err(vm.fail(format!("qemu exited ({status}) while waiting for {what}:\n{qemu_log}")));
        }
        if start.elapsed() > limit {
            return Err(vm.fail(format!("timed out after {} waiting for {what}", run::duration(limit))));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

pub fn boot_test(o: &Options, built: &Built) -> Result<()> {
    let started = Instant::now();
    let work = o.out.join("boot-test");
    let _ = std::fs::remove_dir_all(&work);
    let seed_dir = work.join("seed");
    std::fs::create_dir_all(&seed_dir).map_err(|e| Error::failed(e.to_string()))?;
    let upgrade_to = format!("{}-boot-test", built.version);
    let token = write_seed(&seed_dir, built, &upgrade_to)?;
    let seed_disk = work.join("seed.img");
    make_seed_disk(&seed_dir, &seed_disk)?;
    let ca = seed_dir.join("api-cert.pem");
    let serial = work.join("serial.log");
    let port = free_port()?;
    let kvm = kvm_usable();
    // Software emulation boots a kernel and systemd several times slower.
    let limit = if kvm { Duration::from_secs(300) } else { Duration::from_secs(900) };
    let mut cmd = qemu(built, &seed_disk, &serial, port, kvm);
    println!("$ {}", run::show(&cmd));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(work.join("qemu.log")).map_err(|e| Error::failed(e.to_string()))?))
        .spawn()
        .map_err(|e| Error::failed(format!("cannot start qemu-system-x86_64: {e}")))?;
    let vm = Vm { child: std::cell::RefCell::new(child), serial, qemu_log: work.join("qemu.log") };
    println!(
        "booting {} ({}), management API forwarded to https://127.0.0.1:{port}",
        built.qcow2.display(),
        if kvm { "KVM" } else { "software emulation: slow" }
    );
    wait_for(&vm, "GET /health answers 200 over HTTPS", limit, || {
        https(port, &ca, None, "GET", "/health", None).filter(|(code, body)| *code == 200 && body.contains("\"ok\""))
    })?;
    let ready = wait_for(&vm, "GET /ready is 200 with every check passing", Duration::from_secs(120), || {
        https(port, &ca, None, "GET", "/ready", None).filter(|(code, _)| *code == 200).map(|(_, body)| body)
    })?;
    let mut names = check_names(&ready);
    names.sort();
    let mut expected = EXPECTED_CHECKS.to_vec();
    expected.sort_unstable();
    if names != expected {
        return Err(vm.fail(format!("/ready lists the checks {names:?}, expected {EXPECTED_CHECKS:?}: {ready}")));
    }
    println!("  /ready: {ready}");
    let release = |vm: &Vm| -> Result<String> {
        let (code, body) = https(port, &ca, Some(&token), "GET", "/api/v1/stats", None)
            .ok_or_else(|| vm.fail("GET /api/v1/stats: no answer".into()))?;
        if code != 200 {
            return Err(vm.fail(format!("GET /api/v1/stats with the seed's admin token: {code} {body}")));
        }
        json_string(&body, "release").ok_or_else(|| vm.fail(format!("no release in /api/v1/stats: {body}")))
    };
    // The unit registers the seed's admin token right after READY=1 (ExecStartPost).
    wait_for(&vm, "the seed's admin token is accepted", Duration::from_secs(120), || {
        https(port, &ca, Some(&token), "GET", "/api/v1/stats", None).filter(|(code, _)| *code == 200)
    })?;
    let running = release(&vm)?;
    if running != built.version {
        return Err(vm.fail(format!("the node reports release {running}, the image holds {}", built.version)));
    }
    println!("  release {running} (binary sha256 {})", built.binary_sha256);

    // Upgrade to the seed's second release with the release-slot machinery.
    let request = format!("{{\"version\":\"{upgrade_to}\",\"observe_s\":3}}");
    let (code, body) = https(port, &ca, Some(&token), "POST", "/api/v1/upgrade", Some(&request))
        .ok_or_else(|| vm.fail("POST /api/v1/upgrade: no answer".into()))?;
    if !(200..300).contains(&code) {
        return Err(vm.fail(format!("POST /api/v1/upgrade {request}: {code} {body}")));
    }
    let phase = wait_for(&vm, "the upgrade ends", Duration::from_secs(240), || {
        let (code, body) = https(port, &ca, Some(&token), "GET", "/api/v1/upgrade", None)?;
        let phase = json_string(&body, "phase")?;
        (code == 200 && !["preflight", "rolling", "rolling_back"].contains(&phase.as_str())).then_some((phase, body))
    })?;
    if phase.0 != "completed" {
        return Err(vm.fail(format!("the upgrade ended {}: {}", phase.0, phase.1)));
    }
    let after = wait_for(&vm, "the node reports the new release", Duration::from_secs(60), || {
        release(&vm).ok().filter(|r| *r == upgrade_to)
    })?;
    wait_for(&vm, "GET /ready is 200 on the new release", Duration::from_secs(60), || {
        https(port, &ca, None, "GET", "/ready", None).filter(|(code, _)| *code == 200)
    })?;
    println!("  upgraded to {after} under systemd");
    drop(vm);
    println!("boot test passed in {}", run::duration(started.elapsed()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_check_names_in_order() {
        let body = r#"{"ready":true,"checks":{"dataplane":{"ok":true,"detail":"a {b} \"c\", d"},"dns":{"ok":true,"detail":"x"},"policy":{"ok":true},"store":{"ok":true,"detail":"leader"},"draining":{"ok":true}}}"#;
        assert_eq!(check_names(body), EXPECTED_CHECKS);
        assert!(check_names("{}").is_empty());
    }

    #[test]
    fn the_seed_config_names_the_data_nics_of_the_link_files() {
        let toml = seed_toml();
        assert!(toml.contains("iface=int0") && toml.contains("iface=ext0"));
        assert!(link_file(INTERNAL_MAC, "int0").contains("Name=int0"));
        assert!(toml.contains("/etc/sluice/api-cert.pem"), "the seed script copies the certificate there");
    }
}
