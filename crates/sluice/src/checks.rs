//! Startup checks against the host: is everything the node needs there, and is it ours?
//!
//! The parsers take text rather than reading `/proc` themselves so they can be tested on
//! sample files; the `check_*` functions do the reading.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sluice_policy::CompiledPolicy;

use crate::cli::Dataplane;
use crate::config::NodeConfig;
use crate::exit::{Exit, Failure};

pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;

/// The effective capability set from the text of `/proc/<pid>/status`.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(line.trim(), 16).ok()
}

/// Which of the capabilities the ports need are missing from `cap_eff`, by name.
pub fn missing_net_caps(cap_eff: u64) -> Vec<&'static str> {
    [(CAP_NET_RAW, "CAP_NET_RAW"), (CAP_NET_ADMIN, "CAP_NET_ADMIN")]
        .into_iter()
        .filter(|&(bit, _)| cap_eff & (1u64 << bit) == 0)
        .map(|(_, name)| name)
        .collect()
}

/// `HugePages_Total` from the text of `/proc/meminfo`.
pub fn parse_hugepages_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("HugePages_Total:"))?;
    line.trim().parse().ok()
}

/// Whether the EAL arguments tell DPDK to run without hugepages.
pub fn eal_runs_without_hugepages(args: &[String]) -> bool {
    args.iter().any(|a| a == "--no-huge")
}

/// The lock file name for a port: interface names are safe as they are; DPDK devargs may
/// hold `:`, `,` or `=`, which are replaced.
pub fn lock_file_name(port: &str) -> String {
    let safe: String =
        port.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect();
    format!("{safe}.lock")
}

pub fn check_dpdk_built(config: &NodeConfig) -> Result<(), Failure> {
    if config.dataplane == Dataplane::Dpdk && !cfg!(feature = "dpdk") {
        return Err(Failure::new(
            Exit::DpdkNotBuilt,
            "--dataplane dpdk was asked for, but this sluice binary was built without DPDK; \
             use --dataplane software, or rebuild with `cargo build --release -p sluice --features dpdk`",
        ));
    }
    Ok(())
}

/// Reads and compiles the policy file, reporting every error with its field path.
pub fn check_policy(path: &Path) -> Result<CompiledPolicy, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            Exit::Policy,
            format!(
                "cannot read policy file {}: {e}; check the path given with --policy or SLUICE_POLICY",
                path.display()
            ),
        )
    })?;
    sluice_policy::compile_json(&text).map_err(|errors| {
        let mut message = format!(
            "policy file {} has {} error(s); fix them (`sluice policy validate {}` checks the file offline):",
            path.display(),
            errors.len(),
            path.display()
        );
        for e in &errors {
            message.push_str("\n  ");
            message.push_str(&e.to_string());
        }
        Failure::new(Exit::Policy, message)
    })
}

/// The ports need raw sockets and interface control: root, or both capabilities.
pub fn check_permission(euid: u32, proc_status: &str) -> Result<(), Failure> {
    let missing = match parse_cap_eff(proc_status) {
        Some(caps) => missing_net_caps(caps),
        None if euid == 0 => return Ok(()),
        None => vec!["CAP_NET_RAW", "CAP_NET_ADMIN"],
    };
    if missing.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        Exit::Permission,
        format!(
            "not permitted to open the data ports: missing {} (user id {euid}); run sluice as root, or grant \
             the capabilities, e.g. `setcap cap_net_raw,cap_net_admin+ep $(command -v sluice)` or \
             AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN in the systemd unit",
            missing.join(" and ")
        ),
    ))
}

/// A software port needs its interface to exist (`<sys_class_net>/<name>`).
pub fn check_interface(role: &str, name: &str, sys_class_net: &Path) -> Result<(), Failure> {
    if name.contains('/') || name == "." || name == ".." || !sys_class_net.join(name).exists() {
        return Err(Failure::new(
            Exit::InterfaceMissing,
            format!(
                "{role} port: there is no network interface `{name}` on this host; `ip -br link` lists them; \
                 fix --{role}-port (or SLUICE_{}_PORT / {role}_port in the configuration file)",
                role.to_ascii_uppercase()
            ),
        ));
    }
    Ok(())
}

