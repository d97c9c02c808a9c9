//! An ethdev port: opened by name or devargs, one rx and one tx queue.

use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::sync::Arc;

use sluice_dpdk_sys as sys;

use super::eal::{DpdkError, Eal};
use super::mbuf::{Burst, Mempool};

/// Queue sizes and options of a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Receive every frame, not only those to the port's MAC (the engine owns L2 and checks
    /// destination MACs itself).
    pub promiscuous: bool,
}

impl Default for PortConfig {
    fn default() -> PortConfig {
        PortConfig { rx_descriptors: 1024, tx_descriptors: 1024, promiscuous: true }
    }
}

/// Link state as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    /// Mbit/s; `None` when the driver does not know.
    pub speed_mbps: Option<u32>,
    pub full_duplex: bool,
}

/// A started DPDK port with one rx and one tx queue (queue 0), stopped and closed on drop.
#[derive(Debug)]
pub struct DpdkPort {
    id: u16,
    name: String,
    /// Keeps the rx queue's mempool alive as long as the port can fill mbufs from it.
    pool: Arc<Mempool>,
    tx_full: u64,
}

fn port_by_name(name: &str) -> Option<u16> {
    let cname = CString::new(name).ok()?;
    let mut id = 0u16;
    // SAFETY: valid C string and out-pointer.
    let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    (rc == 0).then_some(id)
}

fn check(rc: i32, context: impl FnOnce() -> String) -> Result<(), DpdkError> {
    if rc < 0 {
        Err(DpdkError::new(context(), rc))
    } else {
        Ok(())
    }
}

impl DpdkPort {
    /// Open a port: `device` is the name of a port DPDK already knows (a `--vdev` given to the
    /// EAL such as `net_ring0`, or a PCI address such as `0000:03:00.0`), or devargs
    /// (`net_af_packet0,iface=eth1`) of a device to probe now. The port gets one rx queue
    /// filling mbufs from `pool` and one tx queue, and is started.
    pub fn open(_eal: &Eal, device: &str, pool: Arc<Mempool>, cfg: &PortConfig) -> Result<DpdkPort, DpdkError> {
        let name = device.split(',').next().unwrap_or(device).trim();
        let id = match port_by_name(name) {
            Some(id) => id,
            None => {
                let devargs =
                    CString::new(device).map_err(|_| DpdkError::other("rte_dev_probe", "devargs contain NUL"))?;
                // SAFETY: valid C string, copied by DPDK.
                let rc = unsafe { sys::rte_dev_probe(devargs.as_ptr()) };
                check(rc, || format!("no DPDK port named {name:?}, and probing {device:?} failed"))?;
                port_by_name(name).ok_or_else(|| {
                    DpdkError::other(format!("opening {device:?}"), format!("probed, but no port is named {name:?}"))
                })?
            }
        };
        let port = DpdkPort { id, name: name.to_string(), pool, tx_full: 0 };
        // Zeroed configuration: no offloads, no RSS, no scatter, default MTU.
        let conf = sys::rte_eth_conf::default();
        // SAFETY: id is a valid port; conf is read during the call only.
        check(unsafe { sys::rte_eth_dev_configure(id, 1, 1, &conf) }, || format!("rte_eth_dev_configure({name})"))?;
        // SAFETY: valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = socket.max(sys::SOCKET_ID_ANY) as u32;
        let pool = port.pool.as_ptr();
        // SAFETY: port configured with one rx queue; null rxconf selects defaults; the pool
        // outlives the port (we hold an Arc).
        let rc = unsafe { sys::rte_eth_rx_queue_setup(id, 0, cfg.rx_descriptors, socket, std::ptr::null(), pool) };
        check(rc, || format!("rte_eth_rx_queue_setup({name})"))?;
        // SAFETY: port configured with one tx queue; null txconf selects defaults.
        check(unsafe { sys::rte_eth_tx_queue_setup(id, 0, cfg.tx_descriptors, socket, std::ptr::null()) }, || {
            format!("rte_eth_tx_queue_setup({name})")
        })?;
        // SAFETY: configured port.
        check(unsafe { sys::rte_eth_dev_start(id) }, || format!("rte_eth_dev_start({name})"))?;
        if cfg.promiscuous {
            // SAFETY: started port. Drivers without the notion (ring, null) return -ENOTSUP,
            // which is fine: they pass every frame anyway.
            let rc = unsafe { sys::rte_eth_promiscuous_enable(id) };
            if rc < 0 && rc != -(libc_enotsup()) {
                return Err(DpdkError::new(format!("rte_eth_promiscuous_enable({name})"), rc));
            }
        }
        Ok(port)
    }

    pub fn id(&self) -> u16 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pool(&self) -> &Arc<Mempool> {
        &self.pool
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6], DpdkError> {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid port and out-pointer.
        check(unsafe { sys::rte_eth_macaddr_get(self.id, &mut addr) }, || {
            format!("rte_eth_macaddr_get({})", self.name)
        })?;
        Ok(addr.addr_bytes)
    }

