//! Node configuration: layering flags, `SLUICE_*` variables, the TOML file and defaults into
//! one validated [`NodeConfig`], and turning that into the engine's configuration.
//!
//! Precedence, per setting: command-line flag > environment variable > file > default. Clap
//! already merges flags over variables ([`RunArgs`] holds whichever was given); [`resolve`]
//! puts the file under that and the defaults under the file.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_dataplane::config::{EngineConfig, PortConfig};
use sluice_dataplane::flow::MAX_FLOW_CAPACITY;

use crate::cli::{Dataplane, LogFormat, RunArgs, SoftwareIo};
use crate::cluster_settings::{ClusterFile, ClusterSettings};
use crate::dns_settings::{
    DnsSettings, DnsUpstream, WrittenDuration, DEFAULT_DNS_TIMEOUT, DEFAULT_MAX_IPS_PER_NAME, DEFAULT_TTL_CEILING,
    DEFAULT_TTL_FLOOR,
};
use crate::exit::{Exit, Failure};
use crate::net::IfaceAddr;

pub const DEFAULT_DATA_DIR: &str = "/var/lib/sluice";
pub const DEFAULT_FLOW_CAPACITY: usize = 262_144;
pub const DEFAULT_WORKERS: usize = 1;
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The management API's default address: this host only.
pub const DEFAULT_HTTP_BIND: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8443);
/// More workers than this is a typo, not a machine.
pub const MAX_WORKERS: usize = 256;

/// The configuration file: the long flag names with `_` for `-` (except `config`). Unknown
/// keys are errors so a misspelt setting is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub internal_port: Option<String>,
    pub external_port: Option<String>,
    pub dataplane: Option<Dataplane>,
    pub software_io: Option<SoftwareIo>,
    pub dpdk_eal_args: Option<String>,
    pub internal_address: Option<IfaceAddr>,
    pub external_address: Option<IfaceAddr>,
    pub gateway: Option<Ipv4Addr>,
    pub snat: Option<bool>,
    #[serde(default, deserialize_with = "count")]
    pub flow_capacity: Option<usize>,
    #[serde(default, deserialize_with = "count")]
    pub workers: Option<usize>,
    pub data_dir: Option<PathBuf>,
    pub policy: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub dns_target_ip: Option<Vec<Ipv4Addr>>,
    pub dns_upstream: Option<Vec<DnsUpstream>>,
    pub dns_timeout: Option<WrittenDuration>,
    pub dns_ttl_floor: Option<u32>,
    pub dns_ttl_ceiling: Option<u32>,
    #[serde(default, deserialize_with = "count")]
    pub dns_max_ips_per_name: Option<usize>,
    pub http_bind: Option<SocketAddr>,
    pub metrics_bind: Option<SocketAddr>,
    pub http_cert: Option<PathBuf>,
    pub http_key: Option<PathBuf>,
    pub cluster_bind: Option<SocketAddr>,
    pub cluster_join_bind: Option<SocketAddr>,
    pub cluster_advertise: Option<String>,
    pub join: Option<String>,
    pub cluster_id: Option<String>,
    pub cluster_data_dir: Option<PathBuf>,
    pub node_id_path: Option<PathBuf>,
    pub bootstrap_token_path: Option<PathBuf>,
    pub snapshot_interval: Option<WrittenDuration>,
    #[serde(default, deserialize_with = "count")]
    pub snapshot_keep: Option<usize>,
}

impl FileConfig {
    fn cluster(&self) -> ClusterFile {
        ClusterFile {
            cluster_bind: self.cluster_bind,
            cluster_join_bind: self.cluster_join_bind,
            cluster_advertise: self.cluster_advertise.clone(),
            join: self.join.clone(),
            cluster_id: self.cluster_id.clone(),
            cluster_data_dir: self.cluster_data_dir.clone(),
            node_id_path: self.node_id_path.clone(),
            bootstrap_token_path: self.bootstrap_token_path.clone(),
        }
    }
}

/// A count in the file: says "a whole number" rather than a Rust type name when it is not.
fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    struct Count;
    impl serde::de::Visitor<'_> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number, like 4")
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom(format!("{v} is negative; expected a whole number, like 4")))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }
    }
    d.deserialize_u64(Count).map(Some)
}

