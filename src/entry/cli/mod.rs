//! The command line: the arguments (clap) and a short dispatch to one function per
//! command (`commands.rs`; `client.rs` for the commands that ask a running server). Exit
//! codes as in DESIGN.md (validate: 0 valid / 1 invalid or error; diff, plan and drift:
//! 0 nothing to do / 2 changes / 1 error). Help is wrapped to the terminal, every command
//! has examples (`after_help`), and `completions` and `man` are written from this same
//! description; `style.rs` decides whether output is coloured.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use std::time::Duration;

use crate::edges::nodes::fleet::SnapshotOptions;
use crate::edges::redact::redact_url;
use crate::entry::output::{self, errln};

mod client;
mod commands;
mod style;

/// `--version`: the package version, the commit and the day it was built (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CACHEFLOW_COMMIT_SHORT"),
    ", built ",
    env!("CACHEFLOW_BUILD_DATE"),
    ")"
);

const EXAMPLES: &str = "\
Examples:
  cacheflow validate --repo ./config
  cacheflow diff --base origin/main --head HEAD
  cacheflow sync --yes
  cacheflow rollout status --server http://cacheflow:8080
  cacheflow demo

Exit codes: 0 success, 2 changes found (diff, plan, drift), 1 everything else.
Colour: on a terminal unless NO_COLOR is set; --color always|never decides.";

