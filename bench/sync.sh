#!/usr/bin/env bash
# `cacheflow sync` converging 5 parameters on N real Redis nodes (one stage, zero bake),
# process start to exit, side by side in one hyperfine run per fleet size with
#   - the floor: examples/sync_floor.rs, one process with one open client per node,
#     every node at once, each sent one pipelined round trip (CONFIG GET, CONFIG SET,
#     CONFIG REWRITE, CONFIG GET) and nothing else (no repository, plan, journal, gates);
#   - the hand-written peer: a sequential redis-py script doing the same CONFIG SETs
#     and CONFIG REWRITE.
# Targets (issue 20): 100 nodes under 50 ms and within 1.6x of the floor, 200 nodes
# under 80 ms; the lead over redis-py grows with the fleet.
#
#   bench/sync.sh                        # 20, 100 and 200 nodes, 15 runs each
#   SIZES="100" RUNS=5 bench/sync.sh
#   BASELINE=old/cacheflow bench/sync.sh # also time an older build, same nodes, same run
#   ANSIBLE=1 SIZES=20 RUNS=3 bench/sync.sh   # Ansible too (about a second per node)
#   COUNT=1 bench/sync.sh                # also count the commands each tool sends a node
#
# Every run starts from the same state: hyperfine's --prepare puts the 5 parameters
# back to the "before" values on every node (not timed), so each timed run changes all
# 5 parameters on all nodes. cacheflow runs with --yes (no prompt) and corrects the
# hand-made change as drift, through the whole path: validate the revision, read every
# node, plan, single stage, apply, read back, gates, journal commits, summary.
#
# Prints one table: medians per size, the ratios, and the cost per node. Everything
# lands in bench/work/sync/ (hyperfine-N.json, summary.txt).
#
# Needs: cargo, redis-server, redis-cli, hyperfine, python3 with redis
# (`pip install redis` or Debian's python3-redis).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work/sync
SIZES=${SIZES:-${NODES:-20 100 200}}
RUNS=${RUNS:-15}
# Where the nodes keep their config files: CONFIG REWRITE fsyncs the file and its
# directory, so the disk sets a floor under every tool (NODE_DIR=/dev/shm/... puts the
# files in memory to show the tools' own cost).
NODE_DIR=${NODE_DIR:-$WORK/nodes}
rm -rf "$WORK" "$NODE_DIR" && mkdir -p "$WORK" "$NODE_DIR"

PIDS=()
stop_nodes() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}
trap stop_nodes EXIT

# A python with the redis module (the one on PATH, else the system's).
PY=""
for candidate in "${PYTHON:-python3}" /usr/bin/python3; do
    if "$candidate" -c 'import redis' 2>/dev/null; then PY=$candidate; break; fi
done
[[ -n "$PY" ]] || {
    echo "python3 needs the redis module: pip install redis (or apt-get install python3-redis)" >&2
    exit 1
}
[[ "${BUILD:-1}" == 0 ]] || cargo build --release --locked --bin cacheflow --example sync_floor >&2
CACHEFLOW=$ROOT/target/release/cacheflow
FLOOR=$ROOT/target/release/examples/sync_floor
PARAMS="hz=20 maxmemory=64mb maxmemory-policy=allkeys-lru timeout=300 tcp-keepalive=120"

# Start N nodes, each from its own config file (so every change is also a CONFIG
# REWRITE), and write the config repository: one cluster, every node its own shard.
start_fleet() {
    local n=$1 dir=$WORK/$1
    mkdir -p "$dir"
    python3 - "$n" >"$dir/ports" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
    read -r -a PORTS <"$dir/ports"
    for port in "${PORTS[@]}"; do
        local d=$NODE_DIR/$port && mkdir -p "$d"
        printf 'port %s\nbind 127.0.0.1\ndir "%s"\nsave ""\nappendonly no\nlogfile "%s/redis.log"\n' \
            "$port" "$d" "$d" >"$d/redis.conf"
        redis-server "$d/redis.conf" >/dev/null 2>&1 &
        PIDS+=($!)
    done
    for port in "${PORTS[@]}"; do
        for _ in $(seq 1 200); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.05; done
    done
    local repo=$dir/repo
    mkdir -p "$repo/clusters"
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
        local i=0
        for port in "${PORTS[@]}"; do
            i=$((i + 1))
            echo "    - {id: n$i, address: '127.0.0.1:$port', shard: s$i, role: primary}"
        done
    } >"$repo/clusters/bench.yaml"
    git -C "$repo" init -q -b main
    git -C "$repo" add -A
    git -C "$repo" -c user.name=bench -c user.email=bench@localhost commit -qm "bench: 5 parameters"
    # Put every node back to the "before" values (not timed; one process for all nodes).
    cat >"$dir/reset.sh" <<SH
#!/usr/bin/env bash
exec $PY - "$dir/ports" <<'RESET'
import sys, redis
for port in open(sys.argv[1]).read().split():
    r = redis.Redis(host="127.0.0.1", port=int(port))
    r.execute_command("CONFIG", "SET", "hz", "10", "maxmemory", "0", "maxmemory-policy",
                      "noeviction", "timeout", "0", "tcp-keepalive", "300")
    r.close()
RESET
SH
    chmod +x "$dir/reset.sh"
}

