#!/usr/bin/env bash
# `cacheflow validate --rev HEAD` across fleet sizes, side by side with ajv-cli and the
# floor (see BENCHMARKS.md, "validate at scale").
#
#   bench/validate-scale.sh                              # 1,000 10,000 30,000 100,000
#   SIZES="1000 10000" bench/validate-scale.sh
#   BEFORE=/path/to/older/cacheflow bench/validate-scale.sh   # an older build beside it
#   AJV_MAX=30000 bench/validate-scale.sh                # skip ajv-cli above this size
#   BUILD=0 bench/validate-scale.sh                      # the binaries already built
#
# For each size N:
# 1. generates the fleet with `bench/gen-fleet.py --clusters N --seed 1` into
#    bench/work/fleet-N (kept; KEEP=0 deletes it after: 100,000 clusters is ~0.5 GB);
# 2. checks that cacheflow (and the older build) say `valid: N clusters`, and that ajv-cli
#    reports N files valid;
# 3. times with hyperfine (RUNS runs after a warm-up; fewer at 100,000): cacheflow, the
#    older build, ajv-cli (the command of bench/run.sh) and the floor
#    (examples/validate_floor.rs: the same blobs read from git plus their YAML parsed,
#    on two threads, nothing else);
# 4. measures peak RSS of each cacheflow build with /usr/bin/time -v;
# 5. prints a table: median, µs per cluster, peak RSS, ratio to ajv-cli and to the floor
#    (bench/work/validate-scale.md; hyperfine JSON in bench/work/validate-scale-N.json).
#
# Needs: cargo, git, python3, node + npm, hyperfine, GNU time at /usr/bin/time.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work
SIZES=${SIZES:-"1000 10000 30000 100000"}
RUNS=${RUNS:-10}
KEEP=${KEEP:-1}
AJV_MAX=${AJV_MAX:-100000}
BEFORE=${BEFORE:-}
SCHEMA=schemas/cacheflow.schema.json
CACHEFLOW=$ROOT/target/release/cacheflow
FLOOR=$ROOT/target/release/examples/validate_floor
AJV=$WORK/node/node_modules/.bin/ajv
OUT=$WORK/validate-scale.md
mkdir -p "$WORK"

die() { printf 'bench/validate-scale.sh: %s\n' "$*" >&2; exit 1; }
for tool in cargo git python3 node npm hyperfine; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done
[ -x /usr/bin/time ] || die "/usr/bin/time is missing: install GNU time"

# BUILD=0: time the binaries already in target/release (a commit moves HEAD, and the
# build script then rebuilds the crate).
[ "${BUILD:-1}" = 0 ] || cargo build --release --quiet --bin cacheflow --example validate_floor
if [ ! -x "$AJV" ] || [ ! -d "$WORK/node/node_modules/ajv-formats" ]; then
    npm install --prefix "$WORK/node" --no-audit --no-fund --loglevel=error ajv-cli@5 ajv-formats@3
