//! `cargo xtask test`: every check CI runs, in order, each step announced and timed.

use std::time::{Duration, Instant};

use crate::run::{self, Error, Result};
use crate::{bench, fuzz, image, lab, prereq};

/// Seconds each fuzz target runs for in the smoke run.
pub const FUZZ_SMOKE_SECONDS: u64 = 20;
/// The bench suite whose quick run proves the benchmarks still check their verdicts.
pub const BENCH_SMOKE_SUITE: &str = "engine";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub no_install: bool,
    pub skip_fuzz: bool,
    pub skip_bench: bool,
    pub skip_demo: bool,
    pub skip_image: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Prerequisites,
    Fmt,
    Clippy,
    Nextest,
    Demo,
    Doctest,
    Fuzz,
    Bench,
    Image,
}

impl Step {
    pub const ALL: [Step; 9] = [
        Step::Prerequisites,
        Step::Fmt,
        Step::Clippy,
        Step::Nextest,
        Step::Demo,
        Step::Doctest,
        Step::Fuzz,
        Step::Bench,
        Step::Image,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Prerequisites => "prerequisites",
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Nextest => "nextest",
            Step::Demo => "demo",
            Step::Doctest => "doctest",
            Step::Fuzz => "fuzz",
            Step::Bench => "bench",
            Step::Image => "image",
        }
    }

    fn enabled(self, opts: &Options) -> bool {
        match self {
            Step::Prerequisites => !opts.no_install,
            Step::Fuzz => !opts.skip_fuzz,
            Step::Bench => !opts.skip_bench,
            Step::Demo => !opts.skip_demo,
            Step::Image => !opts.skip_image,
            _ => true,
        }
    }
}

/// The steps that run for these options, in order.
pub fn plan(opts: &Options) -> Vec<Step> {
    Step::ALL.into_iter().filter(|s| s.enabled(opts)).collect()
}

/// Test counts read back from the runners' closing lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Whether any summary line was found at all.
    pub seen: bool,
}

impl Tally {
    /// Add up nextest's `Summary [...] N tests run: N passed, N failed, N skipped` line and
    /// libtest's `test result: ok. N passed; N failed; N ignored; ...` lines.
    pub fn read(output: &str) -> Tally {
        let mut tally = Tally::default();
        for line in output.lines().map(strip_ansi) {
            let counts = if let Some((_, rest)) = line.split_once("tests run:") {
                rest.to_string()
            } else if let Some(rest) = line.trim_start().strip_prefix("test result:") {
                rest.to_string()
            } else {
                continue;
            };
            tally.seen = true;
            let words: Vec<&str> =
                counts.split_whitespace().map(|w| w.trim_matches(|c: char| ";,.()".contains(c))).collect();
            for pair in words.windows(2) {
                let Ok(n) = pair[0].parse::<u64>() else {
                    continue;
                };
                match pair[1] {
                    "passed" => tally.passed += n,
                    "failed" | "timed" | "exec" => tally.failed += n,
                    "skipped" | "ignored" => tally.skipped += n,
                    _ => {}
                }
            }
        }
        tally
    }

    fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.seen |= other.seen;
    }
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn color_args() -> &'static [&'static str] {
    // Output is piped through xtask to count tests, so tools cannot see the terminal.
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        &["--color", "always"]
    } else {
        &[]
    }
}

fn run_step(step: Step, opts: &Options, tally: &mut Tally) -> Result<()> {
    match step {
        Step::Prerequisites => {
            let mut tools = vec![prereq::NEXTEST];
            if !opts.skip_fuzz {
                tools.push(prereq::FUZZ);
            }
            prereq::ensure(&tools)
        }
        Step::Fmt => {
            run::run(run::cargo().args(["fmt", "--all", "--", "--check"]))?;
            // The fuzz project is not a workspace member; check its sources directly.
            let mut targets: Vec<String> =
                fuzz::targets()?.iter().map(|t| format!("fuzz/fuzz_targets/{t}.rs")).collect();
            targets.sort();
            if targets.is_empty() {
                return Ok(());
            }
            run::run(run::program("rustfmt").args(["--check", "--edition", "2021"]).args(&targets))
        }
        Step::Clippy => run::run(run::cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ])),
        Step::Nextest => {
            if !prereq::tool_present(prereq::NEXTEST) {
                return Err(prereq::missing_tool(prereq::NEXTEST));
            }
            let output = run::run_tee(
                run::cargo()
                    .args(["nextest", "run", "--workspace", "--all-features", "--no-fail-fast"])
                    .args(color_args()),
            )?;
            tally.add(Tally::read(&output));
            Ok(())
        }
        // The live demo end to end: lab, real node, real traffic; exits 1 if any probe is wrong.
        Step::Demo => lab::demo(true, false, None).map(|_| ()),
        Step::Doctest => {
            let output = run::run_tee(run::cargo().args(["test", "--workspace", "--doc"]).args(color_args()))?;
            tally.add(Tally::read(&output));
            Ok(())
        }
        Step::Fuzz => fuzz::run(&fuzz::Options {
            seconds: FUZZ_SMOKE_SECONDS,
            install: !opts.no_install,
            ..fuzz::Options::default()
        }),
        Step::Bench => bench::run(BENCH_SMOKE_SUITE, true, &[]),
        // The appliance: build it, prove the release inside is reproducible, boot it.
        Step::Image => {
            let clean = run::output(run::program("git").args(["status", "--porcelain", "--untracked-files=no"]))
                .is_some_and(|s| s.trim().is_empty());
            if !clean {
                println!(
                    "NOTE: uncommitted changes: the reproducibility check (a second build from HEAD) is left \
                     out of this run; CI's clean checkout runs it"
                );
            }
            image::run(&image::Options {
                boot_test: true,
                check_reproducible: clean,
                install: !opts.no_install,
                ..image::Options::default()
            })
        }
    }
}

