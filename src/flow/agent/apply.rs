//! Applying one assignment to the node beside the agent, all or nothing.
//!
//! ```text
//! check every value against the catalog ─ refuse the assignment, touch nothing
//! read the node; split what differs into run-time and start-only parameters
//! start-only ones need restart permission, --config-file and --restart-command
//! run-time ones:  driver.apply (CONFIG SET + CONFIG REWRITE / memcached commands)
//! config file:    write the start-only values (memcached: every value) ── on error: put
//!                 the run-time values back
//! restart:        run the command, wait until the engine answers (and a replica's link
//!                 is up), check every value, warm up ── on error: put the old file back,
//!                 restart again, check the node answers
//! ```
//!
//! The outcome is `applied`, `failed` (the node runs what it ran before) or, only when
//! putting it back failed too, `inconsistent`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use crate::edges::clock::now_rfc3339;
use crate::edges::nodes::{NodeDriver, NodeError};
use crate::flow::agent::conffile;
use crate::pure::catalog::{catalog, Catalog, CatalogId, Engine, Product};
use crate::pure::live::{LinkState, NodeLive};
use crate::pure::protocol::{ApplyResult, Assignment, Outcome};
use crate::pure::spec::model::Role;

/// How the agent may change the engine beyond run-time commands.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The engine's config file (Redis) or options file (memcached) to write start-only
    /// parameters to.
    pub config_file: Option<PathBuf>,
    /// A shell command that restarts the engine (`systemctl restart redis-server`).
    pub restart_command: Option<String>,
    /// How long the restart command and the engine's coming back may take together.
    pub restart_timeout: Duration,
    /// How long to wait after the engine answers again before reporting it applied, so
    /// the next batch of a rollout does not start against a cold node.
    pub warmup: Duration,
    /// How often the engine is asked whether it is back.
    pub poll: Duration,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            config_file: None,
            restart_command: None,
            restart_timeout: Duration::from_secs(120),
            warmup: Duration::from_secs(10),
            poll: Duration::from_millis(200),
        }
    }
}

/// Why an apply did not happen, before anything was touched or after it was put back.
struct Failure {
    message: String,
    /// True when putting the node back failed too.
    inconsistent: bool,
}

impl Failure {
    fn clean(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            inconsistent: false,
        }
    }
}

/// Apply `assignment` (which must carry a revision) to the node behind `driver`. `seen`:
/// the node's parameters in the reading the assignment answered, when it answered.
pub async fn apply(
    driver: &dyn NodeDriver,
    options: &ApplyOptions,
    assignment: &Assignment,
    seen: Option<&BTreeMap<String, String>>,
) -> ApplyResult {
    let revision = assignment.revision.clone().unwrap_or_default();
    let (outcome, changed, restarted, error) = match run(driver, options, assignment, seen).await {
        Ok((changed, restarted)) => (Outcome::Applied, changed, restarted, None),
        Err(f) => {
            let outcome = if f.inconsistent {
                Outcome::Inconsistent
            } else {
                Outcome::Failed
            };
            (outcome, Vec::new(), false, Some(f.message))
        }
    };
    ApplyResult {
        revision,
        generation: assignment.generation,
        outcome,
        changed,
        restarted,
        error,
        finished_at: now_rfc3339(),
    }
}

/// What differs from what the node runs, split by how it is applied.
struct Changes {
    /// Every assigned value, normalised.
    want: BTreeMap<String, String>,
    /// What the node ran before, for the assigned names.
    live: BTreeMap<String, String>,
    /// Differing values a running engine takes.
    runtime: BTreeMap<String, String>,
    /// Differing values that take effect at start only (a restart).
    start_only: BTreeMap<String, String>,
}

