//! `cargo xtask image`: the bootable appliance disk (raw and qcow2, with SHA256SUMS) from
//! Debian bookworm packages and the Sluice release built with the `dpdk` feature, installed
//! as the first release slot. Nothing is mounted: the root filesystem is made from a
//! directory (`mkfs.ext4 -d`), the boot partition is FAT written with mtools and made
//! bootable by syslinux, and the partitions are copied into the disk at their offsets. So it
//! builds wherever root can run mmdebstrap, loop devices or not.
//!
//! The definition lives in `image/`: `packages.txt` (what is installed), `rootfs/` (files
//! copied over the installed system: the units, the first-boot seed scripts, the default
//! network), `syslinux.cfg` (the kernel command line: serial console, hugepages).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::prereq;
use crate::run::{self, Error, Result};

pub const HELP: &str = "\
cargo xtask image: build the Sluice appliance disk image (as root)

Usage: cargo xtask image [OPTIONS]

Builds sluice with the dpdk feature (profile `appliance`, paths remapped so the binary's
bytes depend on the sources only), installs Debian bookworm with mmdebstrap (kernel,
systemd, the DPDK runtime libraries, iproute2, nftables: image/packages.txt), copies
image/rootfs over it, installs the binary as the first release slot of /var/lib/sluice,
locks every account's password, and writes to the output directory:
  sluice-<VERSION>.raw     the disk: MBR, a FAT boot partition (syslinux, kernel, initrd),
                           the ext4 root
  sluice-<VERSION>.qcow2   the same disk for QEMU and most clouds
  SHA256SUMS               both disks' checksums and the sluice binary's
  image.json               version, commit, binary checksum, kernel command line

Options:
  --out <DIR>         Output directory [default: target/appliance]
  --size <MiB>        Disk size [default: 3072]
  --hugepages <N>     2 MiB hugepages reserved at boot, for DPDK [default: 256]
  --mirror <URL>      Debian mirror [default: http://deb.debian.org/debian]
  --boot-test         Then boot the qcow2 under qemu-system-x86_64 (KVM when /dev/kvm opens,
                      else software emulation) with a seed disk, a management NIC forwarded
                      to the host and two data NICs, and check /health, /ready, the version
                      and an upgrade over HTTPS (docs/image.md)
  --boot-only         Boot-test the image already in --out, without building
  --check-reproducible  Then build the release again from a second checkout of HEAD at
                      another path (git worktree) and require the same SHA-256 (the tree
                      must be clean, or the first build is not of HEAD)
  --no-install        Do not install missing Debian packages
  -h, --help          Print this help";

/// Debian packages the image build and the boot test run on the build host.
pub const HOST_PACKAGES: &[&str] = &[
    "mmdebstrap",
    "syslinux",
    "syslinux-common",
    "mtools",
    "dosfstools",
    "e2fsprogs",
    "fdisk",
    "qemu-utils",
    "qemu-system-x86",
    "openssl",
    "curl",
    "libdpdk-dev",
    "pkg-config",
    "libclang-dev",
];

const BOOT_PARTITION_MIB: u64 = 256;
const SECTOR: u64 = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub out: PathBuf,
    pub size_mib: u64,
    pub hugepages: u32,
    pub mirror: String,
    pub boot_test: bool,
    pub boot_only: bool,
    pub check_reproducible: bool,
    pub install: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            out: run::root().join("target/appliance"),
            size_mib: 3072,
            hugepages: 256,
            mirror: "http://deb.debian.org/debian".into(),
            boot_test: false,
            boot_only: false,
            check_reproducible: false,
            install: true,
        }
    }
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| Error::usage(format!("`{name}` needs a value")));
        match arg.as_str() {
            "--out" => o.out = PathBuf::from(value("--out")?),
            "--size" => {
                let v = value("--size")?;
                o.size_mib = v
                    .parse()
                    .ok()
                    .filter(|&n| n >= 1024)
                    .ok_or_else(|| Error::usage(format!("--size wants MiB, at least 1024, not `{v}`")))?;
            }
            "--hugepages" => {
                let v = value("--hugepages")?;
                o.hugepages = v.parse().map_err(|_| Error::usage(format!("--hugepages wants a count, not `{v}`")))?;
            }
            "--mirror" => o.mirror = value("--mirror")?,
            "--boot-test" => o.boot_test = true,
            "--boot-only" => {
                o.boot_test = true;
                o.boot_only = true;
            }
            "--check-reproducible" => o.check_reproducible = true,
            "--no-install" => o.install = false,
            other => return Err(Error::usage(format!("unexpected argument `{other}` for `cargo xtask image`"))),
        }
    }
    if o.out.is_relative() {
        o.out = std::env::current_dir().map_err(|e| Error::failed(e.to_string()))?.join(&o.out);
    }
    Ok(o)
}

