//! One function per command: read the arguments, call the pipeline (or the server, the
//! agent, `sync`, the demo), print, and say the exit code. An error comes back as
//! `anyhow::Error` and [`super::run`] prints it (exit 1); the exit codes of DESIGN.md
//! are decided here (validate: 0 valid / 1 invalid; diff, plan, drift: 0 nothing to do /
//! 2 changes, never 0 when a declared node could not be read).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{anyhow, bail};

use super::{
    client, style, AgentArgs, AgentTokenArgs, CompletionsArgs, DemoArgs, DiffArgs, DriftArgs,
    Format, HistoryArgs, ImportArgs, ManArgs, PlanArgs, ReachArgs, RepoArgs, ReportFormat,
    RichFormat, RolloutAction, RolloutArgs, RolloutCommand, ServeArgs, SnapshotArgs, SyncArgs,
    ValidateArgs,
};
use crate::edges::redact::redact_url;
use crate::edges::source::ConfigRepo;
use crate::entry::output::{errln, out, outln};
use crate::flow::pipeline::{self, LiveSource, PipelineError, Revision};
use crate::pure::drift::DriftReport;
use crate::pure::render;

pub fn validate(args: ValidateArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.repo)?;
    let (commit, result) = pipeline::check(&repo, &revision(&args.rev, args.worktree))
        .map_err(|e| anyhow!(e.to_string()))?;
    let out = match args.format {
        Format::Text => render::validate_text(commit.as_deref(), &result),
        Format::Json => render::validate_json(commit.as_deref(), &result),
    };
    out!("{out}");
    let code = if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    Ok(code)
}

pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.repo)?;
    let json = args.format == RichFormat::Json;
    let cs = pipeline::diff(&repo, &args.base, &revision(&args.head, args.worktree))
        .map_err(|e| pipeline_failed(e, json))?;
    let out = match args.format {
        RichFormat::Text => render::diff_text_with(&cs, style::stdout()),
        RichFormat::Json => render::json(&cs),
        RichFormat::Markdown => render::diff_markdown(&cs),
    };
    Ok(print_with_changes(&out, !cs.is_empty()))
}

pub fn plan(args: PlanArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.repo)?;
    let json = args.format == RichFormat::Json;
    let source = live_source(args.live.as_deref(), args.direct, &args.reach);
    let plan = pipeline::plan(&repo, &revision(&args.rev, args.worktree), source)
        .map_err(|e| pipeline_failed(e, json))?;
    let out = match args.format {
        RichFormat::Text => render::plan_text_with(&plan, style::stdout()),
        RichFormat::Json => render::json(&plan),
        RichFormat::Markdown => render::plan_markdown(&plan),
    };
    Ok(print_with_changes(&out, !plan.converged()))
}

pub fn drift(args: DriftArgs) -> anyhow::Result<ExitCode> {
    let report = match &args.server {
        Some(server) => client::server_drift(server, args.token_file.as_ref())?,
        None => {
            let repo = open(&args.repo)?;
            let source = live_source(args.live.as_deref(), args.direct, &args.reach);
            pipeline::drift(&repo, &revision(&args.rev, args.worktree), source)
                .map_err(|e| pipeline_failed(e, args.format == ReportFormat::Json))?
        }
    };
    if let Some(dir) = &args.output_dir {
        write_drift_files(dir, &report)?;
    }
    let out = match args.format {
        ReportFormat::Text => crate::pure::drift::text(&report),
        ReportFormat::Json => render::json(&report),
        ReportFormat::Markdown => crate::pure::drift::markdown(&report),
        ReportFormat::Html => crate::pure::drift::html(&report, &[]),
    };
    Ok(print_with_changes(&out, !report.clean()))
}

