#!/usr/bin/env bash
# `cacheflow sync` converging 5 parameters on 100 real Redis nodes (one stage, zero
# bake), process start to exit, side by side in one hyperfine run with the hand-written
# peer: a sequential redis-py script doing the same CONFIG SETs and CONFIG REWRITE.
# Target (issue 4): under 200 ms wall, and faster than the script.
#
#   bench/sync.sh              # 100 nodes, 15 runs each
#   NODES=20 RUNS=5 bench/sync.sh
#   BASELINE=old/cacheflow bench/sync.sh   # also time an older build, same nodes, same run
#
# Every run starts from the same state: hyperfine's --prepare puts the 5 parameters
# back to the "before" values on every node (not timed), so each timed run changes all
# 5 parameters on all nodes. cacheflow runs with --yes (no prompt) and corrects the
# hand-made change as drift, through the whole path: validate the revision, read every
# node, plan, canary-less single stage, apply, gates, journal commits, summary.
#
# Ansible's community.general.redis module is the other peer the issue names; if
# `ansible-playbook` and the collection are installed (`pip install ansible redis`),
# ANSIBLE=1 adds it to the same run (it takes about a second per node and task).
#
# Needs: cargo, redis-server, redis-cli, hyperfine, python3 with redis
# (`pip install redis` or Debian's python3-redis).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work/sync
NODES=${NODES:-100}
RUNS=${RUNS:-15}
# Where the nodes keep their config files: CONFIG REWRITE fsyncs the file and its
# directory, so the disk sets a floor under both tools (NODE_DIR=/dev/shm/... puts the
# files in memory to show the tools' own cost).
NODE_DIR=${NODE_DIR:-$WORK/nodes}
rm -rf "$WORK" "$NODE_DIR" && mkdir -p "$WORK" "$NODE_DIR"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
[[ "${KEEP:-0}" == 1 ]] && trap - EXIT

# A python with the redis module (the one on PATH, else the system's).
PY=""
for candidate in "${PYTHON:-python3}" /usr/bin/python3; do
    if "$candidate" -c 'import redis' 2>/dev/null; then PY=$candidate; break; fi
done
[[ -n "$PY" ]] || {
    echo "python3 needs the redis module: pip install redis (or apt-get install python3-redis)" >&2
    exit 1
}
cargo build --release --locked >&2
CACHEFLOW=$ROOT/target/release/cacheflow

# Free ports, one per node.
python3 - "$NODES" >"$WORK/ports" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
read -r -a PORTS <"$WORK/ports"

# Each node runs from its own config file, so every change is also CONFIG REWRITE-n.
for port in "${PORTS[@]}"; do
    d=$NODE_DIR/$port && mkdir -p "$d"
    printf 'port %s\nbind 127.0.0.1\ndir "%s"\nsave ""\nappendonly no\nlogfile "%s/redis.log"\n' \
        "$port" "$d" "$d" >"$d/redis.conf"
    redis-server "$d/redis.conf" >/dev/null 2>&1 &
    PIDS+=($!)
done
for port in "${PORTS[@]}"; do
    for _ in $(seq 1 200); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
done

# The config repository: one cluster, every node its own shard, one stage.
REPO=$WORK/repo
mkdir -p "$REPO/clusters"
{
    cat <<'YAML'
apiVersion: cacheflow/v1
kind: Cluster
metadata: {name: bench}
spec:
  engine: redis
  parameters:
    hz: 20
    maxmemory: 64mb
    maxmemory-policy: allkeys-lru
    timeout: 300
    tcp-keepalive: 120
  rollout:
    stages: ['100%']
    bake: 0s
    maxUnavailablePerShard: 1
    gates: {minOpsPerSec: 0}
  nodes:
YAML
    i=0
    for port in "${PORTS[@]}"; do
        i=$((i + 1))
        echo "    - {id: n$i, address: '127.0.0.1:$port', shard: s$i, role: primary}"
    done
} >"$REPO/clusters/bench.yaml"
git -C "$REPO" init -q -b main
git -C "$REPO" add -A
git -C "$REPO" -c user.name=bench -c user.email=bench@localhost commit -qm "bench: 5 parameters"

# Put every node back to the "before" values (not timed).
cat >"$WORK/reset.sh" <<SH
#!/usr/bin/env bash
for port in ${PORTS[*]}; do
    redis-cli -p \$port CONFIG SET hz 10 maxmemory 0 maxmemory-policy noeviction timeout 0 tcp-keepalive 300 >/dev/null
done
SH
chmod +x "$WORK/reset.sh"

CMDS=(
    -n "cacheflow sync" "$CACHEFLOW sync --repo $REPO --yes --format json"
    -n "redis-py (sequential)" "$PY $ROOT/bench/peers/redis_py_sync.py $WORK/ports hz=20 maxmemory=64mb maxmemory-policy=allkeys-lru timeout=300 tcp-keepalive=120"
)
# BASELINE=/path/to/an/older/cacheflow times that binary too, side by side in the same run.
if [[ -n "${BASELINE:-}" ]]; then
    CMDS+=(-n "cacheflow sync (baseline)" "$BASELINE sync --repo $REPO --yes --format json")
fi
if [[ "${ANSIBLE:-0}" == 1 ]]; then
    # Modules run with the Python that runs Ansible (it has the redis module).
    ANSIBLE_PY=$(ansible-playbook --version | grep 'python version' | sed 's/.*(\(\/[^)]*\))$/\1/')
    {
        echo "[redis]"
        i=0
        for port in "${PORTS[@]}"; do
            i=$((i + 1))
            echo "n$i ansible_connection=local ansible_python_interpreter=$ANSIBLE_PY redis_port=$port"
        done
    } >"$WORK/inventory"
    cat >"$WORK/playbook.yml" <<'YML'
- hosts: redis
  gather_facts: false
  tasks:
    - community.general.redis:
        command: config
        login_port: "{{ redis_port }}"
        name: "{{ item.name }}"
        value: "{{ item.value }}"
      loop:
        - {name: hz, value: "20"}
        - {name: maxmemory, value: "64mb"}
        - {name: maxmemory-policy, value: allkeys-lru}
        - {name: timeout, value: "300"}
        - {name: tcp-keepalive, value: "120"}
YML
    CMDS+=(-n "ansible community.general.redis" "ansible-playbook -i $WORK/inventory $WORK/playbook.yml")
fi

# Check the end state once, before timing.
"$WORK/reset.sh"
"$CACHEFLOW" sync --repo "$REPO" --yes --format json >"$WORK/first.json"
for port in "${PORTS[@]}"; do
    [[ $(redis-cli -p "$port" CONFIG GET hz | tail -1) == 20 ]] || { echo "node $port not converged" >&2; exit 1; }
done

hyperfine --style basic --runs "$RUNS" --warmup 1 --prepare "$WORK/reset.sh" \
    --export-json "$WORK/hyperfine.json" "${CMDS[@]}" | tee "$WORK/summary.txt"
python3 - "$WORK/hyperfine.json" <<'PY' | tee -a "$WORK/summary.txt"
import json, sys
res = json.load(open(sys.argv[1]))["results"]
base = res[0]["median"]
for r in res:
    print(f'{r["command"]}: median {r["median"]*1000:.1f} ms ({r["median"]/base:.1f}x cacheflow)')
PY
