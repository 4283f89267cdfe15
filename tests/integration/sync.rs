//! `cacheflow sync` through the real binary: six real redis-server nodes in two shards
//! (a primary and two replicas each, replicating for real), a real git repository, the
//! journal and notes read back with git2.

use std::process::Command;

use crate::support::cacheflow_sync;
use crate::support::fleet::Fleet;
use crate::support::git::{cacheflow_note, journal_messages, TestRepo};

fn sync(repo: &TestRepo, extra: &[&str]) -> (i32, String) {
    cacheflow_sync(repo.path(), extra, &[])
}

fn journal(repo: &TestRepo) -> Vec<String> {
    journal_messages(repo.repository())
}

fn note(repo: &TestRepo, commit: &str) -> String {
    cacheflow_note(repo.repository(), commit)
}

#[test]
fn sync_rolls_a_commit_out_replicas_first_batch_by_batch_and_every_node_matches() {
    let fleet = Fleet::start();
    let repo = TestRepo::new();
    repo.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    maxmemory: 64mb\n    hz: 20\n    maxmemory-policy: allkeys-lru"),
    );
    let commit = repo.commit("cache: 64mb, hz 20, allkeys-lru");

    // Without --yes and without a terminal, nothing is applied.
    let (code, out) = sync(&repo, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("give --yes to apply without asking"), "{out}");
    assert!(fleet.config("hz").iter().all(|(_, v)| v == "10"));

    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 0, "{out}");
    for param in ["maxmemory", "hz", "maxmemory-policy"] {
        let want = match param {
            "maxmemory" => "67108864",
            "hz" => "20",
            _ => "allkeys-lru",
        };
        for (id, v) in fleet.config(param) {
            assert_eq!(v, want, "{id} {param}");
        }
    }
    assert!(out.contains("cache: completed"), "{out}");

    // The journal: the canary is one replica, replicas go before primaries, no batch
    // holds two nodes of a shard.
    let entries = journal(&repo);
    let batches: Vec<Vec<String>> = entries
        .iter()
        .filter_map(|m| {
            let line = m.lines().find(|l| l.contains("assigned"))?;
            let nodes = line.rsplit_once(": ")?.1;
            Some(nodes.split(", ").map(str::to_owned).collect())
        })
        .collect();
    assert_eq!(batches.len(), 4, "{entries:#?}");
    assert_eq!(batches[0].len(), 1, "the canary is one node: {batches:?}");
    let order: Vec<&String> = batches.iter().flatten().collect();
    let first_primary = order.iter().position(|n| n.ends_with('1')).unwrap();
    assert!(
        order[..first_primary].len() == 4,
        "all four replicas before any primary: {order:?}"
    );
    for b in &batches {
        let mut shards: Vec<char> = b.iter().map(|n| n.chars().next().unwrap()).collect();
        shards.sort();
        shards.dedup();
        assert_eq!(shards.len(), b.len(), "two nodes of one shard in {b:?}");
    }
    assert!(
        entries
            .iter()
            .any(|m| m.contains("gates of batch 1 passed")),
        "{entries:#?}"
    );
    let n = note(&repo, &commit);
    assert!(n.starts_with("cache: completed "), "{n}");
    assert!(n.contains("reached 6 node(s)"), "{n}");

    // Again: nothing to do, nothing journaled.
    let before = journal(&repo).len();
    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Nothing to do."), "{out}");
    assert_eq!(journal(&repo).len(), before);

    // Someone runs CONFIG SET by hand: sync converges that node again, and only it.
    assert!(fleet
        .get("b2")
        .client()
        .cmd(&["CONFIG", "SET", "hz", "11"])
        .is_ok());
    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("b2 (shard b, replica): hz 11 → 20"), "{out}");
    for (id, v) in fleet.config("hz") {
        assert_eq!(v, "20", "{id}");
    }
    let entries = journal(&repo);
    let last_assigned = entries
        .iter()
        .rev()
        .find(|m| m.contains("assigned"))
        .unwrap();
    assert!(
        last_assigned.contains("batch 1 of 1 assigned") && last_assigned.ends_with(": b2\n"),
        "{entries:#?}"
    );
}

