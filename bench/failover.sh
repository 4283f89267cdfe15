#!/bin/sh
# The longest gap a writer sees while a restart-only change reaches a shard's primary:
# restarted in place against moved by failover first, on the same three real
# redis-server nodes, in one run (BENCHMARKS.md, "Write gap of a primary's restart").
# The writer sends SET then WAIT 1 1000 back to back, following whichever node is the
# primary; every acknowledged write is read back afterwards (lost: should be 0).
# RUNS= runs it that many times (default 3). Needs cargo and redis-server.
set -eu
cd "$(dirname "$0")/.."
runs="${RUNS:-3}"
i=1
while [ "$i" -le "$runs" ]; do
    cargo test --test integration bench_write_gap_in_place_then_failover -- \
        --ignored --nocapture --test-threads 1 2>/dev/null | grep -o 'write-gap .*'
    i=$((i + 1))
done
