#!/usr/bin/env python3
"""Generate a cacheflow config repository for the benchmarks (Python 3 stdlib only).

    bench/gen-fleet.py --clusters 10000 --out bench/work/fleet --seed 1

writes OUT as a git repository with two commits on `main`:

  HEAD~1  cacheflow.yaml, 6 profiles, 2 policies in policies/, and N cluster files
          clusters/<name>.yaml (redis mostly, some memcached; 3-9 nodes each with ids and
          addresses unique across the repository; redis shards of one primary and
          replicas; parameters from schemas/engines/*.json; a rollout policy on some).
  HEAD    the same with --changed (default 100) cluster files modified (parameter
          values changed or added, a rollout policy tightened), for `cacheflow diff`.

Every document is valid, so `cacheflow validate` does all of its work. The objects are
written with `git fast-import` and packed with `git gc`; HEAD is then checked out, so
OUT/clusters/*.yaml on disk are the files of HEAD, byte for byte, for validators that
read plain files (ajv-cli, check-jsonschema). The output depends only on the options:
commit ids are the same on every run with the same seed.
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMA_LINE = "# yaml-language-server: $schema=../../schemas/cacheflow.schema.json\n"

REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-southeast-1", "ap-northeast-1"]
TEAMS = ["identity", "storefront", "catalog", "search", "payments", "ads", "checkout",
         "recommendations", "messaging", "analytics", "media", "platform"]
PURPOSES_REDIS = ["sessions", "ratelimit", "carts", "leaderboard", "feature-flags", "queue",
                  "tokens", "geo", "counters", "locks", "profiles", "inventory"]
PURPOSES_MEMCACHED = ["page-cache", "fragments", "query-cache", "api-cache", "thumbnails"]
ENVS = ["prod", "prod", "prod", "staging", "dev"]

# Parameter values that a real fleet sets, per engine; every name must exist in the
# engine's catalog (checked at start), every value must be valid for it.
REDIS_PARAMS = {
    "maxmemory": ["512mb", "1gb", "2gb", "3gb", "4gb", "6gb", "8gb", "12gb", "16gb", 1073741824],
    "maxmemory-policy": ["allkeys-lru", "allkeys-lfu", "volatile-lru", "volatile-lfu", "volatile-ttl"],
    "timeout": [0, 300, "5m", "10m", "1h"],
    "hz": [10, 20, 50, 100],
    "appendonly": ["yes", "no"],
    "appendfsync": ["everysec", "always", "no"],
    "databases": [1, 4, 16, 32],
    "tcp-keepalive": [60, 300, "5m"],
    "maxclients": [1000, 4096, 10000, 20000],
    "lazyfree-lazy-eviction": ["yes", "no"],
    "slowlog-log-slower-than": [10000, 5000, 20000],
    "slowlog-max-len": [128, 256, 1024],
    "maxmemory-samples": [5, 10],
    "activedefrag": ["yes", "no"],
    "save": ["", "900 1 300 10", "3600 1"],
    "notify-keyspace-events": ["", "Ex", "KEA"],
    "latency-monitor-threshold": [0, 100],
    "maxmemory-clients": [0, "5%", "64mb"],
    "repl-backlog-size": ["1mb", "64mb", "256mb"],
    "active-expire-effort": [1, 2, 5],
    "io-threads": [1, 2, 4],
}
MEMCACHED_PARAMS = {
    "maxbytes": ["1gb", "2gb", "4gb", "8gb", "16gb", "512mb"],
    "maxconns": [1024, 4096, 8192],
    "evictions": ["on", "off"],
    "num_threads": [4, 8, 16],
    "item_size_max": ["1mb", "2mb", "4mb"],
    "growth_factor": [1.25, 1.08, 1.5],
    "lru_crawler": [True, False],
    "slab_reassign": [True, False],
    "slab_automove": [0, 1, 2],
    "hot_lru_pct": [20, 30],
    "warm_lru_pct": [40, 50],
    "idle_timeout": [0, 600, "10m"],
    "tcp_backlog": [1024, 2048],
    "hash_algorithm": ["murmur3", "xxh3"],
    "verbosity": [0, 1],
}

PROFILES = [
    ("redis-cache", "redis", "Redis as a look-aside cache (evict anything, no persistence).",
     {"maxmemory": "2gb", "maxmemory-policy": "allkeys-lfu", "timeout": 0, "hz": 10, "appendonly": "no"}),
    ("redis-sessions", "redis", "Redis holding user sessions (TTL on every key, persisted).",
     {"maxmemory": "4gb", "maxmemory-policy": "volatile-lru", "timeout": "5m", "hz": 10,
      "appendonly": "yes", "databases": 16}),
    ("redis-persistent", "redis", "Redis as a small store (AOF every second, RDB snapshots).",
     {"maxmemory": "8gb", "maxmemory-policy": "volatile-ttl", "appendonly": "yes",
      "appendfsync": "everysec", "save": "900 1 300 10"}),
    ("redis-queue", "redis", "Redis holding queues and streams.",
     {"maxmemory": "1gb", "maxmemory-policy": "volatile-lfu", "lazyfree-lazy-eviction": "yes"}),
    ("memcached-default", "memcached", "Memcached defaults for page caches.",
     {"maxbytes": "2gb", "maxconns": 4096, "evictions": "on"}),
    ("memcached-large", "memcached", "Memcached with large items.",
     {"maxbytes": "16gb", "maxconns": 8192, "item_size_max": "4mb", "num_threads": 8}),
]

STAGES = [
    [1, "25%", "100%"],
    ["100%"],
    [1, 3, "50%", "100%"],
    [1, "34%", "100%"],
    [2, "50%", "100%"],
    ["10%", "50%", "100%"],
]

SETTINGS = """# yaml-language-server: $schema=../schemas/cacheflow.schema.json
apiVersion: cacheflow/v1
kind: Settings
metadata:
  name: settings
  description: Generated benchmark fleet ({n} clusters, seed {seed}).
