#!/usr/bin/env bash
# Run every test of cacheflow: unit tests, and the integration tests that start real
# redis-server and memcached processes and real git repositories on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --all-targets --locked
