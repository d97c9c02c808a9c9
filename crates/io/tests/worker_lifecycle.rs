//! Worker start and stop without a lab: TAP interfaces stand in for the data ports.

use std::time::{Duration, Instant};

use sluice_dataplane::config::{EngineConfig, PortConfig};
use sluice_dataplane::counters::Counter;
use sluice_dataplane::engine::Engine;
use sluice_dataplane::policy_handle::PolicyHandle;
use std::os::fd::RawFd;

use sluice_io::{IoFrame, Port, PortStats, Tap, Worker, WorkerConfig};

fn engine(policy: &PolicyHandle) -> Engine {
    let port = |mac: u8, ip: u32| PortConfig { mac: [2, 0, 0, 0, 0, mac], ip, prefix_len: 24, vlan: None };
    let cfg = EngineConfig::new(port(1, 0x0a0a_0001), port(2, 0xcb00_7102), 0xcb00_7101);
    Engine::new(cfg, policy.reader(), None).expect("engine")
}

fn policy() -> PolicyHandle {
    PolicyHandle::new(sluice_policy::compile_json(r#"{ "default_action": "deny", "source_groups": [] }"#).unwrap())
}

fn taps() -> Option<(Tap, Tap)> {
    // SAFETY: geteuid has no preconditions.
    assert!(unsafe { libc::geteuid() } == 0, "creating TAP interfaces needs root (cargo xtask test runs as root)");
    let prefix = format!("sl{}w", std::process::id());
    Some((Tap::create(&prefix).expect("tap"), Tap::create(&prefix).expect("tap")))
}

#[test]
fn worker_runs_housekeeping_when_idle_and_stops_promptly() {
    let Some((a, b)) = taps() else { return };
    assert_ne!(a.name(), b.name(), "the kernel numbers TAPs of one prefix");
    let policy = policy();
    let mut cfg = WorkerConfig::new(engine(&policy), Box::new(a), Box::new(b), None);
    cfg.idle_timeout = Duration::from_millis(1);
    let worker = Worker::spawn(cfg).expect("spawn");
    let counters = worker.counters();
    // A new policy is picked up by idle housekeeping, without any traffic.
    let generation =
        policy.publish(sluice_policy::compile_json(r#"{ "default_action": "allow", "source_groups": [] }"#).unwrap());
    let deadline = Instant::now() + Duration::from_secs(2);
    while counters.snapshot().get(Counter::PolicyGeneration) != u64::from(generation) {
        assert!(Instant::now() < deadline, "idle worker never picked up the policy");
        std::thread::sleep(Duration::from_millis(2));
    }
    let t = Instant::now();
    let engine = worker.stop();
    // Bounded, not instant: generous for a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(5), "stop took {:?}", t.elapsed());
    assert_eq!(engine.policy_generation(), generation);
    assert_eq!(engine.counters().get(Counter::PolicySwaps), 1);
}

#[test]
fn pinning_to_a_missing_cpu_is_an_error() {
    let Some((a, b)) = taps() else { return };
    let policy = policy();
    let mut cfg = WorkerConfig::new(engine(&policy), Box::new(a), Box::new(b), None);
    cfg.core = Some(100_000);
    let err = Worker::spawn(cfg).err().expect("must fail");
    assert!(err.to_string().contains("CPU 100000"), "{err}");
}

#[test]
fn pinning_to_an_allowed_cpu_works() {
    let Some((a, b)) = taps() else { return };
    // SAFETY: `set` is a valid out-buffer of the size passed; pid 0 is this thread.
    let first = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set), 0);
        (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &set)).expect("some CPU")
    };
    let policy = policy();
    let mut cfg = WorkerConfig::new(engine(&policy), Box::new(a), Box::new(b), None);
    cfg.core = Some(first);
    Worker::spawn(cfg).expect("pinned worker").stop();
}

/// A port that fails in a way the worker does not expect (a bug): it panics on receive.
struct PanickingPort(Tap);

impl Port for PanickingPort {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn raw_fd(&self) -> RawFd {
        self.0.raw_fd()
    }
    fn frame_capacity(&self) -> usize {
        self.0.frame_capacity()
    }
    fn recv_burst(&mut self, _frames: &mut [IoFrame]) -> std::io::Result<usize> {
        panic!("port {} broke", self.0.name())
    }
    fn queue(&mut self, frame: &[u8]) {
        self.0.queue(frame)
    }
    fn flush(&mut self) {}
    fn stats(&self) -> PortStats {
        self.0.stats()
    }
}

#[test]
fn a_worker_that_panicked_is_reported_by_try_stop() {
    let Some((a, b)) = taps() else { return };
    let name = a.name().to_string();
    let policy = policy();
    let cfg = WorkerConfig::new(engine(&policy), Box::new(PanickingPort(a)), Box::new(b), None);
    let worker = Worker::spawn(cfg).expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(2);
    while worker.is_running() {
        assert!(Instant::now() < deadline, "the worker should have died on the panicking port");
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = worker.try_stop().err().expect("the worker panicked");
    assert_eq!(err, format!("port {name} broke"));
}
