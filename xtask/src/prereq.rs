//! Prerequisites: Debian packages, rustup components and cargo subcommands, installed when
//! missing so that `cargo xtask test` passes on a fresh Debian 12 machine.

use crate::run::{self, Error, Result};

/// Debian packages the build, the tests and the lab need. To add one, add a line.
/// `dnsmasq-base` is the lab's authoritative DNS server: the binary alone, without the
/// `dnsmasq` package's system service (which would take port 53 on the host).
/// `dnsutils` provides `dig`, the real DNS client of the hostname-policy end-to-end tests;
/// `dnsperf` drives `cargo xtask bench dns`.
/// `dpdk-dev` provides `dpdk-testpmd`, the reference of `cargo xtask bench dpdk` (on Debian 12
/// the `dpdk` package holds only scripts). `netsniff-ng` provides `trafgen`, the load of
/// `cargo xtask bench veth`, and `nftables` the `nft` of its kernel baseline and counting sink.
/// `wrk` loads the management API in `cargo xtask bench store` (`api_get_rps`).
/// `curl` is the HTTPS client of the management-API lab tests (`crates/sluice/tests/run_api.rs`).
pub const APT_PACKAGES: &[&str] = &[
    "pkg-config",
    "iproute2",
    "build-essential",
    "libclang-dev",
    "libdpdk-dev",
    "ethtool",
    "iputils-ping",
    "dnsmasq-base",
    "dpdk-dev",
    "dnsutils",
    "dnsperf",
    "netsniff-ng",
    "nftables",
    "curl",
    "wrk",
];

/// A cargo subcommand installed from crates.io with `cargo install <krate> --locked`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CargoTool {
    /// As in `cargo <subcommand>`.
    pub subcommand: &'static str,
    pub krate: &'static str,
}

pub const NEXTEST: CargoTool = CargoTool { subcommand: "nextest", krate: "cargo-nextest" };

pub const FUZZ: CargoTool = CargoTool { subcommand: "fuzz", krate: "cargo-fuzz" };

/// rustup components, checked as `cargo <subcommand> --version`.
const COMPONENTS: &[(&str, &str)] = &[("rustfmt", "fmt"), ("clippy", "clippy")];

/// Check everything and install what is missing: Debian packages, rustup components, `tools`.
pub fn ensure(tools: &[CargoTool]) -> Result<()> {
    ensure_apt_packages(APT_PACKAGES)?;
    ensure_components()?;
    for &tool in tools {
        ensure_tool(tool)?;
    }
    Ok(())
}

fn apt_install_line(missing: &[&str]) -> String {
    format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    )
}

pub fn ensure_apt_packages(packages: &[&str]) -> Result<()> {
    if !run::succeeds(run::program("dpkg-query").arg("--version")) {
        return Err(Error::failed(format!(
            "dpkg-query not found: this is not a Debian system, so the packages cannot be checked.\n\
             Install the equivalents of: {}\nthen rerun with --no-install.",
            packages.join(" ")
        )));
    }
    let missing = not_installed(packages);
    if missing.is_empty() {
        println!("Debian packages present: {}", packages.join(" "));
        return Ok(());
    }
    println!("Debian packages missing: {}", missing.join(" "));
    if !is_root() {
        return Err(Error::failed(format!(
            "missing Debian packages: {}. Install them as root with:\n    {}\nor rerun with --no-install.",
            missing.join(" "),
            apt_install_line(packages)
        )));
    }
    run::run(run::program("apt-get").arg("update"))?;
    // Every package of the list, not only the missing ones: apt then keeps (and, if need be,
    // upgrades) those already present. Given only the missing ones it may remove a present
    // one to satisfy them: installing qemu-system-x86 removed an older qemu-utils, and the
    // image build later found no `qemu-img`.
    let install = |list: &[String], downgrades: bool| {
        let mut cmd = run::program("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(["install", "-y", "--no-install-recommends"]);
        if downgrades {
            cmd.arg("--allow-downgrades");
        }
        run::run(cmd.args(list))
    };
    let list: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
    if let Err(first) = install(&list, false) {
        // A present package at a version no configured repository offers (installed from a
        // backports source the machine no longer lists, say: qemu-utils 10 beside bookworm's
        // qemu-system-x86 7.2, which needs its own qemu-utils) leaves apt no solution.
        // Retry once with such packages pinned to the newest version the repositories have.
        // Only the missing packages' own family (`qemu-utils` for `qemu-system-x86`): other
        // present packages at local versions are no part of the conflict and stay as they are.
        let family = |p: &str| p.split('-').next().unwrap_or(p).to_string();
        let families: Vec<String> = missing.iter().map(|p| family(p)).collect();
        let related: Vec<&str> = packages.iter().copied().filter(|p| families.contains(&family(p))).collect();
        let pins = repository_pins(&related);
        if pins.is_empty() {
            return Err(first);
        }
        println!("retrying with packages moved to their repository versions: {}", pins.join(" "));
        let pinned: Vec<String> = list
            .iter()
            .map(|p| pins.iter().find(|pin| pin.split('=').next() == Some(p)).cloned().unwrap_or_else(|| p.clone()))
            .collect();
        install(&pinned, true)?;
    }
    let still = not_installed(packages);
    if !still.is_empty() {
        return Err(Error::failed(format!(
            "apt-get install finished but these packages are not installed: {}. See apt's output above.",
            still.join(" ")
        )));
    }
    Ok(())
}

/// `package=version` for every installed package of `packages` whose installed version no
/// configured repository offers, with the newest version one does.
fn repository_pins(packages: &[&str]) -> Vec<String> {
    packages
        .iter()
        .filter_map(|p| {
            let installed = run::output(run::program("dpkg-query").args(["-W", "-f=${Version}", p]))?;
            let offered = madison_versions(&run::output(run::program("apt-cache").args(["madison", p]))?);
            let installed = installed.trim();
            (!installed.is_empty() && !offered.iter().any(|v| v == installed))
                .then(|| offered.first().map(|v| format!("{p}={v}")))
                .flatten()
        })
        .collect()
}

/// The versions in `apt-cache madison` output (`pkg | version | source`), newest first as
/// apt prints them.
fn madison_versions(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.split('|').nth(1)).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect()
}

