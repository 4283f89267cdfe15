#!/usr/bin/env bash
# `cacheflow snapshot` of 100 real redis-server nodes on loopback (target: under 200 ms
# wall; see issue 3 and BENCHMARKS.md, "Node side").
#
#   bench/snapshot.sh                  # 100 nodes, 20 timed runs
#   NODES=50 RUNS=10 bench/snapshot.sh
#
# 1. builds cacheflow (release);
# 2. starts NODES redis-servers on free loopback ports, each in its own directory under a
#    temporary directory (`--save '' --appendonly no --daemonize yes --pidfile ...`,
#    no config file); a trap stops them all on exit, also when a step fails;
# 3. writes a config repository (git init + commit): clusters of 10 nodes each, shards
#    of one primary and two replicas (labels only: the servers do not replicate), a
#    maxmemory parameter so that every node differs from what it runs;
# 4. checks that one snapshot reads NODES reachable nodes (and fails otherwise);
# 5. times `cacheflow snapshot --repo R -o /dev/null` with hyperfine (2 warm-ups, RUNS
#    runs) and, in the same run, `cacheflow validate` of the same repository (the part of
#    the snapshot that is not talking to nodes), `cacheflow --version` (process start),
#    and the snapshot with --concurrency 100 and 16 (the default is 64), to see where
#    the time goes; peak RSS with /usr/bin/time -v;
# 6. prints a summary (also written to bench/work/snapshot/summary.txt).
#
# Needs: cargo, git, python3, redis-server and redis-cli, hyperfine, GNU time at
# /usr/bin/time.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work/snapshot
NODES=${NODES:-100}
RUNS=${RUNS:-20}
PER_CLUSTER=10
CACHEFLOW=$ROOT/target/release/cacheflow
mkdir -p "$WORK"

die() { printf 'bench/snapshot.sh: %s\n' "$*" >&2; exit 1; }
for tool in cargo git python3 redis-server redis-cli hyperfine; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[ -x /usr/bin/time ] || die "/usr/bin/time is missing: install GNU time"

TMP=$(mktemp -d)
cleanup() {
    # Every server wrote its pid file; stop each by its own pid. A server removes its pid
    # file as it shuts down, so remember the pids and wait on those.
    local pids=() pid
    for f in "$TMP"/node-*/redis.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null) || continue
        [ -n "$pid" ] && pids+=("$pid") && kill "$pid" 2>/dev/null || true
    done
    # Wait (up to 10 s) until they are gone, so the ports are free for the next run.
    for _ in $(seq 1 100); do
        local alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1 && break
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release --quiet
"$CACHEFLOW" --version

# NODES free ports, all bound at once so that none is handed out twice.
mapfile -t PORTS < <(python3 - "$NODES" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
)
[ "${#PORTS[@]}" = "$NODES" ] || die "got ${#PORTS[@]} free ports, wanted $NODES"

echo "starting $NODES redis-servers ($(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/'))"
for i in "${!PORTS[@]}"; do
    dir=$TMP/node-$i
    mkdir -p "$dir"
    redis-server --port "${PORTS[$i]}" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
        --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
        || die "redis-server on port ${PORTS[$i]} did not start"
done
for port in "${PORTS[@]}"; do
    up=0
    for _ in $(seq 1 100); do
        if redis-cli -p "$port" PING >/dev/null 2>&1; then up=1; break; fi
        sleep 0.05
    done
    [ "$up" = 1 ] || die "redis-server on port $port does not answer"
done
echo "all $NODES answer PING"

# The config repository: clusters of PER_CLUSTER nodes, shards of a primary and two replicas.
REPO=$TMP/repo
mkdir -p "$REPO/clusters"
cat >"$REPO/cacheflow.yaml" <<'EOF'
apiVersion: cacheflow/v1
kind: Settings
metadata:
  name: settings
spec:
  rolloutDefaults:
    stages: [1, "100%"]
    maxUnavailablePerShard: 1
    onFailure: rollback
EOF
python3 - "$REPO" "$PER_CLUSTER" "${PORTS[@]}" <<'EOF'
import sys
repo, per, ports = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for c in range(0, len(ports), per):
    name = f"bench-{c // per:02d}"
    lines = [
        "apiVersion: cacheflow/v1",
        "kind: Cluster",
        "metadata:",
        f"  name: {name}",
        "spec:",
        "  engine: redis",
        "  parameters:",
        "    maxmemory: 256mb",
        "    maxmemory-policy: allkeys-lru",
        "  nodes:",
    ]
    for j, port in enumerate(ports[c:c + per]):
        shard, k = divmod(j, 3)
        role = "primary" if k == 0 else "replica"
        lines.append(f'    - {{ id: {name}-{j:02d}, address: "127.0.0.1:{port}", shard: s{shard + 1}, role: {role} }}')
    with open(f"{repo}/clusters/{name}.yaml", "w") as f:
        f.write("\n".join(lines) + "\n")