#[derive(Debug, Parser)]
#[command(
    name = "cacheflow",
    version = VERSION,
    about = "GitOps for cache fleets: validate, diff and plan Redis and Memcached configuration kept in Git",
    after_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Colour the output: auto (on a terminal, unless NO_COLOR is set; CLICOLOR_FORCE
    /// forces it), always or never.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN"
    )]
    pub color: ColorChoice,
    /// Log format on standard error: `text` for people, `json` for a log store (one
    /// object per line, with `event`, `cluster`, `revision`, `node` and `batch` fields).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CACHEFLOW_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
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
    /// The config root inside the repository, for a monorepo: the directory that holds
    /// `cacheflow.yaml` (default: the repository's root).
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        env = "CACHEFLOW_PATH"
    )]
    pub path: String,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate every document of a revision: schema, engine parameters, references,
    /// policies. Exit 0 when valid, 1 otherwise.
    #[command(
        after_help = "Examples:\n  cacheflow validate                      # HEAD of the repository here\n  cacheflow validate --worktree           # the uncommitted files\n  cacheflow validate --repo https://github.com/acme/cache-config.git --format json"
    )]
    Validate(ValidateArgs),
    /// What a change does, per cluster, with risk flags. Exit 0 no change, 2 changes, 1 error.
    #[command(
        after_help = "Examples:\n  cacheflow diff --base origin/main              # HEAD against the branch\n  cacheflow diff --base HEAD --worktree          # uncommitted changes\n  cacheflow diff --base origin/main --format markdown > comment.md"
    )]
    Diff(DiffArgs),
    /// Desired state against a live-state snapshot: per-node changes, risks, staged
    /// batches. Exit 0 converged, 2 changes, 1 error.
    #[command(
        after_help = "Examples:\n  cacheflow snapshot -o live.json && cacheflow plan --live live.json\n  cacheflow plan --direct                        # read the nodes now\n  cacheflow plan --direct --format json"
    )]
    Plan(PlanArgs),
    /// Where the live nodes have drifted from the declared state: values changed by
    /// hand, values set live but not in the config file (lost on restart), silent and
    /// undeclared nodes. Exit 0 no drift, 2 drift, 1 error.
    #[command(
        after_help = "Examples:\n  cacheflow drift --direct\n  cacheflow drift --live live.json --format markdown\n  cacheflow drift --server http://cacheflow:8080 --token-file ~/.cacheflow-admin --output-dir report/"
    )]
    Drift(DriftArgs),
    /// Read every declared node straight from the nodes: parameters, version, health, and
    /// the config file's view. Writes the live-state JSON that `plan --live` reads.
    /// Unreachable nodes are reported in it, not fatal. Exit 0, or 1 on error.
    #[command(
        after_help = "Examples:\n  cacheflow snapshot -o live.json\n  cacheflow snapshot --cluster sessions-eu --format text"
    )]
    Snapshot(SnapshotArgs),
    /// Read running nodes and write the cluster file that describes them
    /// (clusters/NAME.yaml, and a cacheflow.yaml when the directory has none): engine,
    /// version, the parameters that differ from the version's defaults, nodes with roles
    /// and shards from replication, auth as a secret reference. Never overwrites a
    /// cluster file. Exit 0 written, 1 error (nothing written).
    #[command(
        after_help = "Examples:\n  cacheflow import --cluster sessions-eu --redis 10.0.0.1:6379,10.0.0.2:6379\n  cacheflow import --cluster pages --memcached 10.0.1.1:11211 --output ./config"
    )]
    Import(ImportArgs),
    /// One staged rollout in the foreground against the directly managed nodes: shows
    /// the plan, asks (unless --yes), then canary, batches and gates with progress, and a
    /// summary. Ctrl-C pauses safely; running it again resumes. Exit 0 converged, 1
    /// failed, rolled back, paused or not applied.
    #[command(
        after_help = "Examples:\n  cacheflow sync                         # shows the plan, asks, rolls out\n  cacheflow sync --yes --cluster sessions-eu\n  cacheflow sync --yes --format json     # the summary only, for scripts"
    )]
    Sync(SyncArgs),
    /// The reconciler as a server: follows the config repository's branch (webhooks and
    /// polling), rolls each valid new revision out in stages behind health gates, takes
    /// node reports and answers with assignments, serves the status API and /metrics.
    /// Runs until SIGTERM or Ctrl-C.
    #[command(
        after_help = "Examples:\n  cacheflow serve --repo https://github.com/acme/cache-config.git --state-dir /var/lib/cacheflow \\\n      --webhook-secret-file /etc/cacheflow/webhook --admin-tokens-file /etc/cacheflow/admins"
    )]
    Serve(Box<ServeArgs>),
    /// Look at or steer rollouts on a running server: status, pause, resume, promote
    /// (skip the rest of the bake), abort (roll back), override (start batches outside
    /// the rollout windows; needs --reason), retry (roll out a refused content again
    /// without a new commit; needs --reason), wait (until a rollout ends, for CI).
    /// Exit 0, or 1 on error, refusal or (wait) a rollout that did not complete.
    #[command(
        after_help = "Examples:\n  cacheflow rollout status --server http://cacheflow:8080\n  cacheflow rollout pause sessions-eu --server http://cacheflow:8080 --token-file ~/.cacheflow-admin\n  cacheflow rollout wait sessions-eu --revision \"$GIT_COMMIT\" --timeout 30m   # in CI"
    )]
    Rollout(RolloutArgs),
    /// One timeline of config commits (author, message, parameters changed) with what
    /// the reconciler noted on each (completed, rolled back and why, refused). Exit 0.
    #[command(
        after_help = "Examples:\n  cacheflow history\n  cacheflow history --cluster sessions-eu --param maxmemory\n  cacheflow history --format json --limit 10"
    )]
    History(HistoryArgs),
    /// Run beside one cache server: report it to the cacheflow server every interval,
    /// apply the assignment the server answers with (restarting the engine for
    /// start-only parameters when allowed), report the result at once. Runs until
    /// SIGTERM or Ctrl-C; with --once, one exchange (exit 0 done, 1 failed).
    #[command(
        after_help = "Examples:\n  cacheflow agent --node-id a1 --server https://cacheflow:8443 --token-file /etc/cacheflow/token \\\n      --redis 127.0.0.1:6379 --config-file /etc/redis/redis.conf\n  cacheflow agent --once ...              # one exchange, for a test or a cron job"
    )]
    Agent(Box<AgentArgs>),
    /// The whole loop on a simulated fleet, no setup: a copy of the example repository
    /// in a temporary git repository, a change rolled out in stages, a change whose
    /// canary fails its gates and is rolled back, a hand-made drift and its report, a
    /// primary's restart-only change done by failover, the history. About 20 seconds.
    /// Exit 0, or 1 if something went wrong.
    #[command(
        after_help = "Examples:\n  cacheflow demo\n  cacheflow demo --keep ./demo-repo && cacheflow history --repo ./demo-repo"
    )]
    Demo(DemoArgs),
    /// Print the token the agent of NODE_ID presents to the server: an HMAC of the node
    /// id under the server's node-token secret, so no node can report as another.
    #[command(
        after_help = "Examples:\n  CACHEFLOW_NODE_TOKEN_SECRET_FILE=/etc/cacheflow/node-secret cacheflow agent-token a1 > a1.token"
    )]
    AgentToken(AgentTokenArgs),
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    #[command(
        after_help = "Examples:\n  cacheflow completions bash > /etc/bash_completion.d/cacheflow\n  cacheflow completions zsh > \"${fpath[1]}/_cacheflow\"\n  cacheflow completions fish > ~/.config/fish/completions/cacheflow.fish"
    )]
    Completions(CompletionsArgs),
    /// Print the manual page cacheflow(1) (roff), or write it and a page per command
    /// (cacheflow-sync.1, cacheflow-rollout-wait.1, ...) into a directory.
    #[command(
        after_help = "Examples:\n  cacheflow man | man -l -\n  cacheflow man --output-dir /usr/local/share/man/man1 && man cacheflow-sync"
    )]
    Man(ManArgs),
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write cacheflow.1 and one page per command into this directory instead.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The revision to read from the object database.
    #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
    pub rev: String,
    /// Read the uncommitted files of the working tree instead.
    #[arg(long)]
    pub worktree: bool,
    /// text: a summary line, or the errors and a summary; json: for programs.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The revision the change starts from (the pull request's base).
    #[arg(long)]
    pub base: String,
    /// The revision the change ends at.
    #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
    pub head: String,
    /// Compare against the uncommitted working tree instead of --head.
    #[arg(long)]
    pub worktree: bool,
    /// text: for people; json: the change set; markdown: a pull-request comment.
    #[arg(long, value_enum, default_value = "text")]
    pub format: RichFormat,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The revision to plan.
    #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
    pub rev: String,
    /// Plan the uncommitted files of the working tree instead.
    #[arg(long)]
    pub worktree: bool,
    /// A live-state snapshot (JSON, schemas/live-state.schema.json).
    #[arg(long, required_unless_present = "direct", conflicts_with = "direct")]
    pub live: Option<PathBuf>,
    /// Read the live state straight from the nodes instead (as `snapshot` does).
    #[arg(long)]
    pub direct: bool,
    #[command(flatten)]
    pub reach: ReachArgs,
    /// text: for people; json: the plan; markdown: a pull-request comment.
    #[arg(long, value_enum, default_value = "text")]
    pub format: RichFormat,
}