spec:
  rolloutDefaults:
    stages: [1, "25%", "100%"]
    bake: 5m
    applyTimeout: 2m
    warmup: 30s
    maxUnavailablePerShard: 1
    onFailure: rollback
    gates:
      maxHitRatioDrop: 0.05
      maxLatencyIncreaseMs: 5
      maxMemoryRatio: 0.95
      minOpsPerSec: 10
  windows:
    - name: no-friday-afternoon
      action: deny
      schedule: "0 13 * * 5"
      duration: 11h
      timezone: Europe/Berlin
  drift:
    schedule: "*/30 * * * *"
    mode: report
    notify: [cache-team]
  notifications:
    - name: cache-team
      type: slack
      url: env:CACHEFLOW_SLACK_WEBHOOK_URL
      events: [rollout-started, rollout-completed, rollout-failed, rolled-back, paused, drift-found]
  trust:
    requireSignedHead: false
"""

POLICY_NO_NOEVICTION = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.com/cacheflow/policies/no-noeviction-in-prod.schema.json",
    "title": "no noeviction in prod",
    "description": "Clusters labelled env=prod must not set maxmemory-policy to noeviction.",
    "if": {"required": ["metadata"], "properties": {"metadata": {"required": ["labels"], "properties": {
        "labels": {"required": ["env"], "properties": {"env": {"const": "prod"}}}}}}},
    "then": {"properties": {"spec": {"properties": {"parameters": {"properties": {
        "maxmemory-policy": {"not": {"type": "string", "pattern": "^\\s*[Nn][Oo][Ee][Vv][Ii][Cc][Tt][Ii][Oo][Nn]\\s*$"}}}}}}}},
}
POLICY_MEMORY_LIMIT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://example.com/cacheflow/policies/prod-sets-a-memory-limit.schema.json",
    "title": "prod clusters set a memory limit",
    "description": "Clusters labelled env=prod must set their engine's memory limit, directly or through their profile.",
    "if": {"required": ["metadata"], "properties": {"metadata": {"required": ["labels"], "properties": {
        "labels": {"required": ["env"], "properties": {"env": {"const": "prod"}}}}}}},
    "then": {"properties": {"spec": {"allOf": [
        {"if": {"properties": {"engine": {"const": "redis"}}},
         "then": {"required": ["parameters"], "properties": {"parameters": {
             "required": ["maxmemory"], "properties": {"maxmemory": {"not": {"enum": [0, "0"]}}}}}}},
        {"if": {"properties": {"engine": {"const": "memcached"}}},
         "then": {"required": ["parameters"], "properties": {"parameters": {
             "required": ["maxbytes"], "properties": {"maxbytes": {"not": {"enum": [0, "0"]}}}}}}},
    ]}}},
}


def check_catalogs():
    for engine, path, params in (("redis", "redis-7.0.json", REDIS_PARAMS),
                                 ("memcached", "memcached-1.6.json", MEMCACHED_PARAMS)):
        with open(os.path.join(ROOT, "schemas", "engines", path)) as f:
            known = json.load(f)["parameters"]
        missing = [p for p in params if p not in known]
        if missing:
            sys.exit(f"gen-fleet: not in the {engine} catalog: {', '.join(missing)}")


def scalar(v):
    """A YAML 1.2 scalar that reads back as the same JSON value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(v)  # a double-quoted string is valid YAML