#[test]
fn a_failing_gate_rolls_the_canary_back_and_the_revision_stays_refused() {
    let fleet = Fleet::start();
    // 3 MB of data on each shard's primary (replicated to its replicas).
    let value = "x".repeat(1 << 20);
    for p in ["a1", "b1"] {
        let mut c = fleet.get(p).client();
        for k in ["k1", "k2", "k3"] {
            assert!(c.cmd(&["SET", k, &value]).is_ok());
        }
    }
    let repo = TestRepo::new();
    repo.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    maxmemory: 64mb\n    maxmemory-policy: noeviction"),
    );
    repo.commit("cache: 64mb");
    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 0, "{out}");

    // A limit below what the nodes hold: the canary's memory gate fails.
    repo.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    maxmemory: 2mb\n    maxmemory-policy: noeviction"),
    );
    let bad = repo.commit("cache: 2mb (too small)");
    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cache: rolled-back: gates failed: "), "{out}");
    assert!(out.contains("is above 98.0%"), "{out}");
    for (id, v) in fleet.config("maxmemory") {
        assert_eq!(v, "67108864", "{id} was not rolled back");
    }
    let entries = journal(&repo);
    let assigned: Vec<&String> = entries.iter().filter(|m| m.contains("assigned")).collect();
    // Two from the first sync's... the first rollout had 4 batches; this one only 1.
    assert_eq!(assigned.len(), 5, "{entries:#?}");
    assert!(
        entries
            .iter()
            .any(|m| m.contains("gates of batch 1 failed") && m.contains("\"memoryRatio\"")),
        "the gate's figures are journaled: {entries:#?}"
    );
    assert!(
        entries.iter().any(|m| m.contains("rolled back to ")),
        "{entries:#?}"
    );
    let n = note(&repo, &bad);
    assert!(n.starts_with("cache: rolled back "), "{n}");

    // The next sync of the same revision does not try again.
    let before = journal(&repo).len();
    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cache: refused"), "{out}");
    assert_eq!(
        journal(&repo).len(),
        before,
        "nothing journaled: nothing happened"
    );
    for (id, v) in fleet.config("maxmemory") {
        assert_eq!(v, "67108864", "{id}");
    }

    // A newer commit that changes the cluster is rolled out.
    repo.write(
        "clusters/cache.yaml",
        &fleet.cluster_yaml("    maxmemory: 48mb\n    maxmemory-policy: noeviction"),
    );
    repo.commit("cache: 48mb");
    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 0, "{out}");
    for (id, v) in fleet.config("maxmemory") {
        assert_eq!(v, "50331648", "{id}");
    }

    // `history` puts each change beside its outcome.
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["history", "--repo"])
        .arg(repo.path())
        .args(["--param", "maxmemory"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let blocks: Vec<&str> = text.split("\n").filter(|l| !l.starts_with("  ⇒")).collect();
    assert_eq!(
        blocks
            .iter()
            .filter(|l| l.starts_with("  cache: maxmemory"))
            .copied()
            .collect::<Vec<_>>(),
        vec![
            "  cache: maxmemory 2mb → 48mb",
            "  cache: maxmemory 64mb → 2mb",
            "  cache: maxmemory (unset) → 64mb",
        ],
        "{text}"
    );
    let outcomes: Vec<&str> = text.lines().filter(|l| l.starts_with("  ⇒")).collect();
    assert_eq!(outcomes.len(), 3, "{text}");
    assert!(outcomes[0].starts_with("  ⇒ cache: completed "), "{text}");
    assert!(
        outcomes[1].starts_with("  ⇒ cache: rolled back ") && outcomes[1].contains("gates failed"),
        "{text}"
    );
    assert!(outcomes[2].starts_with("  ⇒ cache: completed "), "{text}");
}

#[test]
fn an_invalid_revision_is_refused_and_journaled_and_nothing_is_applied() {
    let fleet = Fleet::start();
    let repo = TestRepo::new();
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 500000"));
    let commit = repo.commit("cache: hz out of range");
    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("clusters/cache.yaml:"), "{out}");
    assert!(fleet.config("hz").iter().all(|(_, v)| v == "10"));
    let entries = journal(&repo);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    // Refused through the reconciler: the words `serve` journals.
    assert!(
        entries[0].starts_with(&format!(
            "revision {} refused: invalid (1 error(s)); first: clusters/cache.yaml:",
            &commit[..12]
        )),
        "{entries:#?}"
    );
}