fn not_installed<'a>(packages: &[&'a str]) -> Vec<&'a str> {
    packages.iter().copied().filter(|p| !apt_installed(p)).collect()
}

fn apt_installed(package: &str) -> bool {
    run::output(run::program("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status_is_installed(&status))
}

/// `dpkg-query -W -f='${Status}'` prints `install ok installed` for an installed package;
/// a last word of `config-files`, `not-installed`, `half-installed`, ... means it is not.
fn status_is_installed(status: &str) -> bool {
    status.split_whitespace().last() == Some("installed")
}

pub fn is_root() -> bool {
    // Effective uid: second field of the Uid line in /proc/self/status.
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            return line.split_whitespace().nth(2) == Some("0");
        }
    }
    run::output(run::program("id").arg("-u")).is_some_and(|uid| uid.trim() == "0")
}

fn ensure_components() -> Result<()> {
    let missing: Vec<&str> = COMPONENTS
        .iter()
        .filter(|(_, sub)| !run::succeeds(run::cargo().args([sub, "--version"])))
        .map(|(component, _)| *component)
        .collect();
    if missing.is_empty() {
        println!("rustup components present: rustfmt clippy");
        return Ok(());
    }
    run::run(run::program("rustup").args(["component", "add"]).args(&missing))
}

/// True when `cargo <subcommand> --version` works.
pub fn tool_present(tool: CargoTool) -> bool {
    run::succeeds(run::cargo().args([tool.subcommand, "--version"]))
}

/// Install `tool` with `cargo install --locked` unless it is already there.
pub fn ensure_tool(tool: CargoTool) -> Result<()> {
    if tool_present(tool) {
        let version = run::output(run::cargo().args([tool.subcommand, "--version"])).unwrap_or_default();
        println!("{} present: {}", tool.krate, version.trim());
        return Ok(());
    }
    let start = std::time::Instant::now();
    run::run(run::cargo().args(["install", tool.krate, "--locked"]))?;
    println!("installed {} in {}", tool.krate, run::duration(start.elapsed()));
    Ok(())
}

/// The error for a tool that is needed but absent when installing was turned off.
pub fn missing_tool(tool: CargoTool) -> Error {
    Error::failed(format!(
        "`cargo {}` is not installed; install it with `cargo install {} --locked` \
         or rerun without --no-install",
        tool.subcommand, tool.krate
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_dpkg_status() {
        assert!(status_is_installed("install ok installed"));
        assert!(status_is_installed("hold ok installed"));
        assert!(!status_is_installed("unknown ok not-installed"));
        assert!(!status_is_installed("deinstall ok config-files"));
        assert!(!status_is_installed("install reinstreq half-installed"));
        assert!(!status_is_installed(""));
    }

    #[test]
    fn install_line_is_copy_pasteable() {
        assert_eq!(
            apt_install_line(&["libclang-dev", "dnsmasq"]),
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
             --no-install-recommends libclang-dev dnsmasq"
        );
    }

    #[test]
    fn reads_repository_versions_from_madison() {
        let text = " qemu-utils | 1:7.2+dfsg-7+deb12u18+b3 | http://deb.debian.org/debian bookworm/main amd64 Packages\n \
                    qemu-utils | 1:7.2+dfsg-7+deb12u15 | http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n";
        assert_eq!(madison_versions(text), ["1:7.2+dfsg-7+deb12u18+b3", "1:7.2+dfsg-7+deb12u15"]);
        assert!(madison_versions("").is_empty());
    }

    #[test]
    fn package_list_has_no_duplicates() {
        let mut sorted = APT_PACKAGES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), APT_PACKAGES.len());
    }
}
