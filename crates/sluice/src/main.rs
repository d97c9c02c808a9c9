use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser;
use sluice::cli::{Cli, Command, PolicyCommand, TokenCommand};
use sluice::{policy_cmd, run, token_cmd};

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
        Command::Run(args) => ExitCode::from(run::run(*args).code()),
        Command::Token(TokenCommand::Mint(args)) => match token_cmd::mint(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(f) => {
                eprintln!("error: {f}");
                ExitCode::from(f.exit.code())
            }
        },
        Command::Policy(cmd) => {
            let result = match &cmd {
                PolicyCommand::Validate { file } => policy_cmd::validate(file),
                PolicyCommand::Explain(args) => policy_cmd::explain(args),
            };
            match result {
                Ok(out) => {
                    println!("{out}");
                    ExitCode::SUCCESS
                }
                Err(f) => {
                    println!("{f}");
                    ExitCode::from(f.exit.code())
                }
            }
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