#[test]
fn a_head_that_does_not_descend_from_the_last_good_revision_is_refused() {
    let fleet = Fleet::start();
    let repo = TestRepo::new();
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    let first = repo.commit("cache: hz 20");
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 21"));
    let good = repo.commit("cache: hz 21");
    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 0, "{out}");
    assert!(fleet.config("hz").iter().all(|(_, v)| v == "21"));

    // History rewritten: main now points at a commit whose parent is `first`, not `good`.
    let r = repo.repository();
    let parent = r.find_commit(git2::Oid::from_str(&first).unwrap()).unwrap();
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 30"));
    let mut index = r.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = r.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("mallory", "mallory@cacheflow.invalid").unwrap();
    let rewritten = r
        .commit(
            None,
            &sig,
            &sig,
            "cache: hz 30, rewritten",
            &tree,
            &[&parent],
        )
        .unwrap()
        .to_string();
    r.reference(
        "refs/heads/main",
        git2::Oid::from_str(&rewritten).unwrap(),
        true,
        "rewrite",
    )
    .unwrap();
    let before = journal(&repo).len();

    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 1, "{out}");
    let why = format!(
        "history rewritten: {} does not descend from the last good revision {}",
        &rewritten[..12],
        &good[..12]
    );
    assert!(out.contains(&why), "{out}");
    for (id, v) in fleet.config("hz") {
        assert_eq!(v, "21", "{id} keeps the last good revision");
    }
    let entries = journal(&repo);
    assert_eq!(entries.len(), before + 1, "{entries:#?}");
    assert_eq!(
        entries[before].trim_end(),
        format!(
            "revision {} refused: {why}\nkeeping revision {}",
            &rewritten[..12],
            &good[..12]
        ),
        "refused through the reconciler, in the words serve uses"
    );
}

