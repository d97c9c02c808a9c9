//! The command line. Every `run` setting is also a `SLUICE_*` environment variable and a key
//! of the TOML configuration file; see [`crate::config`] for how they are combined.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::dns_settings::{DnsUpstream, WrittenDuration};
use crate::net::IfaceAddr;

/// The exit codes, shown under `sluice run --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
   0  success (run: stopped cleanly by SIGTERM or SIGINT)
   1  policy validate/explain: the policy has errors
   2  command line not understood
   3  client commands without --api: the node's admin socket could not be used
   4  client commands: the API could not be reached (connect, TLS, timeout)
   5  client commands: the node refused the request (404, 409, 413, 503, ...), or status: not ready
   6  client commands: the token is missing, invalid or expired, or lacks the role
   7  snapshot verify/inspect/restore: the snapshot file is refused (says which part and why)
   8  restore: the data root is not empty (give --force to move it aside)
  10  configuration file unreadable, not TOML, unknown key or wrong type
  11  a setting is missing or invalid
  12  internal and external networks overlap
  13  gateway is not on the external network
  14  the same interface was given for both ports
  15  policy file unreadable or invalid
  16  a port's network interface does not exist
  17  not permitted: run as root or grant CAP_NET_RAW and CAP_NET_ADMIN
  18  --dataplane dpdk, but this binary was built without DPDK
  19  DPDK needs hugepages and none are configured
  20  another sluice process holds one of the ports
  21  the data directory cannot be created or written
  22  a port or the service lane cannot be opened (not Ethernet, no TAP support, ...)
  23  DPDK could not start (EAL arguments rejected, no worker lcore, no buffer memory)
  24  the DNS proxy could not start (port 53 on a target address taken, upstream routes refused)
  25  the control plane could not start (store unreadable, API address in use, bad certificate)
  26  cluster mode could not start (join refused, seed unreachable, identity or token missing, address in use)
  30  the dataplane worker failed while running (the node stopped)

Precedence: command-line flags > SLUICE_* environment variables > --config file > defaults.";