pub fn check_hugepages(eal_args: &[String], meminfo: &str) -> Result<(), Failure> {
    if eal_runs_without_hugepages(eal_args) || parse_hugepages_total(meminfo).is_some_and(|n| n > 0) {
        return Ok(());
    }
    Err(Failure::new(
        Exit::HugepagesMissing,
        "DPDK needs hugepages and this host has none (HugePages_Total is 0 in /proc/meminfo); reserve some, \
         e.g. `echo 512 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages`, or add --no-huge to \
         --dpdk-eal-args (slower; fine for tests)",
    ))
}

/// An exclusive claim on a port, held until dropped (the kernel releases it if the process
/// dies).
#[derive(Debug)]
pub struct PortLock {
    pub path: PathBuf,
    _file: File,
}

/// Claims `port` for this process with an exclusive `flock` on `<data_dir>/locks/<port>.lock`.
pub fn lock_port(role: &str, port: &str, data_dir: &Path) -> Result<PortLock, Failure> {
    let dir = data_dir.join("locks");
    std::fs::create_dir_all(&dir).map_err(|e| {
        Failure::new(
            Exit::DataDir,
            format!(
                "cannot create {}: {e}; give a writable directory with --data-dir (or SLUICE_DATA_DIR)",
                dir.display()
            ),
        )
    })?;
    let path = dir.join(lock_file_name(port));
    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| {
        Failure::new(
            Exit::DataDir,
            format!("cannot open lock file {}: {e}; check the permissions of --data-dir", path.display()),
        )
    })?;
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(Failure::new(Exit::DataDir, format!("cannot lock {}: {err}", path.display())));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => String::new(),
            pid => format!(" (process {pid})"),
        };
        return Err(Failure::new(
            Exit::PortBusy,
            format!(
                "{role} port `{port}` is in use by another sluice{holder}: {} is locked; stop the other \
                 process or give this node different ports",
                path.display()
            ),
        ));
    }
    // Record who holds it, for the message above; the lock itself is what counts.
    let _ = file.set_len(0).and_then(|()| file.rewind()).and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(PortLock { path, _file: file })
}

/// Everything a started node holds from the checks.
#[derive(Debug)]
pub struct Checked {
    pub policy: Option<CompiledPolicy>,
    pub locks: Vec<PortLock>,
}