class Addresses:
    """Unique host:port addresses across the whole repository."""

    def __init__(self):
        self.next = 0

    def take(self, port):
        i = self.next
        self.next += 1
        # 10.<b>.<c>.<d>, d in 10..249: 240 hosts per /24, 61,440 per /16.
        b, rest = divmod(i, 240 * 256)
        c, d = divmod(rest, 240)
        return f"10.{b + 16}.{c}.{d + 10}:{port}"


def make_cluster(rng, index, addrs):
    """One cluster as a dict of the parts that the second commit may modify."""
    engine = "memcached" if rng.random() < 0.2 else "redis"
    region = rng.choice(REGIONS)
    team = rng.choice(TEAMS)
    env = rng.choice(ENVS)
    purpose = rng.choice(PURPOSES_MEMCACHED if engine == "memcached" else PURPOSES_REDIS)
    name = f"{purpose}-{region}-{index:05d}"
    c = {"name": name, "purpose": purpose, "engine": engine, "region": region, "team": team, "env": env}
    if engine == "redis":
        profiles = [p for p in PROFILES if p[1] == "redis"]
        catalog, port = REDIS_PARAMS, 6379
    else:
        profiles = [p for p in PROFILES if p[1] == "memcached"]
        catalog, port = MEMCACHED_PARAMS, 11211
    c["profile"] = rng.choice(profiles)[0] if rng.random() < 0.85 else None
    params = {}
    names = sorted(catalog)
    for pname in rng.sample(names, rng.randint(1, 6)):
        params[pname] = rng.choice(catalog[pname])
    limit = "maxmemory" if engine == "redis" else "maxbytes"
    if c["profile"] is None and limit not in params:
        params[limit] = catalog[limit][0]  # the policy: prod sets a memory limit
    if engine == "redis" and env == "prod" and params.get("maxmemory-policy") == "noeviction":
        params["maxmemory-policy"] = "allkeys-lru"
    c["parameters"] = dict(sorted(params.items()))
    c["version"] = rng.choice(["7.0", "7.2", "7.2.4"]) if engine == "redis" else rng.choice(["1.6", "1.6.21"])
    c["auth"] = engine == "redis" and rng.random() < 0.6
    managed = "agent" if rng.random() < 0.2 else None
    nodes = []
    if engine == "redis":
        # (shards, replicas per shard) with 3..9 nodes in all
        shards, replicas = rng.choice([(1, 2), (3, 0), (2, 1), (3, 1), (4, 1), (2, 2), (3, 2), (1, 3), (4, 0)])
        zones = ["a", "b", "c", "d"]
        for s in range(1, shards + 1):
            for r in range(replicas + 1):
                node = {"id": f"{name}-{s}{zones[r]}", "address": addrs.take(port),
                        "shard": f"s{s}", "role": "primary" if r == 0 else "replica"}
                if managed:
                    node["managed"] = managed
                if rng.random() < 0.5:
                    node["labels"] = {"zone": f"{region}{zones[r]}"}
                nodes.append(node)
    else:
        for k in range(1, rng.randint(3, 9) + 1):
            node = {"id": f"{name}-{k}", "address": addrs.take(port)}
            if managed:
                node["managed"] = managed
            nodes.append(node)
    c["nodes"] = nodes
    c["rollout"] = None
    if rng.random() < 0.4:
        c["rollout"] = {
            "stages": rng.choice(STAGES),
            "bake": rng.choice(["1m", "5m", "10m", "1h30m"]),
            "onFailure": rng.choice(["rollback", "pause"]),
        }
        if rng.random() < 0.5:
            c["rollout"]["maxUnavailablePerShard"] = 1
        if rng.random() < 0.5:
            c["rollout"]["gates"] = {"maxHitRatioDrop": rng.choice([0.02, 0.05]),
                                     "maxLatencyMs": rng.choice([2, 5, 10]),
                                     "requireReplicationLink": engine == "redis"}
    return c