/// The apply, step by step; each step says how it fails and what it puts back.
async fn run(
    driver: &dyn NodeDriver,
    options: &ApplyOptions,
    assignment: &Assignment,
    seen: Option<&BTreeMap<String, String>>,
) -> Result<(Vec<String>, bool), Failure> {
    let engine = driver.engine();
    let cat = catalog_of(engine, assignment);
    let want = wanted(engine, cat, assignment)?;
    if let Some(applied) = at_runtime_at_once(driver, cat, assignment, &want, seen) {
        let applied = applied.await.map_err(driver_failure)?;
        return Ok((applied.changed.into_keys().collect(), false));
    }
    let changes = differences(driver, cat, assignment, want).await?;
    let restart = !changes.start_only.is_empty();
    if restart {
        may_restart(&changes, assignment, options)?;
    }
    // The config file as it was, to put back if the restart goes wrong.
    let file = options.config_file.as_deref();
    let original = match file {
        Some(path) if restart || engine == Engine::Memcached => Some(
            read_config(path, engine)
                .map_err(|f| Failure::clean(format!("{}; nothing was changed", f.message)))?,
        ),
        _ => None,
    };
    let before = apply_runtime(driver, &changes).await?;
    if let (Some(path), Some(original)) = (file, &original) {
        write_config(driver, path, original, &changes, &before).await?;
    }
    if let (true, Some(path), Some(command)) = (restart, file, options.restart_command.as_deref()) {
        let original = original.as_deref().unwrap_or("");
        restart_step(driver, options, command, path, original, &changes, &before).await?;
    }
    let Changes {
        runtime,
        start_only,
        ..
    } = changes;
    let mut changed: Vec<String> = runtime.into_keys().chain(start_only.into_keys()).collect();
    changed.sort();
    Ok((changed, restart))
}

/// Step 1: every value must be one the catalog accepts; normalise again, whoever sent it.
/// Refuses the whole assignment, touching nothing.
/// The catalog the assignment names (the cluster's version, Valkey's), or the engine's
/// default one when it names none (an older server) or one this build does not know.
fn catalog_of(engine: Engine, assignment: &Assignment) -> &'static Catalog {
    let product = assignment
        .product
        .as_deref()
        .and_then(|p| {
            serde_json::from_value::<Product>(serde_json::Value::String(p.to_owned())).ok()
        })
        .filter(|p| p.engine() == engine)
        .unwrap_or(Product::from(engine));
    assignment
        .catalog_version
        .as_deref()
        .and_then(|v| CatalogId::select(product, Some(v)).ok())
        .unwrap_or(CatalogId::default_for(engine))
        .get()
}

fn wanted(
    engine: Engine,
    cat: &Catalog,
    assignment: &Assignment,
) -> Result<BTreeMap<String, String>, Failure> {
    let mut want: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, value) in &assignment.parameters {
        if engine == Engine::Redis
            && crate::edges::nodes::redis::SECRET_PARAMETERS.contains(&name.as_str())
        {
            problems.push(format!(
                "`{name}` is a credential: set it with a secret reference in the cluster, not through an assignment"
            ));
            continue;
        }
        if assignment.unchecked.contains(name) && cat.get(name).is_none() {
            // `uncheckedParameters`: sent as written, the engine alone judges it.
            want.insert(name.clone(), value.clone());
            continue;
        }
        match cat.normalize(name, &serde_json::Value::String(value.clone())) {
            Ok(v) => {
                want.insert(name.clone(), v);
            }
            Err(e) => problems.push(e.to_string()),
        }
    }
    if !problems.is_empty() {
        return Err(Failure::clean(format!(
            "the assignment is refused, nothing was changed: {}",
            problems.join("; ")
        )));
    }
    Ok(want)
}

/// Steps 2 to 4 at once, when every assigned value is a run-time one and the driver can
/// compare and apply in one go ([`NodeDriver::apply_seen`]): it reads the values before,
/// sets what differs and reads them back in one round trip (`seen`, the reading the
/// assignment answered, tells it what probably differs). `None`: the steps one by one.
fn at_runtime_at_once<'a>(
    driver: &'a dyn NodeDriver,
    cat: &Catalog,
    assignment: &Assignment,
    want: &'a BTreeMap<String, String>,
    seen: Option<&'a BTreeMap<String, String>>,
) -> Option<crate::edges::nodes::BoxFuture<'a, Result<crate::edges::nodes::Applied, NodeError>>> {
    let all_runtime = want.keys().all(|name| match cat.get(name) {
        Some(p) => p.runtime,
        None => assignment.unchecked.contains(name),
    });
    if !all_runtime {
        return None;
    }
    driver.apply_seen(want, seen?)
}

/// A driver's error as the apply's: `inconsistent` only when its put-back failed too.
fn driver_failure(e: NodeError) -> Failure {
    Failure {
        inconsistent: matches!(e, NodeError::RollbackFailed { .. }),
        message: e.to_string(),
    }
}