#[test]
fn outside_the_rollout_windows_sync_waits_and_an_override_with_a_reason_rolls_out() {
    let fleet = Fleet::start();
    let repo = TestRepo::new();
    // Denied all the time: it opens every minute and lasts two hours.
    repo.write(
        "cacheflow.yaml",
        "apiVersion: cacheflow/v1
kind: Settings
metadata: {name: settings}
spec:
  windows:
    - {name: change-freeze, action: deny, schedule: '* * * * *', duration: 2h, timezone: Europe/Berlin}
",
    );
    repo.write("clusters/cache.yaml", &fleet.cluster_yaml("    hz: 20"));
    let commit = repo.commit("cache: hz 20 during the freeze");

    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "cache: waiting: inside deny window `change-freeze`; no opening found before "
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "Waiting: nothing more is started (the reason is above). Run `cacheflow sync --rev "
        ),
        "{out}"
    );
    assert!(out.contains("--override-window REASON"), "{out}");
    for (id, v) in fleet.config("hz") {
        assert_eq!(v, "10", "{id} must not change inside the freeze");
    }
    let entries = journal(&repo);
    assert!(
        entries
            .iter()
            .any(|m| m.contains("cache: batch 1 of 4 waits: inside deny window `change-freeze`")),
        "{entries:#?}"
    );
    assert!(
        !entries.iter().any(|m| m.contains("assigned")),
        "{entries:#?}"
    );

    // Again without an override: still waiting, nothing new assigned.
    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cache: waiting"), "{out}");

    // An empty reason is refused; a reason is journaled with the user's name.
    let (code, out) = sync(&repo, &["--yes", "--override-window", " "]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--override-window needs a reason"), "{out}");
    let (code, out) = sync(
        &repo,
        &["--yes", "--override-window", "INC-7: hz must go up now"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cache: completed"), "{out}");
    for (id, v) in fleet.config("hz") {
        assert_eq!(v, "20", "{id}");
    }
    let entries = journal(&repo);
    let overrides: Vec<&String> = entries
        .iter()
        .filter(|m| m.contains("rollout windows overridden by"))
        .collect();
    assert_eq!(overrides.len(), 1, "{entries:#?}");
    assert!(
        overrides[0].contains(&format!(
            "(cacheflow sync) for {commit}: INC-7: hz must go up now"
        )),
        "{overrides:?}"
    );
    assert!(note(&repo, &commit).starts_with("cache: completed "));
}

#[test]
fn a_journal_written_by_a_newer_cacheflow_is_refused_and_left_as_it_was() {
    // The journal is read before any node is touched: no fleet needed.
    let repo = TestRepo::new();
    repo.write(
        "clusters/cache.yaml",
        "apiVersion: cacheflow/v1
kind: Cluster
metadata: {name: cache}
spec:
  engine: redis
  parameters:
    hz: 20
  nodes:
    - {id: a1, address: '127.0.0.1:1', shard: a, role: primary}
",
    );
    repo.commit("cache: hz 20");
    // A journal entry whose state.json says version 99.
    let r = repo.repository();
    let blob = r
        .blob(br#"{"version": 99, "generation": 5, "clusters": {}, "future": true}"#)
        .unwrap();
    let mut tree = r.treebuilder(None).unwrap();
    tree.insert("state.json", blob, 0o100644).unwrap();
    let tree = r.find_tree(tree.write().unwrap()).unwrap();
    let sig = git2::Signature::now("cacheflow 99", "cacheflow@localhost").unwrap();
    let entry = r
        .commit(
            Some("refs/cacheflow/journal"),
            &sig,
            &sig,
            "written by a newer cacheflow\n",
            &tree,
            &[],
        )
        .unwrap();

    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("state format version 99"), "{out}");
    assert!(out.contains("this build reads (version 2)"), "{out}");
    assert!(out.contains("upgrade cacheflow"), "{out}");
    assert_eq!(
        r.refname_to_id("refs/cacheflow/journal").unwrap(),
        entry,
        "the newer journal is not written over"
    );

    // Nor by the refusal of an invalid revision.
    repo.write(
        "clusters/cache.yaml",
        "apiVersion: cacheflow/v1
kind: Cluster
metadata: {name: cache}
spec:
  engine: redis
  parameters:
    hz: 500000
  nodes:
    - {id: a1, address: '127.0.0.1:1', shard: a, role: primary}
",
    );
    repo.commit("cache: hz out of range");
    let (code, out) = sync(&repo, &["--yes"]);
    assert_eq!(code, 1, "{out}");
    assert_eq!(
        r.refname_to_id("refs/cacheflow/journal").unwrap(),
        entry,
        "the newer journal is not written over by a refusal"
    );
}

/// A cluster `cache` of standalone nodes `n1`, `n2`, ... (each its own shard), one
/// stage, zero bake, gates judged without traffic.
fn standalone_yaml(servers: &[crate::support::servers::RedisServer], params: &str) -> String {
    let mut nodes = String::new();
    for (i, s) in servers.iter().enumerate() {
        nodes.push_str(&format!(
            "    - {{id: n{}, address: '{}', shard: s{}, role: primary}}\n",
            i + 1,
            s.addr(),
            i + 1
        ));
    }
    format!(
        "apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: cache}}
spec:
  engine: redis
  parameters:
{params}
  rollout:
    stages: ['100%']
    bake: 0s
    gates: {{minOpsPerSec: 0}}
  nodes:
{nodes}"
    )
}

/// `cacheflow sync --yes --format json` with idle readings an hour apart (none happens
/// during the sync): the exit code, stdout and stderr.
fn sync_once(repo: &TestRepo) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["sync", "--repo"])
        .arg(repo.path())
        .args(["--yes", "--format", "json", "--interval", "1h"])
        .output()
        .expect("the cacheflow binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// The commands a node ran since its last `CONFIG RESETSTAT` (`INFO commandstats`), by
/// name and calls, without that `CONFIG RESETSTAT`.
fn commands_run(server: &crate::support::servers::RedisServer) -> Vec<(String, u64)> {
    let text = server
        .client()
        .cmd(&["INFO", "commandstats"])
        .as_str()
        .unwrap();
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .filter(|(name, _)| name != "config|resetstat")
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect()
}

#[test]
fn a_sync_reads_each_node_twice_and_changes_it_with_one_config_set_and_one_rewrite() {
    use crate::support::servers::RedisServer;
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let repo = TestRepo::new();
    repo.write(
        "clusters/cache.yaml",
        &standalone_yaml(
            &servers,
            "    hz: 20\n    maxmemory-policy: allkeys-lru\n    timeout: 300",
        ),
    );
    repo.commit("cache: hz 20, allkeys-lru, timeout 300");
    for s in &servers {
        assert!(s.client().cmd(&["CONFIG", "RESETSTAT"]).is_ok());
    }

    let (code, out) = sync_once(&repo);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"outcome\": \"completed\""), "{out}");

    // Per node: the reading before (one PING for the latency, then CONFIG GET of the
    // declared parameters with INFO), the apply (CONFIG GET, CONFIG SET, CONFIG GET
    // pipelined, then CONFIG REWRITE), the reading after. Nothing read twice.
    let want: Vec<(String, u64)> = [
        ("config|get", 4),
        ("config|rewrite", 1),
        ("config|set", 1),
        ("info", 2),
        ("ping", 2),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_owned(), c))
    .collect();
    for (i, s) in servers.iter().enumerate() {
        assert_eq!(commands_run(s), want, "n{}", i + 1);
        let mut c = s.client();
        assert_eq!(c.config_get("hz")["hz"], "20");
        assert_eq!(c.config_get("timeout")["timeout"], "300");
        let file = std::fs::read_to_string(s.config_path()).unwrap();
        assert!(
            file.lines().any(|l| l == "maxmemory-policy allkeys-lru"),
            "{file}"
        );
    }
}