impl FileConfig {
    /// Reads and parses a configuration file; errors name the file (and the key, line and
    /// column for bad contents).
    pub fn load(path: &Path) -> Result<FileConfig, Failure> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                Exit::ConfigFile,
                format!(
                    "cannot read configuration file {}: {e}; check the path given with --config or SLUICE_CONFIG",
                    path.display()
                ),
            )
        })?;
        FileConfig::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, Failure> {
        toml::from_str(text).map_err(|e| {
            let detail = e.to_string();
            Failure::new(Exit::ConfigFile, format!("configuration file {}: {}", path.display(), detail.trim_end()))
        })
    }
}

/// Everything `sluice run` needs, complete and checked for consistency (but not yet against
/// the host: see [`crate::checks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub internal_port: String,
    pub external_port: String,
    pub dataplane: Dataplane,
    /// The software dataplane's port kind (unused in DPDK mode).
    pub software_io: SoftwareIo,
    /// EAL arguments split on whitespace; empty in software mode.
    pub dpdk_eal_args: Vec<String>,
    pub internal_address: IfaceAddr,
    pub external_address: IfaceAddr,
    pub gateway: Ipv4Addr,
    pub snat: bool,
    pub flow_capacity: usize,
    pub workers: usize,
    pub data_dir: PathBuf,
    pub policy: Option<PathBuf>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub dns: DnsSettings,
    pub http_bind: SocketAddr,
    pub metrics_bind: Option<SocketAddr>,
    pub http_cert: Option<PathBuf>,
    pub http_key: Option<PathBuf>,
    /// `None`: a single node.
    pub cluster: Option<ClusterSettings>,
    pub snapshots: SnapshotSchedule,
}

/// `--snapshot-interval` / `--snapshot-keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSchedule {
    /// `None`: no scheduled snapshots.
    pub interval: Option<std::time::Duration>,
    pub keep: usize,
}

pub const DEFAULT_SNAPSHOT_KEEP: usize = 7;
pub const MAX_SNAPSHOT_KEEP: usize = 1000;
pub const MIN_SNAPSHOT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// A repeatable flag: the flags (or variable) when given, else the file's list.
fn list<T>(args: Vec<T>, file: Option<Vec<T>>) -> Option<Vec<T>> {
    if args.is_empty() {
        file
    } else {
        Some(args)
    }
}

fn missing(what: &str, flag: &str) -> Failure {
    let env = format!("SLUICE_{}", flag.to_ascii_uppercase().replace('-', "_"));
    let key = flag.replace('-', "_");
    Failure::new(
        Exit::Setting,
        format!("no {what} given: set --{flag}, the {env} environment variable, or `{key}` in the configuration file"),
    )
}

/// Layers `args` (flags over environment) over `file` over the defaults, then checks the
/// result for consistency.
pub fn resolve(args: RunArgs, file: FileConfig) -> Result<NodeConfig, Failure> {
    let data_dir = args.data_dir.clone().or(file.data_dir.clone()).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let cluster = crate::cluster_settings::resolve(args.cluster.clone(), file.cluster(), &data_dir)?;
    let internal_address = args
        .internal_address
        .or(file.internal_address)
        .ok_or_else(|| missing("internal address", "internal-address"))?;
    let dns = DnsSettings {
        target_ips: list(args.dns_target_ip, file.dns_target_ip).unwrap_or_else(|| vec![internal_address.ip]),
        upstreams: list(args.dns_upstream, file.dns_upstream).unwrap_or_default(),
        timeout: args.dns_timeout.or(file.dns_timeout).map_or(DEFAULT_DNS_TIMEOUT, |d| d.0),
        ttl_floor: args.dns_ttl_floor.or(file.dns_ttl_floor).unwrap_or(DEFAULT_TTL_FLOOR),
        ttl_ceiling: args.dns_ttl_ceiling.or(file.dns_ttl_ceiling).unwrap_or(DEFAULT_TTL_CEILING),
        max_ips_per_name: args.dns_max_ips_per_name.or(file.dns_max_ips_per_name).unwrap_or(DEFAULT_MAX_IPS_PER_NAME),
    };
    let config = NodeConfig {
        internal_port: args
            .internal_port
            .or(file.internal_port)
            .ok_or_else(|| missing("internal port", "internal-port"))?,
        external_port: args
            .external_port
            .or(file.external_port)
            .ok_or_else(|| missing("external port", "external-port"))?,
        dataplane: args.dataplane.or(file.dataplane).unwrap_or(Dataplane::Software),
        software_io: args.software_io.or(file.software_io).unwrap_or(SoftwareIo::AfPacket),
        dpdk_eal_args: args
            .dpdk_eal_args
            .or(file.dpdk_eal_args)
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
        internal_address,
        external_address: args
            .external_address
            .or(file.external_address)
            .ok_or_else(|| missing("external address", "external-address"))?,
        gateway: args.gateway.or(file.gateway).ok_or_else(|| missing("gateway", "gateway"))?,
        snat: args.snat.or(file.snat).unwrap_or(true),
        flow_capacity: args.flow_capacity.or(file.flow_capacity).unwrap_or(DEFAULT_FLOW_CAPACITY),
        workers: args.workers.or(file.workers).unwrap_or(DEFAULT_WORKERS),
        data_dir,
        policy: args.policy.or(file.policy),
        log_format: args.log_format.or(file.log_format).unwrap_or(LogFormat::Plain),
        log_level: args.log_level.or(file.log_level).unwrap_or_else(|| DEFAULT_LOG_LEVEL.to_string()),
        dns,
        http_bind: args.http_bind.or(file.http_bind).unwrap_or(DEFAULT_HTTP_BIND),
        metrics_bind: args.metrics_bind.or(file.metrics_bind),
        http_cert: args.http_cert.or(file.http_cert),
        http_key: args.http_key.or(file.http_key),
        cluster,
        snapshots: SnapshotSchedule {
            interval: args.snapshot_interval.or(file.snapshot_interval).map(|d| d.0),
            keep: args.snapshot_keep.or(file.snapshot_keep).unwrap_or(DEFAULT_SNAPSHOT_KEEP),
        },
    };
    config.validate()?;
    Ok(config)
}

