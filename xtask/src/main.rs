//! `cargo xtask`: Sluice's build, test, fuzz and benchmark commands.
//!
//! Standard library only, so that CI can build it in seconds before anything else.

mod bench;
mod fuzz;
mod image;
mod image_boot;
mod lab;
mod pipeline;
mod prereq;
mod run;
mod variant;
mod veth;

use std::process::ExitCode;

use run::{Error, Result};

const USAGE: &str = "\
cargo xtask: Sluice's developer and CI commands

Usage: cargo xtask <COMMAND> [OPTIONS]

Commands:
  test    Run every check CI runs: prerequisites, fmt, clippy, tests, fuzz and bench smoke runs
  bench   Run a benchmark suite
  fuzz    Run the cargo-fuzz targets for a fixed time each
  install Install what `test` needs (the prerequisites step alone)
  demo    Build Sluice and run the live demo in network namespaces (root)
  lab     Bring the network-namespace lab up or down, or show its status (root)
  image   Build the appliance disk image (raw, qcow2); --boot-test boots it under QEMU (root)
  release-variant  Build sluice and write a test release (another version, or one that
          never becomes ready or crashes at start)
  help    Print this help, or a command's help: cargo xtask help <COMMAND>

Run `cargo xtask <COMMAND> --help` for a command's options.";

const TEST_HELP: &str = "\
cargo xtask test: every check CI runs, in order; stops at the first failing step

Usage: cargo xtask test [OPTIONS]

Steps:
  prerequisites  install missing Debian packages (as root, with apt-get), the rustfmt and
                 clippy components, cargo-nextest and cargo-fuzz
  fmt            cargo fmt --all -- --check (and rustfmt --check on fuzz/fuzz_targets)
  clippy         cargo clippy --workspace --all-targets -- -D warnings
  nextest        cargo nextest run --workspace --no-fail-fast
  demo           cargo xtask demo --check (the live demo in namespaces; every probe must pass)
  doctest        cargo test --workspace --doc
  fuzz           cargo xtask fuzz --seconds 20 (every target)
  bench          cargo xtask bench engine --quick
  image          cargo xtask image --boot-test --check-reproducible (the appliance: build it,
                 build its release again from a second checkout and compare, boot it under
                 QEMU and check it serves; the reproducibility check needs a clean tree)

Options:
  --no-install   Skip the prerequisites step (nothing is installed)
  --skip-fuzz    Skip the fuzz smoke run
  --skip-bench   Skip the bench smoke run
  --skip-demo    Skip the live demo check
  --skip-image   Skip the appliance image build and boot test
  --fast         Same as --skip-fuzz --skip-bench --skip-image
  -h, --help     Print this help";

const FUZZ_HELP: &str = "\
cargo xtask fuzz: run cargo-fuzz targets (fuzz/fuzz_targets/) for a fixed time each

Usage: cargo xtask fuzz [TARGET]... [OPTIONS] [-- LIBFUZZER_ARGS...]

Runs on the stable toolchain (RUSTC_BOOTSTRAP=1), installs cargo-fuzz if it is missing.
Each target reads fuzz/seeds/<TARGET>/ (committed) and grows fuzz/corpus/<TARGET>/ (not
committed); a crashing input is saved under fuzz/artifacts/<TARGET>/.

Arguments:
  [TARGET]...             Targets to run (default: all)

Options:
  --seconds <N>           Seconds per target [default: 60]
  --sanitizer <NAME>      address, leak, memory, thread or none [default: address]
  --list                  Print the target names and exit
  -h, --help              Print this help";

const INSTALL_HELP: &str = "\
cargo xtask install: check and install what `cargo xtask test` needs, and nothing else

Usage: cargo xtask install

Installs missing Debian packages (as root, with apt-get; otherwise prints the command),
the rustfmt and clippy components, cargo-nextest and cargo-fuzz. The package list is
APT_PACKAGES in xtask/src/prereq.rs.";

const DEMO_HELP: &str = "\
cargo xtask demo: build Sluice and run the live demo in network namespaces (as root)

Usage: cargo xtask demo [--check] [--no-install] [--software-io af-packet|af-xdp]

Installs missing prerequisites (as `test` does), builds `sluice` and `sluice-lab`, builds a
client, a Sluice node and an upstream \"internet\" (web, echo and DNS servers) in namespaces
named sl-*, starts the node with examples/demo-policy.json, sends real traffic from the
client and prints what was allowed and dropped, and the node's counters. Then it stays up for
exploration until Ctrl-C, and removes everything.

Options:
  --check        Exit when the probes are done: 0 if every probe saw what the policy says, else 1
  --no-install   Skip the prerequisites step
  --software-io af-packet|af-xdp
                 The node's data ports: packet sockets (the default) or AF_XDP sockets
  -h, --help     Print this help";

