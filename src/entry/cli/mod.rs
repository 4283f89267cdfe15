//! The command line: parse arguments (clap), call the pipeline, render, and map outcomes
//! to the exit codes of DESIGN.md (validate: 0 valid / 1 invalid or error; diff and plan:
//! 0 nothing to do / 2 changes / 1 error).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use std::time::Duration;

use crate::edges::nodes::fleet::SnapshotOptions;
use crate::edges::source::{redact_url, ConfigRepo};
use crate::entry::server::error::ErrorBody;
use crate::flow::pipeline::{self, LiveSource, PipelineError, Revision};
use crate::pure::render;
use crate::pure::render::status::{CommandAnswer, Rollouts};

#[derive(Debug, Parser)]
#[command(
    name = "cacheflow",
    version,
    about = "GitOps for cache fleets: validate, diff and plan Redis and Memcached configuration kept in Git",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format on standard error.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CACHEFLOW_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RichFormat {
    Text,
    Json,
    Markdown,
}

/// `drift`'s formats: the three report files, or text for a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
    Markdown,
    Html,
}

#[derive(Debug, Args)]
pub struct RepoArgs {
    /// The config repository: a local path or a URL (cloned into the cache directory).
    #[arg(long, default_value = ".", env = "CACHEFLOW_REPO")]
    pub repo: String,
    /// Where clones of remote repositories are kept.
    #[arg(long, env = "CACHEFLOW_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate every document of a revision: schema, engine parameters, references,
    /// policies. Exit 0 when valid, 1 otherwise.
    Validate {
        #[command(flatten)]
        repo: RepoArgs,
        /// The revision to read from the object database.
        #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
        rev: String,
        /// Read the uncommitted files of the working tree instead.
        #[arg(long)]
        worktree: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// What a change does, per cluster, with risk flags. Exit 0 no change, 2 changes, 1 error.
    Diff {
        #[command(flatten)]
        repo: RepoArgs,
        /// The revision the change starts from (the pull request's base).
        #[arg(long)]
        base: String,
        /// The revision the change ends at.
        #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
        head: String,
        /// Compare against the uncommitted working tree instead of --head.
        #[arg(long)]
        worktree: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: RichFormat,
    },
    /// Desired state against a live-state snapshot: per-node changes, risks, staged
    /// batches. Exit 0 converged, 2 changes, 1 error.
    Plan {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
        rev: String,
        #[arg(long)]
        worktree: bool,
        /// A live-state snapshot (JSON, schemas/live-state.schema.json).
        #[arg(long, required_unless_present = "direct", conflicts_with = "direct")]
        live: Option<PathBuf>,
        /// Read the live state straight from the nodes instead (as `snapshot` does).
        #[arg(long)]
        direct: bool,
        #[command(flatten)]
        reach: ReachArgs,
        #[arg(long, value_enum, default_value = "text")]
        format: RichFormat,
    },
    /// Where the live nodes have drifted from the declared state: values changed by
    /// hand, values set live but not in the config file (lost on restart), silent and
    /// undeclared nodes. Exit 0 no drift, 2 drift, 1 error.
    Drift {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
        rev: String,
        #[arg(long)]
        worktree: bool,
        /// A live-state snapshot (JSON, as `snapshot` writes it).
        #[arg(long, required_unless_present_any = ["direct", "server"], conflicts_with_all = ["direct", "server"])]
        live: Option<PathBuf>,
        /// Read the nodes straight away (as `snapshot` does).
        #[arg(long, conflicts_with = "server")]
        direct: bool,
        /// Ask a cacheflow server (http://host:port): its revision against its nodes'
        /// latest reports (needs an admin token).
        #[arg(long)]
        server: Option<String>,
        /// A file holding an admin token for --server (or set CACHEFLOW_ADMIN_TOKEN).
        #[arg(long, env = "CACHEFLOW_ADMIN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        reach: ReachArgs,
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
        /// Also write the report as drift.md, drift.json and drift.html into this directory.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
    /// Read every declared node straight from the nodes: parameters, version, health, and
    /// the config file's view. Writes the live-state JSON that `plan --live` reads.
    /// Unreachable nodes are reported in it, not fatal. Exit 0, or 1 on error.
    Snapshot {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
        rev: String,
        #[arg(long)]
        worktree: bool,
        /// Only the nodes of this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Write the snapshot here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        reach: ReachArgs,
        /// json: the snapshot; text: a line per node.
        #[arg(long, value_enum, default_value = "json")]
        format: Format,
    },
    /// One staged rollout in the foreground against the directly managed nodes: shows
    /// the plan, asks (unless --yes), then canary, batches and gates with progress, and a
    /// summary. Ctrl-C pauses safely; running it again resumes. Exit 0 converged, 1
    /// failed, rolled back, paused or not applied.
    Sync {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, default_value = "HEAD")]
        rev: String,
        /// Apply without asking.
        #[arg(long)]
        yes: bool,
        /// Time between readings of idle nodes (the gates' data).
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        interval: Duration,
        /// Roll out now even outside the rollout windows; the reason is journaled with
        /// your user name.
        #[arg(long, value_name = "REASON")]
        override_window: Option<String>,
        #[command(flatten)]
        reach: ReachArgs,
        /// text: plan, progress and summary; json: the summary only.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// The reconciler as a server: follows the config repository's branch (webhooks and
    /// polling), rolls each valid new revision out in stages behind health gates, takes
    /// node reports and answers with assignments, serves the status API and /metrics.
    /// Runs until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Look at or steer rollouts on a running server: status, pause, resume, promote
    /// (skip the rest of the bake), abort (roll back), override (start batches outside
    /// the rollout windows; needs --reason). Exit 0, or 1 on error.
    Rollout {
        #[arg(value_enum)]
        action: RolloutAction,
        /// The cluster (required except for status).
        cluster: Option<String>,
        /// Why the windows are overridden (override only; journaled with the token's name).
        #[arg(long)]
        reason: Option<String>,
        /// The cacheflow server (http://host:port).
        #[arg(long, env = "CACHEFLOW_SERVER")]
        server: String,
        /// A file holding an admin token (or set CACHEFLOW_ADMIN_TOKEN).
        #[arg(long, env = "CACHEFLOW_ADMIN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// One timeline of config commits (author, message, parameters changed) with what
    /// the reconciler noted on each (completed, rolled back and why, refused). Exit 0.
    History {
        #[command(flatten)]
        repo: RepoArgs,
        #[arg(long, default_value = "HEAD")]
        rev: String,
        /// Only changes to this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// Only changes of this parameter.
        #[arg(long)]
        param: Option<String>,
        /// At most this many commits.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Run beside one cache server: report it to the cacheflow server every interval,
    /// apply the assignment the server answers with (restarting the engine for
    /// start-only parameters when allowed), report the result at once. Runs until
    /// SIGTERM or Ctrl-C; with --once, one exchange (exit 0 done, 1 failed).
    Agent(Box<AgentArgs>),
    /// The whole loop on a simulated fleet, no setup: a copy of the example repository
    /// in a temporary git repository, a change rolled out in stages, a change whose
    /// canary fails its gates and is rolled back, a hand-made drift and its report, the
    /// history. About 15 seconds. Exit 0, or 1 if something went wrong.
    Demo {
        /// Keep the demo's repository in this directory (new or empty) to explore it
        /// afterwards (`cacheflow history --repo DIR`, `git log --notes=cacheflow`).
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
    /// Print the token the agent of NODE_ID presents to the server: an HMAC of the node
    /// id under the server's node-token secret, so no node can report as another.
    AgentToken {
        /// The node's id, as declared in its cluster.
        node_id: String,
        /// A file holding the server's node-token secret (at least 16 bytes).
        #[arg(long, env = "CACHEFLOW_NODE_TOKEN_SECRET_FILE")]
        secret_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RolloutAction {
    Status,
    Pause,
    Resume,
    Promote,
    Abort,
    Override,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config repository: a URL (mirrored into the state directory) or a local path.
    #[arg(long, env = "CACHEFLOW_REPO")]
    pub repo: String,
    /// The branch whose head is rolled out.
    #[arg(long, default_value = "main", env = "CACHEFLOW_BRANCH")]
    pub branch: String,
    /// Where the mirror (with the journal and notes) is kept.
    #[arg(long, env = "CACHEFLOW_STATE_DIR")]
    pub state_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:8080", env = "CACHEFLOW_LISTEN")]
    pub listen: std::net::SocketAddr,
    /// How often the repository is fetched without a webhook.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "CACHEFLOW_POLL_INTERVAL")]
    pub poll_interval: Duration,
    /// A file holding the webhooks' shared secret (or set CACHEFLOW_WEBHOOK_SECRET).
    #[arg(long, env = "CACHEFLOW_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// A file holding the node-token secret (or set CACHEFLOW_NODE_TOKEN_SECRET).
    #[arg(long, env = "CACHEFLOW_NODE_TOKEN_SECRET_FILE")]
    pub node_token_secret_file: Option<PathBuf>,
    /// A file of admin tokens, one `name:token` per line; the name is journaled with
    /// every command given with the token.
    #[arg(long, env = "CACHEFLOW_ADMIN_TOKENS_FILE")]
    pub admin_tokens_file: Option<PathBuf>,
    /// Push refs/cacheflow/journal and refs/notes/cacheflow to the remote.
    #[arg(long, env = "CACHEFLOW_PUSH_AUDIT")]
    pub push_audit: bool,
    /// How often directly managed nodes are read (the gates' data).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub direct_interval: Duration,
    /// How long one node may take to answer.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// After a restart, how long a rollout in flight waits for the nodes to report again
    /// before it judges gates or times out (at least the agents' report interval).
    #[arg(long, default_value = "65s", value_parser = parse_duration)]
    pub resume_grace: Duration,
    /// A node whose last report is older than this is silent in drift reports (at least
    /// twice the agents' report interval).
    #[arg(long, default_value = "2m", value_parser = parse_duration, env = "CACHEFLOW_SILENT_AFTER")]
    pub silent_after: Duration,
    /// The forge's REST API for pull-request feedback: https://api.github.com (the
    /// default), https://gitea.example.com/api/v1, https://gitlab.example.com/api/v4.
    #[arg(long, env = "CACHEFLOW_FORGE_API_URL")]
    pub forge_api_url: Option<String>,
    /// A file holding the token pull-request feedback posts with (or set
    /// CACHEFLOW_FORGE_TOKEN); without one, pull requests get no feedback.
    #[arg(long, env = "CACHEFLOW_FORGE_TOKEN_FILE")]
    pub forge_token_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// This node's id, as declared in its cluster.
    #[arg(long, env = "CACHEFLOW_NODE_ID")]
    pub node_id: String,
    /// The cacheflow server (http://host:port or https://host:port).
    #[arg(long, env = "CACHEFLOW_SERVER")]
    pub server: String,
    /// A file holding this node's token (`cacheflow agent-token NODE_ID` prints it).
    #[arg(long, env = "CACHEFLOW_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// The Redis server to manage, host:port.
    #[arg(
        long,
        required_unless_present = "memcached",
        conflicts_with = "memcached"
    )]
    pub redis: Option<String>,
    /// The memcached server to manage, host:port.
    #[arg(long)]
    pub memcached: Option<String>,
    /// Redis ACL user name.
    #[arg(long, requires = "redis_password")]
    pub redis_user: Option<String>,
    /// Redis password as a reference: env:NAME or file:PATH (never the password itself).
    #[arg(long)]
    pub redis_password: Option<String>,
    /// Time between reports.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long the node may take to answer one read.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// The engine's config file (Redis) or options file (memcached, e.g.
    /// /etc/memcached.conf) where start-only parameters are written.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// A shell command that restarts the engine, e.g. `systemctl restart redis-server`.
    /// It gets CACHEFLOW_CONFIG_FILE in its environment.
    #[arg(long)]
    pub restart_command: Option<String>,
    /// How long the restart command and the engine's coming back may take.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub restart_timeout: Duration,
    /// Time to wait after a restart before reporting the node ready (0s for none).
    #[arg(long, default_value = "10s", value_parser = parse_duration_or_zero)]
    pub warmup: Duration,
    /// Longest pause between attempts while the server cannot be reached.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub max_backoff: Duration,
    /// One exchange: report, apply the assignment if there is a new one, report the
    /// result, exit (0 done, 1 failed).
    #[arg(long)]
    pub once: bool,
}

/// How nodes are reached.
#[derive(Debug, Args)]
pub struct ReachArgs {
    /// How long one node may take to answer (30s, 500ms).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Nodes read at the same time.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

impl ReachArgs {
    fn options(&self) -> SnapshotOptions {
        SnapshotOptions {
            concurrency: self.concurrency,
            timeout: self.timeout,
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::pure::catalog::parse_duration_micros(text)
        .filter(|us| *us > 0)
        .map(Duration::from_micros)
        .ok_or_else(|| format!("`{text}` is not a duration such as 2s or 500ms"))
}

fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    match text.trim() {
        "0" | "0s" | "0ms" => Ok(Duration::ZERO),
        _ => parse_duration(text),
    }
}

fn revision(rev: &str, worktree: bool) -> Revision {
    if worktree {
        Revision::Worktree
    } else {
        Revision::Rev(rev.to_owned())
    }
}

fn open(repo: &RepoArgs) -> Result<ConfigRepo, String> {
    ConfigRepo::open(&repo.repo, repo.cache_dir.as_deref()).map_err(|e| redact_url(&e.to_string()))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CACHEFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling `run` twice) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Print a diff or plan; exit 2 when it has changes, 0 when there is nothing to do.
fn print_with_changes(out: &str, changes: bool) -> ExitCode {
    print!("{out}");
    if changes {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// `drift.md`, `drift.json` and `drift.html` in `dir` (created if missing).
/// The drift report of a server at this moment (`GET /api/v1/drift`).
fn server_drift(
    server: &str,
    token_file: Option<&PathBuf>,
) -> Result<crate::pure::drift::DriftReport, String> {
    let server = server.trim_end_matches('/');
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(format!(
            "the server URL `{}` must start with http:// or https://",
            redact_url(server)
        ));
    }
    let token = secret(token_file, "CACHEFLOW_ADMIN_TOKEN")?
        .map(|t| String::from_utf8_lossy(&t).trim().to_owned())
        .ok_or("an admin token is required: --token-file FILE or CACHEFLOW_ADMIN_TOKEN")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        let response = client
            .get(format!("{server}/api/v1/drift"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("{}: {e}", redact_url(server)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("{}: {e}", redact_url(server)))?;
        if !status.is_success() {
            return Err(format!(
                "{}: {status}: {}",
                redact_url(server),
                ErrorBody::reason(&bytes)
            ));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("the server's drift report ({status}) does not parse: {e}"))
    })
}

fn write_drift_files(
    dir: &std::path::Path,
    report: &crate::pure::drift::DriftReport,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, body) in [
        ("drift.md", crate::pure::drift::markdown(report)),
        ("drift.json", render::json(report)),
        ("drift.html", crate::pure::drift::html(report, &[])),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Print an error and return exit code 1.
fn fail(message: &str) -> ExitCode {
    eprintln!("error: {}", redact_url(message));
    ExitCode::from(1)
}

/// Print a pipeline error: invalid revisions list their diagnostics.
fn fail_pipeline(e: PipelineError, json: bool) -> ExitCode {
    if let PipelineError::Invalid {
        revision,
        diagnostics,
    } = &e
    {
        if json {
            print!(
                "{}",
                render::json(&serde_json::json!({
                    "error": format!("{revision} is invalid"),
                    "errors": diagnostics,
                }))
            );
        } else {
            for d in diagnostics {
                println!("{d}");
            }
        }
    }
    fail(&e.to_string())
}

/// Run the command line; returns the process exit code.
impl Cli {
    /// True when the command reads a local repository and opens no TLS connection
    /// (see [`crate::edges::source::skip_tls_roots`]).
    pub fn local_only(&self) -> bool {
        let repo = match &self.command {
            Command::Validate { repo, .. }
            | Command::Diff { repo, .. }
            | Command::Plan { repo, .. }
            | Command::Drift { repo, .. }
            | Command::Snapshot { repo, .. }
            | Command::Sync { repo, .. }
            | Command::History { repo, .. } => &repo.repo,
            Command::Demo { .. } => return true,
            _ => return false,
        };
        !crate::edges::source::is_url(repo)
    }
}

pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.log_format);
    match cli.command {
        Command::Validate {
            repo,
            rev,
            worktree,
            format,
        } => {
            let repo = match open(&repo) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            match pipeline::validate(&repo, &revision(&rev, worktree)) {
                Ok((commit, result)) => {
                    let out = match format {
                        Format::Text => render::validate_text(commit.as_deref(), &result),
                        Format::Json => render::validate_json(commit.as_deref(), &result),
                    };
                    print!("{out}");
                    let code = if result.is_ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    };
                    // The process ends next: freeing a model of 10,000 clusters node by
                    // node would cost tens of milliseconds and give nothing back.
                    std::mem::forget(result);
                    code
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Diff {
            repo,
            base,
            head,
            worktree,
            format,
        } => {
            let repo = match open(&repo) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            match pipeline::diff(&repo, &base, &revision(&head, worktree)) {
                Ok(cs) => {
                    let out = match format {
                        RichFormat::Text => render::diff_text(&cs),
                        RichFormat::Json => render::json(&cs),
                        RichFormat::Markdown => render::diff_markdown(&cs),
                    };
                    print_with_changes(&out, !cs.is_empty())
                }
                Err(e) => fail_pipeline(e, format == RichFormat::Json),
            }
        }
        Command::Plan {
            repo,
            rev,
            worktree,
            live,
            direct,
            reach,
            format,
        } => {
            let repo = match open(&repo) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            let source = match (&live, direct) {
                (Some(path), false) => LiveSource::File(path),
                _ => LiveSource::Direct(reach.options()),
            };
            match pipeline::plan(&repo, &revision(&rev, worktree), source) {
                Ok(plan) => {
                    let out = match format {
                        RichFormat::Text => render::plan_text(&plan),
                        RichFormat::Json => render::json(&plan),
                        RichFormat::Markdown => render::plan_markdown(&plan),
                    };
                    print_with_changes(&out, !plan.converged())
                }
                Err(e) => fail_pipeline(e, format == RichFormat::Json),
            }
        }
        Command::Drift {
            repo,
            rev,
            worktree,
            live,
            direct,
            server,
            token_file,
            reach,
            format,
            output_dir,
        } => {
            let report = if let Some(server) = &server {
                match server_drift(server, token_file.as_ref()) {
                    Ok(r) => Ok(r),
                    Err(e) => return fail(&e),
                }
            } else {
                let repo = match open(&repo) {
                    Ok(r) => r,
                    Err(e) => return fail(&e),
                };
                let source = match (&live, direct) {
                    (Some(path), false) => LiveSource::File(path),
                    _ => LiveSource::Direct(reach.options()),
                };
                pipeline::drift(&repo, &revision(&rev, worktree), source)
            };
            match report {
                Ok(report) => {
                    if let Some(dir) = &output_dir {
                        if let Err(e) = write_drift_files(dir, &report) {
                            return fail(&e);
                        }
                    }
                    let out = match format {
                        ReportFormat::Text => crate::pure::drift::text(&report),
                        ReportFormat::Json => render::json(&report),
                        ReportFormat::Markdown => crate::pure::drift::markdown(&report),
                        ReportFormat::Html => crate::pure::drift::html(&report, &[]),
                    };
                    print_with_changes(&out, !report.clean())
                }
                Err(e) => fail_pipeline(e, format == ReportFormat::Json),
            }
        }
        Command::Sync {
            repo,
            rev,
            yes,
            interval,
            override_window,
            reach,
            format,
        } => {
            let repo = match open(&repo) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            if override_window
                .as_deref()
                .is_some_and(|r| r.trim().is_empty())
            {
                return fail("--override-window needs a reason (it is journaled)");
            }
            let options = crate::entry::sync::SyncOptions {
                rev,
                yes,
                reach: reach.options(),
                interval,
                override_window,
                json: format == Format::Json,
            };
            match crate::entry::sync::sync(&repo, options) {
                Ok(summary) => {
                    if format == Format::Json {
                        print!("{}", render::json(&summary));
                    }
                    if summary.ok() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(crate::entry::sync::SyncError::Pipeline(e)) => {
                    fail_pipeline(e, format == Format::Json)
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Serve(args) => match run_serve(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Rollout {
            action,
            cluster,
            reason,
            server,
            token_file,
            format,
        } => match run_rollout(action, cluster, reason, &server, token_file, format) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::History {
            repo,
            rev,
            cluster,
            param,
            limit,
            format,
        } => {
            let repo = match open(&repo) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            let options = crate::flow::history::HistoryOptions {
                rev,
                cluster,
                param,
                limit,
            };
            match crate::flow::history::history(&repo, &options) {
                Ok(entries) => {
                    match format {
                        Format::Text => print!("{}", crate::flow::history::text(&entries)),
                        Format::Json => print!("{}", render::json(&entries)),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Demo { keep } => {
            match crate::entry::demo::run(crate::entry::demo::DemoOptions { keep }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Command::Agent(args) => match run_agent(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::AgentToken {
            node_id,
            secret_file,
        } => {
            // The secret comes from a file or the environment, never from a flag's value
            // (which `ps` would show).
            let secret = match secret(secret_file.as_ref(), "CACHEFLOW_NODE_TOKEN_SECRET") {
                Ok(Some(bytes)) => bytes,
                Ok(None) => {
                    return fail("no node-token secret: give --secret-file FILE or set CACHEFLOW_NODE_TOKEN_SECRET")
                }
                Err(e) => return fail(&e),
            };
            match crate::pure::identity::node_token(&secret, &node_id) {
                Ok(token) => {
                    println!("{token}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::Snapshot {
            repo,
            rev,
            worktree,
            cluster,
            output,
            reach,
            format,
        } => {
            let repo = match open(&repo) {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            let state = pipeline::desired(&repo, &revision(&rev, worktree))
                .and_then(|d| pipeline::snapshot(&d, cluster.as_deref(), reach.options()));
            let state = match state {
                Ok(s) => s,
                Err(e) => return fail_pipeline(e, format == Format::Json),
            };
            let text = match format {
                Format::Json => render::json(&state),
                Format::Text => render::snapshot_text(&state),
            };
            match output {
                Some(path) => {
                    if let Err(e) = std::fs::write(&path, text) {
                        return fail(&format!("cannot write {}: {e}", path.display()));
                    }
                }
                None => print!("{text}"),
            }
            ExitCode::SUCCESS
        }
    }
}

/// `cacheflow agent`: build the driver, then run the agent until SIGTERM or Ctrl-C.
fn run_agent(args: AgentArgs) -> Result<(), String> {
    use crate::edges::nodes::memcached::MemcachedDriver;
    use crate::edges::nodes::redis::RedisDriver;
    use crate::edges::nodes::NodeDriver;
    use crate::flow::agent::{self, AgentOptions, ApplyOptions};
    use crate::pure::spec::model::{Auth, SecretRef};
    use std::sync::Arc;

    let token = std::fs::read_to_string(&args.token_file).map_err(|e| {
        format!(
            "cannot read the token file {}: {e}",
            args.token_file.display()
        )
    })?;
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err(format!(
            "the token file {} is empty",
            args.token_file.display()
        ));
    }
    let driver: Arc<dyn NodeDriver> = match (&args.redis, &args.memcached) {
        (Some(address), _) => {
            let auth = match &args.redis_password {
                Some(reference) => {
                    if !(reference.starts_with("env:") || reference.starts_with("file:")) {
                        return Err("--redis-password takes a reference, env:NAME or file:PATH, never the password itself".to_owned());
                    }
                    Some(Auth {
                        username: args.redis_user.clone(),
                        password: SecretRef(reference.clone()),
                    })
                }
                None => None,
            };
            Arc::new(RedisDriver::new(address, auth.as_ref(), args.timeout))
        }
        (None, Some(address)) => {
            Arc::new(MemcachedDriver::new(address.clone()).with_timeout(args.timeout))
        }
        (None, None) => return Err("give --redis ADDR or --memcached ADDR".to_owned()),
    };
    let mut options = AgentOptions::new(&args.node_id, &args.server, &token);
    options.interval = args.interval;
    options.node_timeout = args.timeout;
    options.max_backoff = args.max_backoff;
    options.once = args.once;
    options.apply = ApplyOptions {
        config_file: args.config_file.clone(),
        restart_command: args.restart_command.clone(),
        restart_timeout: args.restart_timeout,
        warmup: args.warmup,
        ..ApplyOptions::default()
    };
    until_signal(|stop| async move {
        agent::run(driver, options, stop)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

/// Run `body` on a two-thread runtime; the receiver it gets turns true on SIGTERM or
/// Ctrl-C (the long-running commands finish their current step and return).
fn until_signal<F, Fut>(body: F) -> Result<(), String>
where
    F: FnOnce(tokio::sync::watch::Receiver<bool>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
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

/// A secret from a file (trailing newline dropped) or, failing that, the environment.
fn secret(file: Option<&PathBuf>, env: &str) -> Result<Option<Vec<u8>>, String> {
    if let Some(path) = file {
        let mut bytes =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            bytes.pop();
        }
        if bytes.is_empty() {
            return Err(format!("{} is empty", path.display()));
        }
        return Ok(Some(bytes));
    }
    Ok(std::env::var(env)
        .ok()
        .filter(|v| !v.is_empty())
        .map(String::into_bytes))
}

fn run_serve(args: ServeArgs) -> Result<(), String> {
    use std::collections::BTreeMap;
    let mut admin_tokens = BTreeMap::new();
    if let Some(path) = &args.admin_tokens_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, token)) = line.split_once(':') else {
                return Err(format!(
                    "{}:{}: expected `name:token`",
                    path.display(),
                    i + 1
                ));
            };
            if token.trim().len() < 16 {
                return Err(format!(
                    "{}:{}: the token of `{}` is shorter than 16 characters",
                    path.display(),
                    i + 1,
                    name.trim()
                ));
            }
            admin_tokens.insert(name.trim().to_owned(), token.trim().to_owned());
        }
    }
    let options = crate::entry::server::ServeOptions {
        repo: args.repo,
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
        push_audit: args.push_audit,
        direct_interval: args.direct_interval,
        node_timeout: args.timeout,
        resume_grace: args.resume_grace,
        silent_after: args.silent_after,
        forge_api_url: args.forge_api_url,
        forge_token: secret(args.forge_token_file.as_ref(), "CACHEFLOW_FORGE_TOKEN")?
            .map(|t| String::from_utf8_lossy(&t).trim().to_owned()),
    };
    until_signal(|stop| async move {
        crate::entry::server::serve(options, stop)
            .await
            .map_err(|e| e.to_string())
    })
}

fn run_rollout(
    action: RolloutAction,
    cluster: Option<String>,
    reason: Option<String>,
    server: &str,
    token_file: Option<PathBuf>,
    format: Format,
) -> Result<String, String> {
    let server = server.trim_end_matches('/');
    if !(server.starts_with("http://") || server.starts_with("https://")) {
        return Err(format!(
            "the server URL `{}` must start with http:// or https://",
            redact_url(server)
        ));
    }
    let reason = reason.filter(|r| !r.trim().is_empty());
    match (action, &reason) {
        (RolloutAction::Override, None) => {
            return Err("override needs --reason REASON (it is journaled)".into())
        }
        (RolloutAction::Override, Some(_)) | (_, None) => {}
        (_, Some(_)) => return Err("--reason is for override only".into()),
    }
    let token = secret(token_file.as_ref(), "CACHEFLOW_ADMIN_TOKEN")?
        .map(|t| String::from_utf8_lossy(&t).trim().to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let request = match action {
            RolloutAction::Status => client.get(format!("{server}/api/v1/rollouts")),
            other => {
                let cluster = cluster
                    .clone()
                    .ok_or("give the cluster: cacheflow rollout ACTION CLUSTER")?;
                let token = token.ok_or(
                    "an admin token is required: --token-file FILE or CACHEFLOW_ADMIN_TOKEN",
                )?;
                let verb = format!("{other:?}").to_lowercase();
                let body = serde_json::json!({ "reason": reason });
                client
                    .post(format!("{server}/api/v1/rollouts/{cluster}/{verb}"))
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body.to_string())
            }
        };
        let response = request
            .send()
            .await
            .map_err(|e| format!("{}: {e}", redact_url(server)))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("{}: {e}", redact_url(server)))?;
        if !status.is_success() {
            return Err(format!("{status}: {}", ErrorBody::reason(&bytes)));
        }
        let not_json = |e: serde_json::Error| format!("the server's answer ({status}): {e}");
        if format == Format::Json {
            let body: serde_json::Value = serde_json::from_slice(&bytes).map_err(not_json)?;
            return Ok(render::json(&body));
        }
        Ok(match action {
            RolloutAction::Status => serde_json::from_slice::<Rollouts>(&bytes)
                .map_err(not_json)?
                .text(cluster.as_deref()),
            _ => serde_json::from_slice::<CommandAnswer>(&bytes)
                .map_err(not_json)?
                .cluster
                .map(|c| c.text())
                .unwrap_or_default(),
        })
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    fn local_only(args: &[&str]) -> bool {
        Cli::try_parse_from(args)
            .expect("arguments parse")
            .local_only()
    }

    #[test]
    fn only_local_repositories_without_tls_skip_the_ca_bundle() {
        assert!(local_only(&["cacheflow", "validate", "--repo", "./config"]));
        assert!(local_only(&[
            "cacheflow",
            "sync",
            "--repo",
            "/srv/config",
            "--yes"
        ]));
        assert!(!local_only(&[
            "cacheflow",
            "validate",
            "--repo",
            "https://github.com/o/r.git"
        ]));
        assert!(!local_only(&[
            "cacheflow",
            "diff",
            "--repo",
            "git@github.com:o/r.git",
            "--base",
            "HEAD~1"
        ]));
        // The server, the agent and the rollout client may speak TLS.
        assert!(!local_only(&[
            "cacheflow",
            "rollout",
            "--server",
            "https://cacheflow.example",
            "status",
            "c"
        ]));
    }
}