    /// Receive into the free slots of `burst` (at most its spare room); returns how many
    /// frames arrived.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        let (slots, room) = burst.spare();
        // SAFETY: `slots` points at `room` writable pointer slots; the driver fills the first
        // `n` with mbufs it hands over to us.
        let n = usize::from(unsafe { sys::rte_eth_rx_burst(self.id, 0, slots, room as u16) });
        // SAFETY: the driver filled exactly n slots after len.
        unsafe { burst.grow(n) };
        n
    }

    /// Transmit every mbuf of `burst`; those the queue has no room for are freed and counted
    /// (see [`tx_full_drops`](DpdkPort::tx_full_drops)). Returns how many were sent. The
    /// burst is empty afterwards.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let len = burst.len();
        if len == 0 {
            return 0;
        }
        // SAFETY: the first `len` slots are owned mbufs; the driver takes ownership of the
        // first `sent` of them.
        let sent = usize::from(unsafe { sys::rte_eth_tx_burst(self.id, 0, burst.raw_mut().as_mut_ptr(), len as u16) });
        burst.consume_front(sent);
        self.tx_full += burst.len() as u64;
        burst.clear();
        sent
    }

    /// Frames freed because the tx queue was full.
    pub fn tx_full_drops(&self) -> u64 {
        self.tx_full
    }

    /// Link state, without waiting for autonegotiation.
    pub fn link(&self) -> Result<LinkStatus, DpdkError> {
        let mut link = sys::rte_eth_link::default();
        // SAFETY: valid port and out-pointer.
        check(unsafe { sys::rte_eth_link_get_nowait(self.id, &mut link) }, || {
            format!("rte_eth_link_get_nowait({})", self.name)
        })?;
        let speed = link.link_speed;
        Ok(LinkStatus {
            up: u32::from(link.link_status()) == sys::RTE_ETH_LINK_UP,
            speed_mbps: (speed != 0 && speed != u32::MAX).then_some(speed),
            full_duplex: link.link_duplex() != 0,
        })
    }

    /// The port's basic counters, by name (see [`PortStatsReader::stats`]), and
    /// `tx_full_drops` counted here.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>, DpdkError> {
        let mut v = self.stats_reader().stats()?;
        v.push(("tx_full_drops", self.tx_full));
        Ok(v)
    }

    /// The driver's extended counters, by the driver's names.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        self.stats_reader().xstats()
    }

    /// A handle that reads this port's driver counters from another thread.
    pub fn stats_reader(&self) -> PortStatsReader {
        PortStatsReader { id: self.id, name: self.name.clone() }
    }

    /// Reset the driver's basic counters.
    pub fn reset_stats(&mut self) -> Result<(), DpdkError> {
        // SAFETY: valid port.
        check(unsafe { sys::rte_eth_stats_reset(self.id) }, || format!("rte_eth_stats_reset({})", self.name))
    }
}

const fn libc_enotsup() -> i32 {
    95 // ENOTSUP (= EOPNOTSUPP) on Linux
}

impl Drop for DpdkPort {
    fn drop(&mut self) {
        // SAFETY: valid port we opened; nothing uses it after this. Errors cannot be acted on.
        unsafe {
            sys::rte_eth_dev_stop(self.id);
            sys::rte_eth_dev_close(self.id);
        }
    }
}

/// Reads a port's driver counters from a thread other than the one polling it, as DPDK's own
/// tools do (drivers keep them per queue and sum on read). Once the port is closed, reads
/// fail with an error rather than touching freed state.
#[derive(Debug, Clone)]
pub struct PortStatsReader {
    id: u16,
    name: String,
}

impl PortStatsReader {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The driver's basic counters, by name: `rx_packets`, `tx_packets`, `rx_bytes`,
    /// `tx_bytes`, `rx_missed`, `rx_errors`, `tx_errors`, `rx_nombuf`.
    pub fn stats(&self) -> Result<Vec<(&'static str, u64)>, DpdkError> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: out-pointer valid for the call; an unknown port id is an error return.
        check(unsafe { sys::rte_eth_stats_get(self.id, &mut s) }, || format!("rte_eth_stats_get({})", self.name))?;
        Ok(vec![
            ("rx_packets", s.ipackets),
            ("tx_packets", s.opackets),
            ("rx_bytes", s.ibytes),
            ("tx_bytes", s.obytes),
            ("rx_missed", s.imissed),
            ("rx_errors", s.ierrors),
            ("tx_errors", s.oerrors),
            ("rx_nombuf", s.rx_nombuf),
        ])
    }

    /// The driver's extended counters, by the driver's names.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>, DpdkError> {
        let context = || format!("rte_eth_xstats_get({})", self.name);
        // SAFETY: with a null array DPDK returns the number of xstats.
        let n = unsafe { sys::rte_eth_xstats_get_names(self.id, std::ptr::null_mut(), 0) };
        check(n, context)?;
        let mut names = vec![sys::rte_eth_xstat_name::default(); n as usize];
        let mut values = vec![sys::rte_eth_xstat::default(); n as usize];
        // SAFETY: both arrays have n entries; DPDK writes at most n.
        let got = unsafe { sys::rte_eth_xstats_get_names(self.id, names.as_mut_ptr(), n as u32) };
        check(got, context)?;
        // SAFETY: as above.
        let got_values = unsafe { sys::rte_eth_xstats_get(self.id, values.as_mut_ptr(), n as u32) };
        check(got_values, context)?;
        let count = (got.min(got_values).min(n)) as usize;
        Ok(values[..count]
            .iter()
            .filter_map(|v| {
                let name = names.get(v.id as usize)?;
                let bytes: &[c_char] = &name.name;
                if !bytes.contains(&0) {
                    return None;
                }
                // SAFETY: the name array holds a NUL (checked above), so the string ends
                // within it.
                let s = unsafe { CStr::from_ptr(bytes.as_ptr()) };
                Some((s.to_string_lossy().into_owned(), v.value))
            })
            .collect())
    }
}