/// What a build produced (read back from `image.json` by `--boot-only`).
#[derive(Debug, Clone)]
pub struct Built {
    pub version: String,
    pub qcow2: PathBuf,
    /// The release binary as installed in the image (its slot's copy).
    pub binary: PathBuf,
    pub binary_sha256: String,
}

pub fn run(o: &Options) -> Result<()> {
    if !crate::prereq::is_root() {
        return Err(Error::failed("the image is built as root (mmdebstrap installs packages into a directory)"));
    }
    if o.install {
        prereq::ensure_apt_packages(HOST_PACKAGES)?;
    }
    if o.check_reproducible && !o.boot_only {
        let status = run::output(run::program("git").args(["status", "--porcelain", "--untracked-files=no"]));
        if status.as_deref().is_none_or(|s| !s.trim().is_empty()) {
            return Err(Error::failed("--check-reproducible needs a clean checkout (commit or stash first)"));
        }
    }
    let built = if o.boot_only { read_built(&o.out)? } else { build(o)? };
    if o.check_reproducible {
        check_reproducible(&built)?;
    }
    if o.boot_test {
        crate::image_boot::boot_test(o, &built)?;
    }
    Ok(())
}

/// Builds the release again from a worktree of HEAD at another path; the bytes must match.
fn check_reproducible(built: &Built) -> Result<()> {
    let start = Instant::now();
    let other = std::env::temp_dir().join(format!("sluice-reproduce-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&other);
    let _ = run::run(run::program("git").args(["worktree", "prune"]));
    run::run(run::program("git").args(["worktree", "add", "--detach"]).arg(&other).arg("HEAD"))?;
    // Keep the first build's bytes: the second build writes the same output path.
    let first = built.binary.clone();
    let result = build_binary(&other).and_then(|binary| sha256(&binary));
    let _ = run::run(run::program("git").args(["worktree", "remove", "--force"]).arg(&other));
    let again = result?;
    if again != built.binary_sha256 || sha256(&first)? != built.binary_sha256 {
        return Err(Error::failed(format!(
            "not reproducible: the release built at {} has sha256 {again}, the image's has {}",
            other.display(),
            built.binary_sha256
        )));
    }
    println!(
        "reproducible: the release built again at {} has the same sha256 {again} ({})",
        other.display(),
        run::duration(start.elapsed())
    );
    Ok(())
}

fn sha256(path: &Path) -> Result<String> {
    let out = run::output(run::program("sha256sum").arg(path))
        .ok_or_else(|| Error::failed(format!("sha256sum {} failed", path.display())))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
}

pub fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::failed(format!("cannot write {}: {e}", path.display())))
}

/// Where the appliance release is built, whichever checkout it is built from: a fixed path,
/// so the compiler flags (which name it) are the same for every checkout and the
/// registry's crates are built once.
pub const TARGET_DIR: &str = "/var/tmp/sluice-appliance-target";

/// Builds the release binary from the checkout at `root`. Its bytes depend only on the
/// sources and the toolchain: cargo gives rustc the workspace's files by relative path, the
/// registry's and the build scripts' absolute paths are remapped to fixed names, and the
/// `appliance` profile has no debug info and no symbols.
pub fn build_binary(root: &Path) -> Result<PathBuf> {
    let target = PathBuf::from(TARGET_DIR);
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_else(|_| "/root".into())));
    let rustflags = format!("--remap-path-prefix={cargo_home}=/cargo --remap-path-prefix={TARGET_DIR}=/target");
    let start = Instant::now();
    run::run(run::cargo().current_dir(root).env("CARGO_TARGET_DIR", &target).env("RUSTFLAGS", rustflags).args([
        "build",
        "--profile",
        "appliance",
        "-p",
        "sluice",
        "--features",
        "dpdk",
        "--locked",
    ]))?;
    println!("built the appliance release in {}", run::duration(start.elapsed()));
    Ok(target.join("appliance/sluice"))
}

fn packages() -> Result<Vec<String>> {
    let path = run::root().join("image/packages.txt");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::failed(format!("{}: {e}", path.display())))?;
    Ok(parse_packages(&text))
}

