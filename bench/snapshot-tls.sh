#!/usr/bin/env bash
# `cacheflow snapshot` of NODES real redis-servers over TLS against the same servers in
# plaintext, side by side in one hyperfine run (issue 18: within 2x).
#
#   bench/snapshot-tls.sh                       # 100 nodes, 20 runs, release build
#   KEY=rsa bench/snapshot-tls.sh               # RSA 2048 certificates instead of ECDSA
#   NODES=50 RUNS=10 CACHEFLOW=target/debug/cacheflow bench/snapshot-tls.sh
#
# Every redis-server listens twice: `port` (plaintext) and `tls-port` with a certificate
# made here (openssl CLI: a CA and a server certificate for 127.0.0.1). Two repositories
# declare the same servers, one by their plaintext ports, one by their TLS ports with
# `tls: {ca: file:...}`. Each snapshot opens a new connection per node, so the TLS one
# pays a full handshake per node (TLS 1.3). KEY says the certificates' key: ec (the
# default: ECDSA P-256, what managed services and most new fleets issue) or rsa (RSA
# 2048). A check first: both snapshots read NODES reachable nodes.
#
# Needs: cargo, git, python3, openssl, redis-server (built with TLS), hyperfine.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
NODES=${NODES:-100}
RUNS=${RUNS:-20}
KEY=${KEY:-ec}
case $KEY in
    ec) NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) NEWKEY=(-newkey rsa:2048) ;;
    *) printf 'bench/snapshot-tls.sh: KEY is ec or rsa, not %s\n' "$KEY" >&2; exit 1 ;;
esac
CACHEFLOW=${CACHEFLOW:-$ROOT/target/release/cacheflow}

die() { printf 'bench/snapshot-tls.sh: %s\n' "$*" >&2; exit 1; }
for tool in cargo git python3 openssl redis-server hyperfine; do
    command -v "$tool" >/dev/null || die "$tool is missing"
done

TMP=$(mktemp -d)
cleanup() {
    local pids=() pid
    for f in "$TMP"/node-*/redis.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null) || continue
        [ -n "$pid" ] && pids+=("$pid") && kill "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 100); do
        local alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1 && break
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$CACHEFLOW" = "$ROOT/target/release/cacheflow" ]; then
    cargo build --release --quiet
fi
"$CACHEFLOW" --version
echo "certificates: $KEY"

# The certificates.
(
    cd "$TMP"
    openssl req -x509 "${NEWKEY[@]}" -nodes -keyout ca.key -out ca.pem -days 2 \
        -subj "/CN=bench ca" 2>/dev/null
    openssl req "${NEWKEY[@]}" -nodes -keyout server.key -out server.csr \
        -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out server.pem -days 2 -extfile server.ext 2>/dev/null
)

# 2*NODES free ports, all bound at once so that none is handed out twice.
mapfile -t PORTS < <(python3 - "$((2 * NODES))" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
)

for i in $(seq 0 $((NODES - 1))); do
    dir=$TMP/node-$i
    mkdir -p "$dir"
    redis-server --port "${PORTS[$i]}" --tls-port "${PORTS[$((NODES + i))]}" \
        --bind 127.0.0.1 --tls-cert-file "$TMP/server.pem" --tls-key-file "$TMP/server.key" \
        --tls-ca-cert-file "$TMP/ca.pem" --tls-auth-clients no \
        --save '' --appendonly no --dir "$dir" --daemonize yes \
        --pidfile "$dir/redis.pid" --logfile "$dir/redis.log"
done
sleep 1

write_repo() { # dir, tls (yes/no)
    local repo=$1 tls=$2 port
    mkdir -p "$repo/clusters"
    {
        printf 'apiVersion: cacheflow/v1\nkind: Cluster\nmetadata: {name: bench}\nspec:\n'
        printf '  engine: redis\n  parameters: {maxmemory: 64mb}\n'
        [ "$tls" = yes ] && printf '  tls: {ca: "file:%s"}\n' "$TMP/ca.pem"
        printf '  nodes:\n'
        for i in $(seq 0 $((NODES - 1))); do
            if [ "$tls" = yes ]; then port=${PORTS[$((NODES + i))]}; else port=${PORTS[$i]}; fi
            printf "    - {id: n-%03d, address: '127.0.0.1:%s'}\n" "$i" "$port"
        done
    } >"$repo/clusters/bench.yaml"
    git -C "$repo" init -q -b main
    git -C "$repo" -c user.name=bench -c user.email=bench@example.com add -A
    git -C "$repo" -c user.name=bench -c user.email=bench@example.com commit -qm bench
}
write_repo "$TMP/plain" no
write_repo "$TMP/tls" yes

for kind in plain tls; do
    up=$("$CACHEFLOW" snapshot --repo "$TMP/$kind" | python3 -c \
        'import json,sys; print(sum(n["reachable"] for n in json.load(sys.stdin)["nodes"].values()))')
    [ "$up" = "$NODES" ] || die "$kind: $up of $NODES nodes reachable"
done

hyperfine --warmup 2 --runs "$RUNS" -N --export-json "$TMP/times.json" \
    -n plaintext "$CACHEFLOW snapshot --repo $TMP/plain -o /dev/null" \
    -n tls "$CACHEFLOW snapshot --repo $TMP/tls -o /dev/null"
# Medians, and the ratio the issue asks about (TLS median / plaintext median).
python3 - "$TMP/times.json" "$KEY" <<'EOF'
import json, sys
r = {b["command"]: b for b in json.load(open(sys.argv[1]))["results"]}
p, t = r["plaintext"], r["tls"]
ms = lambda s: s * 1000
print("certificates %s: median plaintext %.1f ms, TLS %.1f ms: %.2fx (user CPU %.0f / %.0f ms)"
      % (sys.argv[2], ms(p["median"]), ms(t["median"]), t["median"] / p["median"],
         ms(p["user"]), ms(t["user"])))
EOF
# The TLS library's own floor: OpenSSL's s_time client making new full handshakes to one
# of the nodes for 3 s, its CPU per handshake (what any client on this OpenSSL pays).
floor=$(openssl s_time -connect "127.0.0.1:${PORTS[$NODES]}" -new -time 3 \
    -CAfile "$TMP/ca.pem" -verify 1 2>/dev/null | awk '/connections in/ && /user sec/ {
        sub("s;", "", $4); printf "%.2f ms of client CPU per handshake (%d in %ss)", 1000 * $4 / $1, $1, $4 }')
echo "openssl s_time, $(openssl version | cut -d' ' -f1-2), certificates $KEY: $floor"
