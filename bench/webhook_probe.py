#!/usr/bin/env python3
"""Time webhook received -> the canary's CONFIG SET done, against a running `cacheflow serve`.

First, every node must run the first revision's `hz` (--initial-hz, not Redis's default
10). For each push (not timed): commit a new `hz` in the working copy, push it to the remote,
and wait until the server's previous rollout has completed. Timed: from just before the
GitHub-signed push webhook is sent until one node answers CONFIG GET hz with the new
value. Prints every sample and the median, p90 and max. Used by bench/webhook.sh.
"""

import argparse
import hashlib
import hmac
import http.client
import json
import statistics
import subprocess
import sys
import time
import urllib.parse

import redis


def git(work, *args):
    subprocess.run(["git", "-C", work, *args], check=True, capture_output=True)


def rollouts(url):
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request("GET", "/api/v1/rollouts")
    body = c.getresponse().read()
    c.close()
    return json.loads(body)


def wait_completed(url, revision, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in rollouts(url).get("clusters", []):
            r = c.get("rollout") or {}
            if r.get("revision") == revision and r.get("phase") == "completed":
                return
            if r.get("revision") == revision and r.get("phase") in ("rolled-back", "paused"):
                sys.exit(f"rollout of {revision[:12]} ended {r['phase']}: {r.get('reason')}")
        time.sleep(0.02)
    sys.exit(f"rollout of {revision[:12]} did not complete within {timeout} s")


def send_webhook(url, secret, after, delivery):
    body = json.dumps({"ref": "refs/heads/main", "after": after}).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    c.request(
        "POST",
        "/hooks/github",
        body=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "push",
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sig,
        },
    )
    status = c.getresponse().status
    c.close()
    return status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--remote", required=True)
    ap.add_argument("--pushes", type=int, default=30)
    ap.add_argument("--ports", required=True)
    ap.add_argument("--initial-hz", required=True,
                    help="the first revision's hz (not Redis's default 10)")
    a = ap.parse_args()

    nodes = [redis.Redis(port=int(p)) for p in a.ports.split()]
    for n in nodes:
        n.ping()
    path = f"{a.work}/clusters/bench.yaml"
    # The first revision reaches the server at its start: wait until every node runs it
    # (its hz is not the default, so this waits for the rollout, not for nothing).
    current = a.initial_hz
    if current == "10":
        sys.exit("--initial-hz must differ from Redis's default (10)")
    deadline = time.monotonic() + 60
    while not all(n.config_get("hz")["hz"] == current for n in nodes):
        if time.monotonic() > deadline:
            sys.exit(f"the first revision (hz {current}) did not reach every node")
        time.sleep(0.05)

    samples = []
    for i in range(a.pushes):
        hz = str(11 + i % 40)
        text = open(path).read()
        text = text.replace(f"hz: {current}", f"hz: {hz}")
        open(path, "w").write(text)
        git(a.work, "commit", "-qam", f"bench: hz {hz}")
        git(a.work, "push", "-q", a.remote, "main")
        head = subprocess.run(["git", "-C", a.work, "rev-parse", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        time.sleep(0.2)  # the server idle, as when a push comes

        t0 = time.perf_counter()
        status = send_webhook(a.url, a.secret, head, f"bench-{i}-{head[:12]}")
        if status != 202:
            sys.exit(f"webhook answered {status}")
        first = None
        deadline = time.monotonic() + 30
        while first is None:
            for n in nodes:
                if n.config_get("hz")["hz"] == hz:
                    first = time.perf_counter()
                    break
            if time.monotonic() > deadline:
                sys.exit(f"no node took hz {hz} within 30 s")
        ms = (first - t0) * 1000
        samples.append(ms)
        print(f"push {i + 1:3d}: hz {hz:>2}: canary CONFIG SET after {ms:7.1f} ms", flush=True)
        wait_completed(a.url, head)
        if not all(n.config_get("hz")["hz"] == hz for n in nodes):
            sys.exit(f"rollout of hz {hz} completed but not every node runs it")
        current = hz

    s = sorted(samples)
    p90 = s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]
    print(f"webhook -> canary CONFIG SET over {len(s)} pushes: median {statistics.median(s):.1f} ms, "
          f"p90 {p90:.1f} ms, min {s[0]:.1f} ms, max {s[-1]:.1f} ms")


if __name__ == "__main__":
    main()
