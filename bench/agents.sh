#!/usr/bin/env bash
# 10,000 simulated agents reporting every 2 s to a real `cacheflow serve` (targets: the
# server keeps up on 2 cores with report p99 under 20 ms and RSS under 300 MB; issue 4,
# BENCHMARKS.md "Server under agent load").
#
#   bench/agents.sh                            # 100 clusters x 100 agents, 60 s measured
#   CLUSTERS=10 PER_CLUSTER=100 DURATION=20 bench/agents.sh
#   ROLLOUT=0 bench/agents.sh                  # steady state only, no rollout during the run
#   PAGES=100 bench/agents.sh                  # the same with 100 console pages open
#   CONSOLE_PROBE=1 bench/agents.sh            # the console's costs on this fleet, no swarm
#   bench/console.sh                           # 0 and 100 pages in turn, medians and ratio
#
# 1. builds the release binary and examples/agent_swarm.rs;
# 2. writes a config repository: CLUSTERS clusters of PER_CLUSTER agent-managed redis
#    nodes (`c000-n000` ...), hz 10 and allkeys-lru, stages [1, 10%, 100%], zero bake;
# 3. starts `cacheflow serve` on loopback (poll interval 1 s, file-descriptor limit
#    raised for 10,000 connections) and waits for /readyz;
# 4. runs the swarm (one thread, one keep-alive connection per agent, starts spread over
#    the first interval, WARMUP s not measured); with ROLLOUT=1 (default), WARMUP+10 s in,
#    a commit changes hz to 20 in every cluster, so the measured window includes 100
#    staged rollouts over every agent while the reports go on;
# 5. prints the swarm's line (reports, rate, p50/p90/p99/max as the agents saw them,
#    which includes the swarm's own scheduling on its one thread), the server's own
#    report latency over the measured window from /metrics (the histogram bucket that
#    holds p50 and p99), and the server's resident
#    memory (VmRSS at the end, VmHWM the peak) and CPU time, the fleet page's size and
#    time (one `curl -w` at the end), also into bench/work/agents/summary.txt.
#
# PAGES=N: PAGES_AT s after the swarm starts (default 5, inside the warm-up),
# bench/console_pages.py opens N console pages over 2 s, as browsers would: each loads
# the fleet (`GET /`) once and then holds its event stream (`/console/events?since=SEQ`)
# open, reading every event, until the swarm ends; its line (pages still open at the end,
# events and bytes read, its own CPU time) joins the summary. The client shares the
# machine with the server and the swarm; PAGES_NICE=19 runs it at the lowest priority,
# closer to browsers on other machines.
#
# CONSOLE_PROBE=1: instead of the swarm, measure the console on this fleet (10,000 nodes,
# waiting for their agents): the fleet page's time (hyperfine over `curl`, RUNS_PAGE
# runs) and size, then the server's VmRSS before and after STREAMS (default 1,000) open
# event streams, each sent every fleet row when it connects; per stream = the difference
# / STREAMS. Into bench/work/agents/probe.txt.
#
# Needs: cargo, python3, curl, git (and hyperfine for CONSOLE_PROBE).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work/agents
CLUSTERS=${CLUSTERS:-100}
PER_CLUSTER=${PER_CLUSTER:-100}
INTERVAL=${INTERVAL:-2}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-15}
ROLLOUT=${ROLLOUT:-1}
PORT=${PORT:-18480}
PAGES=${PAGES:-0}
PAGES_AT=${PAGES_AT:-5}
PAGES_NICE=${PAGES_NICE:-0}   # 19: the pages' client yields the CPU (browsers are elsewhere)
CONSOLE_PROBE=${CONSOLE_PROBE:-0}
STREAMS=${STREAMS:-1000}
RUNS_PAGE=${RUNS_PAGE:-20}
SERVE_WRAP=${SERVE_WRAP:-}  # e.g. 'heaptrack -o FILE' (the figures are the server's; under heaptrack, a build with the system allocator)

