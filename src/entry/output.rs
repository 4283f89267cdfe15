//! Standard output and standard error of the commands, written without a panic (one
//! room of its own: `cli`, `sync` and `server` all print through it).
//!
//! Rust's `print!` panics when a write fails, and a write fails as soon as the reader
//! goes away: `cacheflow sync | head`, a closed terminal, an SSH session that dropped.
//! A rollout must not stop half way because its viewer left, so every line the command
//! line prints goes through [`out!`], [`outln!`], [`err!`] and [`errln!`]: a failed write is
//! remembered and the command goes on, quietly, to the end of its work (the journal is
//! its record). [`finish`] then decides the exit code: a reader that closed the pipe is
//! its own choice (the code stays the command's, as `rg` and `git log` do), any other
//! failure (a full disk behind `> file`) means the output was lost and exits 1.

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Mutex;

/// The first error a write to standard output met; once set, nothing more is written.
static STDOUT_LOST: Mutex<Option<io::Error>> = Mutex::new(None);

/// Write to standard output (see [`out!`]); a failure is remembered, never raised.
pub fn stdout(args: fmt::Arguments<'_>) {
    let mut lost = STDOUT_LOST.lock().unwrap_or_else(|p| p.into_inner());
    if lost.is_some() {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        *lost = Some(e);
    }
}

/// Write to standard error (see [`errln!`]); a failure is ignored: there is nowhere
/// left to report it.
pub fn stderr(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// The exit code of a command that returned `code`, once its output is accounted for:
/// `code` when everything printed was written or the reader closed the pipe; 1, with
/// the reason on standard error, when the output was lost otherwise.
pub fn finish(code: ExitCode) -> ExitCode {
    let lost = STDOUT_LOST.lock().unwrap_or_else(|p| p.into_inner());
    match &*lost {
        None => code,
        Some(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
        Some(e) => {
            stderr(format_args!(
                "error: the output could not be written: {e}\n"
            ));
            ExitCode::from(1)
        }
    }
}

/// `print!` that never panics: see the module's text.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::entry::output::stdout(format_args!($($arg)*))
    };
}

/// `println!` that never panics: see the module's text.
macro_rules! outln {
    () => {
        $crate::entry::output::stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::entry::output::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprint!` that never panics: see the module's text.
macro_rules! err {
    ($($arg:tt)*) => {
        $crate::entry::output::stderr(format_args!($($arg)*))
    };
}

/// `eprintln!` that never panics: see the module's text.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::entry::output::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {err, errln, out, outln};
