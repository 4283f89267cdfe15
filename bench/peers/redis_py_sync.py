#!/usr/bin/env python3
"""The hand-written peer of `cacheflow sync`: set 5 parameters on every Redis node,
one node after another, and persist them (CONFIG REWRITE), the way a plain script does.

    redis_py_sync.py PORTS_FILE hz=20 maxmemory=64mb ...
"""
import sys

import redis


def main():
    ports = [int(p) for p in open(sys.argv[1]).read().split()]
    params = dict(a.split("=", 1) for a in sys.argv[2:])
    for port in ports:
        r = redis.Redis(host="127.0.0.1", port=port)
        for name, value in params.items():
            r.config_set(name, value)
        r.config_rewrite()
        r.close()


if __name__ == "__main__":
    main()