/// Step 2: what differs from what the node runs now.
async fn differences(
    driver: &dyn NodeDriver,
    cat: &Catalog,
    assignment: &Assignment,
    want: BTreeMap<String, String>,
) -> Result<Changes, Failure> {
    let names: Vec<String> = want.keys().cloned().collect();
    let live = driver
        .read_parameters(&names)
        .await
        .map_err(|e| Failure::clean(format!("cannot read the node: {e}")))?;
    let differs = |name: &str, value: &str| match live.get(name) {
        Some(have) => !cat.same(name, have, value),
        None => true,
    };
    let mut runtime: BTreeMap<String, String> = BTreeMap::new();
    let mut start_only: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &want {
        if differs(name, value) {
            // An unchecked parameter is set at run time (CONFIG SET), as written.
            let at_runtime = match cat.get(name) {
                Some(p) => p.runtime,
                None => assignment.unchecked.contains(name),
            };
            if at_runtime {
                runtime.insert(name.clone(), value.clone());
            } else {
                start_only.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(Changes {
        want,
        live,
        runtime,
        start_only,
    })
}

/// Start-only parameters need the server's permission, a config file and a restart
/// command; without them nothing is changed.
fn may_restart(
    changes: &Changes,
    assignment: &Assignment,
    options: &ApplyOptions,
) -> Result<(), Failure> {
    let names = changes
        .start_only
        .keys()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if !assignment.restart_allowed {
        return Err(Failure::clean(format!(
            "{names} only take effect at start and the server has not allowed a restart now; nothing was changed"
        )));
    }
    if options.config_file.is_none() || options.restart_command.is_none() {
        return Err(Failure::clean(format!(
            "{names} only take effect at start; run the agent with --config-file and --restart-command to apply them; nothing was changed"
        )));
    }
    Ok(())
}

/// Step 3: run-time parameters, as one unit (the driver puts back on a refusal). Returns
/// their values before, to put back if a later step fails.
async fn apply_runtime(
    driver: &dyn NodeDriver,
    changes: &Changes,
) -> Result<BTreeMap<String, String>, Failure> {
    if !changes.runtime.is_empty() {
        driver
            .apply(&changes.runtime)
            .await
            .map_err(driver_failure)?;
    }
    Ok(changes
        .runtime
        .keys()
        .filter_map(|n| changes.live.get(n).map(|v| (n.clone(), v.clone())))
        .collect())
}

/// Step 4: the config file: start-only values for Redis (run-time ones were persisted by
/// CONFIG REWRITE), every assigned value for memcached. On error the run-time values
/// are put back.
async fn write_config(
    driver: &dyn NodeDriver,
    path: &Path,
    original: &str,
    changes: &Changes,
    before: &BTreeMap<String, String>,
) -> Result<(), Failure> {
    let written = match driver.engine() {
        Engine::Redis => read_config(path, Engine::Redis)
            .map(|now| conffile::redis_set(&now, &changes.start_only))
            .map_err(|f| f.message),
        Engine::Memcached => conffile::memcached_start_options(&changes.want)
            .map_err(|e| e.to_string())
            .and_then(|opts| {
                conffile::memcached_block(original, &opts)
                    .map_err(|e| format!("{}: {e}", path.display()))
            }),
    }
    .and_then(|text| {
        conffile::write_atomic(path, &text)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    });
    match written {
        Ok(()) => Ok(()),
        Err(message) => Err(put_back_runtime(driver, &changes.runtime, before, message).await),
    }
}

/// Step 5: restart for start-only parameters, then check and warm up; on error the old file
/// goes back and the engine restarts again.
async fn restart_step(
    driver: &dyn NodeDriver,
    options: &ApplyOptions,
    command: &str,
    path: &Path,
    original: &str,
    changes: &Changes,
    before: &BTreeMap<String, String>,
) -> Result<(), Failure> {
    if let Err(message) = restart_and_check(driver, options, command, &changes.want).await {
        let old_start: BTreeMap<String, Option<String>> = changes
            .start_only
            .keys()
            .map(|n| (n.clone(), changes.live.get(n).cloned()))
            .collect();
        let old = Old {
            file: original,
            start_only: &old_start,
            runtime: before,
        };
        let message = message.to_string();
        return Err(roll_back_restart(driver, options, command, path, old, message).await);
    }
    tokio::time::sleep(options.warmup).await;
    Ok(())
}

/// The config file's text; a missing memcached options file is an empty one (the agent
/// creates it), a missing Redis file is an error (the engine would not start without it).
fn read_config(path: &Path, engine: Engine) -> Result<String, Failure> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && engine == Engine::Memcached => {
            Ok(String::new())
        }
        Err(e) => Err(Failure::clean(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

/// After a failure past the run-time apply: set the run-time values back where the
/// node still holds what was set (`set`); a value set since by another writer stays.
async fn put_back_runtime(
    driver: &dyn NodeDriver,
    set: &BTreeMap<String, String>,
    before: &BTreeMap<String, String>,
    message: String,
) -> Failure {
    if before.is_empty() {
        return Failure::clean(format!("{message}; nothing was changed"));
    }
    let names: Vec<String> = before.keys().cloned().collect();
    let cat = catalog(driver.engine());
    let back: BTreeMap<String, String> = match driver.read_parameters(&names).await {
        Ok(now) => before
            .iter()
            .filter(|(name, _)| match (now.get(*name), set.get(*name)) {
                (Some(have), Some(want)) => cat.same(name, have, want),
                _ => true,
            })
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        Err(e) => {
            return Failure {
                message: format!(
                    "{message}; cannot read the node to put the run-time change back: {e}"
                ),
                inconsistent: true,
            }
        }
    };
    let kept = match back.len() == before.len() {
        true => String::new(),
        false => " (where no other writer changed it since)".to_owned(),
    };
    match driver.apply(&back).await {
        Ok(_) => Failure::clean(format!("{message}; the run-time change was put back{kept}")),
        Err(e) => Failure {
            message: format!("{message}; putting the run-time change back failed: {e}"),
            inconsistent: true,
        },
    }
}

/// Why a restart did not bring the engine back with what was assigned.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("cannot run the restart command: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the restart command did not finish within {0} s")]
    Timeout(u64),
    #[error("the restart command failed: {0}")]
    Wait(#[source] std::io::Error),
    /// `code`: `exit code N` or `a signal`.
    #[error("the restart command failed with {code}")]
    Failed { code: String },
    /// `output`: the end of what it wrote on standard error.
    #[error("the restart command failed with {code}: {output}")]
    FailedSaying { code: String, output: String },
    #[error("the engine was not back within {secs} s of the restart ({last})")]
    NotBack { secs: u64, last: String },
    /// `wrong`: each parameter with what it is and what it should be.
    #[error("after the restart {wrong} (does the restart command start the engine from {file}?)")]
    WrongValues { wrong: String, file: String },
}

/// Run the restart command, wait for the engine, and check it runs `want`.
async fn restart_and_check(
    driver: &dyn NodeDriver,
    options: &ApplyOptions,
    command: &str,
    want: &BTreeMap<String, String>,
) -> Result<(), RestartError> {
    let deadline = Instant::now() + options.restart_timeout;
    run_command(command, options, deadline).await?;
    let live = wait_until_up(driver, options, deadline).await?;
    let wrong: Vec<String> = want
        .iter()
        .filter(|(n, v)| {
            !live
                .parameters
                .get(*n)
                .is_some_and(|have| catalog(driver.engine()).same(n, have, v))
        })
        .map(|(n, v)| {
            let have = live
                .parameters
                .get(n)
                .map(String::as_str)
                .unwrap_or("nothing");
            format!("`{n}` is `{have}`, not `{v}`")
        })
        .collect();
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(RestartError::WrongValues {
            wrong: wrong.join(", "),
            file: options
                .config_file
                .as_deref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        })
    }
}

/// What the node ran before the apply.
struct Old<'a> {
    file: &'a str,
    /// `None` where the node did not report the parameter before.
    start_only: &'a BTreeMap<String, Option<String>>,
    runtime: &'a BTreeMap<String, String>,
}

/// The restart went wrong: put the old file back; if the engine answers with its old
/// start-only values (the restart never happened, or started it from another file), set
/// the run-time values back; otherwise restart it again with the old file and check it
/// answers.
async fn roll_back_restart(
    driver: &dyn NodeDriver,
    options: &ApplyOptions,
    command: &str,
    path: &Path,
    old: Old<'_>,
    message: String,
) -> Failure {
    if let Err(e) = conffile::write_atomic(path, old.file) {
        return Failure {
            message: format!("{message}; putting back {} failed too: {e}", path.display()),
            inconsistent: true,
        };
    }
    let runs_old_values = match driver.read().await {
        // Only provable when the node reported every one of them before.
        Ok(live) => old
            .start_only
            .iter()
            .all(|(n, v)| match (v, live.parameters.get(n)) {
                (Some(v), Some(have)) => have == v,
                _ => false,
            }),
        Err(_) => false,
    };
    if runs_old_values {
        if old.runtime.is_empty() {
            return Failure::clean(format!(
                "{message}; the old config file was put back and the engine runs as before"
            ));
        }
        return match driver.apply(old.runtime).await {
            Ok(_) => Failure::clean(format!(
                "{message}; the old config file was put back and the run-time change undone"
            )),
            Err(e) => Failure {
                message: format!(
                    "{message}; the old config file was put back but undoing the run-time change failed: {e}"
                ),
                inconsistent: true,
            },
        };
    }
    let deadline = Instant::now() + options.restart_timeout;
    let again = match run_command(command, options, deadline).await {
        Ok(()) => wait_until_up(driver, options, deadline).await.map(|_| ()),
        Err(e) => Err(e),
    }
    .map_err(|e| e.to_string());
    // The old file holds what the node ran at start; run-time values set since (by
    // hand, or never persisted) are set back as they were before the apply.
    let again = match again {
        Ok(()) if !old.runtime.is_empty() => {
            driver.apply(old.runtime).await.map(|_| ()).map_err(|e| {
                format!("it came back, but setting the run-time values back failed: {e}")
            })
        }
        other => other,
    };
    match again {
        Ok(()) => Failure::clean(format!(
            "{message}; the old config file was put back and the engine restarted with it"
        )),
        Err(e) => Failure {
            message: format!(
                "{message}; the old config file was put back but restarting with it failed: {e}"
            ),
            inconsistent: true,
        },
    }
}

/// Largest part of the restart command's output kept for the message.
const OUTPUT_TAIL: usize = 400;

/// `sh -c COMMAND`, with `CACHEFLOW_CONFIG_FILE` in its environment; an error unless it
/// exits 0 before `deadline`.
async fn run_command(
    command: &str,
    options: &ApplyOptions,
    deadline: Instant,
) -> Result<(), RestartError> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(f) = &options.config_file {
        cmd.env("CACHEFLOW_CONFIG_FILE", f);
    }
    let mut child = cmd.spawn().map_err(RestartError::Spawn)?;
    let mut stderr = child.stderr.take();
    let wait = async {
        let mut err = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut err).await;
        }
        (child.wait().await, err)
    };
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, wait).await {
        Err(_) => Err(RestartError::Timeout(options.restart_timeout.as_secs())),
        Ok((Err(e), _)) => Err(RestartError::Wait(e)),
        Ok((Ok(status), err)) if !status.success() => {
            let text = String::from_utf8_lossy(&err);
            let text = text.trim();
            let tail = match text.char_indices().rev().nth(OUTPUT_TAIL) {
                Some((i, _)) => &text[i..],
                None => text,
            };
            let code = status
                .code()
                .map(|c| format!("exit code {c}"))
                .unwrap_or_else(|| "a signal".to_owned());
            if tail.is_empty() {
                Err(RestartError::Failed { code })
            } else {
                Err(RestartError::FailedSaying {
                    code,
                    output: tail.to_owned(),
                })
            }
        }
        Ok((Ok(_), _)) => Ok(()),
    }
}