#[test]
fn a_node_that_refuses_one_parameter_of_the_batch_gets_none_and_the_sync_exits_1() {
    use crate::support::servers::{RedisOptions, RedisServer};
    // `dbfilename` is a protected config: n2 refuses to change it at run time.
    let allowing =
        || RedisServer::start_with(RedisOptions::new().config("enable-protected-configs", "yes"));
    let servers = vec![allowing(), RedisServer::start(), allowing()];
    let file_before = std::fs::read_to_string(servers[1].config_path()).unwrap();
    let repo = TestRepo::new();
    repo.write(
        "clusters/cache.yaml",
        &standalone_yaml(&servers, "    hz: 20\n    dbfilename: other.rdb"),
    );
    let commit = repo.commit("cache: hz 20, other.rdb");

    let (code, out) = sync_once(&repo);

    assert_eq!(code, 1, "{out}");
    assert!(out.contains("\"outcome\": \"rolled-back\""), "{out}");
    let refusal = format!(
        "n2 failed to apply {}: {}: `dbfilename` refused: ERR CONFIG SET failed (possibly related to argument 'dbfilename') - can't set protected config; nothing was changed",
        commit,
        servers[1].addr()
    );
    assert!(out.contains(&refusal), "{out}");
    // n2 got nothing, not even a rewrite of its file; the others were put back.
    assert_eq!(
        std::fs::read_to_string(servers[1].config_path()).unwrap(),
        file_before
    );
    for (i, s) in servers.iter().enumerate() {
        let mut c = s.client();
        assert_eq!(c.config_get("hz")["hz"], "10", "n{}", i + 1);
        assert_eq!(
            c.config_get("dbfilename")["dbfilename"],
            "dump.rdb",
            "n{}",
            i + 1
        );
    }
}