#[derive(Debug, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The revision whose declared state the nodes are compared with.
    #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
    pub rev: String,
    /// Compare with the uncommitted files of the working tree instead.
    #[arg(long)]
    pub worktree: bool,
    /// A live-state snapshot (JSON, as `snapshot` writes it).
    #[arg(long, required_unless_present_any = ["direct", "server"], conflicts_with_all = ["direct", "server"])]
    pub live: Option<PathBuf>,
    /// Read the nodes straight away (as `snapshot` does).
    #[arg(long, conflicts_with = "server")]
    pub direct: bool,
    /// Ask a cacheflow server (http://host:port): its revision against its nodes'
    /// latest reports (needs an admin token).
    #[arg(long)]
    pub server: Option<String>,
    /// A file holding an admin token for --server (or set CACHEFLOW_ADMIN_TOKEN).
    #[arg(long, env = "CACHEFLOW_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub reach: ReachArgs,
    /// text: for a terminal; json, markdown, html: the report files.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Also write the report as drift.md, drift.json and drift.html into this directory.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The name of the cluster to write (clusters/NAME.yaml).
    #[arg(long)]
    pub cluster: String,
    /// Redis or Valkey nodes, host:port, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "memcached",
        conflicts_with = "memcached"
    )]
    pub redis: Vec<String>,
    /// Memcached nodes, host:port, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub memcached: Vec<String>,
    /// The catalog version to compare with (major.minor) instead of the node's own.
    #[arg(long)]
    pub engine_version: Option<String>,
    /// The ACL user to connect as (Redis 6+), or memcached's `-Y` user.
    #[arg(long)]
    pub auth_user: Option<String>,
    /// The password, as a reference: env:NAME or file:PATH (written into the cluster
    /// file as such, never resolved into it).
    #[arg(long)]
    pub auth_password_ref: Option<String>,
    /// Reach the nodes over TLS, trusting the CAs of this PEM bundle; written as the
    /// cluster's `tls.ca` (as the agent's flag of the same name).
    #[arg(long)]
    pub node_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for nodes that ask for one (Redis tls-auth-clients);
    /// written as `tls.cert`.
    #[arg(long, requires = "node_ca_file", requires = "node_key_file")]
    pub node_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PKCS#8 PEM); written as `tls.key`.
    #[arg(long, requires = "node_cert_file")]
    pub node_key_file: Option<PathBuf>,
    /// The name the nodes' certificates are for, when not each node's host; written as
    /// `tls.serverName`.
    #[arg(long, requires = "node_ca_file")]
    pub node_server_name: Option<String>,
    /// The config repository's directory.
    #[arg(long, default_value = ".")]
    pub output: PathBuf,
    /// How long one node may take to answer (30s, 500ms).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The revision that says which nodes to read.
    #[arg(long, default_value = "HEAD", conflicts_with = "worktree")]
    pub rev: String,
    /// Take the nodes from the uncommitted working tree instead.
    #[arg(long)]
    pub worktree: bool,
    /// Only the nodes of this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Write the snapshot here instead of standard output.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub reach: ReachArgs,
    /// json: the snapshot; text: a line per node.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The revision to roll out.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Only this cluster: its nodes are read, planned and rolled out; the others are
    /// left as they are (the next sync without --cluster rolls them out).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Apply without asking.
    #[arg(long)]
    pub yes: bool,
    /// Time between readings of idle nodes (the gates' data).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Roll out now even outside the rollout windows; the reason is journaled with
    /// your user name.
    #[arg(long, value_name = "REASON")]
    pub override_window: Option<String>,
    #[command(flatten)]
    pub reach: ReachArgs,
    /// text: plan, progress and summary; json: the summary only.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// `cacheflow rollout ACTION`: one subcommand per action, each with its own help.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Every cluster's rollout (or one cluster's): revision, phase, batch, reason. No
    /// token needed.
    #[command(
        after_help = "Examples:\n  cacheflow rollout status --server http://cacheflow:8080\n  cacheflow rollout status sessions-eu --format json"
    )]
    Status(RolloutStatusArgs),
    /// Pause the cluster's rollout where it is (nodes keep what they run). Exit 1 when
    /// nothing is rolling out.
    #[command(
        after_help = "Examples:\n  cacheflow rollout pause sessions-eu --token-file ~/.cacheflow-admin || page-oncall"
    )]
    Pause(RolloutClusterArgs),
    /// Resume a paused rollout.
    #[command(
        after_help = "Examples:\n  cacheflow rollout resume sessions-eu --token-file ~/.cacheflow-admin"
    )]
    Resume(RolloutClusterArgs),
    /// Skip the rest of the bake: the next batch now, without judging the gates.
    #[command(
        after_help = "Examples:\n  cacheflow rollout promote sessions-eu --token-file ~/.cacheflow-admin"
    )]
    Promote(RolloutClusterArgs),
    /// Roll back now: the touched nodes get what they ran before.
    #[command(
        after_help = "Examples:\n  cacheflow rollout abort sessions-eu --token-file ~/.cacheflow-admin"
    )]
    Abort(RolloutClusterArgs),
    /// Start batches outside the rollout windows (once per rollout); the reason is
    /// journaled with the token's name.
    #[command(
        after_help = "Examples:\n  cacheflow rollout override sessions-eu --reason \"INC-42: hotfix\" --token-file ~/.cacheflow-admin"
    )]
    Override(RolloutReasonArgs),
    /// Roll out a refused (rolled back) content again without a new commit; the reason
    /// is journaled with the token's name.
    #[command(
        after_help = "Examples:\n  cacheflow rollout retry sessions-eu --reason \"INC-43: the primary is fixed\" --token-file ~/.cacheflow-admin"
    )]
    Retry(RolloutReasonArgs),
    /// Wait until the cluster's rollout ends, following the server's status: exit 0 when
    /// it completed (or the revision changed nothing in the cluster), 1 when it was
    /// rolled back, refused or superseded, or on timeout. Paused and waiting rollouts
    /// are waited for. For CI after a push.
    #[command(
        after_help = "Examples:\n  cacheflow rollout wait sessions-eu --server http://cacheflow:8080\n  cacheflow rollout wait sessions-eu --revision \"$(git rev-parse HEAD)\" --timeout 30m"
    )]
    Wait(RolloutWaitArgs),
}

