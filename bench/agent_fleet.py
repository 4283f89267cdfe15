"""The config repository of the agents benchmarks (bench/agents.sh,
bench/agents-sharded.sh): CLUSTERS clusters of PER agent-managed redis nodes
(`c000-n000` ...), the given hz and allkeys-lru, stages [1, 10%, 100%], zero bake.

    python3 bench/agent_fleet.py REPO CLUSTERS PER HZ
"""
import os, sys
repo, clusters, per, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
os.makedirs(f"{repo}/clusters", exist_ok=True)
for c in range(clusters):
    nodes = "".join(
        f"    - {{id: c{c:03}-n{i:03}, address: '10.{c // 250}.{c % 250}.{i % 250}:{6379 + i // 250}', "
        f"shard: s{i:03}, role: primary, managed: agent}}\n"
        for i in range(per))
    with open(f"{repo}/clusters/c{c:03}.yaml", "w") as f:
        f.write(f"""apiVersion: cacheflow/v1
kind: Cluster
metadata: {{name: c{c:03}}}
spec:
  engine: redis
  parameters:
    hz: {hz}
    maxmemory-policy: allkeys-lru
  rollout:
    stages: [1, '10%', '100%']
    bake: 0s
    applyTimeout: 30s
    gates: {{minOpsPerSec: 0}}
  nodes:
{nodes}""")
