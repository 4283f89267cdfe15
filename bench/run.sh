#!/usr/bin/env bash
# The performance benchmarks of the config-repository milestone (see BENCHMARKS.md).
#
#   bench/run.sh                      # 10,000 clusters, seed 1
#   CLUSTERS=2000 bench/run.sh        # a smaller fleet
#   CJ_RUNS=1 bench/run.sh            # fewer check-jsonschema runs (~75 s each)
#
# 1. builds cacheflow (release);
# 2. generates the fleet with bench/gen-fleet.py into bench/work/fleet (a git repository
#    whose HEAD is also checked out, so bench/work/fleet/clusters/*.yaml are plain files);
# 3. installs the peer validators locally when missing: ajv-cli + ajv-formats into
#    bench/work/node (`npm install --prefix`), check-jsonschema into the virtualenv
#    bench/work/venv (`pip install`);
# 4. checks that every tool validates every file of the fleet and exits 0, and that each
#    one reports an invalid file (a peer that stops early, or validates nothing, would not
#    be a fair comparison); measures each tool's peak RSS with /usr/bin/time -v;
# 5. times, side by side with hyperfine: `cacheflow validate` against ajv-cli and
#    check-jsonschema on the same files and the same schema, and `cacheflow diff` over
#    the 100-file change; exports JSON and Markdown into bench/work/;
# 6. prints medians, ratios and peak RSS against the targets (bench/work/summary.md).
#
# Needs: cargo, git, python3 (with venv), node + npm, hyperfine, and GNU time at
# /usr/bin/time (Debian: `apt-get install hyperfine time`).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work
CLUSTERS=${CLUSTERS:-10000}
SEED=${SEED:-1}
CJ_RUNS=${CJ_RUNS:-2}
RUNS=${RUNS:-10}
FLEET=$WORK/fleet
BAD=$WORK/invalid-fleet
SCHEMA=schemas/cacheflow.schema.json
CACHEFLOW=$ROOT/target/release/cacheflow
AJV=$WORK/node/node_modules/.bin/ajv
CJ=$WORK/venv/bin/check-jsonschema
mkdir -p "$WORK"

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench/run.sh: %s\n' "$*" >&2; exit 1; }

for tool in cargo git python3 node npm hyperfine; do
    command -v "$tool" >/dev/null || die "$tool is missing (hyperfine: apt-get install hyperfine)"
done
# GNU time for peak memory; the shell keyword `time` cannot report it.
[ -x /usr/bin/time ] || die "/usr/bin/time is missing: install GNU time (Debian: apt-get install time)"

say "build (release)"
cargo build --release --quiet
"$CACHEFLOW" --version

say "generate the fleet: $CLUSTERS clusters, seed $SEED"
python3 bench/gen-fleet.py --clusters "$CLUSTERS" --seed "$SEED" --out "$FLEET"

say "peers"
if [ ! -x "$AJV" ] || [ ! -d "$WORK/node/node_modules/ajv-formats" ]; then
    npm install --prefix "$WORK/node" --no-audit --no-fund --loglevel=error ajv-cli@5 ajv-formats@3
fi
if [ ! -x "$CJ" ]; then
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install --quiet check-jsonschema
fi
echo "ajv-cli $(node -p "require('$WORK/node/node_modules/ajv-cli/package.json').version")" \
     "(ajv $(node -p "require('$WORK/node/node_modules/ajv/package.json').version")," \
     "ajv-formats $(node -p "require('$WORK/node/node_modules/ajv-formats/package.json').version"))," \
     "node $(node --version)"
"$CJ" --version
hyperfine --version