/// One package per line; `#` starts a comment.
fn parse_packages(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn build(o: &Options) -> Result<Built> {
    let started = Instant::now();
    let binary = build_binary(&run::root())?;
    let version_json = run::output(Command::new(&binary).args(["version", "--json"]))
        .ok_or_else(|| Error::failed(format!("{} version --json failed", binary.display())))?;
    let version = json_string(&version_json, "version")
        .ok_or_else(|| Error::failed(format!("no version in `sluice version --json`: {version_json}")))?;
    let binary_sha256 = sha256(&binary)?;

    let work = o.out.join("work");
    let rootfs = work.join("rootfs");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| Error::failed(format!("cannot create {}: {e}", work.display())))?;
    let overlay = run::root().join("image/rootfs");
    let docs = run::root().join("docs/image.md");
    let t = Instant::now();
    run::run(
        run::program("mmdebstrap")
            .args(["--variant=minbase", "--components=main", "--mode=root", "--format=directory"])
            .arg(format!("--include={}", packages()?.join(",")))
            .arg("--dpkgopt=path-exclude=/usr/share/man/*")
            .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
            .arg(format!("--customize-hook=cp -a {}/. \"$1\"/", overlay.display()))
            .arg(format!("--customize-hook=install -D -m 0644 {} \"$1\"/usr/share/doc/sluice/image.md", docs.display()))
            .arg("--customize-hook=chroot \"$1\" systemctl enable sluice-seed.service sluice.service systemd-networkd.service")
            .arg("--customize-hook=chroot \"$1\" systemctl mask systemd-networkd-wait-online.service")
            // No account can log in with a password: the appliance is managed over its API.
            .arg("--customize-hook=chroot \"$1\" passwd --lock root")
            .arg("--customize-hook=rm -f \"$1\"/etc/machine-id \"$1\"/var/lib/dbus/machine-id")
            .arg("--customize-hook=touch \"$1\"/etc/machine-id")
            .arg("bookworm")
            .arg(&rootfs)
            .arg(&o.mirror)
            .arg(format!("deb {} bookworm-updates main", o.mirror))
            .arg(format!("deb {}-security bookworm-security main", o.mirror.trim_end_matches('/'))),
    )?;
    println!("installed the root filesystem in {}", run::duration(t.elapsed()));

    // The first release slot, staged by the release itself (its own checks and manifest).
    let data = rootfs.join("var/lib/sluice");
    std::fs::create_dir_all(&data).map_err(|e| Error::failed(e.to_string()))?;
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| Error::failed(e.to_string()))?;
    run::run(
        Command::new(&binary)
            .arg("release")
            .arg("stage")
            .arg(&binary)
            .arg("--make-current")
            .arg("--data-dir")
            .arg(&data),
    )?;
    let slot = data.join("releases/current/sluice");
    let installed = sha256(&slot)?;
    if installed != binary_sha256 {
        return Err(Error::failed(format!("the slot's binary {installed} is not the built one {binary_sha256}")));
    }
    check_rootfs(&rootfs, &version)?;

    let (cmdline, root_uuid) = kernel_cmdline(o.hugepages);
    let disk = assemble(o, &work, &rootfs, &cmdline, &root_uuid)?;
    let raw = o.out.join(format!("sluice-{version}.raw"));
    let qcow2 = o.out.join(format!("sluice-{version}.qcow2"));
    std::fs::rename(&disk, &raw).map_err(|e| Error::failed(e.to_string()))?;
    let _ = std::fs::remove_file(&qcow2);
    run::run(run::program("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2"]).arg(&raw).arg(&qcow2))?;

    let sums = format!(
        "{}  {}\n{}  {}\n{binary_sha256}  sluice (release {version}, /var/lib/sluice/releases/{version}/sluice)\n",
        sha256(&raw)?,
        file_name(&raw),
        sha256(&qcow2)?,
        file_name(&qcow2),
    );
    write(&o.out.join("SHA256SUMS"), &sums)?;
    let commit = run::output(run::program("git").args(["rev-parse", "HEAD"])).unwrap_or_default();
    let image_json = format!(
        "{{\n  \"version\": \"{version}\",\n  \"commit\": \"{}\",\n  \"binary_sha256\": \"{binary_sha256}\",\n  \
         \"raw\": \"{}\",\n  \"qcow2\": \"{}\",\n  \"kernel_cmdline\": \"{cmdline}\",\n  \"size_mib\": {}\n}}\n",
        commit.trim(),
        file_name(&raw),
        file_name(&qcow2),
        o.size_mib
    );
    write(&o.out.join("image.json"), &image_json)?;
    // Kept for the boot test (a release variant is made from it) and for comparing builds.
    std::fs::copy(&binary, o.out.join("sluice")).map_err(|e| Error::failed(e.to_string()))?;
    let _ = std::fs::remove_dir_all(&work);
    println!("{sums}image {} and {} built in {}", raw.display(), qcow2.display(), run::duration(started.elapsed()));
    Ok(Built { version, qcow2, binary: o.out.join("sluice"), binary_sha256 })
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The value of a top-level string field of a small JSON document (xtask has no JSON crate).
pub fn json_string(text: &str, key: &str) -> Option<String> {
    let at = text.find(&format!("\"{key}\""))?;
    let rest = &text[at + key.len() + 2..];
    let rest = rest[rest.find(':')? + 1..].trim_start();
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

fn read_built(out: &Path) -> Result<Built> {
    let path = out.join("image.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::failed(format!("{}: {e}; build the image first (cargo xtask image)", path.display())))?;
    let field = |k: &str| json_string(&text, k).ok_or_else(|| Error::failed(format!("{}: no {k}", path.display())));
    Ok(Built {
        version: field("version")?,
        qcow2: out.join(field("qcow2")?),
        binary: out.join("sluice"),
        binary_sha256: field("binary_sha256")?,
    })
}

/// What must hold inside the root filesystem before it becomes a disk.
fn check_rootfs(rootfs: &Path, version: &str) -> Result<()> {
    // The release runs there: every DPDK library it links is installed.
    let out =
        run::output(Command::new("chroot").arg(rootfs).args(["/var/lib/sluice/releases/current/sluice", "version"]))
            .ok_or_else(|| {
                Error::failed(
                    "the installed release does not run inside the image (a missing library? see image/packages.txt)",
                )
            })?;
    if !out.contains(version) {
        return Err(Error::failed(format!("the installed release reports {out:?}, not {version}")));
    }
    let shadow = std::fs::read_to_string(rootfs.join("etc/shadow")).map_err(|e| Error::failed(e.to_string()))?;
    if let Some(user) = accounts_with_password(&shadow).first() {
        return Err(Error::failed(format!("account {user} has a usable password in the image")));
    }
    for kernel in ["vmlinuz", "initrd.img"] {
        if !rootfs.join(kernel).exists() {
            return Err(Error::failed(format!(
                "no /{kernel} in the root filesystem (is linux-image-amd64 in packages.txt?)"
            )));
        }
    }
    Ok(())
}

/// Accounts whose password field could let someone log in: not empty-locked (`*`, `!...`).
pub fn accounts_with_password(shadow: &str) -> Vec<String> {
    shadow
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let (user, password) = (f.next()?, f.next()?);
            let locked = password.starts_with('!') || password.starts_with('*');
            (!locked).then(|| user.to_owned())
        })
        .collect()
}

