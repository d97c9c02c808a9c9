//! `sluice-bench-veth veth --sluice <BIN> [--quick] [--json PATH] [--modes a,b] [--flows N]`:
//! the veth benchmark (see `sluice_lab::veth`), one `BENCH <name> <value> <unit>` line per
//! figure plus a JSON file. Run through `cargo xtask bench veth`, which builds `sluice` with
//! DPDK and passes `--sluice`.

use std::path::PathBuf;
use std::process::ExitCode;

use sluice_lab::veth::{self, report, Mode, Options};

const USAGE: &str = "\
usage: sluice-bench-veth veth --sluice <BIN> [--quick] [--json PATH] [--modes software,software_xdp,dpdk,kernel] [--flows N]
       (as root; builds namespaces sv-client, sv-node, sv-upstream)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match parse(&args).and_then(|(opts, quick, json)| run(&opts, quick, json)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-bench-veth: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<(Options, bool, Option<PathBuf>), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let (mut sluice, mut json, mut modes, mut flows) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{a} needs a value\n{USAGE}"));
        match a.as_str() {
            "veth" | "--quick" => {}
            "--sluice" => sluice = Some(PathBuf::from(value()?)),
            "--json" => json = Some(PathBuf::from(value()?)),
            "--modes" => {
                let list = value()?;
                let parsed: Option<Vec<Mode>> = list.split(',').map(Mode::parse).collect();
                modes = Some(
                    parsed.ok_or(format!("--modes: pick from software, software_xdp, dpdk, kernel (got `{list}`)"))?,
                );
            }
            "--flows" => {
                let n = value()?;
                flows = Some(n.parse::<u16>().ok().filter(|&n| (1..=8192).contains(&n)).ok_or("--flows: 1 to 8192")?);
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let sluice = sluice.ok_or(format!("--sluice <BIN> is required\n{USAGE}"))?;
    let mut opts = Options::new(sluice, quick);
    if let Some(modes) = modes {
        opts.modes = modes;
    }
    if let Some(flows) = flows {
        opts.flows = flows;
    }
    Ok((opts, quick, json))
}

fn run(opts: &Options, quick: bool, json: Option<PathBuf>) -> Result<(), String> {
    if !sluice_lab::is_root() {
        return Err("the veth benchmark builds network namespaces: run it as root".into());
    }
    veth::stop_on_signals();
    let results = veth::run(opts).map_err(|e| e.to_string())?;
    let named: Vec<(&str, report::Sample)> = results.iter().map(|(m, s)| (m.name(), *s)).collect();
    let figures = report::figures(&named);
    for f in &figures {
        println!("{}", f.line());
    }
    println!(
        "# software_vs_kernel_ratio is delivered pps of Sluice software mode (AF_PACKET ports; software_xdp: AF_XDP \
         ports) over the kernel's (target >= 1.0); \
         *_per_cpu_ratio divides each by the CPU-seconds its forwarder used"
    );
    if let Some(path) = json {
        std::fs::write(&path, report::json(quick, &figures)).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}