pub fn snapshot(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.repo)?;
    let state = pipeline::desired(&repo, &revision(&args.rev, args.worktree))
        .and_then(|d| pipeline::snapshot(&d, args.cluster.as_deref(), args.reach.options()))
        .map_err(|e| pipeline_failed(e, args.format == Format::Json))?;
    let text = match args.format {
        Format::Json => render::json(&state),
        Format::Text => render::snapshot_text(&state),
    };
    match &args.output {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?,
        None => out!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn sync(args: SyncArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.repo)?;
    if args
        .override_window
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        bail!("--override-window needs a reason (it is journaled)");
    }
    let json = args.format == Format::Json;
    let options = crate::entry::sync::SyncOptions {
        rev: args.rev,
        cluster: args.cluster,
        decor: style::stdout(),
        live: style::live_stdout() && !json,
        yes: args.yes,
        reach: args.reach.options(),
        interval: args.interval,
        override_window: args.override_window,
        json,
    };
    let summary = crate::entry::sync::sync(&repo, options).map_err(|e| match e {
        crate::entry::sync::SyncError::Pipeline(e) => pipeline_failed(e, json),
        e => anyhow!(e.to_string()),
    })?;
    if json {
        out!("{}", render::json(&summary));
    }
    Ok(if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `cacheflow serve`: read the secrets and the admin tokens, then serve until SIGTERM
/// or Ctrl-C.
pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let read_tokens = match &args.read_tokens_file {
        Some(path) => admin_tokens(path)?,
        None => BTreeMap::new(),
    };
    let admin_tokens = match &args.admin_tokens_file {
        Some(path) => admin_tokens(path)?,
        None => BTreeMap::new(),
    };
    let replication = replication(&args)?;
    let options = crate::entry::server::ServeOptions {
        repo: args.repo,
        path: args.path,
        branch: args.branch,
        state_dir: args.state_dir,
        listen: args.listen,
        poll_interval: args.poll_interval,
        webhook_secret: secret(
            args.webhook_secret_file.as_ref(),
            "CACHEFLOW_WEBHOOK_SECRET",
        )?,
        node_token_secret: secret(
            args.node_token_secret_file.as_ref(),
            "CACHEFLOW_NODE_TOKEN_SECRET",
        )?,
        admin_tokens,
        read_tokens,
        push_audit: args.push_audit,
        direct_interval: args.direct_interval,
        node_timeout: args.timeout,
        resume_grace: args.resume_grace,
        silent_after: args.silent_after,
        forge_api_url: args.forge_api_url,
        forge_token: secret(args.forge_token_file.as_ref(), "CACHEFLOW_FORGE_TOKEN")?
            .map(|t| String::from_utf8_lossy(&t).trim().to_owned()),
        tls: match (&args.tls_cert_file, &args.tls_key_file) {
            (Some(cert), Some(key)) => Some(
                crate::entry::server::ServerTls::from_files(cert, key)
                    .map_err(anyhow::Error::msg)?,
            ),
            _ => None,
        },
        replication,
    };
    until_signal(|stop| async move { Ok(crate::entry::server::serve(options, stop).await?) })?;
    Ok(ExitCode::SUCCESS)
}

/// The replicas' options, when etcd's endpoints are given.
fn replication(
    args: &ServeArgs,
) -> anyhow::Result<Option<crate::entry::server::replica::ReplicaOptions>> {
    if args.etcd_endpoints.is_empty() {
        if args.shards > 1 {
            bail!("--shards {} needs --etcd-endpoints: shards spread over replicas, and a single serve leads every cluster", args.shards);
        }
        return Ok(None);
    }
    let replica_id = match args.replica_id.as_deref().map(str::trim) {
        Some("") => bail!("--replica-id must not be empty"),
        Some(id) if id.contains('/') => bail!("--replica-id must not contain '/': {id}"),
        Some(id) => id.to_owned(),
        None => hostname().ok_or_else(|| {
            anyhow::anyhow!("cannot read this machine's hostname: give --replica-id")
        })?,
    };
    if args.lease_ttl < std::time::Duration::from_secs(2) {
        bail!("--lease-ttl must be at least 2s (etcd counts leases in seconds)");
    }
    let password = secret(args.etcd_password_file.as_ref(), "CACHEFLOW_ETCD_PASSWORD")?
        .map(|p| String::from_utf8_lossy(&p).into_owned());
    if args.etcd_user.is_some() && password.is_none() {
        bail!("--etcd-user needs a password: --etcd-password-file or CACHEFLOW_ETCD_PASSWORD");
    }
    Ok(Some(crate::entry::server::replica::ReplicaOptions {
        etcd: crate::edges::etcd::EtcdOptions {
            endpoints: args
                .etcd_endpoints
                .iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect(),
            ca_file: args.etcd_ca_file.clone(),
            cert_file: args.etcd_cert_file.clone(),
            key_file: args.etcd_key_file.clone(),
            user: args.etcd_user.clone(),
            password,
            timeout: (args.lease_ttl / 3).max(std::time::Duration::from_secs(1)),
        },
        prefix: args.etcd_prefix.clone(),
        lease_ttl: args.lease_ttl,
        advertise_url: args.advertise_url.clone().unwrap_or_default(),
        shard: 0,
        shards: args.shards,
        replica_id,
    }))
}

