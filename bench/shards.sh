#!/usr/bin/env bash
# Sharding: how clusters spread over shards and shards over replicas, and the fraction of
# clusters that change leader when a replica joins or leaves, against the ideal (issue 21,
# item 5; BENCHMARKS.md, "Shards over replicas").
#
#   bench/shards.sh                         # 1,000 / 10,000 / 100,000 clusters
#   bench/shards.sh --quick                 # 1,000 clusters only
#   bench/shards.sh --replica-load 1500     # another load factor for shards → replicas
#
# 1. builds examples/shard_moves.rs (PROFILE=release by default; PROFILE=dev for a
#    debug build: the fractions are the same, only the assignment times differ);
# 2. runs it with the arguments given and keeps its output in
#    bench/work/shards/result.txt, with the commit it was measured at.
#
# The placement is deterministic (SHA-256 of the names): every run prints the same
# fractions; only the `assign ms` column depends on the machine.
#
# Needs: cargo.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/bench/work/shards
PROFILE=${PROFILE:-release}
mkdir -p "$WORK"

if [ "$PROFILE" = release ]; then
    cargo build --release --example shard_moves
    BIN=$ROOT/target/release/examples/shard_moves
else
    cargo build --example shard_moves
    BIN=$ROOT/target/debug/examples/shard_moves
fi

{
    echo "commit $(git rev-parse --short HEAD) ($PROFILE build)"
    "$BIN" "$@"
} | tee "$WORK/result.txt"