fi
rss_mib() { awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$1"; }
median() { python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; print(' '.join('%s=%.4f' % (x['command'], x['median']) for x in r))" "$1"; }

{
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short HEAD)"
    echo
    echo "| clusters | YAML | command | median s | µs/cluster | peak RSS MiB | vs ajv-cli | vs floor |"
    echo "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"
} > "$OUT"

for n in $SIZES; do
    fleet=$WORK/fleet-$n
    rel=${fleet#"$ROOT"/}
    [ -d "$fleet/.git" ] || python3 bench/gen-fleet.py --clusters "$n" --seed 1 --out "$fleet" >&2
    mb=$(git -C "$fleet" ls-tree -r -l HEAD clusters | awk '{ s += $4 } END { printf "%.1f MB", s / 1e6 }')
    runs=$RUNS
    [ "$n" -lt 100000 ] || runs=$(( RUNS < 5 ? RUNS : 5 ))

    cmds=(-n cacheflow "$CACHEFLOW validate --repo $rel --rev HEAD")
    "$CACHEFLOW" validate --repo "$rel" --rev HEAD | grep -q "^valid: $n clusters" \
        || die "cacheflow did not validate $n clusters"
    if [ -n "$BEFORE" ]; then
        "$BEFORE" validate --repo "$rel" --rev HEAD | grep -q "^valid: $n clusters" \
            || die "$BEFORE did not validate $n clusters"
        cmds+=(-n before "$BEFORE validate --repo $rel --rev HEAD")
    fi
    "$FLOOR" "$rel" HEAD >&2
    cmds+=(-n floor "$FLOOR $rel HEAD")
    if [ "$n" -le "$AJV_MAX" ]; then
        ajv="$AJV validate --spec=draft2020 --all-errors --allow-union-types -c ajv-formats -s $SCHEMA -d \"$rel/clusters/*.yaml\""
        valid=$(bash -c "$ajv" 2>&1 | grep -c ' valid$' || true)
        [ "$valid" = "$n" ] || die "ajv reported $valid valid files, expected $n"
        cmds+=(-n ajv-cli "$ajv")
    fi
    hyperfine --warmup 1 --runs "$runs" --export-json "$WORK/validate-scale-$n.json" "${cmds[@]}" >&2

    /usr/bin/time -v -o "$WORK/rss-$n-cacheflow.txt" "$CACHEFLOW" validate --repo "$rel" --rev HEAD > /dev/null
    [ -z "$BEFORE" ] || /usr/bin/time -v -o "$WORK/rss-$n-before.txt" "$BEFORE" validate --repo "$rel" --rev HEAD > /dev/null
    /usr/bin/time -v -o "$WORK/rss-$n-floor.txt" "$FLOOR" "$rel" HEAD > /dev/null

    python3 - "$WORK/validate-scale-$n.json" "$n" "$mb" "$WORK" >> "$OUT" <<'PY'
import json, os, sys
path, n, mb, work = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
res = {r["command"]: r["median"] for r in json.load(open(path))["results"]}
def rss(name):
    f = os.path.join(work, f"rss-{n}-{name}.txt")
    if not os.path.exists(f):
        return ""
    for line in open(f):
        if "Maximum resident set size" in line:
            return "%.0f" % (int(line.split(":")[1]) / 1024)
    return ""
for name in ["cacheflow", "before", "floor", "ajv-cli"]:
    if name not in res:
        continue
    t = res[name]
    vs_ajv = "%.2f×" % (res["ajv-cli"] / t) if "ajv-cli" in res and name != "ajv-cli" else ""
    vs_floor = "%.2f×" % (t / res["floor"]) if name != "floor" else ""
    print(f"| {n:,} | {mb} | {name} | {t:.3f} | {t / n * 1e6:.1f} | {rss(name)} | {vs_ajv} | {vs_floor} |")
PY
    [ "$KEEP" = 1 ] || rm -rf "$fleet"
done
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT"

# The scaling table: cost per cluster at each size, and how far each size is from the
# mean of them (the target: within ±20% from 1,000 to 100,000).
python3 - "$WORK" $SIZES >> "$OUT" <<'PY'
import json, os, sys
work, sizes = sys.argv[1], [int(n) for n in sys.argv[2:]]
rows = {}
for n in sizes:
    path = os.path.join(work, f"validate-scale-{n}.json")
    if os.path.exists(path):
        rows[n] = {r["command"]: r["median"] / n * 1e6 for r in json.load(open(path))["results"]}
if not rows:
    sys.exit(0)
mean = sum(r["cacheflow"] for r in rows.values()) / len(rows)
print()
print("| clusters | cacheflow µs/cluster | vs mean | floor µs/cluster | ajv-cli µs/cluster | ajv-cli ÷ cacheflow |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for n, r in rows.items():
    ajv = r.get("ajv-cli")
    print(f"| {n:,} | {r['cacheflow']:.1f} | {(r['cacheflow'] / mean - 1) * 100:+.0f}% | {r['floor']:.1f} | "
          + (f"{ajv:.1f} | {ajv / r['cacheflow']:.2f}× |" if ajv else " |  |"))
PY
cat "$OUT"