/// The kernel's hostname (a pod's name under Kubernetes).
fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = name.trim();
    (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
}

/// The admin (or read) tokens file: one `name:token` per line, `#` comments, tokens of at least
/// 16 characters.
fn admin_tokens(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
    let mut tokens = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, token)) = line.split_once(':') else {
            bail!("{}:{}: expected `name:token`", path.display(), i + 1);
        };
        if token.trim().len() < 16 {
            bail!(
                "{}:{}: the token of `{}` is shorter than 16 characters",
                path.display(),
                i + 1,
                name.trim()
            );
        }
        tokens.insert(name.trim().to_owned(), token.trim().to_owned());
    }
    Ok(tokens)
}

pub fn rollout(args: RolloutArgs) -> anyhow::Result<ExitCode> {
    let (action, cluster, reason, server) = match args.command {
        RolloutCommand::Wait(args) => return rollout_wait(args),
        RolloutCommand::Status(a) => (RolloutAction::Status, a.cluster, None, a.server),
        RolloutCommand::Pause(a) => (RolloutAction::Pause, Some(a.cluster), None, a.server),
        RolloutCommand::Resume(a) => (RolloutAction::Resume, Some(a.cluster), None, a.server),
        RolloutCommand::Promote(a) => (RolloutAction::Promote, Some(a.cluster), None, a.server),
        RolloutCommand::Abort(a) => (RolloutAction::Abort, Some(a.cluster), None, a.server),
        RolloutCommand::Override(a) => {
            (RolloutAction::Override, Some(a.cluster), a.reason, a.server)
        }
        RolloutCommand::Retry(a) => (RolloutAction::Retry, Some(a.cluster), a.reason, a.server),
    };
    let out = client::rollout(
        action,
        cluster,
        reason,
        &server.server,
        server.token_file,
        server.format,
    )?;
    out!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `cacheflow rollout wait`: follow the server's status until the rollout ends; exit 0
/// when it completed, 1 otherwise.
fn rollout_wait(args: super::RolloutWaitArgs) -> anyhow::Result<ExitCode> {
    let request = client::WaitRequest {
        cluster: args.cluster,
        revision: args.revision,
        timeout: args.timeout,
        interval: args.interval,
    };
    let end = client::wait(
        &request,
        &args.server.server,
        args.server.token_file.as_ref(),
    )?;
    out!("{}", end.render(args.server.format));
    Ok(if end.completed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `cacheflow completions SHELL`: the completion script on standard output.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut command = <super::Cli as clap::CommandFactory>::command();
    let mut out: Vec<u8> = Vec::new();
    clap_complete::generate(args.shell, &mut command, "cacheflow", &mut out);
    out!("{}", String::from_utf8_lossy(&out));
    Ok(ExitCode::SUCCESS)
}

/// `cacheflow man`: the manual page cacheflow(1) (roff) on standard output; with
/// `--output-dir`, that page and one per command (`cacheflow-sync.1`,
/// `cacheflow-rollout-wait.1`, ...) written into the directory.
pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    let command = <super::Cli as clap::CommandFactory>::command();
    match &args.output_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
            clap_mangen::generate_to(command, dir).map_err(|e| {
                anyhow!("cannot write the manual pages into {}: {e}", dir.display())
            })?;
            outln!("wrote the manual pages into {}", dir.display());
        }
        None => {
            let mut out: Vec<u8> = Vec::new();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .map_err(|e| anyhow!("cannot render the manual page: {e}"))?;
            out!("{}", String::from_utf8_lossy(&out));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let repo = open(&args.repo)?;
    let options = crate::flow::history::HistoryOptions {
        rev: args.rev,
        cluster: args.cluster,
        param: args.param,
        limit: args.limit,
    };
    let entries =
        crate::flow::history::history(&repo, &options).map_err(|e| anyhow!(e.to_string()))?;
    match args.format {
        Format::Text => out!("{}", crate::flow::history::text(&entries)),
        Format::Json => out!("{}", render::json(&entries)),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::entry::demo::run(crate::entry::demo::DemoOptions {
        keep: args.keep,
        serve: args.serve,
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn agent_token(args: AgentTokenArgs) -> anyhow::Result<ExitCode> {
    // The secret comes from a file or the environment, never from a flag's value (which
    // `ps` would show).
    let Some(secret) = secret(args.secret_file.as_ref(), "CACHEFLOW_NODE_TOKEN_SECRET")? else {
        bail!("no node-token secret: give --secret-file FILE or set CACHEFLOW_NODE_TOKEN_SECRET");
    };
    let token = crate::pure::identity::node_token(&secret, &args.node_id)
        .map_err(|e| anyhow!(e.to_string()))?;
    outln!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// `cacheflow agent`: build the driver, then run the agent until SIGTERM or Ctrl-C.
pub fn agent(args: AgentArgs) -> anyhow::Result<ExitCode> {
    run_agent(args)?;
    Ok(ExitCode::SUCCESS)
}

fn run_agent(args: AgentArgs) -> anyhow::Result<()> {
    use crate::edges::nodes::memcached::MemcachedDriver;
    use crate::edges::nodes::redis::RedisDriver;
    use crate::edges::nodes::NodeDriver;
    use crate::flow::agent::{self, AgentOptions, ApplyOptions};
    use crate::pure::spec::model::{Auth, SecretRef, Tls};

    let token = std::fs::read_to_string(&args.token_file).map_err(|e| {
        anyhow!(
            "cannot read the token file {}: {e}",
            args.token_file.display()
        )
    })?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        bail!("the token file {} is empty", args.token_file.display());
    }
    let file_ref = |path: &std::path::PathBuf| SecretRef(format!("file:{}", path.display()));
    let tls = args.node_ca_file.as_ref().map(|ca| Tls {
        ca: file_ref(ca),
        cert: args.node_cert_file.as_ref().map(file_ref),
        key: args.node_key_file.as_ref().map(file_ref),
        server_name: args.node_server_name.clone(),
    });
    let driver: Arc<dyn NodeDriver> = match (&args.redis, &args.memcached) {
        (Some(address), _) => {
            let auth = match &args.redis_password {
                Some(reference) => {
                    if !(reference.starts_with("env:") || reference.starts_with("file:")) {
                        bail!("--redis-password takes a reference, env:NAME or file:PATH, never the password itself");
                    }
                    Some(Auth {
                        username: args.redis_user.clone(),
                        password: SecretRef(reference.clone()),
                    })
                }
                None => None,
            };
            Arc::new(RedisDriver::new(address, auth.as_ref(), args.timeout).with_tls(tls))
        }
        (None, Some(address)) => {
            let auth = match (&args.memcached_user, &args.memcached_password) {
                (Some(user), Some(reference)) => {
                    if !(reference.starts_with("env:") || reference.starts_with("file:")) {
                        anyhow::bail!("--memcached-password takes a reference, env:NAME or file:PATH, never the password itself");
                    }
                    Some(Auth {
                        username: Some(user.clone()),
                        password: SecretRef(reference.clone()),
                    })
                }
                _ => None,
            };
            Arc::new(
                MemcachedDriver::new(address.clone())
                    .with_timeout(args.timeout)
                    .with_auth(auth)
                    .with_tls(tls),
            )
        }
        (None, None) => bail!("give --redis ADDR or --memcached ADDR"),
    };
    let mut options = AgentOptions::new(&args.node_id, &args.server, &token);
    options.interval = args.interval;
    options.node_timeout = args.timeout;
    options.max_backoff = args.max_backoff;
    options.once = args.once;
    if let Some(path) = &args.ca_file {
        options.ca_pem = Some(
            std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read the CA file {}: {e}", path.display()))?,
        );
    }
    options.apply = ApplyOptions {
        config_file: args.config_file.clone(),
        restart_command: args.restart_command.clone(),
        restart_timeout: args.restart_timeout,
        warmup: args.warmup,
        ..ApplyOptions::default()
    };
    until_signal(|stop| async move {
        agent::run(driver, options, stop).await?;
        Ok(())
    })
}

pub fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    use crate::flow::pipeline::import::{self, ImportRequest};
    use crate::pure::catalog::Engine;
    use crate::pure::spec::model::{Auth, SecretRef, Tls};

    let (engine, addresses) = if args.memcached.is_empty() {
        (Engine::Redis, args.redis)
    } else {
        (Engine::Memcached, args.memcached)
    };
    let auth = match args.auth_password_ref {
        Some(reference) => {
            if !(reference.starts_with("env:") || reference.starts_with("file:")) {
                bail!("--auth-password-ref takes a reference, env:NAME or file:PATH, never the password itself");
            }
            if engine == Engine::Memcached && args.auth_user.is_none() {
                bail!("memcached authentication (-Y) takes a user: give --auth-user too");
            }
            Some(Auth {
                username: args.auth_user,
                password: SecretRef(reference),
            })
        }
        None if args.auth_user.is_some() => bail!("--auth-user needs --auth-password-ref"),
        None => None,
    };
    // Written into the cluster file: an absolute path, so that the repository means the
    // same files wherever it is run from (symbolic links kept, for rotation).
    let file_ref = |path: &std::path::PathBuf| -> anyhow::Result<SecretRef> {
        let absolute = std::path::absolute(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(SecretRef(format!("file:{}", absolute.display())))
    };
    let tls = match &args.node_ca_file {
        Some(ca) => Some(Tls {
            ca: file_ref(ca)?,
            cert: args.node_cert_file.as_ref().map(file_ref).transpose()?,
            key: args.node_key_file.as_ref().map(file_ref).transpose()?,
            server_name: args.node_server_name.clone(),
        }),
        None => None,
    };
    let request = ImportRequest {
        cluster: args.cluster,
        engine,
        addresses,
        version: args.engine_version,
        auth,
        tls,
        output: args.output,
        timeout: args.timeout,
    };
    let imported = import::import(&request).map_err(|e| anyhow!(e))?;
    for note in &imported.notes {
        errln!("note: {note}");
    }
    for file in &imported.files {
        outln!("wrote {}", file.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn revision(rev: &str, worktree: bool) -> Revision {
    if worktree {
        Revision::Worktree
    } else {
        Revision::Rev(rev.to_owned())
    }
}

fn open(repo: &RepoArgs) -> anyhow::Result<ConfigRepo> {
    ConfigRepo::open(&repo.repo, repo.cache_dir.as_deref())
        .and_then(|r| r.with_root(&repo.path))
        .map_err(|e| anyhow!(redact_url(&e.to_string())))
}

/// A snapshot file, or the nodes read straight away.
fn live_source<'a>(live: Option<&'a Path>, direct: bool, reach: &ReachArgs) -> LiveSource<'a> {
    match (live, direct) {
        (Some(path), false) => LiveSource::File(path),
        _ => LiveSource::Direct(reach.options()),
    }
}

/// Print a diff, plan or drift report; exit 2 when it has changes, 0 when there is
/// nothing to do.
fn print_with_changes(out: &str, changes: bool) -> ExitCode {
    out!("{out}");
    if changes {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// A pipeline error as the command's error; an invalid revision first prints its
/// diagnostics (on standard output: they are the command's answer).
fn pipeline_failed(e: PipelineError, json: bool) -> anyhow::Error {
    if let PipelineError::Invalid {
        revision,
        diagnostics,
    } = &e
    {
        if json {
            out!(
                "{}",
                render::json(&serde_json::json!({
                    "error": format!("{revision} is invalid"),
                    "errors": diagnostics,
                }))
            );
        } else {
            for d in diagnostics {
                outln!("{d}");
            }
        }
    }
    anyhow!(e.to_string())
}

/// `drift.md`, `drift.json` and `drift.html` in `dir` (created if missing).
fn write_drift_files(dir: &Path, report: &DriftReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("{}: {e}", dir.display()))?;
    for (name, body) in [
        ("drift.md", crate::pure::drift::markdown(report)),
        ("drift.json", render::json(report)),
        ("drift.html", crate::pure::drift::html(report, &[])),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// A secret from a file (trailing newline dropped) or, failing that, the environment.
pub(super) fn secret(file: Option<&PathBuf>, env: &str) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(path) = file {
        let mut bytes =
            std::fs::read(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            bail!("{} is empty", path.display());
        }
        return Ok(Some(bytes));
    }
    Ok(std::env::var(env)
        .ok()
        .filter(|v| !v.is_empty())
        .map(String::into_bytes))
}

/// Run `body` on a two-thread runtime; the receiver it gets turns true on SIGTERM or
/// Ctrl-C (the long-running commands finish their current step and return).
fn until_signal<F, Fut>(body: F) -> anyhow::Result<()>
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| anyhow!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("stopping after the current step");
            let _ = stop_tx.send(true);
        });
        body(stop_rx).await
    })
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
