#!/usr/bin/env bash
# Applying 5 parameters to one Redis node vs the floor of one CONFIG SET round trip,
# measured in the same run (target: within 3x of the floor; see issue 3).
#
#   bench/apply.sh                 # 2000 applies, 20000 CONFIG SETs
#   APPLIES=500 N=5000 bench/apply.sh
#
# 1. builds examples/apply_bench.rs (release);
# 2. starts two redis-servers on free loopback ports, in bench/work/apply/:
#    - "file": runs from a config file, so each apply is CONFIG GET + CONFIG SET +
#      CONFIG REWRITE (the rewrite writes and fsyncs the file);
#    - "args": configured on the command line, no config file: CONFIG GET + CONFIG SET;
# 3. per server: the floor, `redis-benchmark -c 1 -n N -q CONFIG SET hz 10` (one client,
#    so its p50 is one round trip, not throughput under concurrency), then the driver's
#    median apply of 5 parameters (every apply changes all five);
#    for the "file" server also the p50 of CONFIG REWRITE alone, the engine's own cost of
#    persisting, which no client can go under;
# 4. prints both and their ratio; a summary goes to bench/work/apply/summary.txt.
#
# Needs: cargo, redis-server and redis-benchmark (Debian: `apt-get install redis-server`).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work/apply
APPLIES=${APPLIES:-2000}
N=${N:-20000}
mkdir -p "$WORK"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_up() {
    for _ in $(seq 1 200); do
        if redis-cli -p "$1" PING >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    echo "redis-server on port $1 did not start" >&2
    exit 1
}

cargo build --release --example apply_bench >&2
BENCH=$ROOT/target/release/examples/apply_bench

# A server from a config file.
FILE_DIR=$WORK/file
rm -rf "$FILE_DIR" && mkdir -p "$FILE_DIR"
FILE_PORT=$(free_port)
cat >"$FILE_DIR/redis.conf" <<EOF
port $FILE_PORT
bind 127.0.0.1
dir "$FILE_DIR"
save ""
appendonly no
daemonize no
logfile "$FILE_DIR/redis.log"
EOF
redis-server "$FILE_DIR/redis.conf" >/dev/null 2>&1 &
PIDS+=($!)

# A server configured on the command line only.
ARGS_DIR=$WORK/args
rm -rf "$ARGS_DIR" && mkdir -p "$ARGS_DIR"
ARGS_PORT=$(free_port)
redis-server --port "$ARGS_PORT" --bind 127.0.0.1 --dir "$ARGS_DIR" --save "" \
    --appendonly no --logfile "$ARGS_DIR/redis.log" >/dev/null 2>&1 &
PIDS+=($!)

wait_up "$FILE_PORT"
wait_up "$ARGS_PORT"

# "CONFIG SET hz 10: 41000.00 requests per second, p50=0.023 msec" -> 23.0 (us)
# floor_us PORT COUNT COMMAND...
floor_us() {
    local port=$1 count=$2 out
    shift 2
    out=$(redis-benchmark -p "$port" -c 1 -n "$count" -q "$@" | tr '\r' '\n' | grep 'requests per second' | tail -1)
    echo "$out" >&2
    python3 -c 'import re,sys; m=re.search(r"p50=([0-9.]+) msec", sys.argv[1]); print(f"{float(m.group(1))*1000:.1f}")' "$out"
}

{
    echo "apply of 5 parameters vs one CONFIG SET round trip (redis $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/'), $(nproc) cores)"
    for kind in file args; do
        if [ "$kind" = file ]; then port=$FILE_PORT; else port=$ARGS_PORT; fi
        floor=$(floor_us "$port" "$N" CONFIG SET hz 10)
        line=$("$BENCH" "127.0.0.1:$port" "$APPLIES")
        median=$(echo "$line" | sed -E 's/^applies=[0-9]+ median_us=([0-9.]+).*/\1/')
        ratio=$(python3 -c "print(f'{$median/$floor:.2f}')")
        echo "$kind: floor (redis-benchmark -c 1 p50 of CONFIG SET) ${floor} us; apply: $line; ratio ${ratio}x"
        if [ "$kind" = file ]; then
            # What persisting alone costs the engine: the file is written, fsynced, renamed.
            rewrite=$(floor_us "$port" "$APPLIES" CONFIG REWRITE)
            ratio=$(python3 -c "print(f'{$median/($floor+$rewrite):.2f}')")
            echo "$kind: CONFIG REWRITE alone p50 ${rewrite} us; apply vs CONFIG SET + CONFIG REWRITE floors: ${ratio}x"
        fi
    done
} | tee "$WORK/summary.txt"