impl NodeConfig {
    /// Consistency checks that need no access to the host.
    pub fn validate(&self) -> Result<(), Failure> {
        let setting = |msg: String| Err(Failure::new(Exit::Setting, msg));
        if let Some(interval) = self.snapshots.interval {
            if interval < MIN_SNAPSHOT_INTERVAL {
                return setting(format!(
                    "--snapshot-interval {interval:?} is shorter than {MIN_SNAPSHOT_INTERVAL:?}: snapshots that often \
                     would wear the disk and fill the retention window within minutes"
                ));
            }
        }
        if !(1..=MAX_SNAPSHOT_KEEP).contains(&self.snapshots.keep) {
            return setting(format!(
                "--snapshot-keep {} is out of range: keep 1 to {MAX_SNAPSHOT_KEEP} scheduled snapshots",
                self.snapshots.keep
            ));
        }
        for (name, port) in [("internal", &self.internal_port), ("external", &self.external_port)] {
            if port.trim().is_empty() {
                return setting(format!("the {name} port is empty: give an interface name (or DPDK devargs)"));
            }
        }
        if self.internal_port.trim() == self.external_port.trim() {
            return Err(Failure::new(
                Exit::SamePort,
                format!(
                    "`{}` is given as both the internal and the external port; the node needs two different ports, \
                     one towards the protected network and one towards the outside",
                    self.internal_port.trim()
                ),
            ));
        }
        let (int, ext) = (self.internal_address, self.external_address);
        if int.overlaps(ext) {
            return Err(Failure::new(
                Exit::NetworksOverlap,
                format!(
                    "internal network {}/{} (from --internal-address {int}) overlaps external network {}/{} \
                     (from --external-address {ext}); the two ports must be on separate networks",
                    int.network(),
                    int.prefix_len,
                    ext.network(),
                    ext.prefix_len
                ),
            ));
        }
        if !ext.contains(self.gateway) || self.gateway == ext.ip {
            let why = if self.gateway == ext.ip { "is the node's own external address" } else { "is not on it" };
            return Err(Failure::new(
                Exit::GatewayOffNetwork,
                format!(
                    "gateway {} {why}: the external network is {}/{} (from --external-address {ext}); \
                     give the address of the next router on that network, or fix the external address",
                    self.gateway,
                    ext.network(),
                    ext.prefix_len
                ),
            ));
        }
        if self.flow_capacity == 0 || self.flow_capacity > MAX_FLOW_CAPACITY {
            return setting(format!("flow capacity {} must be 1 to {MAX_FLOW_CAPACITY}", self.flow_capacity));
        }
        if self.workers == 0 || self.workers > MAX_WORKERS {
            return setting(format!("workers {} must be 1 to {MAX_WORKERS}", self.workers));
        }
        // A lone word is a valid filter (a module at every level), but `--log-level verbose`
        // is far more likely a mistake than a module name.
        let level = self.log_level.trim();
        let lone_word = !level.contains(['=', ',', ':', '[']);
        let known = ["off", "error", "warn", "info", "debug", "trace", "0", "1", "2", "3", "4", "5"];
        if lone_word && !known.iter().any(|k| k.eq_ignore_ascii_case(level)) {
            return setting(format!("log level `{level}` is not a level; use error, warn, info, debug or trace"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return setting(format!(
                "log level `{}` is not understood ({e}); use error, warn, info, debug or trace",
                self.log_level
            ));
        }
        if self.http_cert.is_some() != self.http_key.is_some() {
            return setting(
                "give both --http-cert and --http-key (or neither, and the node generates a self-signed \
                 certificate in its data directory)"
                    .to_string(),
            );
        }
        if self.metrics_bind == Some(self.http_bind) {
            return setting(format!(
                "--metrics-bind {} is also the API's --http-bind; give the metrics listener its own port",
                self.http_bind
            ));
        }
        self.dns.validate(self.internal_address)
    }

    /// The engine configuration for this node. The MACs are those of the ports, known only
    /// once they are opened.
    pub fn engine_config(&self, internal_mac: [u8; 6], external_mac: [u8; 6]) -> Result<EngineConfig, Failure> {
        let port =
            |mac, addr: IfaceAddr| PortConfig { mac, ip: u32::from(addr.ip), prefix_len: addr.prefix_len, vlan: None };
        let mut engine = EngineConfig::new(
            port(internal_mac, self.internal_address),
            port(external_mac, self.external_address),
            u32::from(self.gateway),
        );
        engine.snat = self.snat;
        engine.flow_capacity = self.flow_capacity;
        engine.validate().map_err(|e| Failure::new(Exit::Setting, e.to_string()))?;
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn required() -> FileConfig {
        FileConfig::parse(
            "internal_port = \"eth1\"\nexternal_port = \"eth2\"\ninternal_address = \"10.10.0.1/24\"\n\
             external_address = \"203.0.113.2/24\"\ngateway = \"203.0.113.1\"\n",
            Path::new("node.toml"),
        )
        .unwrap()
    }

    #[test]
    fn args_beat_file_beats_defaults() {
        let mut file = required();
        file.workers = Some(3);
        file.snat = Some(false);
        let args = RunArgs { workers: Some(5), internal_port: Some("eth7".into()), ..RunArgs::default() };
        let c = resolve(args, file).unwrap();
        assert_eq!((c.workers, c.internal_port.as_str(), c.external_port.as_str()), (5, "eth7", "eth2"));
        assert!(!c.snat);
        assert_eq!(c.flow_capacity, DEFAULT_FLOW_CAPACITY);
        assert_eq!(c.data_dir, Path::new(DEFAULT_DATA_DIR));
        assert_eq!((c.dataplane, c.log_format, c.log_level.as_str()), (Dataplane::Software, LogFormat::Plain, "info"));
        assert_eq!(c.policy, None);
        assert_eq!((c.http_bind, c.metrics_bind, c.http_cert.as_deref()), (DEFAULT_HTTP_BIND, None, None));
    }

    #[test]
    fn eal_args_are_split_on_whitespace() {
        let mut file = required();
        file.dataplane = Some(Dataplane::Dpdk);
        file.dpdk_eal_args = Some("  -l 2-3   --no-huge ".into());
        assert_eq!(resolve(RunArgs::default(), file).unwrap().dpdk_eal_args, ["-l", "2-3", "--no-huge"]);
    }

    #[test]
    fn software_io_comes_from_file_and_flag_and_defaults_to_af_packet() {
        assert_eq!(resolve(RunArgs::default(), required()).unwrap().software_io, SoftwareIo::AfPacket);
        let file = FileConfig::parse("software_io = \"af-xdp\"\n", Path::new("n.toml")).unwrap();
        assert_eq!(file.software_io, Some(SoftwareIo::AfXdp));
        let mut from_file = required();
        from_file.software_io = file.software_io;
        assert_eq!(resolve(RunArgs::default(), from_file).unwrap().software_io, SoftwareIo::AfXdp);
        let mut file = required();
        file.software_io = Some(SoftwareIo::AfXdp);
        let args = RunArgs { software_io: Some(SoftwareIo::AfPacket), ..RunArgs::default() };
        assert_eq!(resolve(args, file).unwrap().software_io, SoftwareIo::AfPacket, "the flag wins");
        let err = FileConfig::parse("software_io = \"xdp\"\n", Path::new("n.toml")).unwrap_err();
        assert!(err.message.contains("unknown variant `xdp`, expected `af-packet` or `af-xdp`"), "{err}");
    }

    #[test]
    fn file_errors_name_the_file_and_key() {
        let err = FileConfig::parse("gatewya = \"1.2.3.4\"\n", Path::new("/etc/sluice/sluice.toml")).unwrap_err();
        assert_eq!(err.exit, Exit::ConfigFile);
        assert!(err.message.starts_with("configuration file /etc/sluice/sluice.toml: "), "{err}");
        assert!(err.message.contains("unknown field `gatewya`"), "{err}");
        let err = FileConfig::parse("dataplane = \"fpga\"\n", Path::new("n.toml")).unwrap_err();
        assert!(err.message.contains("unknown variant `fpga`, expected `software` or `dpdk`"), "{err}");
        let err = FileConfig::parse("gateway = \"300.1.1.1\"\n", Path::new("n.toml")).unwrap_err();
        assert!(err.message.contains("invalid IPv4 address"), "{err}");
    }

    #[test]
    fn engine_config_carries_addresses_macs_and_options() {
        let mut file = required();
        file.snat = Some(false);
        file.flow_capacity = Some(4096);
        let node = resolve(RunArgs::default(), file).unwrap();
        let (mac_in, mac_out) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let e = node.engine_config(mac_in, mac_out).unwrap();
        assert_eq!((e.internal.mac, e.external.mac), (mac_in, mac_out));
        assert_eq!((Ipv4Addr::from(e.internal.ip), e.internal.prefix_len), (Ipv4Addr::new(10, 10, 0, 1), 24));
        assert_eq!((Ipv4Addr::from(e.external.ip), e.external.prefix_len), (Ipv4Addr::new(203, 0, 113, 2), 24));
        assert_eq!(Ipv4Addr::from(e.gateway), Ipv4Addr::new(203, 0, 113, 1));
        assert_eq!((e.snat, e.flow_capacity, e.internal.vlan), (false, 4096, None));
        let err = node.engine_config([1, 0, 0, 0, 0, 1], mac_out).unwrap_err();
        assert!(err.message.contains("internal MAC must be unicast"), "{err}");
    }

    #[test]
    fn consistency_errors_have_their_own_exit_codes() {
        let base = resolve(RunArgs::default(), required()).unwrap();
        let check = |f: &dyn Fn(&mut NodeConfig), exit: Exit| {
            let mut c = base.clone();
            f(&mut c);
            assert_eq!(c.validate().unwrap_err().exit, exit);
        };
        check(&|c| c.external_port = " eth1 ".into(), Exit::SamePort);
        check(&|c| c.internal_address = "203.0.113.77/25".parse().unwrap(), Exit::NetworksOverlap);
        check(&|c| c.gateway = Ipv4Addr::new(198, 51, 100, 1), Exit::GatewayOffNetwork);
        check(&|c| c.gateway = c.external_address.ip, Exit::GatewayOffNetwork);
        check(&|c| c.flow_capacity = 0, Exit::Setting);
        check(&|c| c.flow_capacity = MAX_FLOW_CAPACITY + 1, Exit::Setting);
        check(&|c| c.workers = MAX_WORKERS + 1, Exit::Setting);
        check(&|c| c.internal_port = "  ".into(), Exit::Setting);
        check(&|c| c.log_level = "verbose".into(), Exit::Setting);
        check(&|c| c.http_cert = Some("api.pem".into()), Exit::Setting);
        check(&|c| c.http_key = Some("api-key.pem".into()), Exit::Setting);
        check(&|c| c.metrics_bind = Some(c.http_bind), Exit::Setting);
        check(&|c| c.snapshots.interval = Some(std::time::Duration::from_secs(59)), Exit::Setting);
        check(&|c| c.snapshots.keep = 0, Exit::Setting);
        check(&|c| c.snapshots.keep = MAX_SNAPSHOT_KEEP + 1, Exit::Setting);
        assert!(base.validate().is_ok());
    }

    #[test]
    fn snapshot_schedule_comes_from_flags_or_file_with_defaults() {
        let base = resolve(RunArgs::default(), required()).unwrap();
        assert_eq!(base.snapshots, SnapshotSchedule { interval: None, keep: DEFAULT_SNAPSHOT_KEEP });
        let mut file = required();
        let parsed =
            FileConfig::parse("snapshot_interval = \"6h\"\nsnapshot_keep = 28\n", Path::new("node.toml")).unwrap();
        (file.snapshot_interval, file.snapshot_keep) = (parsed.snapshot_interval, parsed.snapshot_keep);
        let from_file = resolve(RunArgs::default(), file).unwrap();
        assert_eq!(from_file.snapshots.interval, Some(std::time::Duration::from_secs(6 * 3600)));
        assert_eq!(from_file.snapshots.keep, 28);
        let mut file = required();
        file.snapshot_keep = Some(28);
        let args = RunArgs { snapshot_keep: Some(3), ..RunArgs::default() };
        assert_eq!(resolve(args, file).unwrap().snapshots.keep, 3, "a flag beats the file");
    }

    #[test]
    fn dns_settings_come_from_flags_or_file_with_defaults() {
        let mut file = required();
        let dns = FileConfig::parse(
            "dns_upstream = [\"198.51.100.53\", \"192.0.2.53:5353\"]\ndns_timeout = \"2s\"\ndns_ttl_floor = 5\n",
            Path::new("node.toml"),
        )
        .unwrap();
        (file.dns_upstream, file.dns_timeout, file.dns_ttl_floor) =
            (dns.dns_upstream, dns.dns_timeout, dns.dns_ttl_floor);
        let c = resolve(RunArgs::default(), file).unwrap();
        let ups: Vec<String> = c.dns.upstreams.iter().map(ToString::to_string).collect();
        assert_eq!(ups, ["198.51.100.53:53", "192.0.2.53:5353"]);
        assert_eq!(
            (c.dns.timeout, c.dns.ttl_floor, c.dns.ttl_ceiling),
            (Duration::from_secs(2), 5, DEFAULT_TTL_CEILING)
        );
        assert_eq!(c.dns.target_ips, [Ipv4Addr::new(10, 10, 0, 1)], "the internal address by default");
        let args = RunArgs { dns_upstream: vec!["203.0.113.53".parse().unwrap()], ..RunArgs::default() };
        let c = resolve(args, required()).unwrap();
        assert_eq!(c.dns.upstreams.len(), 1, "flags replace the file's list");
        let err = FileConfig::parse("dns_timeout = \"2 minutes\"\n", Path::new("n.toml")).unwrap_err();
        assert!(err.message.contains("with its unit"), "{err}");
    }

    #[test]
    fn api_settings_come_from_flags_or_file() {
        let mut file = required();
        let api = FileConfig::parse(
            "http_bind = \"192.0.2.10:8443\"\nmetrics_bind = \"192.0.2.10:9100\"\nhttp_cert = \"/etc/sluice/api.pem\"\n\
             http_key = \"/etc/sluice/api-key.pem\"\n",
            Path::new("node.toml"),
        )
        .unwrap();
        (file.http_bind, file.metrics_bind, file.http_cert, file.http_key) =
            (api.http_bind, api.metrics_bind, api.http_cert, api.http_key);
        let args = RunArgs { http_bind: Some("127.0.0.1:9443".parse().unwrap()), ..RunArgs::default() };
        let c = resolve(args, file).unwrap();
        assert_eq!(c.http_bind, "127.0.0.1:9443".parse().unwrap(), "the flag beats the file");
        assert_eq!(c.metrics_bind, Some("192.0.2.10:9100".parse().unwrap()));
        assert_eq!(c.http_key.as_deref(), Some(Path::new("/etc/sluice/api-key.pem")));
        let mut file = required();
        file.http_cert = Some("api.pem".into());
        let err = resolve(RunArgs::default(), file).unwrap_err();
        assert!(err.message.contains("both --http-cert and --http-key"), "{err}");
    }

    #[test]
    fn missing_required_setting_says_where_to_set_it() {
        let mut file = required();
        file.internal_address = None;
        let err = resolve(RunArgs::default(), file).unwrap_err();
        assert_eq!(err.exit, Exit::Setting);
        assert_eq!(
            err.message,
            "no internal address given: set --internal-address, the SLUICE_INTERNAL_ADDRESS environment variable, \
             or `internal_address` in the configuration file"
        );
    }
}
