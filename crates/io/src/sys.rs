//! Small wrappers over the system calls the ports need.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::IoError;

/// Turn a `-1` return into the thread's errno.
pub(crate) fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Take ownership of a descriptor a system call just returned.
pub(crate) fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    let fd = cvt(fd)?;
    // SAFETY: `fd` was just returned by a successful system call and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming `name`.
pub(crate) fn ifreq(name: &str) -> Result<libc::ifreq, IoError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.iter().any(|&b| b == 0 || b == b'/') {
        return Err(IoError::BadInterfaceName { name: name.to_string() });
    }
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The name the kernel wrote back into an `ifreq`.
pub(crate) fn ifreq_name(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req.ifr_name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// An `ioctl` taking an `ifreq`.
pub(crate) fn ioctl_ifreq(fd: RawFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: every request this crate passes (SIOCGIF*, SIOCSIFFLAGS, TUNSETIFF) reads and
    // writes at most one `ifreq`, which `req` points to for the duration of the call.
    cvt(unsafe { libc::ioctl(fd, request as _, req as *mut libc::ifreq) }).map(|_| ())
}

/// A datagram socket for interface ioctls.
pub(crate) fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain system call without pointers.
    owned(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })
}

/// MAC address, MTU and index of an interface, read with `ioctl`s on `fd`.
pub(crate) struct LinkInfo {
    pub mac: [u8; 6],
    pub mtu: usize,
    pub index: i32,
}

pub(crate) fn link_info(fd: RawFd, name: &str) -> Result<LinkInfo, IoError> {
    let mut req = ifreq(name)?;
    ioctl_ifreq(fd, libc::SIOCGIFINDEX, &mut req).map_err(|e| IoError::os("reading the index", name, e))?;
    // SAFETY: SIOCGIFINDEX filled the `ifru_ifindex` member.
    let index = unsafe { req.ifr_ifru.ifru_ifindex };
    let mut req = ifreq(name)?;
    ioctl_ifreq(fd, libc::SIOCGIFHWADDR, &mut req).map_err(|e| IoError::os("reading the MAC address", name, e))?;
    // SAFETY: SIOCGIFHWADDR filled the `ifru_hwaddr` member.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        return Err(IoError::NotEthernet { name: name.to_string(), hardware_type: hw.sa_family });
    }
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *dst = src as u8;
    }
    let mut req = ifreq(name)?;
    ioctl_ifreq(fd, libc::SIOCGIFMTU, &mut req).map_err(|e| IoError::os("reading the MTU", name, e))?;
    // SAFETY: SIOCGIFMTU filled the `ifru_mtu` member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu }.max(0) as usize;
    Ok(LinkInfo { mac, mtu, index })
}

/// Set the interface administratively up if it is not.
pub(crate) fn set_up(fd: RawFd, name: &str) -> Result<(), IoError> {
    let mut req = ifreq(name)?;
    ioctl_ifreq(fd, libc::SIOCGIFFLAGS, &mut req).map_err(|e| IoError::os("reading the flags", name, e))?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl_ifreq(fd, libc::SIOCSIFFLAGS, &mut req).map_err(|e| IoError::os("setting the interface up", name, e))
}

/// `SIOCETHTOOL` and the ethtool commands used (linux/sockios.h, linux/ethtool.h).
const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GFLAGS: u32 = 0x25;
const ETHTOOL_SFLAGS: u32 = 0x26;
const ETHTOOL_GGRO: u32 = 0x2b;
const ETHTOOL_SGRO: u32 = 0x2c;
const ETH_FLAG_LRO: u32 = 1 << 15;
const ETH_FLAG_RXVLAN: u32 = 1 << 8;
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// `struct ethtool_channels`.
#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

/// How many receive queues interface `name` (index `index`) has: dedicated receive queues
/// plus combined ones. A driver that does not report channels (tun, macvlan, bonds) is asked
/// through sysfs, when that shows this namespace's interface, and otherwise counts as one.
pub(crate) fn receive_queues(fd: RawFd, name: &str, index: i32) -> io::Result<u32> {
    match channel_queues(fd, name) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(sysfs_receive_queues(name, index).unwrap_or(1)),
        r => r,
    }
}

