#!/usr/bin/env bash
# Two builds of cacheflow side by side on one command, run in turn (A B A B ...), so a
# machine that speeds up or slows down during the run affects both alike. Prints each
# build's median wall time and peak RSS (GNU time) and the median of the per-pair ratios.
#
#   bench/ab.sh OLD_BINARY NEW_BINARY RUNS -- validate --repo bench/work/fleet --rev HEAD
#
# The command's arguments follow `--`; it runs as `BINARY ARGS...` with its output thrown
# away. Needs GNU time at /usr/bin/time (Debian: apt-get install time).
set -euo pipefail
[ $# -ge 5 ] && [ "$4" == "--" ] || { echo "usage: bench/ab.sh OLD NEW RUNS -- ARGS..." >&2; exit 1; }
OLD=$1 NEW=$2 RUNS=$3
shift 4
[ -x /usr/bin/time ] || { echo "bench/ab.sh: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
# One warm-up each (page cache, git's object cache on disk), not counted.
"$OLD" "$@" >/dev/null 2>&1 || true
"$NEW" "$@" >/dev/null 2>&1 || true
for _ in $(seq 1 "$RUNS"); do
    /usr/bin/time -f "old %e %M" -a -o "$OUT" "$OLD" "$@" >/dev/null 2>/dev/null || true
    /usr/bin/time -f "new %e %M" -a -o "$OUT" "$NEW" "$@" >/dev/null 2>/dev/null || true
done
python3 - "$OUT" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.startswith(("old ", "new "))]
old = [(float(r[1]), int(r[2])) for r in rows if r[0] == "old"]
new = [(float(r[1]), int(r[2])) for r in rows if r[0] == "new"]
for name, runs in (("old", old), ("new", new)):
    w = [r[0] for r in runs]; m = [r[1] for r in runs]
    print(f"{name}: wall median {statistics.median(w)*1000:.0f} ms (min {min(w)*1000:.0f}, max {max(w)*1000:.0f}); "
          f"peak RSS median {statistics.median(m)/1024:.1f} MiB; {len(w)} runs")
ratios = [n[0] / o[0] for o, n in zip(old, new) if o[0] > 0]
print(f"new/old wall, median of {len(ratios)} pairs: {statistics.median(ratios):.3f}")
PY