/// The kernel command line and the root filesystem's UUID (new per build).
fn kernel_cmdline(hugepages: u32) -> (String, String) {
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap_or_default().trim().to_owned();
    let cmdline = format!(
        "root=UUID={uuid} ro console=tty0 console=ttyS0,115200n8 default_hugepagesz=2M hugepagesz=2M \
         hugepages={hugepages} net.ifnames=1 quiet"
    );
    (cmdline, uuid)
}

/// Partitions: 1 MiB gap (MBR), the FAT boot partition, the ext4 root to the end.
fn assemble(o: &Options, work: &Path, rootfs: &Path, cmdline: &str, root_uuid: &str) -> Result<PathBuf> {
    let mib = 1024 * 1024;
    let boot_start = mib;
    let root_start = boot_start + BOOT_PARTITION_MIB * mib;
    let total = o.size_mib * mib;
    let root_bytes = total - root_start;

    let fstab =
        format!("UUID={root_uuid} / ext4 errors=remount-ro 0 1\nLABEL=SLUICEBOOT /boot/efi vfat ro,noauto 0 0\n");
    write(&rootfs.join("etc/fstab"), &fstab)?;
    let root_img = work.join("root.ext4");
    run::run(
        run::program("mkfs.ext4")
            .args(["-q", "-F", "-L", "sluice-root", "-U", root_uuid, "-d"])
            .arg(rootfs)
            .arg(&root_img)
            .arg(format!("{}k", root_bytes / 1024)),
    )?;

    let boot_img = work.join("boot.fat");
    let _ = std::fs::remove_file(&boot_img);
    run::run(
        run::program("mkfs.vfat")
            .args(["-n", "SLUICEBOOT", "-C"])
            .arg(&boot_img)
            .arg((BOOT_PARTITION_MIB * 1024).to_string()),
    )?;
    let template = run::root().join("image/syslinux.cfg");
    let cfg = std::fs::read_to_string(&template).map_err(|e| Error::failed(format!("{}: {e}", template.display())))?;
    let cfg_path = work.join("syslinux.cfg");
    write(&cfg_path, &cfg.replace("@CMDLINE@", cmdline))?;
    let kernel = inside(rootfs, "vmlinuz")?;
    let initrd = inside(rootfs, "initrd.img")?;
    for (from, to) in [(&kernel, "::/vmlinuz"), (&initrd, "::/initrd.img"), (&cfg_path, "::/syslinux.cfg")] {
        run::run(run::program("mcopy").arg("-i").arg(&boot_img).arg(from).arg(to))?;
    }
    run::run(run::program("syslinux").arg("--install").arg(&boot_img))?;

    let disk = work.join("disk.raw");
    let file = std::fs::File::create(&disk).map_err(|e| Error::failed(e.to_string()))?;
    file.set_len(total).map_err(|e| Error::failed(e.to_string()))?;
    drop(file);
    let layout = format!(
        "label: dos\nlabel-id: 0x51c0ce01\nstart={}, size={}, type=c, bootable\nstart={}, type=83\n",
        boot_start / SECTOR,
        BOOT_PARTITION_MIB * mib / SECTOR,
        root_start / SECTOR
    );
    let layout_path = work.join("layout.sfdisk");
    write(&layout_path, &layout)?;
    run::run(run::program("sh").arg("-c").arg(format!(
        "sfdisk --quiet {} < {}",
        disk.display(),
        layout_path.display()
    )))?;
    for (img, offset) in [(&boot_img, boot_start), (&root_img, root_start)] {
        run::run(
            run::program("dd")
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", disk.display()))
                .args(["bs=4M", "conv=notrunc,sparse", "oflag=seek_bytes", "status=none"])
                .arg(format!("seek={offset}")),
        )?;
    }
    // The MBR boot code (the partition table after byte 440 stays).
    run::run(run::program("dd").arg("if=/usr/lib/syslinux/mbr/mbr.bin").arg(format!("of={}", disk.display())).args([
        "bs=440",
        "count=1",
        "conv=notrunc",
        "status=none",
    ]))?;
    Ok(disk)
}