const LAB_HELP: &str = "\
cargo xtask lab: the network-namespace lab, left running (as root)

Usage: cargo xtask lab <up|down|status> [--no-install] [--software-io af-packet|af-xdp]

  up       build sluice and sluice-lab, create namespaces sl-client (10.10.0.2), sl-node
           (data ports sl-ni/sl-ne, management 192.168.77.2 <-> 192.168.77.1 on sl-mh) and
           sl-upstream (203.0.113.1; servers on 198.51.100.10/.11/.20, DNS on .53), start
           the servers and a node with examples/demo-policy.json; prints how to enter them
  down     stop everything in the sl-* namespaces and remove them
  status   what is running, and the node's counters

Options:
  --no-install   Skip the prerequisites step
  --software-io af-packet|af-xdp
                 (up) The node's data ports: packet sockets (the default) or AF_XDP sockets
  -h, --help     Print this help";

fn bench_help() -> String {
    format!(
        "\
cargo xtask bench: build with the bench profile and run one benchmark suite

Usage: cargo xtask bench <SUITE> [--quick] [--no-install] [ARGS...]

Installs missing prerequisites (as `test` does), then runs: cargo run --profile bench -p <package> --bin <bin> -- <SUITE> [--quick] \\
        --json target/bench/<SUITE>.json [ARGS...]
The binary prints `BENCH <name> <value> <unit>` lines and fails if a verdict is wrong;
its exit code is passed through. ARGS (and anything after `--`) go to the binary.

{}

Options:
  --quick        Short run, to check the benchmarks still work
  --no-install   Skip the prerequisites step
  -h, --help     Print this help",
        bench::list()
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(&args) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            run::flush();
            eprintln!("xtask: error: {err}");
            if err.code == 2 {
                eprintln!("(see `cargo xtask --help`)");
            }
            ExitCode::from(err.code)
        }
    }
}

fn is_help(arg: &str) -> bool {
    arg == "-h" || arg == "--help"
}

/// Runs a command; `Ok` carries the exit code for commands that end without an error.
fn dispatch(args: &[String]) -> Result<u8> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(2);
    };
    match command.as_str() {
        "-h" | "--help" => print(USAGE),
        "help" => match rest.first().map(String::as_str) {
            None => print(USAGE),
            Some(name) => print(&command_help(name)?),
        },
        "test" => {
            if rest.iter().any(|a| is_help(a)) {
                return print(TEST_HELP);
            }
            pipeline::run(&parse_test(rest)?)?;
            Ok(0)
        }
        "bench" => {
            let (suite, quick, install, extra) = match parse_bench(rest)? {
                Some(parsed) => parsed,
                None => return print(&bench_help()),
            };
            if install {
                prereq::ensure(&[])?;
            }
            bench::run(&suite, quick, &extra)?;
            Ok(0)
        }
        "fuzz" => match parse_fuzz(rest)? {
            FuzzCommand::Help => print(FUZZ_HELP),
            FuzzCommand::List => {
                for target in fuzz::targets()? {
                    println!("{target}");
                }
                Ok(0)
            }
            FuzzCommand::Run(opts) => {
                fuzz::run(&opts)?;
                Ok(0)
            }
        },
        "install" => {
            if rest.iter().any(|a| is_help(a)) {
                return print(INSTALL_HELP);
            }
            if let Some(extra) = rest.first() {
                return Err(Error::usage(format!("unexpected argument `{extra}` for `cargo xtask install`")));
            }
            prereq::ensure(&[prereq::NEXTEST, prereq::FUZZ])?;
            Ok(0)
        }
        "demo" => {
            if rest.iter().any(|a| is_help(a)) {
                return print(DEMO_HELP);
            }
            let (check, install, software_io) = parse_demo(rest)?;
            lab::demo(check, install, software_io.as_deref())
        }
        "lab" => {
            if rest.iter().any(|a| is_help(a)) {
                return print(LAB_HELP);
            }
            let (action, install, software_io) = parse_lab(rest)?;
            lab::lab(&action, install, software_io.as_deref())
        }
        "image" => {
            if rest.iter().any(|a| is_help(a)) {
                return print(image::HELP);
            }
            image::run(&image::parse(rest)?)?;
            Ok(0)
        }
        "release-variant" => {
            if rest.iter().any(|a| is_help(a)) {
                return print(variant::HELP);
            }
            variant::run(&variant::parse(rest)?)?;
            Ok(0)
        }
        other => Err(Error::usage(format!("unknown command `{other}`"))),
    }
}

