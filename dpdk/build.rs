//! Finds the system DPDK with pkg-config, generates bindings with bindgen (wrapping DPDK's
//! `static inline` fast-path functions in C), and compiles those wrappers with cc.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const MIN_VERSION: &str = "22.11";
const INSTALL_HINT: &str = "install it with: apt-get install libdpdk-dev pkg-config libclang-dev";

/// Functions Sluice calls. `static inline` ones among them get generated C wrappers.
const FUNCTIONS: &[&str] = &[
    "rte_eal_init",
    "rte_eal_cleanup",
    "rte_strerror",
    "rte_lcore_id",
    "rte_lcore_count",
    "rte_get_main_lcore",
    "rte_get_next_lcore",
    "rte_lcore_to_cpu_id",
    "rte_eal_remote_launch",
    "rte_eal_wait_lcore",
    "rte_socket_id",
    "rte_pktmbuf_pool_create",
    "rte_mempool_free",
    "rte_mempool_avail_count",
    "rte_mempool_in_use_count",
    "rte_dev_probe",
    "rte_eth_dev_get_port_by_name",
    "rte_eth_dev_get_name_by_port",
    "rte_eth_dev_socket_id",
    "rte_eth_dev_info_get",
    "rte_eth_dev_configure",
    "rte_eth_rx_queue_setup",
    "rte_eth_tx_queue_setup",
    "rte_eth_dev_start",
    "rte_eth_dev_stop",
    "rte_eth_dev_close",
    "rte_eth_macaddr_get",
    "rte_eth_promiscuous_enable",
    "rte_eth_link_get_nowait",
    "rte_eth_stats_get",
    "rte_eth_stats_reset",
    "rte_eth_xstats_get",
    "rte_eth_xstats_get_names",
    "rte_eth_rx_burst",
    "rte_eth_tx_burst",
    "rte_pktmbuf_alloc",
    "rte_pktmbuf_free",
    "rte_pktmbuf_free_bulk",
    "rte_pktmbuf_prepend",
    "rte_pktmbuf_adj",
    "rte_pktmbuf_append",
    "rte_pktmbuf_headroom",
    "rte_pktmbuf_tailroom",
    "sluice_rte_errno",
    "sluice_pktmbuf_data",
    "sluice_pktmbuf_data_len",
];

/// Constants Sluice uses.
const VARS: &[&str] = &[
    "RTE_PKTMBUF_HEADROOM",
    "RTE_ETH_NAME_MAX_LEN",
    "RTE_ETH_XSTATS_NAME_SIZE",
    "RTE_ETH_LINK_UP",
    "RTE_ETH_LINK_FULL_DUPLEX",
    "RTE_ETH_SPEED_NUM_NONE",
    "RTE_ETH_SPEED_NUM_UNKNOWN",
    "SOCKET_ID_ANY",
    "RTE_MAX_LCORE",
];

fn pkg_config(args: &[&str]) -> Result<String, String> {
    let out = Command::new("pkg-config")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run pkg-config ({e}); {INSTALL_HINT}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-changed=src/helpers.h");
    println!("cargo:rerun-if-changed=src/helpers.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_LIBDIR");

    if let Err(e) = pkg_config(&[&format!("--atleast-version={MIN_VERSION}"), "libdpdk"]) {
        let found = pkg_config(&["--modversion", "libdpdk"])
            .map(|v| format!("found {v}"))
            .unwrap_or_else(|_| "not found".into());
        panic!(
            "sluice-dpdk-sys needs DPDK >= {MIN_VERSION} (pkg-config libdpdk: {found}{}); {INSTALL_HINT}",
            if e.is_empty() { String::new() } else { format!(": {e}") }
        );
    }
    let cflags = pkg_config(&["--cflags", "libdpdk"]).unwrap_or_else(|e| panic!("pkg-config --cflags libdpdk: {e}"));
    let libs = pkg_config(&["--libs", "libdpdk"]).unwrap_or_else(|e| panic!("pkg-config --libs libdpdk: {e}"));
    let cflags: Vec<&str> = cflags.split_whitespace().collect();

    for flag in libs.split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib={lib}");
        }
        // Linker options (`-Wl,--as-needed`) are rustc's business.
    }

    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let header = manifest_dir.join("src/helpers.h");
    let wrappers = out_dir.join("static_fns");

    let mut builder = bindgen::Builder::default()
        .header(header.to_str().expect("utf-8 path"))
        .clang_args(&cflags)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrappers)
        .derive_default(true)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for v in VARS {
        builder = builder.allowlist_var(v);
    }
    let bindings = builder.generate().unwrap_or_else(|e| {
        panic!("bindgen failed on the DPDK headers ({e}); is libclang-dev installed? {INSTALL_HINT}")
    });
    bindings.write_to_file(out_dir.join("bindings.rs")).expect("write bindings.rs");

    let mut build = cc::Build::new();
    build.file(wrappers.with_extension("c")).file(manifest_dir.join("src/helpers.c")).include(manifest_dir.join("src"));
    for f in &cflags {
        build.flag(f);
    }
    // DPDK's headers trip a few of the compiler's extra warnings; they are not ours to fix.
    build.warnings(false);
    build.compile("sluice_dpdk_wrappers");
}