/// How to reach the server, for every `rollout` subcommand.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The cacheflow server (http://host:port or https://host:port).
    #[arg(long, env = "CACHEFLOW_SERVER")]
    pub server: String,
    /// A file holding an admin token (or set CACHEFLOW_ADMIN_TOKEN); status and wait
    /// send it when given.
    #[arg(long, env = "CACHEFLOW_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// text: for people; json: the server's answer as it is.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// Only this cluster.
    pub cluster: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct RolloutClusterArgs {
    /// The cluster.
    pub cluster: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct RolloutReasonArgs {
    /// The cluster.
    pub cluster: String,
    /// Why (required; journaled with the token's name).
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct RolloutWaitArgs {
    /// The cluster.
    pub cluster: String,
    /// Wait for the rollout of this commit (a full id or a prefix of at least 7
    /// characters), until the server has taken it; without it, the cluster's current
    /// rollout.
    #[arg(long)]
    pub revision: Option<String>,
    /// Give up (exit 1) after this long.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Time between two readings of the server's status.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The newest commit of the timeline.
    #[arg(long, default_value = "HEAD")]
    pub rev: String,
    /// Only changes to this cluster.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Only changes of this parameter.
    #[arg(long)]
    pub param: Option<String>,
    /// At most this many commits.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// text: one block per commit; json: for programs.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's repository in this directory (new or empty) to explore it
    /// afterwards (`cacheflow history --repo DIR`, `git log --notes=cacheflow`).
    #[arg(long, value_name = "DIR")]
    pub keep: Option<PathBuf>,
    /// Serve the web console while the demo runs, at ADDR (127.0.0.1:8080 when none is
    /// given), and keep it up after the story until Ctrl-C.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8080")]
    pub serve: Option<std::net::SocketAddr>,
}

#[derive(Debug, Args)]
pub struct AgentTokenArgs {
    /// The node's id, as declared in its cluster.
    pub node_id: String,
    /// A file holding the server's node-token secret (at least 16 bytes).
    #[arg(long, env = "CACHEFLOW_NODE_TOKEN_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
}

/// The action a `rollout` subcommand asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolloutAction {
    Status,
    Pause,
    Resume,
    Promote,
    Abort,
    Override,
    Retry,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The config repository: a URL (mirrored into the state directory) or a local path.
    #[arg(long, env = "CACHEFLOW_REPO")]
    pub repo: String,
    /// The config root inside the repository, for a monorepo: the directory that holds
    /// `cacheflow.yaml` (default: the repository's root).
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        env = "CACHEFLOW_PATH"
    )]
    pub path: String,
    /// The branch whose head is rolled out.
    #[arg(long, default_value = "main", env = "CACHEFLOW_BRANCH")]
    pub branch: String,
    /// Where the mirror (with the journal and notes) is kept.
    #[arg(long, env = "CACHEFLOW_STATE_DIR")]
    pub state_dir: PathBuf,
    /// The address the server listens on (HTTP, or HTTPS with --tls-cert-file).
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
    /// A file of read tokens, one `name:token` per line: with it, the console at `/` and
    /// the status routes need a read token (or an admin token); without it they are open.
    #[arg(long, env = "CACHEFLOW_READ_TOKENS_FILE")]
    pub read_tokens_file: Option<PathBuf>,
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
    /// Serve HTTPS with this certificate chain (PEM), for deployments without a TLS
    /// proxy in front.
    #[arg(long, env = "CACHEFLOW_TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PKCS#8 PEM) of --tls-cert-file.
    #[arg(long, env = "CACHEFLOW_TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,
    /// Run as one of several replicas that elect a leader on etcd: the members' URLs,
    /// comma-separated (http://10.0.0.1:2379,http://10.0.0.2:2379). Without it, serve is
    /// the single process.
    #[arg(
        long,
        env = "CACHEFLOW_ETCD_ENDPOINTS",
        value_delimiter = ',',
        requires = "advertise_url"
    )]
    pub etcd_endpoints: Vec<String>,
    /// The CA certificate (PEM) etcd's members are signed by.
    #[arg(long, env = "CACHEFLOW_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) for etcd.
    #[arg(long, env = "CACHEFLOW_ETCD_CERT_FILE", requires = "etcd_key_file")]
    pub etcd_cert_file: Option<PathBuf>,
    /// The PKCS#8 PEM key of --etcd-cert-file.
    #[arg(long, env = "CACHEFLOW_ETCD_KEY_FILE", requires = "etcd_cert_file")]
    pub etcd_key_file: Option<PathBuf>,
    /// An etcd user (its password from --etcd-password-file or CACHEFLOW_ETCD_PASSWORD).
    #[arg(long, env = "CACHEFLOW_ETCD_USER")]
    pub etcd_user: Option<String>,
    /// A file holding the etcd user's password (or set CACHEFLOW_ETCD_PASSWORD).
    #[arg(long, env = "CACHEFLOW_ETCD_PASSWORD_FILE", requires = "etcd_user")]
    pub etcd_password_file: Option<PathBuf>,
    /// The prefix of every key the replicas keep in etcd.
    #[arg(long, env = "CACHEFLOW_ETCD_PREFIX", default_value = "/cacheflow")]
    pub etcd_prefix: String,
    /// The leader's lease: a replica takes over at most this long after the leader died
    /// (renewed every third of it).
    #[arg(long, default_value = "15s", value_parser = parse_duration, env = "CACHEFLOW_LEASE_TTL")]
    pub lease_ttl: Duration,
    /// The URL other replicas send agents to while this one leads
    /// (http://cacheflow-0.cacheflow:8080).
    #[arg(long, env = "CACHEFLOW_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// The number of shards the clusters are hashed to, each with its own election,
    /// journal and reconciler, spread over the replicas (above 1 needs
    /// --etcd-endpoints; every replica must be given the same number).
    #[arg(long, env = "CACHEFLOW_SHARDS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=crate::pure::shards::MAX_SHARDS as i64))]
    pub shards: u32,
    /// This replica's id among the live ones (its membership key in etcd); the
    /// hostname by default (a StatefulSet's pod name).
    #[arg(long, env = "CACHEFLOW_REPLICA_ID")]
    pub replica_id: Option<String>,
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
    /// memcached `-Y` user name.
    #[arg(long, requires = "memcached_password", requires = "memcached")]
    pub memcached_user: Option<String>,
    /// memcached `-Y` password as a reference: env:NAME or file:PATH.
    #[arg(long, requires = "memcached_user")]
    pub memcached_password: Option<String>,
    /// Reach the node over TLS, trusting the CAs of this PEM bundle (the cluster's
    /// `tls.ca`).
    #[arg(long)]
    pub node_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for a node that asks for one (Redis tls-auth-clients).
    #[arg(long, requires = "node_ca_file", requires = "node_key_file")]
    pub node_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PKCS#8 PEM).
    #[arg(long, requires = "node_cert_file")]
    pub node_key_file: Option<PathBuf>,
    /// The name the node's certificate is for, when not the host of --redis/--memcached.
    #[arg(long, requires = "node_ca_file")]
    pub node_server_name: Option<String>,
    /// Trust the CAs of this PEM bundle for an https:// --server (besides the system's).
    #[arg(long, env = "CACHEFLOW_CA_FILE")]
    pub ca_file: Option<PathBuf>,
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