# The commands, run from the repository root so every tool sees the same relative paths.
# ajv-cli: --spec=draft2020 for the schema's dialect; --all-errors so every error of every
# file is collected, as cacheflow and check-jsonschema do; -c ajv-formats so `format` is
# checked like check-jsonschema does (the schema uses none today). Strict mode stays on,
# except that the schema's union types (`"type": ["string", "integer", ...]` for parameter
# values, valid JSON Schema that ajv's strictTypes refuses by default) are allowed with
# --allow-union-types, the narrowest switch that makes ajv accept the schema.
# ajv-cli reads .yaml data files with js-yaml and expands the quoted glob itself.
REL=${FLEET#"$ROOT"/}
REL_BAD=${BAD#"$ROOT"/}
CMD_CACHEFLOW="$CACHEFLOW validate --repo $REL --rev HEAD"
CMD_AJV="$AJV validate --spec=draft2020 --all-errors --allow-union-types -c ajv-formats -s $SCHEMA -d \"$REL/clusters/*.yaml\""
CMD_CJ="$CJ --schemafile $SCHEMA $REL/clusters/*.yaml"
CMD_DIFF="$CACHEFLOW diff --repo $REL --base HEAD~1 --head HEAD"

rss_kb() { awk -F': ' '/Maximum resident set size/ { print $2 }' "$1"; }

say "correctness on the fleet: every tool validates all $CLUSTERS files and exits 0 (also peak RSS)"
/usr/bin/time -v -o "$WORK/rss-cacheflow.txt" $CMD_CACHEFLOW > "$WORK/out-cacheflow.txt" 2>&1 \
    || { cat "$WORK/out-cacheflow.txt"; die "cacheflow validate failed on the fleet"; }
grep -q "^valid: $CLUSTERS clusters" "$WORK/out-cacheflow.txt" || die "cacheflow did not validate $CLUSTERS clusters"
cat "$WORK/out-cacheflow.txt"
/usr/bin/time -v -o "$WORK/rss-ajv.txt" bash -c "$CMD_AJV" > "$WORK/out-ajv.txt" 2>&1 \
    || { tail "$WORK/out-ajv.txt"; die "ajv failed on the fleet"; }
n=$(grep -c ' valid$' "$WORK/out-ajv.txt" || true)
[ "$n" = "$CLUSTERS" ] || die "ajv reported $n valid files, expected $CLUSTERS"
echo "ajv: $n files valid"
/usr/bin/time -v -o "$WORK/rss-cj.txt" bash -c "$CMD_CJ -vv" > "$WORK/out-cj.txt" 2>&1 \
    || { tail "$WORK/out-cj.txt"; die "check-jsonschema failed on the fleet"; }
n=$(grep -c '^  .*\.yaml$' "$WORK/out-cj.txt" || true)
[ "$n" = "$CLUSTERS" ] || die "check-jsonschema checked $n files, expected $CLUSTERS"
echo "check-jsonschema: $n files checked, $(head -1 "$WORK/out-cj.txt")"
set +e
$CMD_DIFF > "$WORK/out-diff.txt" 2>&1
rc=$?
set -e
[ "$rc" = 2 ] || { cat "$WORK/out-diff.txt"; die "cacheflow diff exited $rc, expected 2 (changes)"; }
n=$(grep -c '^cluster .*: modified$' "$WORK/out-diff.txt" || true)
[ "$n" = 100 ] || die "cacheflow diff reported $n modified clusters, expected 100"
/usr/bin/time -v -o "$WORK/rss-diff.txt" $CMD_DIFF > /dev/null 2>&1 || true
echo "cacheflow diff: $n clusters modified (exit 2)"

say "each tool reports an invalid file"
python3 bench/gen-fleet.py --clusters 300 --seed "$SEED" --changed 0 --out "$BAD" 2>/dev/null
victim=$(grep -l 'role: replica' "$BAD"/clusters/*.yaml | sed -n 1p)  # sed reads all: no SIGPIPE under pipefail
sed -i '0,/role: replica/s//role: leader/' "$victim"
git -C "$BAD" -c user.name=bench -c user.email=bench@example.com commit -qam "one invalid node role"
victim_rel=clusters/$(basename "$victim")
expect_invalid() { # name, output file, exit code
    [ "$3" != 0 ] || die "$1 exited 0 on a fleet with an invalid file"
    grep -q "$(basename "$victim")" "$2" || die "$1 did not name $(basename "$victim")"
    echo "$1: exit $3, reports $victim_rel:"
    grep "$(basename "$victim")" -A1 "$2" | head -2 | sed 's/^/    /'
}
set +e
$CACHEFLOW validate --repo "$REL_BAD" --rev HEAD > "$WORK/bad-cacheflow.txt" 2>&1; rc=$?
expect_invalid cacheflow "$WORK/bad-cacheflow.txt" $rc
bash -c "$AJV validate --spec=draft2020 --all-errors --allow-union-types -c ajv-formats --errors=text -s $SCHEMA -d \"$REL_BAD/clusters/*.yaml\"" > "$WORK/bad-ajv.txt" 2>&1; rc=$?
expect_invalid ajv "$WORK/bad-ajv.txt" $rc
n=$(grep -c ' valid$' "$WORK/bad-ajv.txt")
[ "$n" = 299 ] || die "ajv validated $n other files, expected 299 (it must not stop at the first invalid file)"
echo "    (and 299 other files valid: ajv does not stop at the invalid file)"
bash -c "$CJ --schemafile $SCHEMA $REL_BAD/clusters/*.yaml" > "$WORK/bad-cj.txt" 2>&1; rc=$?
expect_invalid check-jsonschema "$WORK/bad-cj.txt" $rc
set -e

say "time: cacheflow validate vs ajv-cli (warm-up 2, $RUNS runs each)"
hyperfine --warmup 2 --runs "$RUNS" \
    --export-json "$WORK/validate.json" --export-markdown "$WORK/validate.md" \
    -n "cacheflow validate --rev HEAD" "$CMD_CACHEFLOW" \
    -n "cacheflow validate --worktree" "$CACHEFLOW validate --repo $REL --worktree" \
    -n "ajv-cli" "$CMD_AJV"

say "time: check-jsonschema ($CJ_RUNS runs; ~75 s each; the files are in the page cache from the runs above)"
hyperfine --runs "$CJ_RUNS" \
    --export-json "$WORK/check-jsonschema.json" --export-markdown "$WORK/check-jsonschema.md" \
    -n "check-jsonschema" "$CMD_CJ"

say "time: cacheflow diff over 100 changed clusters (warm-up 3, 20 runs; exit 2 = changes, hence -i)"
hyperfine --warmup 3 --runs 20 -i \
    --export-json "$WORK/diff.json" --export-markdown "$WORK/diff.md" \
    -n "cacheflow diff --base HEAD~1 --head HEAD" "$CMD_DIFF"

say "summary"
python3 - "$WORK" "$CLUSTERS" <<'EOF' | tee "$WORK/summary.md"
import json, re, sys
work, n = sys.argv[1], int(sys.argv[2])
res = {}
for f in ("validate", "check-jsonschema", "diff"):
    for r in json.load(open(f"{work}/{f}.json"))["results"]:
        res[r["command"]] = r
def rss(name):
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(f"{work}/rss-{name}.txt").read())
    return int(m.group(1)) / 1024
cf = res["cacheflow validate --rev HEAD"]
rows = [("cacheflow validate --rev HEAD", "cacheflow"), ("cacheflow validate --worktree", None),
        ("ajv-cli", "ajv"), ("check-jsonschema", "cj"), ("cacheflow diff --base HEAD~1 --head HEAD", "diff")]
print(f"{n} cluster files; times in seconds (wall)\n")
print("| command | median | mean ± σ | min | max | runs | peak RSS |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for name, key in rows:
    r = res[name]
    peak = f"{rss(key):.0f} MiB" if key else ""
    print(f"| {name} | {r['median']:.3f} | {r['mean']:.3f} ± {r.get('stddev') or 0:.3f} | "
          f"{r['min']:.3f} | {r['max']:.3f} | {len(r['times'])} | {peak} |")
print()
for peer in ("ajv-cli", "check-jsonschema"):
    ratio = res[peer]["median"] / cf["median"]
    print(f"- {peer} / cacheflow validate (medians): {ratio:.2f}x  (target >= 2x: {'met' if ratio >= 2 else 'MISSED'})")
m, p = cf["median"], rss("cacheflow")
print(f"- cacheflow validate median {m:.3f} s (target < 0.5 s: {'met' if m < 0.5 else f'MISSED by {m - 0.5:.3f} s, {m / 0.5:.1f}x the target'})")
print(f"- cacheflow validate peak RSS {p:.0f} MiB (target < 200 MB: {'met' if p * 1.048576 < 200 else f'MISSED, {p * 1.048576 / 200:.1f}x the target'})")
d = res["cacheflow diff --base HEAD~1 --head HEAD"]["median"]
print(f"- cacheflow diff median {d * 1000:.0f} ms (target < 300 ms: {'met' if d < 0.3 else 'MISSED'})")
EOF