fn summary(done: &[(Step, Duration)], skipped: &[Step]) -> String {
    let mut parts: Vec<String> =
        done.iter().map(|(step, d)| format!("{} {}", step.name(), run::duration(*d))).collect();
    if parts.is_empty() {
        parts.push("none".into());
    }
    let mut text = format!("ran {}", parts.join(", "));
    if !skipped.is_empty() {
        let names: Vec<&str> = skipped.iter().map(|s| s.name()).collect();
        text.push_str(&format!("; skipped {}", names.join(", ")));
    }
    text
}

pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    let steps = plan(opts);
    let skipped: Vec<Step> = Step::ALL.into_iter().filter(|s| !steps.contains(s)).collect();
    let mut done: Vec<(Step, Duration)> = Vec::new();
    let mut tally = Tally::default();
    for (i, &step) in steps.iter().enumerate() {
        let label = format!("[{}/{}] {}", i + 1, steps.len(), step.name());
        println!("\n==> {label}");
        run::flush();
        let start = Instant::now();
        let result = run_step(step, opts, &mut tally);
        let took = start.elapsed();
        done.push((step, took));
        run::flush();
        if let Err(err) = result {
            eprintln!("\n==> {label} FAILED after {}", run::duration(took));
            println!(
                "xtask test: FAILED at step {} after {}; {}",
                step.name(),
                run::duration(started.elapsed()),
                summary(&done, &skipped)
            );
            return Err(Error { message: format!("step `{}` failed: {}", step.name(), err.message), code: 1 });
        }
        println!("==> {label} passed in {}", run::duration(took));
    }
    println!();
    if tally.seen {
        println!("tests: {} passed, {} failed, {} skipped", tally.passed, tally.failed, tally.skipped);
    }
    println!("xtask test: all steps passed in {}; {}", run::duration(started.elapsed()), summary(&done, &skipped));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_flags() {
        assert_eq!(plan(&Options::default()), Step::ALL.to_vec());
        let fast = Options { no_install: true, skip_fuzz: true, skip_bench: true, skip_demo: false, skip_image: true };
        assert_eq!(plan(&fast), [Step::Fmt, Step::Clippy, Step::Nextest, Step::Demo, Step::Doctest]);
        let with_image = Options { skip_image: false, ..fast };
        assert_eq!(plan(&with_image).last(), Some(&Step::Image));
        let no_demo = Options { skip_demo: true, ..fast };
        assert_eq!(plan(&no_demo), [Step::Fmt, Step::Clippy, Step::Nextest, Step::Doctest]);
    }

    #[test]
    fn reads_nextest_and_libtest_summaries() {
        let output = "\
    Starting 12 tests across 4 binaries (1 test skipped)
        PASS [   0.004s] sluice-policy compile::tests::empty
------------
     Summary [   1.234s] 12 tests run: 10 passed (1 slow), 1 failed, 1 timed out, 1 skipped
   Doc-tests sluice_policy
test result: ok. 3 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s
test result: \u{1b}[32mok\u{1b}[0m. 4 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out
";
        assert_eq!(Tally::read(output), Tally { passed: 17, failed: 2, skipped: 3, seen: true });
        assert!(!Tally::read("nothing here\n").seen);
    }

    #[test]
    fn summary_names_every_step() {
        let done = [(Step::Fmt, Duration::from_millis(300)), (Step::Clippy, Duration::from_secs(75))];
        assert_eq!(summary(&done, &[Step::Fuzz, Step::Bench]), "ran fmt 0.3s, clippy 1m15s; skipped fuzz, bench");
    }
}
