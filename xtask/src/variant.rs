//! `cargo xtask release-variant`: builds `sluice` and writes a stamped copy of it that
//! reports another version and optionally fails at start or never becomes ready, so upgrade
//! and rollback can be tried with real artifacts (the stamping is `sluice-lifecycle`'s).

use std::path::PathBuf;

use crate::run::{self, Error, Result};

pub const HELP: &str = "\
cargo xtask release-variant: build sluice and write a test release of it

Usage: cargo xtask release-variant --version <VERSION> [OPTIONS]

Builds `sluice` (cargo build -p sluice), then copies the binary with its release stamp set:
the copy reports VERSION (in `sluice version`, the API and the cluster) and, with --fault,
never becomes ready or exits at start. Stage it with `sluice release stage FILE` or give it
to `sluice upgrade apply --binary FILE`.

Options:
  --version <VERSION>   The version the copy reports (letters, digits, . _ + -)
  --fault <FAULT>       none, never-ready or crash-at-start [default: none]
  --out <FILE>          Where to write it [default: target/release-variants/sluice-<VERSION>]
  --profile <NAME>      Cargo profile to build [default: release]
  --features <LIST>     Cargo features of the sluice package (e.g. dpdk)
  -h, --help            Print this help";

#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    pub version: String,
    pub fault: String,
    pub out: Option<PathBuf>,
    pub profile: String,
    pub features: Option<String>,
}

pub fn parse(args: &[String]) -> Result<Options> {
    let mut options =
        Options { version: String::new(), fault: "none".into(), out: None, profile: "release".into(), features: None };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| Error::usage(format!("`{name}` needs a value")));
        match arg.as_str() {
            "--version" => options.version = value("--version")?,
            "--fault" => options.fault = value("--fault")?,
            "--out" => options.out = Some(PathBuf::from(value("--out")?)),
            "--profile" => options.profile = value("--profile")?,
            "--features" => options.features = Some(value("--features")?),
            other => {
                return Err(Error::usage(format!("unexpected argument `{other}` for `cargo xtask release-variant`")))
            }
        }
    }
    if options.version.is_empty() {
        return Err(Error::usage("`--version <VERSION>` is required"));
    }
    if !["none", "never-ready", "crash-at-start"].contains(&options.fault.as_str()) {
        return Err(Error::usage(format!("unknown fault `{}`: none, never-ready or crash-at-start", options.fault)));
    }
    Ok(options)
}

/// Cargo's output directory of a profile: the built-in `dev` and `test` build into
/// target/debug, `release` and `bench` into target/release, a custom profile into its name.
fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "release" | "bench" => "release",
        other => other,
    }
}

pub fn run(options: &Options) -> Result<()> {
    let mut build = run::cargo();
    build.args(["build", "-p", "sluice", "--bin", "sluice", "--profile", &options.profile]);
    if let Some(features) = &options.features {
        build.args(["--features", features]);
    }
    run::run(&mut build)?;
    let dir = profile_dir(&options.profile);
    let binary = run::root().join("target").join(dir).join("sluice");
    if !binary.exists() {
        return Err(Error::failed(format!("{} was not built", binary.display())));
    }
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| run::root().join("target/release-variants").join(format!("sluice-{}", options.version)));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::failed(format!("{}: {e}", parent.display())))?;
    }
    stamp(&binary, &out, &options.version, &options.fault)
}

/// Writes a copy of `binary` at `out` that reports `version` (and injects `fault`).
pub fn stamp(binary: &std::path::Path, out: &std::path::Path, version: &str, fault: &str) -> Result<()> {
    let mut stamp = run::cargo();
    stamp
        .args(["run", "-q", "-p", "sluice-lifecycle", "--example", "release_variant", "--"])
        .arg(binary)
        .arg(out)
        .args([version, fault]);
    run::run(&mut stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn built_in_profiles_build_into_cargos_directories() {
        assert_eq!(profile_dir("dev"), "debug");
        assert_eq!(profile_dir("bench"), "release");
        assert_eq!(profile_dir("release"), "release");
        assert_eq!(profile_dir("fast"), "fast");
    }

    #[test]
    fn the_version_is_required_and_faults_are_checked() {
        assert!(parse(&args("")).is_err());
        assert!(parse(&args("--version 2.0.0 --fault sometimes")).is_err());
        assert!(parse(&args("--version")).is_err());
        let parsed = parse(&args("--version 2.0.0 --fault crash-at-start --out /tmp/x --profile dev")).unwrap();
        assert_eq!(
            parsed,
            Options {
                version: "2.0.0".into(),
                fault: "crash-at-start".into(),
                out: Some(PathBuf::from("/tmp/x")),
                profile: "dev".into(),
                features: None,
            }
        );
    }
}