EOF
git -C "$REPO" init -q
git -C "$REPO" add -A
git -C "$REPO" -c user.name=bench -c user.email=bench@example.com commit -qm "$NODES loopback nodes"
"$CACHEFLOW" validate --repo "$REPO"

# Correctness: every node read, every one reachable.
"$CACHEFLOW" snapshot --repo "$REPO" -o "$WORK/snapshot.json"
python3 - "$WORK/snapshot.json" "$NODES" <<'EOF' || die "the snapshot does not hold $NODES reachable nodes"
import json, sys
s = json.load(open(sys.argv[1]))
n = len(s["nodes"])
up = sum(1 for v in s["nodes"].values() if v.get("reachable"))
params = min(len(v.get("parameters", {})) for v in s["nodes"].values())
print(f"snapshot: {n} nodes, {up} reachable, at least {params} parameters each")
sys.exit(0 if n == up == int(sys.argv[2]) else 1)
EOF
set +e
"$CACHEFLOW" plan --repo "$REPO" --direct > "$WORK/plan.txt" 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || { cat "$WORK/plan.txt"; die "plan --direct exited $rc, expected 2 (changes)"; }
echo "plan --direct: exit 2, $(grep -c 'maxmemory' "$WORK/plan.txt" || true) lines naming maxmemory"

/usr/bin/time -v -o "$WORK/rss-snapshot.txt" "$CACHEFLOW" snapshot --repo "$REPO" -o /dev/null
/usr/bin/time -v -o "$WORK/rss-validate.txt" "$CACHEFLOW" validate --repo "$REPO" > /dev/null

# The repository path is a temporary directory: name the commands in the export so the
# summary shows them without it.
hyperfine --warmup 2 --runs "$RUNS" -N \
    --export-json "$WORK/hyperfine.json" --export-markdown "$WORK/snapshot.md" \
    -n "cacheflow snapshot --repo R -o /dev/null" "$CACHEFLOW snapshot --repo $REPO -o /dev/null" \
    -n "cacheflow snapshot --repo R -o /dev/null --concurrency 100" "$CACHEFLOW snapshot --repo $REPO -o /dev/null --concurrency 100" \
    -n "cacheflow snapshot --repo R -o /dev/null --concurrency 16" "$CACHEFLOW snapshot --repo $REPO -o /dev/null --concurrency 16" \
    -n "cacheflow validate --repo R" "$CACHEFLOW validate --repo $REPO" \
    -n "cacheflow --version" "$CACHEFLOW --version"

# One node's read, as the driver does it, with redis-benchmark's client for scale:
# PING + (CONFIG GET * and INFO pipelined) on one connection.
echo "redis-benchmark (one client, 2000 requests) on the first node:"
redis-benchmark -p "${PORTS[0]}" -c 1 -n 2000 -q CONFIG GET '*' | tr '\r' '\n' | grep 'per second' | tail -1
redis-benchmark -p "${PORTS[0]}" -c 1 -n 2000 -q INFO server memory stats clients replication keyspace | tr '\r' '\n' | grep 'per second' | tail -1

python3 - "$WORK" "$NODES" <<'EOF' | tee "$WORK/summary.txt"
import json, re, sys
work, n = sys.argv[1], int(sys.argv[2])
res = {r["command"]: r for r in json.load(open(f"{work}/hyperfine.json"))["results"]}
def rss(name):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/rss-{name}.txt").read())
    return int(m.group(1)) / 1024
print(f"\n{n} redis-server nodes on loopback; wall seconds")
print("| command | median | mean ± σ | min | max | runs |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for name, r in res.items():
    print(f"| {name} | {r['median']:.4f} | {r['mean']:.4f} ± {r.get('stddev') or 0:.4f} | "
          f"{r['min']:.4f} | {r['max']:.4f} | {len(r['times'])} |")
s = res["cacheflow snapshot --repo R -o /dev/null"]["median"]
v = res["cacheflow validate --repo R"]["median"]
print(f"\npeak RSS: snapshot {rss('snapshot'):.1f} MiB, validate {rss('validate'):.1f} MiB")
print(f"snapshot median {s * 1000:.1f} ms (target < 200 ms: "
      f"{'met, ' + f'{200 / (s * 1000):.1f}x under' if s < 0.2 else f'MISSED by {s * 1000 - 200:.0f} ms'}); "
      f"of which loading the repository (validate) {v * 1000:.1f} ms, reading the nodes ~{(s - v) * 1000:.1f} ms")
EOF