#[derive(Debug, Parser)]
#[command(name = "sluice", version, about = "Sluice egress firewall node", propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the node configuration and the host, then start the node.
    #[command(after_long_help = EXIT_CODES_HELP)]
    Run(Box<RunArgs>),
    /// A node's readiness, policy versions, store and traffic, from its API.
    /// Example: sluice status --api https://192.0.2.10:8443
    #[command(after_long_help = CLIENT_HELP)]
    Status(StatusArgs),
    /// Policy versions on a node (get, put, versions, rollback), and checking a policy
    /// (validate, explain) offline or on a node.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// API tokens: mint (also over the admin socket, with no credential), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Show the cluster-wide settings, or change them: how many policy versions and audit log
    /// entries the state keeps. Example: sluice settings --policy-history-limit 200
    #[command(after_long_help = CLIENT_HELP)]
    Settings(SettingsArgs),
    /// The cluster: leader and term, and members with their state; member removal and
    /// leadership transfer.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// State snapshots: create (on a node), list, verify and inspect (files, offline).
    #[command(subcommand)]
    Snapshot(crate::snapshot_cmd::SnapshotCommand),
    /// Disaster recovery, offline: write a fresh data root from a snapshot file. The node
    /// started on it is the seed of a NEW cluster (new cluster id) with the restored state;
    /// other nodes join it with --join. Exit 0 restored, 7 snapshot refused, 8 the data
    /// root is not empty (give --force), 21 writing failed.
    /// Example: sluice restore --snapshot /backup/node1.snap --data-dir /var/lib/sluice --passphrase-file /root/dr-passphrase
    Restore(crate::snapshot_cmd::RestoreArgs),
    /// Who changed what, when: the audit log, newest first.
    /// Example: sluice audit --limit 20
    #[command(after_long_help = CLIENT_HELP)]
    Audit(AuditArgs),
    /// This binary's release version and the state schemas it reads.
    Version(crate::release_cmd::VersionArgs),
    /// Release slots in the data root: list, stage a binary, history.
    #[command(subcommand)]
    Release(crate::release_cmd::ReleaseCommand),
    /// Upgrade the node or cluster to a new release: apply, status, abort, finalize.
    #[command(subcommand)]
    Upgrade(crate::release_cmd::UpgradeCommand),
    /// Return every node to the release the last upgrade replaced (or --to VERSION), in
    /// reverse order with the same gates; refused after finalize.
    /// Example: sluice rollback --to 1.0.0
    #[command(after_long_help = CLIENT_HELP)]
    Rollback(crate::release_cmd::RollbackArgs),
    /// Internal: started by the node to watch a release on probation.
    #[command(hide = true)]
    BootGuard(crate::release_cmd::BootGuardArgs),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Cluster id, leader, term, and whether every member is ready and caught up.
    /// Example: sluice cluster status
    #[command(after_long_help = CLIENT_HELP)]
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// One line per member: id, role, addresses, release, applied index, lag, state hash,
    /// last contact, readiness.
    #[command(after_long_help = CLIENT_HELP)]
    Members {
        #[command(flatten)]
        target: Target,
    },
    /// Remove a member. Refused when the reachable voters left would be fewer than their
    /// quorum, unless --force. Example: sluice cluster remove 4711
    #[command(after_long_help = CLIENT_HELP)]
    Remove {
        /// The member's node id (see sluice cluster members).
        id: u64,
        /// Remove it even if the cluster could then not accept writes.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Hand leadership to a follower (before restarting the leader); answers once it leads.
    /// Example: sluice cluster transfer-leader --to 4711
    #[command(after_long_help = CLIENT_HELP)]
    TransferLeader {
        /// The node to lead; the most up-to-date reachable follower when left out.
        #[arg(long, value_name = "ID")]
        to: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// Keep this many policy versions (1 to 10000); a smaller number drops the oldest inactive
    /// versions at once, never the active one.
    #[arg(long, value_name = "N")]
    pub policy_history_limit: Option<u32>,
    /// Keep this many audit log entries (10 to 100000).
    #[arg(long, value_name = "N")]
    pub audit_log_limit: Option<u32>,
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// At most this many entries (1 to 1000).
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    /// Only entries older than this log index (the index of the last line of a previous page).
    #[arg(long, value_name = "INDEX")]
    pub before: Option<u64>,
    #[command(flatten)]
    pub target: Target,
}

/// How client commands reach a node, shown under their `--help`.
pub const CLIENT_HELP: &str = "\
Reaching the node:
  with --api URL: HTTPS to the node's API, with a bearer token (--token, --token-file or
  SLUICE_TOKEN); the server certificate is checked against --ca-cert, the system's trust store,
  and, on the node itself, the certificate it generated in the data directory.
  without --api: the admin socket of the node this runs on (<data-dir>/admin.sock), as root and
  with no token.

Exit codes: 0 done, 1 the policy has errors, 2 command line not understood, 3 the admin socket
could not be used, 4 the API could not be reached (connect, TLS, timeout), 5 the node refused
the request (status: the node is not ready), 6 the token is missing, invalid, expired or lacks
the role.";