# The commands each tool sends one node in a run (INFO commandstats), after a reset.
count_commands() {
    local dir=$1 name=$2
    shift 2
    "$dir/reset.sh"
    for port in "${PORTS[@]}"; do redis-cli -p "$port" CONFIG RESETSTAT >/dev/null; done
    "$@" >/dev/null
    local port=${PORTS[0]}
    local calls
    calls=$(redis-cli -p "$port" INFO commandstats | tr -d '\r' |
        sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\),.*/\1 \2/p' | grep -v '^config|resetstat ' |
        awk '{printf "%s%s x%s", sep, $1, $2; sep=", "; total+=$2} END {printf " (%d commands)", total}')
    echo "$name, per node: $calls" | tee -a "$WORK/summary.txt"
}

for n in $SIZES; do
    start_fleet "$n"
    dir=$WORK/$n
    CMDS=(
        -n "cacheflow sync" "$CACHEFLOW sync --repo $dir/repo --yes --format json"
        -n "floor" "$FLOOR $dir/ports $PARAMS"
        -n "redis-py (sequential)" "$PY $ROOT/bench/peers/redis_py_sync.py $dir/ports $PARAMS"
    )
    if [[ -n "${BASELINE:-}" ]]; then
        # Its own copy of the repository, without this build's journal: an older build
        # refuses a journal in a newer format, as it must.
        rm -rf "$dir/repo-baseline"
        cp -a "$dir/repo" "$dir/repo-baseline"
        for ref in $(git -C "$dir/repo-baseline" for-each-ref --format='%(refname)' refs/cacheflow refs/notes); do
            git -C "$dir/repo-baseline" update-ref -d "$ref"
        done
        CMDS+=(-n "cacheflow sync (baseline)" "$BASELINE sync --repo $dir/repo-baseline --yes --format json")
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
        } >"$dir/inventory"
        cat >"$dir/playbook.yml" <<'YML'
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
        CMDS+=(-n "ansible community.general.redis" "ansible-playbook -i $dir/inventory $dir/playbook.yml")
    fi

    # Check the end state once, before timing: every tool converges every node.
    for tool in cacheflow floor; do
        "$dir/reset.sh"
        case $tool in
            cacheflow) "$CACHEFLOW" sync --repo "$dir/repo" --yes --format json >"$dir/first.json" ;;
            floor) "$FLOOR" "$dir/ports" $PARAMS >/dev/null ;;
        esac
        for port in "${PORTS[@]}"; do
            [[ $(redis-cli -p "$port" CONFIG GET hz | tail -1) == 20 ]] ||
                { echo "$tool: node $port not converged" >&2; exit 1; }
        done
    done
    if [[ "${COUNT:-0}" == 1 ]]; then
        count_commands "$dir" "cacheflow sync ($n nodes)" "$CACHEFLOW" sync --repo "$dir/repo" --yes --format json
        count_commands "$dir" "floor ($n nodes)" "$FLOOR" "$dir/ports" $PARAMS
    fi

    echo "== $n nodes" | tee -a "$WORK/summary.txt"
    hyperfine --style basic --runs "$RUNS" --warmup 1 --prepare "$dir/reset.sh" \
        --export-json "$WORK/hyperfine-$n.json" "${CMDS[@]}" | tee -a "$WORK/summary.txt"
    stop_nodes
done

# One table: medians, ratios, and the cost per node.
python3 - "$WORK" $SIZES <<'PY' | tee -a "$WORK/summary.txt"
import json, sys
work, sizes = sys.argv[1], sys.argv[2:]
print()
print("| nodes | cacheflow sync | floor | redis-py | cacheflow / floor | redis-py / cacheflow | cacheflow per node | floor per node | redis-py per node |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for n in sizes:
    res = {r["command"]: r for r in json.load(open(f"{work}/hyperfine-{n}.json"))["results"]}
    c = res["cacheflow sync"]["median"] * 1000
    f = res["floor"]["median"] * 1000
    p = res["redis-py (sequential)"]["median"] * 1000
    k = int(n)
    print(f"| {n} | {c:.1f} ms | {f:.1f} ms | {p:.1f} ms | {c/f:.2f}x | {p/c:.1f}x | {c/k:.2f} ms | {f/k:.2f} ms | {p/k:.2f} ms |")
    for name, r in res.items():
        if name not in ("cacheflow sync", "floor", "redis-py (sequential)"):
            print(f"|   {name}: median {r['median']*1000:.1f} ms ({r['median']*1000/c:.2f}x cacheflow) |")
# What each node adds, between successive sizes (the fixed start-up cost cancels out).
rows = []
for n in sizes:
    res = {r["command"]: r["median"] * 1000 for r in json.load(open(f"{work}/hyperfine-{n}.json"))["results"]}
    rows.append((int(n), res))
if len(rows) > 1:
    print()
    print("| from → to | cacheflow sync, per added node | floor, per added node | redis-py, per added node |")
    print("| --- | --- | --- | --- |")
    for (a, ra), (b, rb) in zip(rows, rows[1:]):
        d = b - a
        cells = [f"{(rb[k] - ra[k]) / d:.3f} ms" for k in ("cacheflow sync", "floor", "redis-py (sequential)")]
        print(f"| {a} → {b} | " + " | ".join(cells) + " |")
PY