# BUILD=0: use the binaries as they are (bench/console.sh builds once for all its runs).
[ "${BUILD:-1}" = 0 ] || cargo build --release -q --bin cacheflow --example agent_swarm
BIN=${BIN:-$ROOT/target/release/cacheflow}
SWARM=${SWARM:-$ROOT/target/release/examples/agent_swarm}

rm -rf "$WORK"
mkdir -p "$WORK/repo" "$WORK/state"
REPO=$WORK/repo

write_clusters() { # $1: hz
  python3 "$ROOT/bench/agent_fleet.py" "$REPO" "$CLUSTERS" "$PER_CLUSTER" "$1"
}

git -C "$REPO" init -q -b main
write_clusters 10
git -C "$REPO" add -A
git -C "$REPO" -c user.name=bench -c user.email=bench@localhost commit -qm "agents: hz 10"

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/secret"

# One socket per agent on each side: raise the soft limit as far as the hard one allows.
ulimit -n "$(ulimit -Hn)"
$SERVE_WRAP "$BIN" serve --repo "$REPO" --state-dir "$WORK/state" --listen "127.0.0.1:$PORT" \
  --node-token-secret-file "$WORK/secret" --poll-interval 1s \
  >"$WORK/serve.log" 2>&1 &
SERVE=$!
PAGES_PID=
trap 'kill $SERVE $PAGES_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$PORT/readyz" >/dev/null || { echo "serve did not become ready"; cat "$WORK/serve.log"; exit 1; }
if [ -n "$SERVE_WRAP" ]; then
  # The wrapper (heaptrack) runs the server as its child: measure and stop the server
  # itself; stopped with SIGTERM, it exits cleanly and the wrapper writes its data.
  WRAPPER=$SERVE
  SERVE=$(pgrep -P "$WRAPPER" -f "serve --repo" | head -1)
  [ -n "$SERVE" ] || { echo "no server process under the wrapper $WRAPPER"; exit 1; }
  trap 'kill $SERVE $PAGES_PID 2>/dev/null || true; wait $WRAPPER 2>/dev/null || true' EXIT
fi

rss_kib() { awk '/VmRSS/ {print $2}' /proc/$SERVE/status; }

if [ "$CONSOLE_PROBE" = 1 ]; then
  URL=http://127.0.0.1:$PORT/
  curl -fs -o /dev/null -w 'page_bytes=%{size_download} page_first_s=%{time_total}\n' "$URL" \
    | tee "$WORK/probe.txt"
  hyperfine -N --warmup 3 --runs "$RUNS_PAGE" --export-json "$WORK/page.json" \
    "curl -fs -o /dev/null $URL" >"$WORK/page-hyperfine.txt"
  python3 - "$WORK/page.json" <<'PY' | tee -a "$WORK/probe.txt"
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
print(f"page_median_ms={r['median'] * 1000:.1f} page_mean_ms={r['mean'] * 1000:.1f} "
      f"page_min_ms={r['min'] * 1000:.1f} page_max_ms={r['max'] * 1000:.1f} runs={len(r['times'])}")
PY
  sleep 2
  BEFORE=$(rss_kib)
  python3 "$ROOT/bench/console_pages.py" streams "$PORT" "$STREAMS" "$WORK/streams.txt" "$CLUSTERS" &
  PAGES_PID=$!
  for _ in $(seq 1 600); do grep -q '^ready' "$WORK/streams.txt" 2>/dev/null && break; sleep 0.5; done
  grep -q '^ready' "$WORK/streams.txt" || { echo "the streams did not open"; exit 1; }
  sleep 2
  AFTER=$(rss_kib)
  OPEN=$(sed -n 's/^ready open=\([0-9]*\).*/\1/p' "$WORK/streams.txt")
  kill "$PAGES_PID"; wait "$PAGES_PID" || true
  python3 -c "
b, a, n = $BEFORE, $AFTER, $OPEN
print(f'streams={n} rss_before_kib={b} rss_after_kib={a} per_stream_kib={(a - b) / max(n, 1):.1f}')" \
    | tee -a "$WORK/probe.txt"
  cat "$WORK/streams.txt" >>"$WORK/probe.txt"
  exit 0
