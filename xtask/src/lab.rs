//! `cargo xtask demo` and `cargo xtask lab`: build `sluice` and `sluice-lab` (tests/lab),
//! then hand over to `sluice-lab`, which builds the namespaces and runs the probes.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use crate::prereq;
use crate::run::{self, Error, Result};

/// The example policy the demo and the lab run with.
pub const DEMO_POLICY: &str = "examples/demo-policy.json";

/// The target directory cargo builds into (`CARGO_TARGET_DIR`, else `target/`).
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => run::root().join(dir),
        None => run::root().join("target"),
    }
}

/// Install missing prerequisites (as `cargo xtask test` does), build both binaries, and return
/// the `sluice-lab` command with `--sluice` and `--policy` set after `args`.
fn prepare(args: &[&str], install: bool) -> Result<Command> {
    if install {
        prereq::ensure(&[])?;
    }
    run::run(run::cargo().args([
        "build",
        "-p",
        "sluice",
        "--bin",
        "sluice",
        "-p",
        "sluice-lab",
        "--bin",
        "sluice-lab",
    ]))?;
    let bin = target_dir().join("debug");
    let mut cmd = Command::new(bin.join("sluice-lab"));
    cmd.current_dir(run::root())
        .args(args)
        .arg("--sluice")
        .arg(bin.join("sluice"))
        .arg("--policy")
        .arg(run::root().join(DEMO_POLICY));
    Ok(cmd)
}

/// Replace this process with `cmd`, so that Ctrl-C reaches the lab tool directly and it can
/// tear down in order.
fn exec(mut cmd: Command) -> Result<u8> {
    println!("$ {}", run::show(&cmd));
    run::flush();
    let err = cmd.exec();
    Err(Error::failed(format!("could not start `{}`: {err}", run::show(&cmd))))
}

/// `cargo xtask demo [--check] [--software-io KIND]`.
pub fn demo(check: bool, install: bool, software_io: Option<&str>) -> Result<u8> {
    let mut args = vec!["demo"];
    if check {
        args.push("--check");
    }
    if let Some(kind) = software_io {
        args.extend(["--software-io", kind]);
    }
    let mut cmd = prepare(&args, install)?;
    if check {
        run::run(&mut cmd)?;
        return Ok(0);
    }
    exec(cmd)
}

/// `cargo xtask lab up|down|status`.
pub fn lab(action: &str, install: bool, software_io: Option<&str>) -> Result<u8> {
    match action {
        "up" => {
            let mut args = vec!["up"];
            if let Some(kind) = software_io {
                args.extend(["--software-io", kind]);
            }
            exec(prepare(&args, install)?)
        }
        "down" | "status" => {
            run::run(run::cargo().args(["build", "-p", "sluice-lab", "--bin", "sluice-lab"]))?;
            let mut cmd = Command::new(target_dir().join("debug/sluice-lab"));
            cmd.arg(action);
            exec(cmd)
        }
        other => Err(Error::usage(format!("unknown lab action `{other}`: up, down or status"))),
    }
}
