#!/usr/bin/env bash
# The web console beside the 10,000-agent benchmark (issue 19, BENCHMARKS.md "The web
# console"): does a hundred open pages move the agents' report p99?
#
#   bench/console.sh                  # 3 runs without pages and 3 with 100, in turn
#   RUNS=5 PAGES=100 bench/console.sh
#   PROBE=0 bench/console.sh          # without the page-time / per-stream memory probe
#
# Runs bench/agents.sh (rollout during the measured window, as its default) RUNS times
# with PAGES=0 and RUNS times with PAGES=N, alternating (0, N, 0, N, ...) so that a
# machine that slows down during the run slows both alike; keeps each summary in
# bench/work/console/; prints every run's line and the medians of the agents' p99 and
# p50, the server's bucketed p99, the server's CPU time and peak RSS for each side, the
# ratio of the p99 medians and the median of the per-pair p99 ratios. Then, with
# PROBE=1 (default), `CONSOLE_PROBE=1 bench/agents.sh`: the fleet page's time and size
# and the memory of an open event stream on the same fleet.
#
# Extra variables (DURATION, WARMUP, CLUSTERS, ...) pass through to bench/agents.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/bench/work/console
RUNS=${RUNS:-3}
PAGES=${PAGES:-100}
PROBE=${PROBE:-1}

# BUILD=0: the binaries as they are (BIN= a saved build, say).
[ "${BUILD:-1}" = 0 ] || cargo build --release -q --bin cacheflow --example agent_swarm
BIN=${BIN:-$ROOT/target/release/cacheflow}
export BIN
rm -rf "$OUT"
mkdir -p "$OUT"
{
  echo "commit=$(git rev-parse --short=12 HEAD)$(git diff --quiet HEAD -- src || echo +dirty) binary=$BIN runs=$RUNS pages=$PAGES"
  echo "nproc=$(nproc) start=$(date -u +%FT%TZ) load_average=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)"
} | tee "$OUT/summary.txt"

for i in $(seq 1 "$RUNS"); do
  for n in 0 "$PAGES"; do
    BUILD=0 PAGES=$n bench/agents.sh >"$OUT/run-$i-pages-$n.log" 2>&1 \
      || { echo "run $i with $n pages failed:"; tail -20 "$OUT/run-$i-pages-$n.log"; exit 1; }
    cp bench/work/agents/summary.txt "$OUT/run-$i-pages-$n.txt"
    echo "run $i pages=$n: $(tr '\n' ' ' <"$OUT/run-$i-pages-$n.txt")" | tee -a "$OUT/summary.txt"
  done
done

python3 - "$OUT" "$RUNS" "$PAGES" <<'PY' | tee -a "$OUT/summary.txt"
import re, statistics, sys
out, runs, pages = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def fields(path):
    return dict(re.findall(r"(\w+)=(\S+)", open(path).read()))
side = {n: [fields(f"{out}/run-{i}-pages-{n}.txt") for i in range(1, runs + 1)] for n in ("0", pages)}
def med(n, key):
    return statistics.median(float(r[key]) for r in side[n])
for key in ("p50_ms", "p99_ms", "server_p99_le_ms", "rate_per_s", "serve_cpu_s", "serve_peak_rss_mib"):
    a, b = med("0", key), med(pages, key)
    print(f"{key}: median {a:g} without pages, {b:g} with {pages}; ratio {b / a:.2f}")
pairs = [float(w["p99_ms"]) / float(wo["p99_ms"]) for wo, w in zip(side["0"], side[pages])]
print(f"p99 with/without, per pair: {', '.join(f'{r:.2f}' for r in pairs)}; median {statistics.median(pairs):.2f}")
spread = [float(r["p99_ms"]) for r in side["0"]]
print(f"noise: p99 without pages ranged {min(spread):g}-{max(spread):g} ms over {runs} runs")
PY
echo "end=$(date -u +%FT%TZ) load_average=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' ,)" | tee -a "$OUT/summary.txt"

if [ "$PROBE" = 1 ]; then
  BUILD=0 CONSOLE_PROBE=1 bench/agents.sh >"$OUT/probe.log" 2>&1 || { tail -20 "$OUT/probe.log"; exit 1; }
  cp bench/work/agents/probe.txt "$OUT/probe.txt"
  sed 's/^/probe: /' "$OUT/probe.txt" | tee -a "$OUT/summary.txt"
fi