/// Runs every startup check in order, stopping at the first failure.
pub fn run_all(config: &NodeConfig) -> Result<Checked, Failure> {
    check_dpdk_built(config)?;
    let policy = config.policy.as_deref().map(check_policy).transpose()?;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // SAFETY: geteuid has no preconditions.
    check_permission(unsafe { libc::geteuid() }, &status)?;
    match config.dataplane {
        Dataplane::Software => {
            let sys = Path::new("/sys/class/net");
            check_interface("internal", &config.internal_port, sys)?;
            check_interface("external", &config.external_port, sys)?;
        }
        Dataplane::Dpdk => {
            let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
            check_hugepages(&config.dpdk_eal_args, &meminfo)?;
        }
    }
    let locks = vec![
        lock_port("internal", &config.internal_port, &config.data_dir)?,
        lock_port("external", &config.external_port, &config.data_dir)?,
    ];
    Ok(Checked { policy, locks })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trimmed from a real `/proc/self/status` of an unprivileged shell.
    const USER_STATUS: &str = "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1000\t1000\t1000\n\
        CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
        CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n";

    fn status_with(cap_eff: &str) -> String {
        USER_STATUS.replace("CapEff:\t0000000000000000", &format!("CapEff:\t{cap_eff}"))
    }

    #[test]
    fn cap_eff_is_parsed_from_status_text() {
        assert_eq!(parse_cap_eff(USER_STATUS), Some(0));
        assert_eq!(parse_cap_eff(&status_with("000001ffffffffff")), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff(&status_with("0000000000003000")), Some(0x3000));
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn net_caps_are_bits_12_and_13() {
        assert_eq!(missing_net_caps(0), ["CAP_NET_RAW", "CAP_NET_ADMIN"]);
        assert_eq!(missing_net_caps(1 << 13), ["CAP_NET_ADMIN"]);
        assert_eq!(missing_net_caps(1 << 12), ["CAP_NET_RAW"]);
        assert!(missing_net_caps(0x3000).is_empty());
        assert!(missing_net_caps(u64::MAX).is_empty());
    }

    #[test]
    fn permission_check_explains_the_fix() {
        let err = check_permission(1000, USER_STATUS).unwrap_err();
        assert_eq!(err.exit, Exit::Permission);
        assert!(err.message.contains("missing CAP_NET_RAW and CAP_NET_ADMIN (user id 1000)"), "{err}");
        assert!(err.message.contains("setcap cap_net_raw,cap_net_admin+ep"), "{err}");
        let err = check_permission(1000, &status_with("0000000000002000")).unwrap_err();
        assert!(err.message.contains("missing CAP_NET_ADMIN (user"), "{err}");
        // Capabilities decide, not the user id: a non-root service with both may run...
        assert!(check_permission(1000, &status_with("0000000000003000")).is_ok());
        // ...and root stripped of them may not.
        assert_eq!(check_permission(0, USER_STATUS).unwrap_err().exit, Exit::Permission);
        assert!(check_permission(0, "").is_ok(), "no status text: trust root");
        assert!(check_permission(1000, "").is_err());
    }

    #[test]
    fn hugepages_from_meminfo() {
        let none = "MemTotal:       16318480 kB\nHugePages_Total:       0\nHugePages_Free:        0\n";
        let some = "MemTotal:       16318480 kB\nHugePages_Total:     512\nHugePages_Free:      512\n";
        assert_eq!(parse_hugepages_total(none), Some(0));
        assert_eq!(parse_hugepages_total(some), Some(512));
        assert_eq!(parse_hugepages_total("MemTotal: 1 kB\n"), None);
        let err = check_hugepages(&[], none).unwrap_err();
        assert_eq!(err.exit, Exit::HugepagesMissing);
        assert!(err.message.contains("nr_hugepages") && err.message.contains("--no-huge"), "{err}");
        assert!(check_hugepages(&[], some).is_ok());
        let no_huge: Vec<String> = ["-l", "1", "--no-huge", "-m", "512"].map(String::from).to_vec();
        assert!(check_hugepages(&no_huge, none).is_ok());
        assert!(check_hugepages(&["--no-hugepages".to_string()], none).is_err());
    }

    #[test]
    fn interface_check_reads_sys_class_net() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("eth1")).unwrap();
        assert!(check_interface("internal", "eth1", dir.path()).is_ok());
        let err = check_interface("external", "eth9", dir.path()).unwrap_err();
        assert_eq!(err.exit, Exit::InterfaceMissing);
        assert!(err.message.starts_with("external port: there is no network interface `eth9`"), "{err}");
        assert!(err.message.contains("SLUICE_EXTERNAL_PORT"), "{err}");
        for sneaky in ["..", ".", "eth1/..", "../eth1"] {
            assert!(check_interface("internal", sneaky, dir.path()).is_err(), "{sneaky}");
        }
    }

    #[test]
    fn lock_names_are_safe_file_names() {
        assert_eq!(lock_file_name("eth1"), "eth1.lock");
        assert_eq!(lock_file_name("net_af_packet0,iface=veth1"), "net_af_packet0_iface_veth1.lock");
        assert_eq!(lock_file_name("0000:03:00.0"), "0000_03_00.0.lock");
        assert_eq!(lock_file_name("../etc"), ".._etc.lock");
    }

    #[test]
    fn second_holder_of_a_port_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_port("internal", "eth1", dir.path()).unwrap();
        let err = lock_port("internal", "eth1", dir.path()).unwrap_err();
        assert_eq!(err.exit, Exit::PortBusy);
        assert!(err.message.contains(&format!("in use by another sluice (process {})", std::process::id())), "{err}");
        assert!(lock_port("external", "eth2", dir.path()).is_ok(), "other ports are independent");
        drop(first);
        assert!(lock_port("internal", "eth1", dir.path()).is_ok());
    }
}