/// Ask the engine until it answers and, on a replica, its replication link is up.
async fn wait_until_up(
    driver: &dyn NodeDriver,
    options: &ApplyOptions,
    deadline: Instant,
) -> Result<NodeLive, RestartError> {
    loop {
        let last = match driver.read().await {
            Ok(live) => {
                let health = live.health.as_ref();
                let replica_down = health.is_some_and(|h| {
                    h.role == Some(Role::Replica) && h.replication_link == Some(LinkState::Down)
                });
                if !replica_down {
                    return Ok(live);
                }
                "it answers but its replication link is down".to_owned()
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() + options.poll > deadline {
            return Err(RestartError::NotBack {
                secs: options.restart_timeout.as_secs(),
                last,
            });
        }
        tokio::time::sleep(options.poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The restart command, its error as the words the agent reports.
    async fn run_command(
        command: &str,
        options: &ApplyOptions,
        deadline: Instant,
    ) -> Result<(), String> {
        super::run_command(command, options, deadline)
            .await
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn failing_commands_say_how() {
        let options = ApplyOptions::default();
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(run_command("true", &options, soon).await, Ok(()));
        assert_eq!(
            run_command("echo no such unit >&2; exit 5", &options, soon).await,
            Err("the restart command failed with exit code 5: no such unit".to_owned())
        );
        let short = ApplyOptions {
            restart_timeout: Duration::from_millis(100),
            ..ApplyOptions::default()
        };
        let e = run_command(
            "sleep 5",
            &short,
            Instant::now() + Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(e.contains("did not finish"), "{e}");
    }
}
