//! The `cacheflow` binary: all behaviour lives in the library; see `cacheflow::entry::cli`.

use std::process::ExitCode;

use clap::Parser;

// Loading a repository builds and drops many small trees; mimalloc does that about a
// fifth faster than glibc's allocator (measured on `validate` of 10,000 clusters).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its 16th option in mimalloc 3: the Rust bindings
/// do not name it; a test below checks that this number reads the documented default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// A long-running process gives freed memory back to the system at once, instead of
/// after mimalloc's default second. A server's peaks are short (a new revision read
/// beside the old one; a burst of reports in hand) and come one after another: kept for
/// a second each, they added up to about a tenth of `serve`'s peak RSS under 10,000
/// agents (BENCHMARKS.md, "The server under 10,000 agents"). Short commands keep the
/// default: they exit before a second has passed and would only pay the extra calls.
fn return_freed_memory_at_once() {
    // SAFETY: sets one of mimalloc's options; any value is valid for this option.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

fn main() -> ExitCode {
    let cli = match cacheflow::entry::cli::Cli::try_parse() {
        Ok(cli) => cli,
        // clap exits 2 on a usage error, the code diff, plan and drift give "changes":
        // a typo in a CI script would pass. Usage errors exit 1; --help and --version 0.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if cli.local_only() {
        cacheflow::edges::source::skip_tls_roots();
    }
    if cli.long_running() {
        return_freed_memory_at_once();
    }
    cacheflow::entry::cli::run(cli)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_mimalloc_documents() {
        // mimalloc 3's default purge delay is 1000 ms (`options.c`), unless the
        // environment sets it: a renumbered option list in a newer mimalloc reads
        // otherwise and fails here.
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1000);
        // SAFETY: reads an option.
        let delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(delay, expected);
        return_freed_memory_at_once();
        assert_eq!(
            unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) },
            0
        );
    }
}
