#!/usr/bin/env python3
"""The slow-body attack on `cacheflow serve` (issue 15, item 5), measured.

Starts the server on a copy of example-repo/, then opens N connections that each send a
webhook's headers (a well-formed but wrong signature), most of a large body, and stall.
Prints the server's resident memory before and at its peak during the attack, and the
answers the connections got. Not a test: a measurement.

    cargo build --release
    scripts/slow_body_attack.py --binary target/release/cacheflow [--connections 300 --kib 960]
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/cacheflow")
    ap.add_argument("--connections", type=int, default=300)
    ap.add_argument("--kib", type=int, default=960)
    ap.add_argument("--watch", type=float, default=15.0, help="seconds to watch")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = tempfile.mkdtemp(prefix="cacheflow-attack-")
    try:
        repo = os.path.join(work, "repo")
        shutil.copytree(os.path.join(root, "example-repo"), repo)
        git = ["git", "-C", repo, "-c", "user.name=a", "-c", "user.email=a@example.com"]
        subprocess.run(["git", "init", "-q", "-b", "main", repo], check=True)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-q", "-m", "fleet"], check=True)
        port = free_port()
        env = dict(os.environ, CACHEFLOW_WEBHOOK_SECRET="attack-test-secret")
        server = subprocess.Popen(
            [args.binary, "serve", "--repo", repo, "--state-dir", os.path.join(work, "state"),
             "--listen", f"127.0.0.1:{port}", "--poll-interval", "1h"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                        if r.status == 200:
                            break
                except Exception:
                    pass
                if time.time() > deadline or server.poll() is not None:
                    sys.exit("the server did not get ready")
                time.sleep(0.1)
            time.sleep(1)
            before = rss_kib(server.pid)
            length = args.kib * 1024
            head = (
                "POST /hooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "X-GitHub-Event: push\r\n"
                f"X-Hub-Signature-256: sha256={'0' * 64}\r\n"
                f"Content-Length: {length}\r\n\r\n"
            ).encode()
            chunk = b" " * (length - 1024)  # all but the last KiB, then stall
            socks = []
            began = time.time()
            for _ in range(args.connections):
                s = socket.create_connection(("127.0.0.1", port))
                s.setblocking(False)
                socks.append([s, head + chunk, b""])
            peak = before
            answers = {}
            pending = list(socks)
            while time.time() - began < args.watch:
                for entry in pending:
                    s, out, got = entry
                    if out:
                        try:
                            n = s.send(out)
                            entry[1] = out[n:]
                        except (BlockingIOError, InterruptedError):
                            pass
                        except OSError:
                            entry[1] = b""
                    try:
                        data = s.recv(4096)
                        if data:
                            entry[2] = got + data
                    except (BlockingIOError, InterruptedError):
                        pass
                    except OSError:
                        pass
                peak = max(peak, rss_kib(server.pid))
                time.sleep(0.02)
            for s, _, got in socks:
                status = got.split(b" ")[1].decode() if got.startswith(b"HTTP/") else "none"
                answers[status] = answers.get(status, 0) + 1
                s.close()
            print(f"connections: {args.connections} x {args.kib} KiB, stalled before the last KiB")
            print(f"server RSS before: {before / 1024:.1f} MiB")
            print(f"server RSS peak during {args.watch:.0f} s: {peak / 1024:.1f} MiB")
            print("answers: " + ", ".join(f"{k}: {v}" for k, v in sorted(answers.items())))
        finally:
            server.terminate()
            server.wait()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
