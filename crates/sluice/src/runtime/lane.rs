//! The TAP service lane, shared by both dataplanes.
//!
//! The TAP (`sl-lane<N>`) gets the node's internal address with its prefix (for example
//! 10.10.0.1/24) by `SIOCSIFADDR`/`SIOCSIFNETMASK` ioctls, so the node's own kernel stack
//! answers for that address: pings to it, and the DNS proxy listening on it, with replies
//! routed back up the lane by the connected route. No default route is added: only the DNS
//! upstreams get host routes out of the lane ([`add_host_route`]), so the node's other own
//! traffic keeps using the management interface.
//! IPv6 is switched off on the TAP so the host does not chatter on it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use sluice_dataplane::config::{EngineConfig, HostLaneConfig};
use sluice_io::{IoError, Tap};

use crate::exit::{Exit, Failure};
use crate::net::IfaceAddr;

/// The TAP service lane's name prefix; the kernel appends the lowest free number.
pub const LANE_PREFIX: &str = "sl-lane";

/// Creates the service lane with the internal address on it, and gives the engine its side
/// of the lane (a MAC of its own towards the host).
pub fn open(internal_address: IfaceAddr, engine: &mut EngineConfig) -> Result<Tap, Failure> {
    let tap = Tap::create(LANE_PREFIX).map_err(|e| {
        let exit = if matches!(e, IoError::PermissionDenied { .. }) { Exit::Permission } else { Exit::PortOpen };
        Failure::new(exit, format!("cannot create the service lane (TAP {LANE_PREFIX}N): {e}"))
    })?;
    let lane = tap.name().to_string();
    set_ipv4_address(&lane, internal_address).map_err(|e| {
        Failure::new(
            Exit::PortOpen,
            format!("cannot give the service lane {lane} the internal address {internal_address}: {e}"),
        )
    })?;
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{lane}/disable_ipv6"), "1");
    // Any locally administered unicast address other than the TAP's.
    let mut engine_mac = tap.mac();
    engine_mac[0] = (engine_mac[0] | 0x02) & !0x01;
    engine_mac[5] ^= 0x55;
    engine.host_lane = Some(HostLaneConfig { engine_mac, host_mac: tap.mac() });
    Ok(tap)
}

/// Gives `ifname` the IPv4 address and prefix `addr` (ioctls on an AF_INET socket).
pub fn set_ipv4_address(ifname: &str, addr: IfaceAddr) -> io::Result<()> {
    let name = ifname.as_bytes();
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {ifname:?}")));
    }
    // SAFETY: plain system call without pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    for (request, value) in [(libc::SIOCSIFADDR, u32::from(addr.ip)), (libc::SIOCSIFNETMASK, addr.netmask())] {
        // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in req.ifr_name.iter_mut().zip(name) {
            *dst = src as libc::c_char;
        }
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: value.to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: `ifru_addr` is a `sockaddr`, which has the size and alignment of a
        // `sockaddr_in`; the kernel reads it as one for AF_INET requests.
        unsafe { std::ptr::write((&mut req.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast(), sin) };
        // SAFETY: SIOCSIFADDR and SIOCSIFNETMASK read one `ifreq`, which `req` is for the call.
        if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut req as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `struct rtentry` of `<net/route.h>` (the libc crate has it for musl only; the layout is the
/// kernel's and the same for glibc).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_tos: libc::c_uchar,
    rt_class: libc::c_uchar,
    #[cfg(target_pointer_width = "64")]
    rt_pad4: [libc::c_short; 3],
    #[cfg(not(target_pointer_width = "64"))]
    rt_pad4: [libc::c_short; 1],
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

fn sockaddr_of(ip: std::net::Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: `sockaddr` and `sockaddr_in` have the same size; the kernel reads it as the
    // family says.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Routes `ip` (a /32) out of the service lane, so the node's own traffic to it (the DNS
/// proxy's upstream queries) goes through the engine, which answers ARP for every address on
/// the lane and source-NATs the traffic out of the external port. The route goes away with
/// the lane. `EEXIST` (the route is already there) is not an error.
pub fn add_host_route(lane: &str, ip: std::net::Ipv4Addr) -> io::Result<()> {
    let mut dev: Vec<u8> = lane.as_bytes().to_vec();
    if dev.is_empty() || dev.len() >= libc::IFNAMSIZ || dev.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad interface name {lane:?}")));
    }
    dev.push(0);
    // SAFETY: plain system call without pointers.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket() and nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut route = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_of(ip),
        rt_gateway: sockaddr_of(std::net::Ipv4Addr::UNSPECIFIED),
        rt_genmask: sockaddr_of(std::net::Ipv4Addr::BROADCAST),
        rt_flags: libc::RTF_UP | libc::RTF_HOST,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_tos: 0,
        rt_class: 0,
        rt_pad4: Default::default(),
        rt_metric: 0,
        rt_dev: dev.as_mut_ptr().cast(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: SIOCADDRT reads one `rtentry` (and the NUL-terminated device name it points to,
    // alive in `dev` for the call).
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCADDRT as _, &mut route as *mut RtEntry) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    Ok(())
}

/// The kernel interface under a data port, if it is one: a software port's name, or the
/// `iface=` of DPDK `net_af_packet` devargs.
fn kernel_interface(port: &str) -> Option<String> {
    let port = port.trim();
    if std::path::Path::new("/sys/class/net").join(port).exists() {
        return Some(port.to_string());
    }
    port.split(',').find_map(|arg| arg.strip_prefix("iface=")).map(str::to_string)
}

/// When the internal port is a kernel interface, the node's own kernel sees every frame the
/// clients send to the engine's MAC (it is the interface's), and since the lane holds the
/// internal address it would accept packets for that address straight off the port, beside
/// the copy the engine sends up the lane: every DNS query would reach the proxy twice. Strict
/// reverse-path filtering on that interface makes the kernel drop them (their source is
/// routed via the lane); the port guard's nftables chain does too, but needs `nft`, and this
/// needs nothing. Returns what it did, for the log; `Err` says why it could not.
pub fn shield_internal_interface(port: &str) -> Result<Option<String>, String> {
    let Some(iface) = kernel_interface(port) else { return Ok(None) };
    let conf = format!("/proc/sys/net/ipv4/conf/{iface}/rp_filter");
    std::fs::write(&conf, "1").map_err(|e| format!("cannot write {conf}: {e}"))?;
    // The effective mode is the larger of `all` and the interface's: loose (2) would let the
    // packets in.
    let all = std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/rp_filter").unwrap_or_default();
    if all.trim() == "2" {
        return Err(format!(
            "net.ipv4.conf.all.rp_filter is 2 (loose), which overrides the strict filter set on {iface}: clients' \
             packets to the internal address may reach the node's own stack twice; set it to 0 or 1"
        ));
    }
    Ok(Some(iface))
}
