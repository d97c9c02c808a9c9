//! The TAP service lane: a kernel interface through which the engine hands traffic for the
//! node itself to the host stack (where the DNS proxy listens) and takes the host's own
//! traffic back. Assigning the host's address to the TAP is the caller's job.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::error::IoError;
use crate::frame::IoFrame;
use crate::sys;
use crate::worker::{Port, PortStats};

/// An open TAP interface (IFF_TAP, no packet-information header, non-blocking). The
/// interface disappears when this is dropped.
pub struct Tap {
    fd: OwnedFd,
    name: String,
    mac: [u8; 6],
    mtu: usize,
    stats: PortStats,
}

impl Tap {
    /// Create a TAP interface named `prefix` followed by the lowest free number (the
    /// kernel picks it), and set it up.
    pub fn create(prefix: &str) -> Result<Tap, IoError> {
        let pattern = format!("{prefix}%d");
        let mut req = sys::ifreq(&pattern)?;
        let path = c"/dev/net/tun";
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let fd = sys::owned(unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) })
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENODEV) => IoError::Os {
                    op: "opening",
                    target: "/dev/net/tun".into(),
                    source: io::Error::other(format!("{e}; load the tun kernel module (`modprobe tun`)")),
                },
                _ => IoError::os("opening /dev/net/tun for", prefix, e),
            })?;
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        sys::ioctl_ifreq(fd.as_raw_fd(), libc::TUNSETIFF, &mut req)
            .map_err(|e| IoError::os("creating the TAP interface", &pattern, e))?;
        let name = sys::ifreq_name(&req);
        let ctl = sys::control_socket().map_err(|e| IoError::os("opening a control socket", &name, e))?;
        sys::set_up(ctl.as_raw_fd(), &name)?;
        let link = sys::link_info(ctl.as_raw_fd(), &name)?;
        Ok(Tap { fd, name, mac: link.mac, mtu: link.mtu, stats: PortStats::default() })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TAP interface's own MAC (the host side): `HostLaneConfig::host_mac`.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn mtu(&self) -> usize {
        self.mtu
    }
}

impl Port for Tap {
    fn name(&self) -> &str {
        &self.name
    }

    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn frame_capacity(&self) -> usize {
        crate::afpacket::frame_capacity(self.mtu)
    }

    fn recv_burst(&mut self, frames: &mut [IoFrame]) -> io::Result<usize> {
        let mut n = 0;
        while n < frames.len() {
            let area = frames[n].rx_area();
            // SAFETY: `area` is a writable buffer of `area.len()` bytes, borrowed for the call.
            let got = unsafe { libc::read(self.fd.as_raw_fd(), area.as_mut_ptr().cast(), area.len()) };
            if got < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ if n > 0 => break,
                    _ => return Err(e),
                }
            }
            let got = got as usize;
            if got == area.len() {
                // A TAP read truncates silently; a full buffer may be a cut frame.
                self.stats.rx_truncated += 1;
                continue;
            }
            frames[n].set_received(got);
            n += 1;
        }
        self.stats.rx_packets += n as u64;
        Ok(n)
    }

    fn queue(&mut self, frame: &[u8]) {
        // Writing to a TAP hands the frame to the host stack at once; there is nothing to
        // batch.
        // SAFETY: `frame` is a readable buffer of `frame.len()` bytes, borrowed for the call.
        let r = unsafe { libc::write(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if r < 0 {
            match io::Error::last_os_error().kind() {
                io::ErrorKind::WouldBlock => self.stats.tx_dropped += 1,
                _ => self.stats.tx_errors += 1,
            }
        } else {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += frame.len() as u64;
        }
    }

    fn flush(&mut self) {}

    fn stats(&self) -> PortStats {
        self.stats
    }
}