/// Where a client command sends its requests.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The node's management API, `https://HOST[:PORT]` (port 8443 when left out). Without it,
    /// the command uses the admin socket of the node it runs on (root only, no token needed).
    /// Example: --api https://192.0.2.10:8443
    #[arg(long, env = "SLUICE_API", value_name = "URL")]
    pub api: Option<String>,
    /// Bearer token for --api. Prefer SLUICE_TOKEN or --token-file: a flag is visible to
    /// other users in the process list. Beats --token-file.
    #[arg(long, env = "SLUICE_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// File holding the bearer token for --api (surrounding whitespace ignored).
    /// Example: --token-file /root/.sluice-token
    #[arg(long, env = "SLUICE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate(s) to trust for the API: the node's own (its generated one is
    /// <data-dir>/api-cert.pem) or the CA that signed it. Example: --ca-cert node1.pem
    #[arg(long, env = "SLUICE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// The node's data directory, where the admin socket is. Default: /var/lib/sluice.
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// How long to wait for the node's answer (over --api or the admin socket). Example: --timeout 60s
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub timeout: WrittenDuration,
    /// Print the node's JSON answer instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub target: Target,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint an API token. Without --api, through the running node's admin socket, with no
    /// existing credential (break-glass; root only); with --api, with an admin token. The
    /// secret is printed once, on stdout. Example: sluice token mint --role admin --label recovery
    #[command(after_long_help = CLIENT_HELP)]
    Mint(MintArgs),
    /// List the node's tokens (ids, roles, expiry; secrets are never stored).
    /// Example: sluice token list --api https://192.0.2.10:8443
    #[command(after_long_help = CLIENT_HELP)]
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a token by id; requests with it are refused from then on.
    /// Example: sluice token revoke tok-ci
    #[command(after_long_help = CLIENT_HELP)]
    Revoke {
        /// The token's id, as `token list` shows it.
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Args)]
pub struct MintArgs {
    /// `admin` (reads and writes) or `readonly`. Example: --role readonly
    #[arg(long, default_value = "admin")]
    pub role: String,
    /// A note stored with the token. Example: --label "ci pipeline"
    #[arg(long, default_value = "")]
    pub label: String,
    /// The token's id (default: generated). Example: --id tok-ci
    #[arg(long)]
    pub id: Option<String>,
    /// Seconds until the token expires (default: never). Example: --expires-in-s 86400
    #[arg(long)]
    pub expires_in_s: Option<u64>,
    /// Register a secret you already hold, by its SHA-256 (64 hex digits), instead of having
    /// one generated; nothing is printed but the id. How the appliance's first-boot seed
    /// installs its admin token. Example: --secret-sha256 "$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
    #[arg(long, value_name = "HEX")]
    pub secret_sha256: Option<String>,
    #[command(flatten)]
    pub target: Target,
}

/// Which packet I/O the node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataplane {
    /// AF_PACKET on kernel network interfaces.
    Software,
    /// DPDK poll-mode drivers (needs a binary built with the `dpdk` feature).
    Dpdk,
}

impl Dataplane {
    pub fn as_str(self) -> &'static str {
        match self {
            Dataplane::Software => "software",
            Dataplane::Dpdk => "dpdk",
        }
    }
}

/// Which kernel interface the software dataplane's ports use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SoftwareIo {
    /// AF_PACKET sockets with a receive ring.
    AfPacket,
    /// AF_XDP sockets fed by an XDP redirect program.
    AfXdp,
}

impl SoftwareIo {
    pub fn as_str(self) -> &'static str {
        match self {
            SoftwareIo::AfPacket => "af-packet",
            SoftwareIo::AfXdp => "af-xdp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Plain,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        }
    }
}