/// `cacheflow sync --yes` of `repo` with standard output going to `stdout`: the exit code
/// and standard error.
fn sync_into(repo: &TestRepo, stdout: std::process::Stdio) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["sync", "--repo"])
        .arg(repo.path())
        .args(["--yes", "--interval", "1h"])
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("the cacheflow binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_reader_that_goes_away_does_not_stop_the_rollout_and_lost_output_exits_1() {
    use crate::support::servers::RedisServer;
    let servers: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let repo = TestRepo::new();
    repo.write(
        "clusters/cache.yaml",
        &standalone_yaml(&servers, "    hz: 20"),
    );
    let first = repo.commit("cache: hz 20");

    // `cacheflow sync --yes | head -0`: the pipe's reader is gone before the plan is
    // printed. The rollout goes on to the end, and the exit code is the rollout's.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let (code, err) = sync_into(&repo, writer.into());
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "", "nothing on standard error, no panic");
    for s in &servers {
        assert_eq!(s.client().config_get("hz")["hz"], "20");
    }
    let n = note(&repo, &first);
    assert!(n.starts_with("cache: completed "), "{n}");

    // `cacheflow sync --yes > /dev/full`: the output is lost (not the reader's choice),
    // so the command says so and exits 1; the rollout still ran to its end.
    repo.write(
        "clusters/cache.yaml",
        &standalone_yaml(&servers, "    hz: 30"),
    );
    let second = repo.commit("cache: hz 30");
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full opens");
    let (code, err) = sync_into(&repo, full.into());
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err,
        "error: the output could not be written: No space left on device (os error 28)\n"
    );
    for s in &servers {
        assert_eq!(s.client().config_get("hz")["hz"], "30");
    }
    let n = note(&repo, &second);
    assert!(n.starts_with("cache: completed "), "{n}");
}

/// Start `cacheflow sync --yes` of `repo`, wait until `applied` of `servers` read `hz`
/// as `hz` (its first batch done, baking), send the process `signal` (`HUP`, `TERM`),
/// and return its exit code and output.
fn sync_stopped_by(
    repo: &TestRepo,
    servers: &[crate::support::servers::RedisServer],
    (hz, applied): (&str, usize),
    signal: &str,
) -> (i32, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_cacheflow"))
        .args(["sync", "--repo"])
        .arg(repo.path())
        .args(["--yes", "--interval", "1h"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the cacheflow binary runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while servers
        .iter()
        .filter(|s| s.client().config_get("hz")["hz"] == hz)
        .count()
        < applied
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{applied} nodes did not reach hz {hz} in 30 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let out = child.wait_with_output().expect("sync ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn a_closed_terminal_a_kill_or_ctrl_c_pauses_the_rollout_journaled_and_sync_resumes_it() {
    use crate::support::servers::RedisServer;
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let hz = |s: &RedisServer| s.client().config_get("hz")["hz"].clone();
    let staged = |params: &str| {
        standalone_yaml(&servers, params).replace(
            "stages: ['100%']\n    bake: 0s",
            "stages: ['50%', '100%']\n    bake: 3s",
        )
    };
    let repo = TestRepo::new();
    repo.write("clusters/cache.yaml", &staged("    hz: 20"));
    repo.commit("cache: hz 20");

    // SIGHUP (the terminal closed) while batch 1 (two of the three nodes) bakes:
    // paused, journaled, the third node untouched, exit 1 with the way to resume.
    let (code, out) = sync_stopped_by(&repo, &servers, ("20", 2), "HUP");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Interrupted: rollouts in flight are paused"),
        "{out}"
    );
    assert!(!out.contains("panicked"), "{out}");
    let entries = journal(&repo);
    assert!(
        entries
            .iter()
            .flat_map(|m| m.lines())
            .any(|l| l == "cache: paused by SIGHUP at batch 1"),
        "{entries:#?}"
    );
    let changed = servers.iter().filter(|s| hz(s) == "20").count();
    assert_eq!(changed, 2, "batch 1 only: {entries:#?}");

    // Another sync resumes it to the end.
    let (code, out) = sync_once(&repo);
    assert_eq!(code, 0, "{out}");
    assert!(servers.iter().all(|s| hz(s) == "20"));

    // SIGTERM (`kill`, a cancelled CI job) the same way, and Ctrl-C (SIGINT), each on a
    // revision of its own.
    for (value, signal, by) in [("30", "TERM", "SIGTERM"), ("40", "INT", "ctrl-c")] {
        repo.write("clusters/cache.yaml", &staged(&format!("    hz: {value}")));
        repo.commit(&format!("cache: hz {value}"));
        let (code, out) = sync_stopped_by(&repo, &servers, (value, 2), signal);
        assert_eq!(code, 1, "{out}");
        let entries = journal(&repo);
        assert!(
            entries
                .iter()
                .flat_map(|m| m.lines())
                .any(|l| l == format!("cache: paused by {by} at batch 1")),
            "{entries:#?}"
        );
        assert_eq!(servers.iter().filter(|s| hz(s) == value).count(), 2);
    }
}