def render_cluster(c):
    out = [SCHEMA_LINE, "apiVersion: cacheflow/v1\nkind: Cluster\nmetadata:\n",
           f"  name: {c['name']}\n",
           f"  description: {c['purpose']} of team {c['team']} in {c['region']} ({c['env']}).\n",
           "  labels:\n", f"    env: {c['env']}\n", f"    region: {c['region']}\n", f"    team: {c['team']}\n",
           "spec:\n", f"  engine: {c['engine']}\n", f"  version: {scalar(c['version'])}\n"]
    if c["profile"]:
        out.append(f"  profile: {c['profile']}\n")
    if c["parameters"]:
        out.append("  parameters:\n")
        for k, v in c["parameters"].items():
            out.append(f"    {k}: {scalar(v)}\n")
    if c["auth"]:
        env_name = c["name"].upper().replace("-", "_") + "_REDIS_PASSWORD"
        out.append(f"  auth:\n    username: cacheflow\n    password: env:{env_name}\n")
    out.append("  nodes:\n")
    for n in c["nodes"]:
        fields = [f"id: {n['id']}", f"address: \"{n['address']}\""]
        for key in ("shard", "role", "managed"):
            if key in n:
                fields.append(f"{key}: {n[key]}")
        if "labels" in n:
            fields.append("labels: { " + ", ".join(f"{k}: {v}" for k, v in n["labels"].items()) + " }")
        out.append("    - { " + ", ".join(fields) + " }\n")
    r = c["rollout"]
    if r:
        out.append("  rollout:\n")
        out.append("    stages: [" + ", ".join(scalar(s) for s in r["stages"]) + "]\n")
        out.append(f"    bake: {r['bake']}\n")
        if "maxUnavailablePerShard" in r:
            out.append(f"    maxUnavailablePerShard: {r['maxUnavailablePerShard']}\n")
        out.append(f"    onFailure: {r['onFailure']}\n")
        if "gates" in r:
            out.append("    gates:\n")
            for k, v in r["gates"].items():
                out.append(f"      {k}: {scalar(v)}\n")
    return "".join(out)


def render_profile(name, engine, description, params):
    lines = ["# yaml-language-server: $schema=../../schemas/cacheflow.schema.json\n",
             "apiVersion: cacheflow/v1\nkind: Profile\nmetadata:\n", f"  name: {name}\n",
             f"  description: {description}\n", "spec:\n", f"  engine: {engine}\n", "  parameters:\n"]
    lines += [f"    {k}: {scalar(v)}\n" for k, v in params.items()]
    return "".join(lines)


def modify(rng, c):
    """A pull-request-sized change to one cluster: parameters and sometimes the rollout."""
    catalog = REDIS_PARAMS if c["engine"] == "redis" else MEMCACHED_PARAMS
    params = dict(c["parameters"])
    limit = "maxmemory" if c["engine"] == "redis" else "maxbytes"
    # Always change the memory limit (a value every diff shows), plus one more parameter.
    choices = [v for v in catalog[limit] if v != params.get(limit)]
    params[limit] = rng.choice(choices)
    other = rng.choice([p for p in sorted(catalog) if p != limit])
    values = [v for v in catalog[other] if v != params.get(other)]
    if values:
        params[other] = rng.choice(values)
    if c["engine"] == "redis" and c["env"] == "prod" and params.get("maxmemory-policy") == "noeviction":
        params["maxmemory-policy"] = "allkeys-lru"
    c = dict(c, parameters=dict(sorted(params.items())))
    if rng.random() < 0.3:
        c["rollout"] = {"stages": [1, "25%", "100%"], "bake": "15m", "onFailure": "pause",
                        "maxUnavailablePerShard": 1}
    return c