fn print(text: &str) -> Result<u8> {
    println!("{text}");
    Ok(0)
}

fn command_help(name: &str) -> Result<String> {
    Ok(match name {
        "test" => TEST_HELP.to_string(),
        "bench" => bench_help(),
        "fuzz" => FUZZ_HELP.to_string(),
        "install" => INSTALL_HELP.to_string(),
        "demo" => DEMO_HELP.to_string(),
        "lab" => LAB_HELP.to_string(),
        "release-variant" => variant::HELP.to_string(),
        "image" => image::HELP.to_string(),
        "help" => USAGE.to_string(),
        other => return Err(Error::usage(format!("unknown command `{other}`"))),
    })
}

/// The value after `--software-io`.
fn software_io_value(value: Option<&String>) -> Result<String> {
    match value.map(String::as_str) {
        Some(kind @ ("af-packet" | "af-xdp")) => Ok(kind.to_string()),
        _ => Err(Error::usage("--software-io takes af-packet or af-xdp")),
    }
}

/// `(check, install, software_io)`.
fn parse_demo(args: &[String]) -> Result<(bool, bool, Option<String>)> {
    let (mut check, mut install, mut software_io) = (false, true, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--no-install" => install = false,
            "--software-io" => software_io = Some(software_io_value(it.next())?),
            other => return Err(Error::usage(format!("unknown option `{other}` for `cargo xtask demo`"))),
        }
    }
    Ok((check, install, software_io))
}

/// `(action, install)`.
fn parse_lab(args: &[String]) -> Result<(String, bool, Option<String>)> {
    let (mut action, mut install, mut software_io) = (None, true, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--no-install" => install = false,
            "--software-io" => software_io = Some(software_io_value(it.next())?),
            a @ ("up" | "down" | "status") if action.is_none() => action = Some(a.to_string()),
            other => return Err(Error::usage(format!("unexpected argument `{other}` for `cargo xtask lab`"))),
        }
    }
    let action = action.ok_or_else(|| Error::usage("name an action: cargo xtask lab <up|down|status>"))?;
    if software_io.is_some() && action != "up" {
        return Err(Error::usage("--software-io goes with `cargo xtask lab up`"));
    }
    Ok((action, install, software_io))
}

fn parse_test(args: &[String]) -> Result<pipeline::Options> {
    let mut opts = pipeline::Options::default();
    for arg in args {
        match arg.as_str() {
            "--no-install" => opts.no_install = true,
            "--skip-fuzz" => opts.skip_fuzz = true,
            "--skip-bench" => opts.skip_bench = true,
            "--skip-demo" => opts.skip_demo = true,
            "--skip-image" => opts.skip_image = true,
            "--fast" => {
                opts.skip_fuzz = true;
                opts.skip_bench = true;
                opts.skip_image = true;
            }
            other => return Err(Error::usage(format!("unknown option `{other}` for `cargo xtask test`"))),
        }
    }
    Ok(opts)
}

/// `(suite, quick, install, extra)`.
type BenchArgs = (String, bool, bool, Vec<String>);

/// `None` means: print the help.
fn parse_bench(args: &[String]) -> Result<Option<BenchArgs>> {
    let mut suite = None;
    let mut quick = false;
    let mut install = true;
    let mut extra = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--" => {
                extra.extend(iter.by_ref().cloned());
            }
            a if is_help(a) => return Ok(None),
            "--quick" => quick = true,
            "--no-install" => install = false,
            a if suite.is_none() && !a.starts_with('-') => suite = Some(a.to_string()),
            a if suite.is_none() => {
                return Err(Error::usage(format!(
                    "`{a}` before the suite name; usage: cargo xtask bench <SUITE> [--quick] [ARGS...]\n{}",
                    bench::list()
                )))
            }
            a => extra.push(a.to_string()),
        }
    }
    match suite {
        Some(suite) => {
            bench::find(&suite)?;
            Ok(Some((suite, quick, install, extra)))
        }
        None => Err(Error::usage(format!("name a suite: cargo xtask bench <SUITE> [--quick]\n{}", bench::list()))),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum FuzzCommand {
    Help,
    List,
    Run(fuzz::Options),
}

fn parse_fuzz(args: &[String]) -> Result<FuzzCommand> {
    let mut opts = fuzz::Options::default();
    let mut list = false;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        match flag {
            "--" => {
                opts.libfuzzer_args.extend(iter.by_ref().cloned());
            }
            f if is_help(f) => return Ok(FuzzCommand::Help),
            "--list" => list = true,
            "--seconds" => {
                let v = take_value(flag, inline, &mut iter)?;
                opts.seconds = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| Error::usage(format!("--seconds wants a positive whole number, not `{v}`")))?;
            }
            "--sanitizer" => {
                let v = take_value(flag, inline, &mut iter)?;
                fuzz::check_sanitizer(&v)?;
                opts.sanitizer = v;
            }
            f if f.starts_with('-') => {
                return Err(Error::usage(format!(
                    "unknown option `{f}` for `cargo xtask fuzz` (libFuzzer options go after `--`)"
                )))
            }
            target => opts.targets.push(target.to_string()),
        }
    }
    Ok(if list { FuzzCommand::List } else { FuzzCommand::Run(opts) })
}