fi

if [ "$PAGES" -gt 0 ]; then
  ( sleep "$PAGES_AT"; exec nice -n "$PAGES_NICE" python3 "$ROOT/bench/console_pages.py" pages "$PORT" "$PAGES" "$WORK/pages.txt" 2 ) &
  PAGES_PID=$!
fi

if [ "$ROLLOUT" = 1 ]; then
  (
    sleep $((WARMUP + 10))
    write_clusters 20
    git -C "$REPO" add -A
    git -C "$REPO" -c user.name=bench -c user.email=bench@localhost commit -qm "agents: hz 20"
  ) &
fi

# The server's own report-latency histogram, at the end of the warm-up and at the end.
( sleep "$WARMUP"; curl -fs "http://127.0.0.1:$PORT/metrics" > "$WORK/metrics-before.txt" ) &
LINE=$("$SWARM" --server "http://127.0.0.1:$PORT" --secret-file "$WORK/secret" \
  --clusters "$CLUSTERS" --per-cluster "$PER_CLUSTER" --interval "${INTERVAL}s" \
  --duration "${DURATION}s" --warmup "${WARMUP}s")
curl -fs "http://127.0.0.1:$PORT/metrics" > "$WORK/metrics-after.txt"
PAGES_LINE="pages=0"
if [ -n "$PAGES_PID" ]; then
  kill "$PAGES_PID" 2>/dev/null || true
  wait "$PAGES_PID" || true
  for _ in $(seq 1 20); do grep -q '^pages=' "$WORK/pages.txt" 2>/dev/null && break; sleep 0.2; done
  PAGES_LINE=$(grep '^pages=' "$WORK/pages.txt" || echo "pages=$PAGES page_client=no_summary")
  PAGES_LINE="$PAGES_LINE $({ grep '^ready' "$WORK/pages.txt" || true; } | sed 's/^ready /ready_/;s/ / ready_/g')"
fi
read -r UTIME STIME < <(awk '{print $14, $15}' /proc/$SERVE/stat)
CPU_S=$(python3 -c "print(f'{($UTIME + $STIME) / $(getconf CLK_TCK):.1f}')")
PAGE=$(curl -fs -o /dev/null -w 'fleet_page_bytes=%{size_download} fleet_page_s=%{time_total}' "http://127.0.0.1:$PORT/")
SERVER=$(python3 - "$WORK/metrics-before.txt" "$WORK/metrics-after.txt" <<'PY'
import re, sys
def buckets(path):
    out = {}
    for line in open(path):
        m = re.match(r'cacheflow_report_duration_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out
b, a = buckets(sys.argv[1]), buckets(sys.argv[2])
les = sorted(a, key=lambda k: float("inf") if k == "+Inf" else float(k))
total = a["+Inf"] - b.get("+Inf", 0)
def upper(q):
    for le in les:
        if a[le] - b.get(le, 0) >= q * total:
            return "inf" if le == "+Inf" else f"{float(le) * 1000:g}"
    return "inf"
print(f"server_reports={total} server_p50_le_ms={upper(0.5)} server_p99_le_ms={upper(0.99)}")
PY
)
RSS=$(awk '/VmRSS/ {print $2}' /proc/$SERVE/status)
HWM=$(awk '/VmHWM/ {print $2}' /proc/$SERVE/status)
COMPLETED=$(curl -fs "http://127.0.0.1:$PORT/api/v1/rollouts" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(1 for c in d["clusters"] if (c.get("rollout") or {}).get("phase") == "completed"))')
{
  echo "$LINE"
  echo "$SERVER"
  echo "serve_rss_mib=$((RSS / 1024)) serve_peak_rss_mib=$((HWM / 1024)) serve_cpu_s=$CPU_S rollouts_completed=$COMPLETED"
  echo "$PAGES_LINE $PAGE"
  echo "load_average=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
} | tee "$WORK/summary.txt"