/// `sluice run` settings as given on the command line or in the environment. Every field is
/// optional here: what is absent is taken from the file, then from the defaults.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// TOML configuration file; its keys are the long flag names with `_` for `-`.
    /// Example: --config /etc/sluice/sluice.toml
    #[arg(long, env = "SLUICE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Port facing the protected network: an interface name in software mode; in DPDK mode a
    /// PCI address bound to a DPDK driver or a virtual device's devargs. Required.
    /// Example: --internal-port eth1 (DPDK: 0000:03:00.0 or net_af_packet0,iface=eth1)
    #[arg(long, env = "SLUICE_INTERNAL_PORT", value_name = "PORT")]
    pub internal_port: Option<String>,

    /// Port facing the outside: an interface name in software mode, a PCI address or devargs
    /// in DPDK mode. Required. Example: --external-port eth2 (DPDK: net_af_packet1,iface=eth2)
    #[arg(long, env = "SLUICE_EXTERNAL_PORT", value_name = "PORT")]
    pub external_port: Option<String>,

    /// Packet I/O: `software` (kernel interfaces, see --software-io) or `dpdk`. Default: software.
    #[arg(long, env = "SLUICE_DATAPLANE", value_name = "KIND")]
    pub dataplane: Option<Dataplane>,

    /// How the software dataplane reaches its interfaces: `af-packet` (packet sockets; works
    /// everywhere) or `af-xdp` (an XDP program hands frames to AF_XDP sockets before the
    /// kernel's stack sees them: faster, needs CAP_BPF and one receive queue per interface).
    /// Ignored in DPDK mode. Default: af-packet. Example: --software-io af-xdp
    #[arg(long, env = "SLUICE_SOFTWARE_IO", value_name = "KIND")]
    pub software_io: Option<SoftwareIo>,

    /// DPDK EAL arguments, one string split on whitespace; used in DPDK mode only (ignored
    /// with a warning in software mode). The first lcore runs the control plane, the next one
    /// the busy-polling dataplane worker, so give at least two.
    /// Default: none (every CPU). Example: --dpdk-eal-args "-l 0,1 --in-memory"
    #[arg(long, env = "SLUICE_DPDK_EAL_ARGS", value_name = "ARGS", allow_hyphen_values = true)]
    pub dpdk_eal_args: Option<String>,

    /// The node's address and prefix on the internal network; clients use it as their
    /// gateway and resolver. Required. Example: --internal-address 10.10.0.1/24
    #[arg(long, env = "SLUICE_INTERNAL_ADDRESS", value_name = "ADDR/LEN")]
    pub internal_address: Option<IfaceAddr>,

    /// The node's address and prefix on the external network; allowed traffic leaves from it
    /// when SNAT is on. Required. Example: --external-address 203.0.113.2/24
    #[arg(long, env = "SLUICE_EXTERNAL_ADDRESS", value_name = "ADDR/LEN")]
    pub external_address: Option<IfaceAddr>,

    /// Next hop for everything off the external network; must be on it. Required.
    /// Example: --gateway 203.0.113.1
    #[arg(long, env = "SLUICE_GATEWAY", value_name = "ADDR")]
    pub gateway: Option<Ipv4Addr>,

    /// Translate inside sources to the external address. Default: true. Example: --snat false
    #[arg(long, env = "SLUICE_SNAT", value_name = "true|false", action = ArgAction::Set)]
    pub snat: Option<bool>,

    /// Most flows tracked at once per worker; new flows beyond it are dropped and counted.
    /// Default: 262144. Example: --flow-capacity 1048576
    #[arg(long, env = "SLUICE_FLOW_CAPACITY", value_name = "N")]
    pub flow_capacity: Option<usize>,

    /// Dataplane worker threads. Default: 1. Example: --workers 4
    #[arg(long, env = "SLUICE_WORKERS", value_name = "N")]
    pub workers: Option<usize>,

    /// Directory for the node's state and port locks. Default: /var/lib/sluice.
    /// Example: --data-dir /srv/sluice
    #[arg(long, env = "SLUICE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Policy document (JSON) applied at start. Default: none (nothing is allowed out until a
    /// policy is applied). Example: --policy /etc/sluice/policy.json
    #[arg(long, env = "SLUICE_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,

    /// Log line format: `plain` or `json`. Default: plain. Example: --log-format json
    #[arg(long, env = "SLUICE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Log filter: a level (error, warn, info, debug, trace) or per-module directives.
    /// Default: info. Example: --log-level sluice=debug,info
    #[arg(long, env = "SLUICE_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Address clients send DNS queries to (repeatable; comma-separated in the variable). The
    /// DNS proxy listens there on UDP and TCP port 53 behind the service lane.
    /// Default: the internal address. Example: --dns-target-ip 10.10.0.1
    #[arg(long, env = "SLUICE_DNS_TARGET_IP", value_name = "ADDR", value_delimiter = ',')]
    pub dns_target_ip: Vec<Ipv4Addr>,

    /// Upstream resolver, `ip[:port]` (repeatable, tried in order; comma-separated in the
    /// variable). Queries reach it through the external port, source-NATed like client
    /// traffic. Default: none, and then the DNS proxy is off. Example: --dns-upstream 192.0.2.53
    #[arg(long, env = "SLUICE_DNS_UPSTREAM", value_name = "IP[:PORT]", value_delimiter = ',')]
    pub dns_upstream: Vec<DnsUpstream>,

    /// How long one upstream has to answer before the next is tried (then SERVFAIL).
    /// Default: 1500ms. Example: --dns-timeout 2s
    #[arg(long, env = "SLUICE_DNS_TIMEOUT", value_name = "DURATION")]
    pub dns_timeout: Option<WrittenDuration>,

    /// Seconds a learned address stays allowed at least, whatever its record's TTL.
    /// Default: 30. Example: --dns-ttl-floor 60
    #[arg(long, env = "SLUICE_DNS_TTL_FLOOR", value_name = "SECONDS")]
    pub dns_ttl_floor: Option<u32>,

    /// Seconds a learned address stays allowed at most (answers' TTLs are lowered to it).
    /// Default: 3600. Example: --dns-ttl-ceiling 600
    #[arg(long, env = "SLUICE_DNS_TTL_CEILING", value_name = "SECONDS")]
    pub dns_ttl_ceiling: Option<u32>,

    /// Addresses learned from one answer at most; the rest are not allowed (counted).
    /// Default: 32. Example: --dns-max-ips-per-name 64
    #[arg(long, env = "SLUICE_DNS_MAX_IPS_PER_NAME", value_name = "N")]
    pub dns_max_ips_per_name: Option<usize>,

    /// Address and port of the HTTPS management API. Default: 127.0.0.1:8443.
    /// Example: --http-bind 192.0.2.10:8443
    #[arg(long, env = "SLUICE_HTTP_BIND", value_name = "ADDR:PORT")]
    pub http_bind: Option<SocketAddr>,

    /// A second, plain-HTTP listener serving only GET /metrics, for scrapers on a management
    /// network. Default: none. Example: --metrics-bind 192.0.2.10:9100
    #[arg(long, env = "SLUICE_METRICS_BIND", value_name = "ADDR:PORT")]
    pub metrics_bind: Option<SocketAddr>,

    /// The API's certificate chain (PEM); give --http-key with it. Default: a self-signed
    /// certificate generated once into the data directory. Example: --http-cert /etc/sluice/api.pem
    #[arg(long, env = "SLUICE_HTTP_CERT", value_name = "FILE")]
    pub http_cert: Option<PathBuf>,

    /// The private key (PEM) of --http-cert. Example: --http-key /etc/sluice/api-key.pem
    #[arg(long, env = "SLUICE_HTTP_KEY", value_name = "FILE")]
    pub http_key: Option<PathBuf>,

    /// Take a snapshot of the state this often and keep it in <data-dir>/snapshots (at
    /// least 1m). Default: off. Example: --snapshot-interval 6h
    #[arg(long, env = "SLUICE_SNAPSHOT_INTERVAL", value_name = "DURATION")]
    pub snapshot_interval: Option<WrittenDuration>,

    /// How many scheduled snapshots to keep (1 to 1000; the oldest go first). Snapshots
    /// taken by hand are never removed automatically. Default: 7. Example: --snapshot-keep 28
    #[arg(long, env = "SLUICE_SNAPSHOT_KEEP", value_name = "N")]
    pub snapshot_keep: Option<usize>,

    #[command(flatten, next_help_heading = "Cluster (any of these turns cluster mode on)")]
    pub cluster: crate::cluster_settings::ClusterArgs,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print the node's active policy document (or a stored version), ready to edit and put
    /// back; its version is on stderr. Example: sluice policy get > policy.json
    // `--version` here names a policy version, so the release-version flag is not offered.
    #[command(after_long_help = CLIENT_HELP, disable_version_flag = true)]
    Get {
        /// A stored version instead of the active one. Example: --version 3
        #[arg(long, value_name = "N")]
        version: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Store a policy file as the node's next version and make it active; answers once the
    /// node's dataplane runs it. Exits 1, changing nothing, if the policy has errors.
    /// Example: sluice policy put policy.json --comment "allow ntp"
    #[command(after_long_help = CLIENT_HELP)]
    Put {
        /// Policy document (JSON).
        file: PathBuf,
        /// Why this version exists, kept in the history. Example: --comment "ticket 42"
        #[arg(long)]
        comment: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List the stored policy versions, newest first; `*` marks the active one.
    #[command(after_long_help = CLIENT_HELP)]
    Versions {
        #[command(flatten)]
        target: Target,
    },
    /// Make an older stored version active again (default: the newest one older than the
    /// active). Example: sluice policy rollback --to 3
    #[command(after_long_help = CLIENT_HELP)]
    Rollback {
        /// The version to activate. Example: --to 3
        #[arg(long, value_name = "N")]
        to: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Check a policy file; prints OK with counts, or every error as `path: message` (exit 1).
    /// Checked by this binary, or with --api by the node (whose release may differ).
    /// Example: sluice policy validate policy.json
    #[command(after_long_help = CLIENT_HELP)]
    Validate {
        /// Policy document (JSON).
        file: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Say which group and rule decide a flow, and why: under a policy FILE (offline; exits 1
    /// if it is invalid), or without FILE under the node's active or a stored version.
    /// Example: sluice policy explain policy.json --src 10.10.0.2 --dst 93.184.216.34 --proto tcp --port 443
    #[command(after_long_help = CLIENT_HELP, disable_version_flag = true)]
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Policy document (JSON). Without it, the node's policy is used.
    pub file: Option<PathBuf>,
    /// Under this stored version of the node's policy instead of the active one.
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
    #[command(flatten)]
    pub target: Target,
    /// Source address of the flow. Example: --src 10.10.0.2
    #[arg(long)]
    pub src: Ipv4Addr,
    /// Destination address of the flow. Example: --dst 93.184.216.34
    #[arg(long)]
    pub dst: Ipv4Addr,
    /// IP protocol: tcp, udp, icmp, or a protocol number. Example: --proto udp
    #[arg(long, value_parser = parse_proto)]
    pub proto: u8,
    /// Destination port (tcp, udp). Example: --port 443
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// ICMP type (icmp); 8 is echo request. Example: --icmp-type 0
    #[arg(long, default_value_t = 8)]
    pub icmp_type: u8,
    /// Take the flow to follow a DNS lookup of this name by the source, so hostname rules
    /// can match. Example: --hostname api.example.com
    #[arg(long)]
    pub hostname: Option<String>,
}

fn parse_proto(s: &str) -> Result<u8, String> {
    match s.to_ascii_lowercase().as_str() {
        "icmp" => Ok(1),
        "tcp" => Ok(6),
        "udp" => Ok(17),
        n => n.parse().map_err(|_| format!("`{s}` is not tcp, udp, icmp or a protocol number 0-255")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn protocols_by_name_or_number() {
        assert_eq!(parse_proto("TCP"), Ok(6));
        assert_eq!(parse_proto("udp"), Ok(17));
        assert_eq!(parse_proto("icmp"), Ok(1));
        assert_eq!(parse_proto("47"), Ok(47));
        assert!(parse_proto("256").is_err() && parse_proto("sctp").is_err());
    }
}
