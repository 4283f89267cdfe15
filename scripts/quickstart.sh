#!/usr/bin/env bash
# The main job on the built-in example. First `cacheflow demo`: the whole loop on a
# simulated fleet (a staged rollout, a canary failing its gates and rolled back, a
# hand-made drift, the history; about 15 seconds). Then the pull-request side by hand:
# copy example-repo/ into a fresh git repository, validate it, report its drift, commit
# a change an engineer might open a pull request for, show what it does (text and the
# Markdown a PR comment gets), and plan it against a live snapshot.
set -euo pipefail
cd "$(dirname "$0")/.."
# The build's needs only: the demo and the steps below use no browser and no cache server.
scripts/setup.sh
# A release build takes minutes the first time: cargo shows its progress on stderr.
echo "building cacheflow (release)..." >&2
cargo build --release --locked
cf="$PWD/target/release/cacheflow"

printf '\n\033[1m$ cacheflow demo\033[0m\n'
"$cf" demo

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r example-repo/. "$work"
git -C "$work" init -q -b main
git -C "$work" -c user.name=alice -c user.email=alice@example.com add -A
git -C "$work" -c user.name=alice -c user.email=alice@example.com commit -q -m "The fleet as it runs today"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "cacheflow ${*}"; "$cf" "$@" || echo "(exit code $?)"; }

run validate --repo "$work"

# On call: what drifted in the fleet as it runs today (someone's hand-made CONFIG SET),
# against the live snapshot in examples/ (exit code 2: drift found).
run drift --repo "$work" --live examples/live-state.json

# A pull request: more memory for the EU sessions, a different eviction policy for the
# staging catalog, and a restart-only change in the session profile.
sed -i 's/^    maxmemory: 6gb$/    maxmemory: 8gb/' "$work/clusters/sessions-eu.yaml"
sed -i 's/^    databases: 16$/    databases: 32/' "$work/profiles/redis-sessions.yaml"
git -C "$work" -c user.name=bob -c user.email=bob@example.com commit -q -am "More memory for EU sessions; 32 databases"

run diff --repo "$work" --base HEAD~1 --head HEAD
run diff --repo "$work" --base HEAD~1 --head HEAD --format markdown
run plan --repo "$work" --rev HEAD --live examples/live-state.json

# A mistake caught before it is committed: a typo and a literal password.
# (A file that breaks the schema is not checked further, so the two are in two files.)
sed -i 's/^    maxmemory: 8gb$/    maxmemroy: 8gb/' "$work/clusters/sessions-eu.yaml"
sed -i 's/password: env:[A-Z_]*/password: hunter2/' "$work/clusters/sessions-us.yaml"
run validate --repo "$work" --worktree

cat <<'MSG'

What next:
  cacheflow validate --repo <your config repo>                 errors as file:line:col
  cacheflow diff --repo . --base origin/main --format markdown  a pull-request comment
  cacheflow plan --repo . --live <snapshot.json>                the staged rollout
  docs/config.md describes every field; example-repo/ is the starting point.
MSG
