//! `cargo xtask fuzz`: run the cargo-fuzz targets in `fuzz/` for a fixed time each.
//!
//! cargo-fuzz passes `-Z` flags (`-Zsanitizer=address`) to rustc, which only nightly accepts;
//! `RUSTC_BOOTSTRAP=1` lets the stable toolchain take them. AddressSanitizer works this way
//! on x86_64 Linux (the stable `rust-std` ships its runtime), so it stays the default.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::prereq;
use crate::run::{self, Error, Result};

pub const DEFAULT_SECONDS: u64 = 60;
pub const DEFAULT_SANITIZER: &str = "address";
const SANITIZERS: &[&str] = &["address", "leak", "memory", "thread", "none"];

#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    /// Empty: every target.
    pub targets: Vec<String>,
    pub seconds: u64,
    pub sanitizer: String,
    /// Passed to libFuzzer after `--`.
    pub libfuzzer_args: Vec<String>,
    /// Install cargo-fuzz when it is missing.
    pub install: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            targets: Vec::new(),
            seconds: DEFAULT_SECONDS,
            sanitizer: DEFAULT_SANITIZER.into(),
            libfuzzer_args: Vec::new(),
            install: true,
        }
    }
}

pub fn check_sanitizer(name: &str) -> Result<()> {
    if SANITIZERS.contains(&name) {
        Ok(())
    } else {
        Err(Error::usage(format!("unknown sanitizer `{name}` (one of: {})", SANITIZERS.join(", "))))
    }
}

fn fuzz_dir() -> PathBuf {
    run::root().join("fuzz")
}

/// Target names: the file stems of `fuzz/fuzz_targets/*.rs`, sorted.
pub fn targets() -> Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::failed(format!("cannot list {}: {e}", dir.display())))?;
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .filter_map(|path| Some(path.file_stem()?.to_str()?.to_string()))
        .collect();
    names.sort();
    Ok(names)
}

/// The `cargo fuzz run` command for one target: the corpus under `fuzz/corpus/<target>`
/// (written to, not committed) plus the committed seeds under `fuzz/seeds/<target>`.
fn command(target: &str, opts: &Options, seeds: Option<&Path>) -> std::process::Command {
    let mut cmd = run::cargo();
    cmd.env("RUSTC_BOOTSTRAP", "1");
    cmd.args(["fuzz", "run", "--sanitizer", &opts.sanitizer, target]);
    cmd.arg(fuzz_dir().join("corpus").join(target));
    if let Some(seeds) = seeds {
        cmd.arg(seeds);
    }
    cmd.arg("--");
    cmd.arg(format!("-max_total_time={}", opts.seconds));
    cmd.args(&opts.libfuzzer_args);
    cmd
}

/// Run the chosen targets one after another; the first crash or build failure stops the run.
pub fn run(opts: &Options) -> Result<()> {
    if !prereq::tool_present(prereq::FUZZ) {
        if !opts.install {
            return Err(prereq::missing_tool(prereq::FUZZ));
        }
        prereq::ensure_tool(prereq::FUZZ)?;
    }
    let all = targets()?;
    let chosen = if opts.targets.is_empty() { all.clone() } else { opts.targets.clone() };
    if let Some(unknown) = chosen.iter().find(|t| !all.contains(t)) {
        return Err(Error::usage(format!("unknown fuzz target `{unknown}` (known: {})", all.join(", "))));
    }
    if chosen.is_empty() {
        return Err(Error::failed("no fuzz targets under fuzz/fuzz_targets/"));
    }
    for (i, target) in chosen.iter().enumerate() {
        println!(
            "--> fuzz target {}/{}: {target}, {}s, sanitizer {}",
            i + 1,
            chosen.len(),
            opts.seconds,
            opts.sanitizer
        );
        let corpus = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&corpus)
            .map_err(|e| Error::failed(format!("cannot create {}: {e}", corpus.display())))?;
        let seeds = fuzz_dir().join("seeds").join(target);
        let seeds = seeds.is_dir().then_some(seeds.as_path());
        let start = Instant::now();
        run::run(&mut command(target, opts, seeds)).map_err(|mut e| {
            e.message = format!(
                "fuzz target `{target}` failed: {}\n\
                 a crashing input is saved under fuzz/artifacts/{target}/ (see the output above)",
                e.message
            );
            e
        })?;
        println!("--> fuzz target {target} clean after {}", run::duration(start.elapsed()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_committed_targets() {
        assert!(targets().unwrap().contains(&"parse_frame".to_string()));
    }

    #[test]
    fn command_uses_stable_with_bootstrap_and_both_corpus_dirs() {
        let opts = Options { seconds: 20, libfuzzer_args: vec!["-max_len=1600".into()], ..Options::default() };
        let seeds = fuzz_dir().join("seeds").join("parse_frame");
        let line = run::show(&command("parse_frame", &opts, Some(&seeds)));
        assert!(line.starts_with("RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer address parse_frame "));
        assert!(line.contains("fuzz/corpus/parse_frame "), "{line}");
        assert!(line.contains("fuzz/seeds/parse_frame -- "), "{line}");
        assert!(line.ends_with("-- -max_total_time=20 -max_len=1600"), "{line}");
    }

    #[test]
    fn every_target_has_seeds() {
        for target in targets().unwrap() {
            let seeds = fuzz_dir().join("seeds").join(&target);
            let count = std::fs::read_dir(&seeds).map(|d| d.count()).unwrap_or(0);
            assert!(count > 0, "no seed inputs under {}", seeds.display());
        }
    }

    #[test]
    fn rejects_unknown_sanitizers() {
        assert!(check_sanitizer("address").is_ok());
        assert!(check_sanitizer("none").is_ok());
        assert_eq!(check_sanitizer("asan").unwrap_err().code, 2);
    }
}
