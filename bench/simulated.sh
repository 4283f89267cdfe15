#!/usr/bin/env bash
# Snapshot plus plan of 10,000 simulated nodes (target: under 1 s, peak memory under
# 300 MB; see issue 3 and BENCHMARKS.md, "Node side").
#
#   bench/simulated.sh                   # 10,000 nodes, 15 runs per variant
#   NODES=2000 RUNS=5 bench/simulated.sh
#
# 1. builds examples/simulated_fleet.rs (release);
# 2. runs it RUNS times per variant and takes the median, min and max of the figure it
#    prints (snapshot + plan, timed inside the process) and of its parts; variants:
#    - default: each simulated node reports the parameters its cluster declares;
#    - --full-config: each node also reports every parameter of its engine's catalog,
#      as large as a real `CONFIG GET *`;
# 3. times the whole process with hyperfine (loading the desired state from YAML,
#    building the fleet, snapshot, plan) and measures peak RSS with /usr/bin/time -v; the
#    example also reports its resident memory once the model and the simulated nodes are
#    built, before the snapshot (the nodes' own state is not cacheflow's in a real fleet);
# 4. prints a summary (also written to bench/work/simulated/summary.txt).
#
# Needs: cargo, python3, hyperfine, GNU time at /usr/bin/time.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work/simulated
NODES=${NODES:-10000}
RUNS=${RUNS:-15}
BIN=$ROOT/target/release/examples/simulated_fleet
mkdir -p "$WORK"

die() { printf 'bench/simulated.sh: %s\n' "$*" >&2; exit 1; }
for tool in cargo python3 hyperfine; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[ -x /usr/bin/time ] || die "/usr/bin/time is missing: install GNU time"

cargo build --release --quiet --example simulated_fleet

for variant in default full-config; do
    flag=""
    [ "$variant" = full-config ] && flag="--full-config"
    out=$WORK/runs-$variant.txt
    : > "$out"
    # One run first, not kept (page cache, CPU frequency).
    "$BIN" "$NODES" $flag > /dev/null || die "simulated_fleet $NODES $flag failed"
    for _ in $(seq 1 "$RUNS"); do
        "$BIN" "$NODES" $flag >> "$out" || die "simulated_fleet $NODES $flag failed"
    done
    /usr/bin/time -v -o "$WORK/rss-$variant.txt" "$BIN" "$NODES" $flag > /dev/null
done

hyperfine --warmup 1 --runs "$RUNS" -N \
    --export-json "$WORK/hyperfine.json" --export-markdown "$WORK/hyperfine.md" \
    -n "simulated_fleet $NODES" "$BIN $NODES" \
    -n "simulated_fleet $NODES --full-config" "$BIN $NODES --full-config"

python3 - "$WORK" "$NODES" <<'EOF' | tee "$WORK/summary.txt"
import json, re, statistics, sys
work, n = sys.argv[1], int(sys.argv[2])
hf = {r["command"]: r for r in json.load(open(f"{work}/hyperfine.json"))["results"]}
def rss(variant):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/rss-{variant}.txt").read())
    return int(m.group(1)) / 1024
print(f"\n{n} simulated nodes; milliseconds inside the process (median [min-max] of the runs)")
print("| variant | snapshot + plan | snapshot | plan | plan_cluster only | load (YAML → model) | whole process (hyperfine median [min-max]) | peak RSS (time -v) | RSS with model + simulated nodes built | runs |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
notes = []
for variant, cmd in (("default", f"simulated_fleet {n}"), ("full-config", f"simulated_fleet {n} --full-config")):
    runs = [dict(kv.split("=", 1) for kv in line.split()) for line in open(f"{work}/runs-{variant}.txt")]
    counts = {(r["changed"], r["in_sync"], r["unreachable"]) for r in runs}
    assert len(counts) == 1, counts
    def col(key):
        xs = [float(r[key]) for r in runs]
        return f"{statistics.median(xs):.0f} [{min(xs):.0f}–{max(xs):.0f}]"
    h = hf[cmd]
    print(f"| {variant} | {col('snapshot_plan_ms')} | {col('snapshot_ms')} | {col('plan_ms')} | "
          f"{col('plan_clusters_ms')} | {col('load_ms')} | "
          f"{h['median'] * 1000:.0f} [{h['min'] * 1000:.0f}–{h['max'] * 1000:.0f}] | {rss(variant):.0f} MiB | {statistics.median(float(r['fleet_rss_mib']) for r in runs):.0f} MiB | {len(runs)} |")
    changed, in_sync, unreachable = counts.pop()
    sp = statistics.median(float(r["snapshot_plan_ms"]) for r in runs)
    notes.append(f"- {variant}: changed={changed} in_sync={in_sync} unreachable={unreachable}; "
          f"snapshot+plan {sp:.0f} ms (target < 1000 ms: {'met' if sp < 1000 else 'MISSED'}, {sp / 1000:.2f}x of it); "
          f"peak RSS {rss(variant) * 1.048576:.0f} MB (target < 300 MB: {'met' if rss(variant) * 1.048576 < 300 else 'MISSED'})")
print()
print("\n".join(notes))
EOF
