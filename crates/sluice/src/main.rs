use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser;
use sluice::cli::{Cli, Command};
use sluice::exit::{Exit, Failure};
use sluice::{boot, client, release_cmd, run, snapshot_cmd};

fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|e| {
        let note = env_source_note(&e);
        let _ = e.print();
        if let Some(note) = note {
            eprintln!("{note}");
        }
        std::process::exit(e.exit_code());
    });
    match cli.command {
        Command::Run(args) => match run::run(*args) {
            run::Ended::Exit(exit) => ExitCode::from(exit.code()),
            run::Ended::Exec(binary) => {
                let failure = boot::exec(&binary);
                eprintln!("error: {failure}");
                ExitCode::from(failure.exit.code())
            }
        },
        Command::Version(args) => finish(release_cmd::version(&args)),
        Command::Release(cmd) => finish(release_cmd::release(&cmd)),
        Command::Upgrade(cmd) => finish(release_cmd::upgrade(&cmd)),
        Command::Rollback(args) => finish(release_cmd::rollback(&args)),
        Command::BootGuard(args) => {
            let failure = boot::guard(&args.data_dir, args.pid, &args.release, &args.args);
            if !failure.message.is_empty() {
                eprintln!("error: {failure}");
            }
            ExitCode::from(failure.exit.code())
        }
        Command::Status(args) => finish(client::status(&args)),
        Command::Policy(cmd) => finish(client::policy(&cmd)),
        Command::Token(cmd) => finish(client::token(&cmd)),
        Command::Settings(args) => finish(client::settings(&args)),
        Command::Audit(args) => finish(client::audit(&args)),
        Command::Cluster(cmd) => finish(client::cluster(&cmd)),
        Command::Snapshot(cmd) => finish(snapshot_cmd::snapshot(&cmd)),
        Command::Restore(args) => finish(snapshot_cmd::restore(&args)),
    }
}

/// Success goes to stdout; a failure to stderr as `error: ...`, with its exit code. Two
/// failures are reports and also go to stdout: a policy's errors (one `path: message` per
/// line) and the `status` of a node that is not ready.
fn finish(result: Result<String, Failure>) -> ExitCode {
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(f)
            if f.exit == Exit::PolicyRejected
                || (f.exit == Exit::Refused && f.message.starts_with("node: NOT READY")) =>
        {
            println!("{}", f.message);
            ExitCode::from(f.exit.code())
        }
        Err(f) => {
            eprintln!("error: {f}");
            ExitCode::from(f.exit.code())
        }
    }
}

/// Clap names the flag when a value is invalid, even when the value came from its
/// `SLUICE_*` variable; say which variable to fix in that case.
fn env_source_note(e: &clap::Error) -> Option<String> {
    if e.kind() != ErrorKind::InvalidValue && e.kind() != ErrorKind::ValueValidation {
        return None;
    }
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else { return None };
    let flag = arg.split_whitespace().next()?;
    let name = flag.strip_prefix("--")?;
    if std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}="))) {
        return None;
    }
    let var = format!("SLUICE_{}", name.to_ascii_uppercase().replace('-', "_"));
    std::env::var_os(&var).map(|_| format!("note: the value comes from the {var} environment variable"))
}