def fast_import_stream(files_by_commit, messages):
    """A git fast-import stream: commits of full file sets (deleteall + M), on main."""
    parts = []
    mark = 0
    blobs = {}
    for files in files_by_commit:
        for path, text in files.items():
            data = text.encode()
            if data in blobs:
                continue
            mark += 1
            blobs[data] = mark
            parts.append(b"blob\nmark :%d\ndata %d\n%s\n" % (mark, len(data), data))
    t = 1700000000
    for i, (files, msg) in enumerate(zip(files_by_commit, messages)):
        m = msg.encode()
        parts.append(b"commit refs/heads/main\n")
        parts.append(b"committer Bench Generator <bench@example.com> %d +0000\n" % (t + i * 3600))
        parts.append(b"data %d\n%s\n" % (len(m), m))
        if i > 0:
            # only what changed; the rest comes from the parent
            prev = files_by_commit[i - 1]
            for path in sorted(files):
                if prev.get(path) != files[path]:
                    parts.append(b"M 100644 :%d %s\n" % (blobs[files[path].encode()], path.encode()))
        else:
            for path in sorted(files):
                parts.append(b"M 100644 :%d %s\n" % (blobs[files[path].encode()], path.encode()))
        parts.append(b"\n")
    parts.append(b"done\n")
    return b"".join(parts)


def git(out, *args, **kw):
    env = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull)
    return subprocess.run(["git", "-C", out, *args], check=True, env=env, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, default=10000, help="cluster files (default 10000)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "work", "fleet"),
                    help="the repository to create (replaced if it exists)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--changed", type=int, default=100,
                    help="cluster files the second commit modifies (default 100)")
    args = ap.parse_args()
    if args.clusters < 1 or not 0 <= args.changed <= args.clusters:
        sys.exit("gen-fleet: need --clusters >= 1 and 0 <= --changed <= --clusters")
    check_catalogs()
    rng = random.Random(args.seed)
    addrs = Addresses()

    base = {"cacheflow.yaml": SETTINGS.format(n=args.clusters, seed=args.seed)}
    for name, engine, desc, params in PROFILES:
        base[f"profiles/{name}.yaml"] = render_profile(name, engine, desc, params)
    base["policies/no-noeviction-in-prod.schema.json"] = json.dumps(POLICY_NO_NOEVICTION, indent=2) + "\n"
    base["policies/prod-sets-a-memory-limit.schema.json"] = json.dumps(POLICY_MEMORY_LIMIT, indent=2) + "\n"
    clusters = [make_cluster(rng, i, addrs) for i in range(1, args.clusters + 1)]
    for c in clusters:
        base[f"clusters/{c['name']}.yaml"] = render_cluster(c)

    head = dict(base)
    for i in sorted(rng.sample(range(len(clusters)), args.changed)):
        c = modify(rng, clusters[i])
        head[f"clusters/{c['name']}.yaml"] = render_cluster(c)
    changed = sum(1 for p in head if head[p] != base[p])
    assert changed == args.changed, (changed, args.changed)

    out = os.path.abspath(args.out)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    git(out, "init", "-q")
    git(out, "symbolic-ref", "HEAD", "refs/heads/main")
    stream = fast_import_stream(
        [base, head],
        [f"Benchmark fleet: {args.clusters} clusters (seed {args.seed})",
         f"Change {args.changed} clusters: memory limits and one parameter each"])
    git(out, "fast-import", "--quiet", input=stream)
    git(out, "gc", "--quiet", "--prune=now")
    git(out, "checkout", "-q", "-f", "main")
    head_id = git(out, "rev-parse", "HEAD", capture_output=True, text=True).stdout.strip()
    nodes = sum(len(c["nodes"]) for c in clusters)
    redis = sum(1 for c in clusters if c["engine"] == "redis")
    print(f"gen-fleet: {out}: {args.clusters} clusters ({redis} redis, {args.clusters - redis} memcached), "
          f"{nodes} nodes, {len(PROFILES)} profiles, 2 policies; HEAD {head_id[:12]} changes "
          f"{args.changed} cluster files of HEAD~1", file=sys.stderr)


if __name__ == "__main__":
    main()