// clap's value parsers: a `String` error is the message clap prints beside the argument.
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

/// Logging on standard error. `default` is the filter when `CACHEFLOW_LOG` is not set.
fn init_logging(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CACHEFLOW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal, and not when NO_COLOR is set: a log file or journald
    // gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling `run` twice) is harmless; ignore it.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(colour).try_init(),
        // One JSON object per line, one event per record, its fields at the top level
        // beside `timestamp`, `level`, `target` and `message` (what a log query selects
        // on: `cluster`, `revision`, `node`, `batch`, `event`); never colour codes.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_ansi(false)
            .try_init(),
    };
}

/// Print an error and return exit code 1.
fn fail(message: &str) -> ExitCode {
    errln!("error: {}", redact_url(message));
    ExitCode::from(1)
}

impl Cli {
    /// True for the commands that run until stopped (`serve`, `agent`).
    pub fn long_running(&self) -> bool {
        matches!(self.command, Command::Serve(_) | Command::Agent(_))
    }

    /// True when the command reads a local repository and opens no TLS connection
    /// (see [`crate::edges::source::skip_tls_roots`]).
    pub fn local_only(&self) -> bool {
        let repo = match &self.command {
            Command::Validate(a) => &a.repo,
            Command::Diff(a) => &a.repo,
            Command::Plan(a) => &a.repo,
            Command::Drift(a) => &a.repo,
            Command::Snapshot(a) => &a.repo,
            Command::Sync(a) => &a.repo,
            Command::History(a) => &a.repo,
            Command::Demo(_) => return true,
            _ => return false,
        };
        !crate::edges::source::is_url(&repo.repo)
    }
}

