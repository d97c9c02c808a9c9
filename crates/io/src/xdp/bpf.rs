//! The kernel side of an AF_XDP port: a socket map, an XDP program (five instructions in six
//! slots) that hands every frame of the interface's queue to the socket in the map, and a BPF
//! link that attaches the program to the interface for as long as the link's descriptor is
//! open.
//!
//! Written against the `bpf(2)` system call directly: the program is fixed and tiny, so an
//! ELF loader (libbpf/libxdp) would add a C dependency and a BPF filesystem the appliance
//! does not mount, for nothing. A link rather than the older netlink attachment because the
//! kernel detaches it when the last descriptor closes, so a node killed with `-9` leaves no
//! program behind on its ports.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::sys;

const BPF_MAP_CREATE: libc::c_int = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_LINK_CREATE: libc::c_int = 28;
const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`'s BPF_XDP.
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_SKB_MODE` / `XDP_FLAGS_DRV_MODE` (linux/if_link.h).
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
/// `enum xdp_action`'s XDP_DROP.
const XDP_DROP: i32 = 1;
/// `BPF_FUNC_redirect_map`.
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// One `struct bpf_insn`: opcode, destination and source registers (low and high nibble),
/// offset, immediate.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// The register nibbles are packed for a little-endian `struct bpf_insn` bitfield.
#[cfg(target_endian = "big")]
compile_error!("the XDP program's instruction encoding assumes a little-endian target");

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn { code, regs: dst | (src << 4), off, imm }
}

/// `r2 = ctx->rx_queue_index; return bpf_redirect_map(&xsks, r2, XDP_DROP)`: every frame
/// goes to the socket bound to its queue, and a frame of a queue without one is dropped
/// (the port owns the interface: nothing reaches the host stack past the dataplane).
fn program(map_fd: i32) -> [Insn; 6] {
    [
        // BPF_LDX | BPF_MEM | BPF_W: r2 = *(u32 *)(r1 + 16), `struct xdp_md`'s rx_queue_index.
        insn(0x61, 2, 1, 16, 0),
        // BPF_LD | BPF_DW | BPF_IMM (two slots): r1 = the map, by descriptor.
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0, 0, 0, 0, 0),
        // BPF_ALU64 | BPF_MOV | BPF_K: r3 = the action when the map has no socket.
        insn(0xb7, 3, 0, 0, XDP_DROP),
        // BPF_JMP | BPF_CALL.
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // BPF_JMP | BPF_EXIT: return r0.
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// `bpf(cmd, attr)`: the call's non-negative result, or the error.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `attr` is the `union bpf_attr` member this command reads (a prefix of the
    // union, all of it initialised), valid for the size passed for the call's duration.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *mut T, std::mem::size_of::<T>() as u32) };
    sys::cvt(r as libc::c_int)
}

/// A command that returns a new descriptor.
fn bpf_fd<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<OwnedFd> {
    sys::owned(bpf(cmd, attr)?)
}

#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
}

#[repr(C)]
struct MapUpdate {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// How the program was attached: in the driver (native XDP) or on the generic path the
/// kernel offers every device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// The socket map, the program and its link on one interface. Dropping it detaches the
/// program (the link is the last reference).
pub(crate) struct Redirect {
    // Field order: the link goes first, then the program and the map it uses.
    _link: OwnedFd,
    _prog: OwnedFd,
    map: OwnedFd,
    pub(crate) mode: AttachMode,
}

impl Redirect {
    /// Creates the map and program and attaches them to `ifindex`, natively if the driver
    /// can, else on the generic path. Nothing is redirected until [`Redirect::insert`] puts
    /// a socket in the map; until then the interface's frames are dropped.
    pub(crate) fn attach(ifindex: i32) -> Result<Redirect, (&'static str, io::Error)> {
        let mut create =
            MapCreate { map_type: BPF_MAP_TYPE_XSKMAP, key_size: 4, value_size: 4, max_entries: 1, map_flags: 0 };
        let map = bpf_fd(BPF_MAP_CREATE, &mut create)
            .map_err(|e| ("creating the XDP socket map (needs CAP_BPF and CAP_NET_ADMIN)", e))?;
        let insns = program(map.as_raw_fd());
        let license = c"Apache-2.0";
        let mut name = [0u8; 16];
        name[..10].copy_from_slice(b"sluice_xsk");
        let mut load = ProgLoad {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: 0,
            log_size: 0,
            log_buf: 0,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: BPF_XDP,
        };
        let prog = bpf_fd(BPF_PROG_LOAD, &mut load)
            .map_err(|e| ("loading the XDP program (needs CAP_BPF and CAP_NET_ADMIN)", e))?;
        let mut mode = AttachMode::Native;
        let link = loop {
            let flags = if mode == AttachMode::Native { XDP_FLAGS_DRV_MODE } else { XDP_FLAGS_SKB_MODE };
            let mut link = LinkCreate {
                prog_fd: prog.as_raw_fd() as u32,
                target_ifindex: ifindex as u32,
                attach_type: BPF_XDP,
                flags,
            };
            match bpf_fd(BPF_LINK_CREATE, &mut link) {
                Ok(fd) => break fd,
                // The driver has no XDP of its own (EOPNOTSUPP, EINVAL), or not for this
                // setup (ERANGE: an MTU too large for it; ENOSPC: a veth whose peer has more
                // transmit queues than it has receive queues): every device has the generic path.
                Err(e)
                    if mode == AttachMode::Native
                        && matches!(
                            e.raw_os_error(),
                            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ERANGE) | Some(libc::ENOSPC)
                        ) =>
                {
                    mode = AttachMode::Generic;
                }
                Err(e) => return Err(("attaching the XDP program to the interface", e)),
            }
        };
        Ok(Redirect { _link: link, _prog: prog, map, mode })
    }

    /// Makes `socket` the receiver of queue `queue`'s frames.
    pub(crate) fn insert(&self, queue: u32, socket: &OwnedFd) -> io::Result<()> {
        let value = socket.as_raw_fd() as u32;
        let mut update = MapUpdate {
            map_fd: self.map.as_raw_fd() as u32,
            _pad: 0,
            key: &queue as *const u32 as u64,
            value: &value as *const u32 as u64,
            flags: 0,
        };
        bpf(BPF_MAP_UPDATE_ELEM, &mut update).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_is_the_redirect_to_the_queue_socket() {
        let p = program(7);
        assert_eq!(p.len(), 6);
        assert_eq!(p[0], Insn { code: 0x61, regs: 0x12, off: 16, imm: 0 });
        assert_eq!(p[1], Insn { code: 0x18, regs: 0x11, off: 0, imm: 7 });
        assert_eq!(p[3].imm, XDP_DROP);
        assert_eq!(p[4].imm, BPF_FUNC_REDIRECT_MAP);
        assert_eq!(std::mem::size_of::<Insn>(), 8);
    }
}
