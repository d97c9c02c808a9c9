//! Flag beats environment beats file beats default, for every `run` setting. Read from the
//! `configuration` event `sluice run` logs before the host checks.

mod common;

use std::path::Path;

use common::{run, sluice};
use serde_json::Value;

/// A setting's flag name, its value as flag, environment variable and file (each logged as
/// given), and its logged default (`None`: required, or absent by default). `log_format` is
/// json in every layer here (the log is read as JSON) and has its own test below.
struct Key {
    flag: &'static str,
    values: [&'static str; 3],
    default: Option<&'static str>,
}

const fn key(flag: &'static str, values: [&'static str; 3], default: Option<&'static str>) -> Key {
    Key { flag, values, default }
}

fn keys(dir: &Path) -> Vec<Key> {
    let d = |s: &str| -> &'static str { Box::leak(format!("{}/{s}", dir.display()).into_boxed_str()) };
    vec![
        key("internal-port", ["in-flag", "in-env", "in-file"], None),
        key("external-port", ["ex-flag", "ex-env", "ex-file"], None),
        key("dataplane", ["dpdk", "software", "dpdk"], Some("software")),
        key("dpdk-eal-args", ["-l 1", "-l 2", "-l 3"], Some("")),
        key("internal-address", ["10.1.0.1/24", "10.2.0.1/24", "10.3.0.1/24"], None),
        key("external-address", ["203.0.113.2/24", "198.51.100.2/24", "192.0.2.2/24"], None),
        key("gateway", ["203.0.113.1", "198.51.100.1", "192.0.2.1"], None),
        key("snat", ["false", "true", "false"], Some("true")),
        key("flow-capacity", ["1000", "2000", "3000"], Some("262144")),
        key("workers", ["2", "3", "4"], Some("1")),
        key("data-dir", [d("flag"), d("env"), d("file")], Some("/var/lib/sluice")),
        key("policy", [d("p-flag.json"), d("p-env.json"), d("p-file.json")], None),
        key("log-level", ["info", "info,sluice=info", "info,sluice=trace"], Some("info")),
    ]
}

fn env_name(flag: &str) -> String {
    format!("SLUICE_{}", flag.to_ascii_uppercase().replace('-', "_"))
}

fn toml_value(flag: &str, v: &str) -> String {
    match flag {
        "snat" | "flow-capacity" | "workers" => v.to_string(),
        _ => format!("{v:?}"),
    }
}

/// The `configuration` event of a JSON-logging run.
fn logged_config(stderr: &str) -> Value {
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "configuration")
        .unwrap_or_else(|| panic!("no configuration event in:\n{stderr}"))
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Runs with the given layers set (flag, env, file) for every key; returns the logged config.
fn run_layers(dir: &Path, layers: [bool; 3]) -> Value {
    let keys = keys(dir);
    let mut cmd = sluice();
    cmd.args(["run", "--log-format", "json"]);
    let mut toml = String::from("log_format = \"json\"\n");
    for k in &keys {
        if layers[0] {
            cmd.arg(format!("--{}", k.flag)).arg(k.values[0]);
        }
        if layers[1] {
            cmd.env(env_name(k.flag), k.values[1]);
        }
        if layers[2] {
            toml.push_str(&format!("{} = {}\n", k.flag.replace('-', "_"), toml_value(k.flag, k.values[2])));
        }
    }
    let file = dir.join("sluice.toml");
    std::fs::write(&file, toml).unwrap();
    cmd.env("SLUICE_LOG_FORMAT", "json").arg("--config").arg(&file);
    let (code, _, stderr) = run(&mut cmd);
    assert_ne!(code, 0, "run never succeeds in this build");
    logged_config(&stderr)
}

fn check(dir: &Path, layers: [bool; 3], winner: usize) {
    let logged = run_layers(dir, layers);
    for k in keys(dir) {
        let field = k.flag.replace('-', "_");
        assert_eq!(as_text(&logged[&field]), k.values[winner], "{field} with layers {layers:?}");
    }
}

#[test]
fn flag_beats_env_and_file_for_every_key() {
    let dir = tempfile::tempdir().unwrap();
    check(dir.path(), [true, true, true], 0);
}

#[test]
fn env_beats_file_for_every_key() {
    let dir = tempfile::tempdir().unwrap();
    check(dir.path(), [false, true, true], 1);
}

#[test]
fn file_beats_defaults_for_every_key() {
    let dir = tempfile::tempdir().unwrap();
    check(dir.path(), [false, false, true], 2);
}

#[test]
fn defaults_apply_to_every_optional_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sluice();
    cmd.args(["run", "--log-format", "json", "--internal-port", "a0", "--external-port", "b0"]);
    cmd.args(["--internal-address", "10.10.0.1/24", "--external-address", "203.0.113.2/24"]);
    cmd.args(["--gateway", "203.0.113.1"]);
    let (_, _, stderr) = run(&mut cmd);
    let logged = logged_config(&stderr);
    for k in keys(dir.path()) {
        let field = k.flag.replace('-', "_");
        match k.default {
            Some(d) => assert_eq!(as_text(&logged[&field]), d, "{field}"),
            None if k.flag == "policy" => assert_eq!(logged[&field], Value::Null, "{field}"),
            None => {}
        }
    }
}

#[test]
fn log_format_follows_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f.toml");
    let base = ["run", "--internal-port", "a0", "--internal-address", "10.10.0.1/24"];
    // (flag, env, file, expect json)
    let cases = [
        (Some("json"), Some("plain"), Some("plain"), true),
        (Some("plain"), Some("json"), Some("json"), false),
        (None, Some("json"), Some("plain"), true),
        (None, Some("plain"), Some("json"), false),
        (None, None, Some("json"), true),
        (None, None, None, false),
    ];
    for (flag, env, in_file, json) in cases {
        let mut toml =
            String::from("external_port = \"b0\"\nexternal_address = \"203.0.113.2/24\"\ngateway = \"203.0.113.1\"\n");
        if let Some(f) = in_file {
            toml.push_str(&format!("log_format = \"{f}\"\n"));
        }
        std::fs::write(&file, toml).unwrap();
        let mut cmd = sluice();
        cmd.args(base).arg("--config").arg(&file);
        if let Some(f) = flag {
            cmd.args(["--log-format", f]);
        }
        if let Some(e) = env {
            cmd.env("SLUICE_LOG_FORMAT", e);
        }
        let (_, _, stderr) = run(&mut cmd);
        let first = stderr.lines().next().unwrap_or_default();
        assert_eq!(first.starts_with('{'), json, "{flag:?} {env:?} {in_file:?}: {stderr}");
        assert!(first.contains("configuration"), "{stderr}");
    }
}

#[test]
fn config_flag_beats_config_env() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "workers = 7\n").unwrap();
    let mut cmd = sluice();
    cmd.env("SLUICE_CONFIG", dir.path().join("missing.toml")).arg("run").arg("--config").arg(&good);
    cmd.args(["--log-format", "json", "--internal-port", "a0", "--external-port", "b0"]);
    cmd.args([
        "--internal-address",
        "10.10.0.1/24",
        "--external-address",
        "203.0.113.2/24",
        "--gateway",
        "203.0.113.1",
    ]);
    let (_, _, stderr) = run(&mut cmd);
    assert_eq!(logged_config(&stderr)["workers"], 7);
}
