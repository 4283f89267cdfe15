#!/usr/bin/env bash
# The 10,000-agent storm against replicas with shards (issue 21, BENCHMARKS.md "Shards
# spread over replicas: 10,000 agents"), beside one process in the same run:
#
#   bench/agents-sharded.sh                       # 2 replicas x 8 shards, then 1 process
#   REPLICAS=3 SHARDS=12 bench/agents-sharded.sh
#   SINGLE=0 bench/agents-sharded.sh              # the replicas only
#
# 1. builds the release binary and examples/agent_swarm.rs;
# 2. starts a three-member etcd cluster on loopback (bench/lib/etcd.sh) and a bare
#    repository as the remote, holding bench/agent_fleet.py's fleet: CLUSTERS clusters of
#    PER_CLUSTER agent-managed nodes, hz 10;
# 3. starts REPLICAS `cacheflow serve --shards SHARDS` replicas (their own state
#    directories, a 15 s lease, poll interval 1 s) and waits until every shard is led
#    (the shards their /readyz name) by the same replica for 6 s;
# 4. runs the swarm against all replicas (agent k calls replica k mod REPLICAS, as a
#    Service spreads them; a 307 is followed and its leader kept, as `cacheflow agent`
#    does); WARMUP+10 s in, a commit pushed to the remote changes hz to 20 in every
#    cluster, so the measured window holds CLUSTERS staged rollouts spread over the
#    shards' leaders;
# 5. prints the swarm's line (p99 as the agents saw it, redirects), each replica's RSS,
#    peak RSS and CPU time and the shards it led, and the rollouts completed over all
#    shards; then, with SINGLE=1 (default), runs bench/agents.sh (one process, the same
#    fleet, durations and rollout) for the side-by-side. Into
#    bench/work/agents-sharded/summary.txt.
#
# Needs: cargo, python3, curl, git, etcd.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work/agents-sharded
CLUSTERS=${CLUSTERS:-100}
PER_CLUSTER=${PER_CLUSTER:-100}
INTERVAL=${INTERVAL:-2}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-15}
REPLICAS=${REPLICAS:-2}
SHARDS=${SHARDS:-8}
SINGLE=${SINGLE:-1}

[ "${BUILD:-1}" = 0 ] || cargo build --release -q --bin cacheflow --example agent_swarm
BIN=${BIN:-$ROOT/target/release/cacheflow}
SWARM=${SWARM:-$ROOT/target/release/examples/agent_swarm}

rm -rf "$WORK"
mkdir -p "$WORK"
pids=()
replica_pids=()
cleanup() {
  for p in "${replica_pids[@]}" "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
source bench/lib/etcd.sh
start_etcd "$WORK"

REPO=$WORK/config
git init -q --bare "$WORK/remote.git"
git init -q -b main "$REPO"
python3 bench/agent_fleet.py "$REPO" "$CLUSTERS" "$PER_CLUSTER" 10
git -C "$REPO" add -A
git -C "$REPO" -c user.name=bench -c user.email=bench@localhost commit -qm "agents: hz 10"
git -C "$REPO" push -q "$WORK/remote.git" HEAD:refs/heads/main
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/secret"

ulimit -n "$(ulimit -Hn)"
declare -a ports
urls=""
for i in $(seq 0 $((REPLICAS - 1))); do
  ports[$i]=$(port)
  url="http://127.0.0.1:${ports[$i]}"
  urls+="${urls:+,}$url"
  mkdir -p "$WORK/r$i"
  "$BIN" serve --repo "file://$WORK/remote.git" --state-dir "$WORK/r$i" --listen "127.0.0.1:${ports[$i]}" \
    --node-token-secret-file "$WORK/secret" --poll-interval 1s \
    --etcd-endpoints "$endpoints" --shards "$SHARDS" --lease-ttl 15s \
    --replica-id "replica-$i" --advertise-url "$url" \
    >"$WORK/r$i/serve.log" 2>&1 &
  replica_pids+=($!)
done

led() { # the shards replica $1 leads, as its /readyz says
  # (--shards 1: a plain "ready" from the leader of shard 0.)
  { curl -s "http://127.0.0.1:${ports[$1]}/readyz" || true; } \
    | sed -n -e 's/^ready: leads shard(s) \(.*\) of .*/\1/p' -e '/^ready$/s/.*/0/p'
}
# Every shard led, and the same replica leading each for 6 s in a row (a replica that
# came up first takes every shard, then hands the others' over as they join).
stable=0; last=""
for _ in $(seq 1 300); do
  n=0; now=""
  for i in $(seq 0 $((REPLICAS - 1))); do
    l=$(led "$i"); now+="$i:$l;"
    [ -n "$l" ] && n=$((n + $(echo "$l" | tr ',' '\n' | wc -l)))
  done
  if [ "$n" = "$SHARDS" ] && [ "$now" = "$last" ]; then stable=$((stable + 1)); else stable=0; fi
  last=$now
  [ "$stable" -ge 12 ] && break
  sleep 0.5
done
[ "$n" = "$SHARDS" ] || { echo "only $n of $SHARDS shards are led"; tail -20 "$WORK"/r*/serve.log; exit 1; }

(
  sleep $((WARMUP + 10))
  python3 bench/agent_fleet.py "$REPO" "$CLUSTERS" "$PER_CLUSTER" 20
  git -C "$REPO" add -A
  git -C "$REPO" -c user.name=bench -c user.email=bench@localhost commit -qm "agents: hz 20"
  git -C "$REPO" push -q "$WORK/remote.git" HEAD:refs/heads/main
) &
LINE=$("$SWARM" --server "$urls" --secret-file "$WORK/secret" \
  --clusters "$CLUSTERS" --per-cluster "$PER_CLUSTER" --interval "${INTERVAL}s" \
  --duration "${DURATION}s" --warmup "${WARMUP}s")

completed=0
for s in $(seq 0 $((SHARDS - 1))); do
  path=/shards/$s/api/v1/rollouts; [ "$SHARDS" = 1 ] && path=/api/v1/rollouts
  c=$(curl -fsL "http://127.0.0.1:${ports[0]}$path" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(1 for c in d["clusters"] if (c.get("rollout") or {}).get("phase") == "completed"))')
  completed=$((completed + c))
done
{
  echo "replicas=$REPLICAS shards=$SHARDS $LINE"
  for i in $(seq 0 $((REPLICAS - 1))); do
    p=${replica_pids[$i]}
    read -r UTIME STIME < <(awk '{print $14, $15}' /proc/$p/stat)
    echo "replica=$i shards_led=$(led "$i" | tr -d ' ') rss_mib=$(( $(awk '/VmRSS/ {print $2}' /proc/$p/status) / 1024 )) peak_rss_mib=$(( $(awk '/VmHWM/ {print $2}' /proc/$p/status) / 1024 )) cpu_s=$(python3 -c "print(f'{($UTIME + $STIME) / $(getconf CLK_TCK):.1f}')")"
  done
  echo "rollouts_completed=$completed of $CLUSTERS"
  echo "load_average=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
} | tee "$WORK/summary.txt"

[ "${KEEP:-0}" = 1 ] && { echo "KEEP=1: replicas on ${urls}; Ctrl-C ends"; sleep infinity; }
cleanup
replica_pids=()
pids=()
if [ "$SINGLE" = 1 ]; then
  echo "== one process, the same fleet and rollout"
  BUILD=0 CLUSTERS=$CLUSTERS PER_CLUSTER=$PER_CLUSTER INTERVAL=$INTERVAL DURATION=$DURATION \
    WARMUP=$WARMUP bench/agents.sh | tee -a "$WORK/summary.txt"
fi
