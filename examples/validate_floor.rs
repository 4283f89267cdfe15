//! The floor `cacheflow validate --rev` is measured against: read every cacheflow blob of
//! a revision from git and parse its YAML, on two threads, and nothing else (no schema,
//! no model, no checks across files).
//!
//!     cargo run --release --example validate_floor -- REPO [REV]
//!
//! The blobs are read as `validate` reads them (`ConfigRepo::stream_rev`: in pack order,
//! size checked first) on the main thread and handed over a channel; two worker threads
//! parse each file into a `serde_json::Value` (`spec::yaml::parse_value`, what the loader
//! parses with) and drop it. Prints the files read, the YAML bytes, the parse errors and
//! the wall time; exits 1 when a file does not parse or nothing was read.

use std::sync::{mpsc, Mutex};
use std::time::Instant;

use cacheflow::edges::source::{ConfigRepo, FileItem};
use cacheflow::pure::spec::yaml;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(location) = args.first() else {
        eprintln!("usage: validate_floor REPO [REV]");
        return std::process::ExitCode::from(1);
    };
    let rev = args.get(1).map_or("HEAD", String::as_str);
    let started = Instant::now();
    let repo = match ConfigRepo::open(location, None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("validate_floor: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let (tx, rx) = mpsc::sync_channel::<FileItem>(1024);
    let rx = Mutex::new(rx);
    let (read, parsed) = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let (mut files, mut bytes, mut errors) = (0usize, 0usize, 0usize);
                    loop {
                        let next = match rx.lock() {
                            Ok(r) => r.recv().ok(),
                            Err(_) => None,
                        };
                        let Some(item) = next else { break };
                        if let FileItem::File { path, text } = item {
                            if path.ends_with(".json") {
                                continue;
                            }
                            files += 1;
                            bytes += text.len();
                            if yaml::parse_value(&text).is_err() {
                                errors += 1;
                            }
                        }
                    }
                    (files, bytes, errors)
                })
            })
            .collect();
        let read = repo.stream_rev(rev, &mut |item| {
            let _ = tx.send(item);
        });
        drop(tx);
        let parsed = workers
            .into_iter()
            .map(|w| w.join().unwrap_or((0, 0, 1)))
            .fold((0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
        (read, parsed)
    });
    let elapsed = started.elapsed();
    if let Err(e) = read {
        eprintln!("validate_floor: {e}");
        return std::process::ExitCode::from(1);
    }
    let (files, bytes, errors) = parsed;
    println!(
        "read and parsed {files} YAML files ({:.1} MB) in {:.3} s, {errors} parse errors",
        bytes as f64 / 1e6,
        elapsed.as_secs_f64()
    );
    if errors > 0 || files == 0 {
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}
