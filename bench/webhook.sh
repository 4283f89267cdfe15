#!/usr/bin/env bash
# Webhook received → the canary node's CONFIG SET done, on loopback, zero bake
# (issue 4 target: p50 under 150 ms).
#
#   bench/webhook.sh                 # 30 pushes, 5 nodes (canary, then the other 4)
#   PUSHES=60 NODES=3 bench/webhook.sh
#
# The real `cacheflow serve` follows a bare repository (a file:// remote, mirrored into
# its state directory as for any remote) and drives N real redis-servers directly. For
# each push, not timed: a commit changing `hz` is pushed to the remote and the previous
# rollout has completed (before the first: every node runs the first revision's `hz`, 60,
# not Redis's default). Timed: from just before the GitHub-signed push webhook is sent
# to the moment one node answers `CONFIG GET hz` with the new value (bench/webhook_probe.py
# polls every node over open connections, about 0.1 ms a round). The path measured:
# webhook signature check → fetch → validate the revision → plan → journal → canary
# assignment → the in-process agent wakes, reads, applies → CONFIG SET (+ CONFIG REWRITE).
#
# Needs: cargo, redis-server, redis-cli, git, python3 with redis (`pip install redis`).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work/webhook
NODES=${NODES:-5}
PUSHES=${PUSHES:-30}
# The first revision's hz: not Redis's default (10), so waiting for it waits for the
# fleet to run the first revision; the pushes then set 11..50.
HZ0=60
rm -rf "$WORK" && mkdir -p "$WORK/nodes"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

PY=""
for candidate in "${PYTHON:-python3}" /usr/bin/python3; do
    if "$candidate" -c 'import redis' 2>/dev/null; then PY=$candidate; break; fi
done
[[ -n "$PY" ]] || {
    echo "python3 needs the redis module: pip install redis (or apt-get install python3-redis)" >&2
    exit 1
}
# BUILD=0 BIN=path: a binary built already.
[ "${BUILD:-1}" = 0 ] || cargo build --release --locked >&2
CACHEFLOW=${BIN:-$ROOT/target/release/cacheflow}

python3 - "$((NODES + 1))" >"$WORK/ports" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
read -r -a PORTS <"$WORK/ports"
HTTP_PORT=${PORTS[0]}
NODE_PORTS=("${PORTS[@]:1}")

for port in "${NODE_PORTS[@]}"; do
    d=$WORK/nodes/$port && mkdir -p "$d"
    printf 'port %s\nbind 127.0.0.1\ndir "%s"\nsave ""\nappendonly no\nlogfile "%s/redis.log"\n' \
        "$port" "$d" "$d" >"$d/redis.conf"
    redis-server "$d/redis.conf" >/dev/null 2>&1 &
    PIDS+=($!)
done
for port in "${NODE_PORTS[@]}"; do
    for _ in $(seq 1 200); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
done

# The remote (bare) and the working copy the pushes come from.
git init -q --bare -b main "$WORK/remote.git"
git init -q -b main "$WORK/work"
mkdir -p "$WORK/work/clusters"
{
    cat <<'YAML'
apiVersion: cacheflow/v1
kind: Cluster
metadata: {name: bench}
spec:
  engine: redis
  parameters:
    hz: HZ0
  rollout:
    stages: [1, '100%']
    bake: 0s
    maxUnavailablePerShard: 1
    gates: {minOpsPerSec: 0}
  nodes:
YAML
    i=0
    for port in "${NODE_PORTS[@]}"; do
        i=$((i + 1))
        echo "    - {id: n$i, address: '127.0.0.1:$port', shard: s$i, role: primary}"
    done
} | sed "s/HZ0/$HZ0/" >"$WORK/work/clusters/bench.yaml"
git -C "$WORK/work" add -A
git -C "$WORK/work" -c user.name=bench -c user.email=bench@localhost commit -qm "bench: hz $HZ0"
git -C "$WORK/work" push -q "$WORK/remote.git" main

SECRET=bench-webhook-secret
CACHEFLOW_WEBHOOK_SECRET=$SECRET "$CACHEFLOW" serve --repo "file://$WORK/remote.git" \
    --state-dir "$WORK/state" --listen "127.0.0.1:$HTTP_PORT" --poll-interval 1h \
    --direct-interval 1s --resume-grace 2s >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.05
done

"$PY" "$ROOT/bench/webhook_probe.py" --url "http://127.0.0.1:$HTTP_PORT" --secret "$SECRET" \
    --work "$WORK/work" --remote "$WORK/remote.git" --pushes "$PUSHES" \
    --ports "${NODE_PORTS[*]}" --initial-hz "$HZ0" | tee "$WORK/summary.txt"
