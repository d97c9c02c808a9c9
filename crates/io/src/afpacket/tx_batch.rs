//! The software port's transmit side: frames copied into preallocated slots and sent with
//! one `sendmmsg` per burst. (`cargo xtask bench afpacket` measured a PACKET_MMAP transmit
//! ring no faster than this on a veth, so the simpler batched call stays.)

use std::io;
use std::os::fd::RawFd;

use crate::worker::PortStats;

/// Frames waiting for one `sendmmsg`: copies in preallocated slots (the engine's buffers
/// are reused for the next burst before a slow socket would take them).
pub(crate) struct TxBatch {
    data: Vec<u8>,
    slot: usize,
    lens: Vec<usize>,
    count: usize,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl TxBatch {
    pub(crate) fn new(slots: usize, slot: usize) -> TxBatch {
        TxBatch {
            data: vec![0; slots * slot],
            slot,
            lens: vec![0; slots],
            count: 0,
            // SAFETY: `iovec` and `mmsghdr` are plain old data; all-zero is a valid value.
            iov: vec![unsafe { std::mem::zeroed() }; slots],
            // SAFETY: as above.
            msgs: vec![unsafe { std::mem::zeroed() }; slots],
        }
    }

    pub(crate) fn is_full(&self) -> bool {
        self.count == self.lens.len()
    }

    /// Copy a frame in; false if it is larger than a slot or the batch is full.
    pub(crate) fn push(&mut self, frame: &[u8]) -> bool {
        if self.is_full() || frame.len() > self.slot {
            return false;
        }
        let at = self.count * self.slot;
        self.data[at..at + frame.len()].copy_from_slice(frame);
        self.lens[self.count] = frame.len();
        self.count += 1;
        true
    }

    /// Transmit everything queued. Frames the socket cannot take now (full send buffer)
    /// are dropped and counted: a worker never waits for a port.
    pub(crate) fn send(&mut self, fd: RawFd, stats: &mut PortStats) {
        let n = self.count;
        if n == 0 {
            return;
        }
        let base = self.data.as_mut_ptr();
        for i in 0..n {
            // SAFETY: slot `i` lies within `data` (`i < slots`, `data.len() == slots * slot`).
            let ptr = unsafe { base.add(i * self.slot) };
            self.iov[i] = libc::iovec { iov_base: ptr.cast(), iov_len: self.lens[i] };
            // SAFETY: `mmsghdr` is plain old data; all-zero is a valid value.
            self.msgs[i] = unsafe { std::mem::zeroed() };
            self.msgs[i].msg_hdr.msg_iov = &mut self.iov[i];
            self.msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < n {
            // SAFETY: `msgs[done..n]` are initialised headers whose iovecs point into
            // `data`, which is alive and not otherwise borrowed during the call.
            let sent =
                unsafe { libc::sendmmsg(fd, self.msgs.as_mut_ptr().add(done), (n - done) as _, libc::MSG_DONTWAIT) };
            if sent > 0 {
                done += sent as usize;
                for i in done - sent as usize..done {
                    stats.tx_packets += 1;
                    stats.tx_bytes += self.lens[i] as u64;
                }
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    stats.tx_dropped += (n - done) as u64;
                    break;
                }
                _ => {
                    // The first remaining frame failed (e.g. larger than the MTU, link
                    // down): count it and go on with the rest.
                    stats.tx_errors += 1;
                    done += 1;
                }
            }
        }
        self.count = 0;
    }
}