/// The file the root filesystem's `/<link>` symlink names (Debian's kernel links), inside
/// `rootfs`: an absolute target is read as the image's path, not the host's.
fn inside(rootfs: &Path, link: &str) -> Result<PathBuf> {
    let target = std::fs::read_link(rootfs.join(link)).map_err(|e| Error::failed(format!("/{link}: {e}")))?;
    Ok(rootfs.join(target.strip_prefix("/").unwrap_or(&target)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let o = parse(&args("--out /tmp/img --size 2048 --hugepages 64 --boot-test --no-install")).unwrap();
        assert_eq!(
            (o.out.as_path(), o.size_mib, o.hugepages, o.boot_test, o.install),
            (Path::new("/tmp/img"), 2048, 64, true, false)
        );
        assert!(parse(&args("--boot-only")).unwrap().boot_only);
        assert!(parse(&args("--check-reproducible")).unwrap().check_reproducible);
        assert_eq!(parse(&args("--size 100")).unwrap_err().code, 2);
        assert_eq!(parse(&args("--size")).unwrap_err().code, 2);
        assert_eq!(parse(&args("--fast")).unwrap_err().code, 2);
    }

    #[test]
    fn package_list_and_json_fields() {
        assert_eq!(parse_packages("# c\nsystemd\n\n iproute2  # why\n"), ["systemd", "iproute2"]);
        let text = run::root().join("image/packages.txt");
        let list = parse_packages(&std::fs::read_to_string(text).unwrap());
        for needed in ["linux-image-amd64", "systemd", "iproute2", "nftables", "librte-net-af-packet23"] {
            assert!(list.iter().any(|p| p == needed), "{needed} missing from image/packages.txt");
        }
        assert_eq!(json_string("{\"version\": \"1.2.3\", \"x\":\"y\"}", "version").as_deref(), Some("1.2.3"));
        assert_eq!(json_string("{\"x\":\"y\"}", "version"), None);
    }

    #[test]
    fn only_locked_accounts_pass() {
        let shadow =
            "root:!*:19000:0:99999:7:::\ndaemon:*:19000::::::\nops:$y$j9T$abc:19000::::::\nempty::19000::::::\n";
        assert_eq!(accounts_with_password(shadow), ["ops", "empty"]);
    }
}