/// Receive queues of `name` from `/sys/class/net`, if that shows the interface with this
/// index (sysfs shows the namespace it was mounted in, which need not be the caller's).
fn sysfs_receive_queues(name: &str, index: i32) -> Option<u32> {
    let dir = std::path::Path::new("/sys/class/net").join(name);
    let shown: i32 = std::fs::read_to_string(dir.join("ifindex")).ok()?.trim().parse().ok()?;
    if shown != index {
        return None;
    }
    let n = std::fs::read_dir(dir.join("queues"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok().filter(|&n| n > 0)
}

/// `ETHTOOL_GCHANNELS`: receive plus combined queues.
fn channel_queues(fd: RawFd, name: &str) -> io::Result<u32> {
    let mut ch = EthtoolChannels { cmd: ETHTOOL_GCHANNELS, ..EthtoolChannels::default() };
    let mut req = ifreq(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    req.ifr_ifru.ifru_data = (&mut ch as *mut EthtoolChannels).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GCHANNELS reads and writes one `ethtool_channels`,
    // which `ifru_data` points to for the duration of the call.
    cvt(unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut libc::ifreq) })?;
    Ok((ch.rx_count + ch.combined_count).max(1))
}

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

fn ethtool(fd: RawFd, name: &str, cmd: u32, data: u32) -> io::Result<u32> {
    let mut value = EthtoolValue { cmd, data };
    let mut req = ifreq(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    req.ifr_ifru.ifru_data = (&mut value as *mut EthtoolValue).cast();
    // SAFETY: SIOCETHTOOL with a GET/SET value command reads and writes one
    // `ethtool_value`, which `ifru_data` points to for the duration of the call.
    cvt(unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut libc::ifreq) })?;
    Ok(value.data)
}

/// Turns off the receive offloads that merge frames (GRO, LRO) on an interface a packet
/// socket reads from: the socket would see the merged superframes, larger than any receive
/// buffer. Returns the offloads it turned off; a device without them is left alone.
pub(crate) fn disable_receive_merging(fd: RawFd, name: &str) -> io::Result<Vec<&'static str>> {
    let mut off = Vec::new();
    let unsupported = |e: &io::Error| e.raw_os_error() == Some(libc::EOPNOTSUPP);
    match ethtool(fd, name, ETHTOOL_GGRO, 0) {
        Ok(0) => {}
        Ok(_) => {
            ethtool(fd, name, ETHTOOL_SGRO, 0)?;
            off.push("gro");
        }
        Err(e) if unsupported(&e) => {}
        Err(e) => return Err(e),
    }
    if clear_flag(fd, name, ETH_FLAG_LRO)? {
        off.push("lro");
    }
    Ok(off)
}

/// Turns off receive VLAN tag stripping (`rx-vlan-offload`) on an interface, so tags stay in
/// the frame where an XDP program sees them (a packet socket is told about a stripped tag;
/// XDP is not). Returns whether it turned it off; a device that cannot change it is left
/// alone (it then strips nothing, or the caller's documentation covers it).
pub(crate) fn disable_vlan_stripping(fd: RawFd, name: &str) -> io::Result<bool> {
    match clear_flag(fd, name, ETH_FLAG_RXVLAN) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
        r => r,
    }
}

/// Clears one legacy ethtool flag (`ETHTOOL_GFLAGS`/`SFLAGS`) if it is set; whether it did.
/// A device without the flags is left alone.
fn clear_flag(fd: RawFd, name: &str, flag: u32) -> io::Result<bool> {
    match ethtool(fd, name, ETHTOOL_GFLAGS, 0) {
        Ok(flags) if flags & flag != 0 => ethtool(fd, name, ETHTOOL_SFLAGS, flags & !flag).map(|_| true),
        Ok(_) => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Set an integer socket option.
pub(crate) fn setsockopt_int(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    setsockopt(fd, level, opt, &value)
}

pub(crate) fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live `T` of the given size for the duration of the call.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Read a socket option of plain-old-data type `T`.
pub(crate) fn getsockopt<T: Copy>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int) -> io::Result<T> {
    let mut value = std::mem::MaybeUninit::<T>::zeroed();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is writable for `len` bytes; the kernel writes at most `len` bytes.
    cvt(unsafe { libc::getsockopt(fd.as_raw_fd(), level, opt, value.as_mut_ptr().cast(), &mut len) })?;
    // SAFETY: zero-initialised and `T` is plain old data, so every byte pattern is valid.
    Ok(unsafe { value.assume_init() })
}

/// CLOCK_MONOTONIC in nanoseconds: the engine's clock.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
