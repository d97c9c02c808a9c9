//! Opening ports fails with typed errors whose text tells the operator what to do.

use sluice_io::{AfPacketPort, IoError, Tap, XdpPort};

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Drop CAP_NET_RAW and CAP_NET_ADMIN from the calling thread's effective set.
fn drop_net_capabilities() {
    drop_capabilities(&[CAP_NET_RAW, CAP_NET_ADMIN]);
}

/// Drop `caps` from the calling thread's effective set.
fn drop_capabilities(caps: &[u32]) {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut hdr = Header { version: VERSION_3, pid: 0 };
    let mut data = [Data::default(); 2];
    // SAFETY: `hdr` and `data` have the layout capget/capset expect for version 3.
    unsafe {
        assert_eq!(libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()), 0);
        for &cap in caps {
            data[(cap / 32) as usize].effective &= !(1 << (cap % 32));
        }
        assert_eq!(libc::syscall(libc::SYS_capset, &hdr, data.as_ptr()), 0);
    }
}

#[test]
fn missing_interface_says_how_to_check() {
    let e = AfPacketPort::open("slnosuchif0", 4).err().expect("must fail");
    assert!(!matches!(e, IoError::PermissionDenied { .. }), "this test needs root (cargo xtask test runs as root)");
    assert!(matches!(&e, IoError::InterfaceMissing { name } if name == "slnosuchif0"), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("does not exist") && text.contains("ip link show"), "{text}");
}

#[test]
fn missing_privileges_say_which_capabilities() {
    // SAFETY: geteuid has no preconditions.
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root to have capabilities to drop");
    // An Ethernet interface that surely exists: a TAP made while still privileged.
    let existing = Tap::create("slcap").expect("tap");
    let name = existing.name().to_string();
    let (port, tap) = std::thread::spawn(move || {
        drop_net_capabilities();
        (AfPacketPort::open(&name, 4).err().expect("must fail"), Tap::create("slnocap").err().expect("must fail"))
    })
    .join()
    .unwrap();
    for e in [port, tap] {
        assert!(matches!(e, IoError::PermissionDenied { .. }), "{e:?}");
        let text = e.to_string();
        assert!(text.contains("CAP_NET_RAW") && text.contains("root"), "{text}");
    }
}

#[test]
fn an_xdp_port_without_cap_bpf_says_which_capabilities() {
    // SAFETY: geteuid has no preconditions.
    assert!(unsafe { libc::geteuid() } == 0, "this test needs root to have capabilities to drop");
    let existing = Tap::create("slxcap").expect("tap");
    let name = existing.name().to_string();
    let e = std::thread::spawn(move || {
        // CAP_SYS_ADMIN would stand in for CAP_BPF.
        drop_capabilities(&[CAP_BPF, CAP_SYS_ADMIN]);
        XdpPort::open(&name).err().expect("must fail")
    })
    .join()
    .unwrap();
    assert!(matches!(e, IoError::PermissionDenied { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("CAP_BPF") && text.contains("af-xdp"), "{text}");
}

#[test]
fn bad_names_are_rejected_before_any_system_call() {
    for name in ["", "a-name-far-too-long", "with/slash"] {
        let e = AfPacketPort::open(name, 4).err().expect("must fail");
        assert!(matches!(e, IoError::BadInterfaceName { .. }), "{name:?}: {e:?}");
    }
}

#[test]
fn loopback_is_not_a_data_port() {
    match AfPacketPort::open("lo", 4) {
        Err(e @ IoError::NotEthernet { .. }) => assert!(e.to_string().contains("not an Ethernet device"), "{e}"),
        Err(IoError::PermissionDenied { .. }) => panic!("this test needs root (cargo xtask test runs as root)"),
        other => panic!("unexpected: {:?}", other.err()),
    }
}
