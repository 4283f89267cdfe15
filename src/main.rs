//! The `cacheflow` binary: all behaviour lives in the library; see `cacheflow::cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    cacheflow::cli::run(cacheflow::cli::Cli::parse())
}
