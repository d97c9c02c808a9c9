//! Running child processes: echoing the command, checking its status, timing, and teeing
//! output when a step needs to read it back.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::Duration;

/// An error that ends the xtask run with `code` after printing `message`.
#[derive(Debug)]
pub struct Error {
    pub message: String,
    pub code: u8,
}

impl Error {
    /// Something ran and failed: exit 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Error { message: message.into(), code: 1 }
    }

    /// The command line was wrong: exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Error { message: message.into(), code: 2 }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn root() -> PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time too; fall back to where xtask was built.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(Path::to_path_buf).unwrap_or(manifest_dir)
}

/// A `cargo` command run from the workspace root, using the same cargo that runs xtask.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(root());
    cmd
}

/// Any other program, run from the workspace root.
pub fn program(name: &str) -> Command {
    let mut cmd = Command::new(name);
    cmd.current_dir(root());
    cmd
}

/// The command as a shell-like line for logs: environment set on it, program name, arguments.
pub fn show(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!("{}={}", key.to_string_lossy(), quote(&value.to_string_lossy())));
        }
    }
    let program = Path::new(cmd.get_program()).file_name().unwrap_or_else(|| cmd.get_program());
    parts.push(quote(&program.to_string_lossy()));
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

fn quote(s: &str) -> String {
    let plain = !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn spawn_error(cmd: &Command, err: io::Error) -> Error {
    Error::failed(format!("could not start `{}`: {err}", show(cmd)))
}

fn check(cmd: &Command, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        let mut err = Error::failed(format!("`{}` failed ({status})", show(cmd)));
        if let Some(code) = status.code() {
            err.code = u8::try_from(code).unwrap_or(1).max(1);
        }
        Err(err)
    }
}

/// Echo the command, run it with inherited stdout/stderr and no stdin, fail on non-zero exit.
pub fn run(cmd: &mut Command) -> Result<()> {
    println!("$ {}", show(cmd));
    flush();
    let status = cmd.stdin(Stdio::null()).status().map_err(|e| spawn_error(cmd, e))?;
    check(cmd, status)
}

/// Like [`run`], but also returns everything the command printed (stdout then stderr).
/// Output is forwarded as it arrives, so long runs still show progress.
pub fn run_tee(cmd: &mut Command) -> Result<String> {
    println!("$ {}", show(cmd));
    flush();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(cmd, e))?;
    let out = child.stdout.take().map(|r| pump(r, io::stdout));
    let err = child.stderr.take().map(|r| pump(r, io::stderr));
    let status = child.wait().map_err(|e| spawn_error(cmd, e))?;
    let mut text = Vec::new();
    for handle in [out, err].into_iter().flatten() {
        text.extend(handle.join().unwrap_or_default());
    }
    check(cmd, status)?;
    Ok(String::from_utf8_lossy(&text).into_owned())
}

fn pump<R, W>(mut reader: R, writer: fn() -> W) -> thread::JoinHandle<Vec<u8>>
where
    R: Read + Send + 'static,
    W: Write + 'static,
{
    thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let mut w = writer();
                    // A closed terminal must not stall the child: keep draining regardless.
                    let _ = w.write_all(&buf[..n]).and_then(|()| w.flush());
                    all.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        all
    })
}

/// True when the command runs and exits 0; its output is discarded. For presence checks.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The command's stdout when it runs and exits 0. For queries.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn flush() {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
}

/// `0.4s`, `12.3s`, `3m05s`, `1h02m03s`.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1}s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_commands_like_a_shell_line() {
        let mut cmd = Command::new("/usr/bin/cargo");
        cmd.env("RUSTC_BOOTSTRAP", "1").args(["fuzz", "run", "parse_frame", "--", "-max_total_time=20"]);
        assert_eq!(show(&cmd), "RUSTC_BOOTSTRAP=1 cargo fuzz run parse_frame -- -max_total_time=20");
        let mut cmd = Command::new("dpkg-query");
        cmd.args(["-W", "-f=${Status}", "it's"]);
        assert_eq!(show(&cmd), r"dpkg-query -W '-f=${Status}' 'it'\''s'");
    }

    #[test]
    fn formats_durations() {
        assert_eq!(duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(3723)), "1h02m03s");
    }

    #[test]
    fn failure_carries_the_exit_code() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]).stdout(Stdio::null());
        let err = run(&mut cmd).unwrap_err();
        assert_eq!(err.code, 3);
        assert!(err.message.contains("sh -c 'exit 3'"), "{}", err.message);
    }

    #[test]
    fn tee_returns_both_streams() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2"]);
        let text = run_tee(&mut cmd).unwrap();
        assert!(text.contains("out\n") && text.contains("err\n"), "{text}");
    }
}
