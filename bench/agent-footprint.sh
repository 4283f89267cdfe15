#!/usr/bin/env bash
# What one real `cacheflow agent` costs beside its cache server: resident memory (VmRSS
# at the end, VmHWM the peak) and CPU time over DURATION seconds of reporting every
# INTERVAL, with two assignments applied on the way (BENCHMARKS.md "One agent's
# footprint").
#
#   bench/agent-footprint.sh                    # 60 s, a report every 2 s
#   DURATION=300 INTERVAL=30s bench/agent-footprint.sh   # the agent's default interval
#   BUILD=0 BIN=/path/to/cacheflow bench/agent-footprint.sh
#
# 1. starts a real redis-server on loopback from its own config file (hz 10);
# 2. writes a config repository: one cluster of that one agent-managed node, hz 15;
# 3. starts `cacheflow serve` (node-token secret, poll interval 1 s) and the agent
#    (`cacheflow agent --redis ...`, its token from `cacheflow agent-token`);
# 4. waits until the node reads back hz 15 (the agent applied the first assignment);
#    halfway, commits hz 25 and waits until the node reads it back;
# 5. at DURATION, reads the agent's and redis-server's /proc figures (the agent's RSS
#    split into anonymous memory and mapped files: its binary's pages) and prints them
#    (also into bench/work/agent-footprint/summary.txt). Fails if an apply did not
#    reach the node: the figures are then not those of a working agent.
#
# Needs: cargo, redis-server, redis-cli, git, curl.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work/agent-footprint
DURATION=${DURATION:-60}
INTERVAL=${INTERVAL:-2s}
SPORT=${SPORT:-18580}

die() { printf 'bench/agent-footprint.sh: %s\n' "$*" >&2; exit 1; }
for tool in redis-server redis-cli git curl python3; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[ "${BUILD:-1}" = 0 ] || cargo build --release -q --bin cacheflow
BIN=${BIN:-$ROOT/target/release/cacheflow}

rm -rf "$WORK"
mkdir -p "$WORK/node" "$WORK/repo/clusters" "$WORK/state"
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'port %s\nbind 127.0.0.1\ndir "%s"\nsave ""\nappendonly no\nhz 10\n' "$PORT" "$WORK/node" \
    >"$WORK/node/redis.conf"
redis-server "$WORK/node/redis.conf" >"$WORK/node/redis.log" 2>&1 &
REDIS=$!
PIDS+=("$REDIS")
for _ in $(seq 1 100); do redis-cli -p "$PORT" PING >/dev/null 2>&1 && break; sleep 0.05; done
redis-cli -p "$PORT" PING >/dev/null || die "redis-server did not start (see $WORK/node/redis.log)"

write_cluster() { # $1: hz
    cat >"$WORK/repo/clusters/footprint.yaml" <<YAML
apiVersion: cacheflow/v1
kind: Cluster
metadata: {name: footprint}
spec:
  engine: redis
  parameters:
    hz: $1
  rollout:
    bake: 0s
    gates: {minOpsPerSec: 0}
  nodes:
    - {id: n1, address: '127.0.0.1:$PORT', shard: s1, role: primary, managed: agent}
YAML
    git -C "$WORK/repo" add -A
    git -C "$WORK/repo" -c user.name=bench -c user.email=bench@localhost commit -qm "footprint: hz $1"
}
git -C "$WORK/repo" init -q -b main
write_cluster 15

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/secret"
"$BIN" agent-token n1 --secret-file "$WORK/secret" >"$WORK/token"
"$BIN" serve --repo "$WORK/repo" --state-dir "$WORK/state" --listen "127.0.0.1:$SPORT" \
    --node-token-secret-file "$WORK/secret" --poll-interval 1s >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$SPORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -fs "http://127.0.0.1:$SPORT/readyz" >/dev/null || die "serve did not become ready (see $WORK/serve.log)"

START=$(date +%s.%N)
"$BIN" agent --node-id n1 --server "http://127.0.0.1:$SPORT" --token-file "$WORK/token" \
    --redis "127.0.0.1:$PORT" --interval "$INTERVAL" >"$WORK/agent.log" 2>&1 &
AGENT=$!
PIDS+=("$AGENT")

wait_hz() { # $1: value, $2: seconds
    for _ in $(seq 1 $(($2 * 10))); do
        [ "$(redis-cli -p "$PORT" CONFIG GET hz | tail -1)" = "$1" ] && return 0
        sleep 0.1
    done
    die "the node did not read back hz $1 within $2 s (see $WORK/agent.log, $WORK/serve.log)"
}
wait_hz 15 30
sleep $((DURATION / 2))
write_cluster 25
wait_hz 25 30
python3 -c "import time; time.sleep(max(0.0, $START + $DURATION - time.time()))"

kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / t}' "/proc/$1/stat"; }
kill -0 "$AGENT" 2>/dev/null || die "the agent exited (see $WORK/agent.log)"
{
    echo "duration_s=$DURATION interval=$INTERVAL applied=hz15,hz25 commit=$(git -C "$ROOT" rev-parse --short HEAD)"
    echo "agent_rss_kib=$(kib "$AGENT" VmRSS) agent_peak_rss_kib=$(kib "$AGENT" VmHWM) agent_anon_kib=$(kib "$AGENT" RssAnon) agent_file_kib=$(kib "$AGENT" RssFile) agent_cpu_s=$(cpu_s "$AGENT") agent_threads=$(kib "$AGENT" Threads)"
    echo "redis_rss_kib=$(kib "$REDIS" VmRSS) redis_cpu_s=$(cpu_s "$REDIS")"
} | tee "$WORK/summary.txt"