/// The value of `--flag=value` or `--flag value`.
fn take_value<'a>(flag: &str, inline: Option<String>, rest: &mut impl Iterator<Item = &'a String>) -> Result<String> {
    inline.or_else(|| rest.next().cloned()).ok_or_else(|| Error::usage(format!("{flag} needs a value")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn test_flags() {
        assert_eq!(parse_test(&[]).unwrap(), pipeline::Options::default());
        let opts = parse_test(&args("--fast --no-install")).unwrap();
        assert!(opts.skip_fuzz && opts.skip_bench && opts.skip_image && opts.no_install);
        assert_eq!(parse_test(&args("--quick")).unwrap_err().code, 2);
    }

    #[test]
    fn bench_arguments() {
        assert_eq!(
            parse_bench(&args("engine --quick --filter nat -- --quick")).unwrap(),
            Some(("engine".to_string(), true, true, args("--filter nat --quick")))
        );
        assert_eq!(
            parse_bench(&args("dpdk --no-install")).unwrap(),
            Some(("dpdk".to_string(), false, false, Vec::new()))
        );
        assert_eq!(parse_bench(&args("--help")).unwrap(), None);
        assert_eq!(parse_bench(&[]).unwrap_err().code, 2);
        let err = parse_bench(&args("no-such-suite")).unwrap_err();
        assert!(err.message.contains("known suites"), "{}", err.message);
    }

    #[test]
    fn fuzz_arguments() {
        assert_eq!(parse_fuzz(&[]).unwrap(), FuzzCommand::Run(fuzz::Options::default()));
        let FuzzCommand::Run(opts) =
            parse_fuzz(&args("parse_frame --seconds 5 --sanitizer=none -- -max_len=64")).unwrap()
        else {
            panic!("expected a run");
        };
        assert_eq!(opts.targets, ["parse_frame"]);
        assert_eq!(opts.seconds, 5);
        assert_eq!(opts.sanitizer, "none");
        assert_eq!(opts.libfuzzer_args, ["-max_len=64"]);
        assert_eq!(parse_fuzz(&args("--list")).unwrap(), FuzzCommand::List);
        assert_eq!(parse_fuzz(&args("-h")).unwrap(), FuzzCommand::Help);
        assert_eq!(parse_fuzz(&args("--seconds 0")).unwrap_err().code, 2);
        assert_eq!(parse_fuzz(&args("--seconds")).unwrap_err().code, 2);
        assert_eq!(parse_fuzz(&args("-max_len=4")).unwrap_err().code, 2);
    }

    #[test]
    fn demo_and_lab_arguments() {
        assert_eq!(parse_demo(&[]).unwrap(), (false, true, None));
        assert_eq!(parse_demo(&args("--check --no-install")).unwrap(), (true, false, None));
        assert_eq!(parse_demo(&args("--check --software-io af-xdp")).unwrap(), (true, true, Some("af-xdp".into())));
        assert_eq!(parse_demo(&args("--software-io xdp")).unwrap_err().code, 2);
        assert_eq!(parse_demo(&args("--quick")).unwrap_err().code, 2);
        assert_eq!(parse_lab(&args("up")).unwrap(), ("up".to_string(), true, None));
        assert_eq!(parse_lab(&args("down --no-install")).unwrap(), ("down".to_string(), false, None));
        assert_eq!(
            parse_lab(&args("up --software-io af-xdp")).unwrap(),
            ("up".to_string(), true, Some("af-xdp".to_string()))
        );
        assert_eq!(parse_lab(&args("down --software-io af-xdp")).unwrap_err().code, 2);
        assert_eq!(parse_lab(&[]).unwrap_err().code, 2);
        assert_eq!(parse_lab(&args("up down")).unwrap_err().code, 2);
    }

    #[test]
    fn every_command_has_help() {
        for name in ["test", "bench", "fuzz", "install", "demo", "lab", "image", "help"] {
            assert!(command_help(name).unwrap().contains("cargo xtask"), "{name}");
            assert!(USAGE.contains(&format!("  {name} ")), "{name} missing from usage");
        }
        assert_eq!(command_help("nope").unwrap_err().code, 2);
    }
}