/// Run the command line; returns the process exit code (an error is printed, exit 1).
pub fn run(cli: Cli) -> ExitCode {
    // `sync` and `demo` draw their own progress from the same journal lines: its log
    // records (rollbacks and pauses are warnings) would say each one twice.
    let default_filter = match cli.command {
        Command::Sync(_) | Command::Demo(_) => "warn,cacheflow::journal=off",
        _ => "warn",
    };
    init_logging(cli.log_format, default_filter);
    style::choose(cli.color);
    let outcome = match cli.command {
        Command::Validate(args) => commands::validate(args),
        Command::Diff(args) => commands::diff(args),
        Command::Plan(args) => commands::plan(args),
        Command::Drift(args) => commands::drift(args),
        Command::Snapshot(args) => commands::snapshot(args),
        Command::Import(args) => commands::import(args),
        Command::Sync(args) => commands::sync(args),
        Command::Serve(args) => commands::serve(*args),
        Command::Rollout(args) => commands::rollout(args),
        Command::History(args) => commands::history(args),
        Command::Agent(args) => commands::agent(*args),
        Command::Demo(args) => commands::demo(args),
        Command::AgentToken(args) => commands::agent_token(args),
        Command::Completions(args) => commands::completions(args),
        Command::Man(args) => commands::man(args),
    };
    output::finish(outcome.unwrap_or_else(|e| fail(&e.to_string())))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::Cli;

    #[test]
    fn every_flag_and_argument_of_every_command_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && path != " cacheflow" {
                missing.push(format!("{path}: no description"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && !["help", "version"].contains(&id) {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_name() != "help" {
                    walk(sub, &path, missing);
                }
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "", &mut missing);
        assert_eq!(missing, Vec::<String>::new());
    }

    #[test]
    fn every_command_has_examples() {
        let cli = Cli::command();
        let without: Vec<&str> = cli
            .get_subcommands()
            .chain(
                cli.get_subcommands()
                    .filter(|c| c.get_name() == "rollout")
                    .flat_map(|c| c.get_subcommands()),
            )
            .filter(|c| c.get_name() != "help")
            .filter(|c| {
                c.get_after_help()
                    .is_none_or(|h| !h.to_string().contains("Examples:"))
            })
            .map(|c| c.get_name())
            .collect();
        assert_eq!(without, Vec::<&str>::new());
    }

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
            "status",
            "c",
            "--server",
            "https://cacheflow.example",
        ]));
    }

    fn long_running(args: &[&str]) -> bool {
        Cli::try_parse_from(args)
            .expect("arguments parse")
            .long_running()
    }

    #[test]
    fn serve_and_agent_are_the_long_running_commands() {
        // `main` gives freed memory back at once for these, and only these.
        assert!(long_running(&[
            "cacheflow",
            "serve",
            "--repo",
            "/srv/config",
            "--state-dir",
            "/var/lib/cacheflow",
        ]));
        assert!(long_running(&[
            "cacheflow",
            "agent",
            "--node-id",
            "n1",
            "--server",
            "http://cacheflow:8080",
            "--token-file",
            "/etc/cacheflow/token",
            "--redis",
            "127.0.0.1:6379",
        ]));
        for short in [
            &["cacheflow", "validate", "--repo", "."][..],
            &["cacheflow", "sync", "--repo", ".", "--yes"],
            &["cacheflow", "demo"],
        ] {
            assert!(!long_running(short), "{short:?}");
        }
    }
}
