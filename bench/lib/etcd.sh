# Sourced by the bench scripts: `start_etcd DIR` starts a three-member etcd cluster on
# loopback (data and logs under DIR), appends its pids to the `pids` array, sets
# `endpoints` (comma-separated client URLs) and waits until every member is healthy.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_etcd() {
  local dir=$1 initial="" i
  local -a cports pports
  endpoints=""
  for i in 0 1 2; do
    cports[$i]=$(port); pports[$i]=$(port)
    while [ "${pports[$i]}" = "${cports[$i]}" ]; do pports[$i]=$(port); done
    initial+="${initial:+,}m$i=http://127.0.0.1:${pports[$i]}"
    endpoints+="${endpoints:+,}http://127.0.0.1:${cports[$i]}"
  done
  for i in 0 1 2; do
    etcd --name "m$i" --data-dir "$dir/etcd-m$i" \
      --listen-client-urls "http://127.0.0.1:${cports[$i]}" --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
      --listen-peer-urls "http://127.0.0.1:${pports[$i]}" --initial-advertise-peer-urls "http://127.0.0.1:${pports[$i]}" \
      --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token bench \
      >"$dir/etcd-m$i.log" 2>&1 &
    pids+=($!)
  done
  for i in 0 1 2; do
    until curl -sf "http://127.0.0.1:${cports[$i]}/health" | grep -q '"true"'; do sleep 0.2; done
  done
  echo "etcd: $endpoints ($(etcd --version | head -1))"
}
