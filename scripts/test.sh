#!/usr/bin/env bash
# Run every test of cacheflow: unit tests, and the integration tests that start real
# redis-server and memcached processes and real git repositories on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
# The build's needs, and what the tests start or use: redis-server, memcached, a browser,
# promtool (the alerting rules).
scripts/setup.sh --test
# The benchmark programs in examples/ must keep compiling; they are not tests.
cargo build --examples --locked
# Unit tests first, then the integration suite (one binary), whose summary closes the run.
cargo test --locked --lib --bins --tests
