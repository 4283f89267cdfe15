#!/usr/bin/env bash
# Replicas on etcd, two figures (BENCHMARKS.md, "Replicas on etcd"):
#   1. the cost of one journal entry: Git only (the single process) and etcd under the
#      leader's fence then Git (a replica), in one run (examples/journal_bench.rs);
#   2. failover: three `cacheflow serve` replicas on one redis-server node, the leader
#      SIGKILLed KILLS times; each time, from the kill to the leader key held by another
#      replica, and to that replica's /readyz 200 (it has taken over and read the head).
# Starts its own three-member etcd cluster on loopback. Needs etcd, redis-server, curl,
# git, python3. ENTRIES=, CLUSTERS=, KILLS=, TTL= change the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
ENTRIES=${ENTRIES:-500}
CLUSTERS=${CLUSTERS:-100}
KILLS=${KILLS:-20}
TTL=${TTL:-3}
work=$(mktemp -d -t cacheflow-replicas-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${replica_pids:-}" ] && for p in $replica_pids; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

source bench/lib/etcd.sh

cargo build -q --bin cacheflow --example journal_bench
bin=target/debug/cacheflow

start_etcd "$work"

echo "== journal entry cost: $ENTRIES entries, $CLUSTERS clusters"
target/debug/examples/journal_bench "$endpoints" "$ENTRIES" "$CLUSTERS"

[ "$KILLS" = 0 ] && exit 0
echo "== failover: $KILLS leader kills, lease TTL ${TTL}s"
rport=$(port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$work/redis.pid" --logfile "$work/redis.log" --dir "$work"
pids+=($(sleep 0.5; cat "$work/redis.pid"))
git init -q --bare "$work/remote.git"
git init -q "$work/config"
mkdir -p "$work/config/clusters"
cat >"$work/config/clusters/cache.yaml" <<YAML
apiVersion: cacheflow/v1
kind: Cluster
metadata: {name: cache}
spec:
  engine: redis
  parameters:
    hz: 20
  nodes:
    - {id: n1, address: '127.0.0.1:$rport', role: primary}
  rollout:
    stages: ['100%']
    bake: 0s
    gates: {minOpsPerSec: 0, maxLatencyIncreaseMs: 1000}
YAML
git -C "$work/config" add -A
git -C "$work/config" -c user.name=bench -c user.email=bench@localhost commit -qm "cache: hz 20"
git -C "$work/config" push -q "$work/remote.git" HEAD:refs/heads/main

declare -a ports
start_replica() {
  local i=$1
  "$bin" serve --repo "file://$work/remote.git" --state-dir "$work/state-$i" \
    --listen "127.0.0.1:${ports[$i]}" --advertise-url "http://127.0.0.1:${ports[$i]}" \
    --etcd-endpoints "$endpoints" --lease-ttl "${TTL}s" --poll-interval 1h \
    --direct-interval 1s --resume-grace 2s >>"$work/replica-$i.log" 2>&1 &
  rpid[$i]=$!
  disown "${rpid[$i]}"
}
declare -a rpid
for i in 0 1 2; do ports[$i]=$(port); start_replica "$i"; done
replica_pids="${rpid[*]}"
leader() {
  for i in 0 1 2; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ports[$i]}/readyz")" = 200 ] && { echo "$i"; return; }
  done
  echo ""
}
key_holder() {
  curl -s "http://127.0.0.1:${cports[0]}/v3/kv/range" -d "{\"key\":\"$(printf /cacheflow/shard/0/leader | base64)\"}" \
    | python3 -c 'import sys,json,base64; k=json.load(sys.stdin).get("kvs"); print(base64.b64decode(k[0]["value"]).decode() if k else "")'
}
now() { date +%s.%N; }
until [ -n "$(leader)" ]; do sleep 0.1; done
: >"$work/failover.txt"
for k in $(seq 1 "$KILLS"); do
  l=$(leader)
  while [ -z "$l" ]; do sleep 0.1; l=$(leader); done
  old="http://127.0.0.1:${ports[$l]}"
  sleep 1
  t0=$(now)
  kill -9 "${rpid[$l]}"
  while :; do h=$(key_holder); [ -n "$h" ] && [ "$h" != "$old" ] && break; sleep 0.05; done
  t1=$(now)
  while :; do n=$(leader); [ -n "$n" ] && [ "$n" != "$l" ] && break; sleep 0.05; done
  t2=$(now)
  python3 -c "print(f'{$t1-$t0:.2f} {$t2-$t0:.2f}')" | tee -a "$work/failover.txt"
  start_replica "$l"
  replica_pids="${rpid[*]}"
done
python3 - "$work/failover.txt" "$TTL" <<'PY'
import sys, statistics
rows = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
key = sorted(r[0] for r in rows); ready = sorted(r[1] for r in rows)
print(f"kills={len(rows)} ttl_s={sys.argv[2]} key_median_s={statistics.median(key):.2f} key_worst_s={key[-1]:.2f} "
      f"ready_median_s={statistics.median(ready):.2f} ready_worst_s={ready[-1]:.2f}")
PY
