#!/usr/bin/env python3
"""Open console pages on a `cacheflow serve` and keep them open, as browsers would.

    console_pages.py pages   PORT N OUT [SPREAD_S]   # N pages: GET / once, then its event stream
    console_pages.py streams PORT N OUT PARTS         # N event streams with every row at connect

`pages`: each page loads the fleet (`GET /`), reads the status number and the events
address from the page (`data-seq`, `data-events`), then opens `/console/events?since=N`
on its own connection, as the page's EventSource does, and reads it until SIGTERM. The
page opens are spread over SPREAD_S seconds (default 2). `OUT` gets one line when every
page is open (`ready ...`) and one at the end (`pages=... events=... ...`).

`streams`: N streams without `since` (each is sent every fleet row when it connects);
`ready` is written once every stream has received PARTS `part` events. Holds them until
SIGTERM.

Python standard library only; one process, one thread (asyncio).
"""

import asyncio
import os
import re
import signal
import sys
import time

HOST = "127.0.0.1"


class Totals:
    def __init__(self):
        self.page_bytes = 0
        self.page_ms = []
        self.opened = 0
        self.open_now = 0
        self.events = 0
        self.event_bytes = 0
        self.failed = 0


async def read_response_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head


async def load_page(port, totals):
    """GET / and return (events address, seq)."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await reader.read(-1)
    writer.close()
    took = (time.monotonic() - began) * 1000
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"GET / answered {head[:40]!r}")
    m = re.search(rb'data-events="([^"]+)" data-seq="(\d+)"', body)
    if not m:
        raise RuntimeError("the fleet page carries no data-events/data-seq")
    totals.page_bytes += len(body)
    totals.page_ms.append(took)
    return m.group(1).decode(), int(m.group(2))


async def hold_stream(port, path, totals, first_parts=None, on_open=None):
    """Open `path` and read it until it ends; count events and bytes."""
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status, _ = await read_response_head(reader)
    if status != 200:
        raise RuntimeError(f"GET {path} answered {status}")
    totals.opened += 1
    totals.open_now += 1
    if on_open is not None:
        on_open()
    tail = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            totals.event_bytes += len(chunk)
            seen = tail + chunk
            n = seen.count(b"event: ") - tail.count(b"event: ")
            totals.events += n
            if first_parts is not None:
                first_parts[0] += seen.count(b"event: part") - tail.count(b"event: part")
            tail = seen[-16:]
    finally:
        totals.open_now -= 1
        writer.close()


async def page(port, delay, totals, opened):
    await asyncio.sleep(delay)
    released = [False]
    try:
        events, seq = await load_page(port, totals)
        sep = "&" if "?" in events else "?"

        def on_open():
            released[0] = True
            opened.release()

        await hold_stream(port, f"{events}{sep}since={seq}", totals, on_open=on_open)
    except (OSError, RuntimeError, asyncio.IncompleteReadError) as e:
        totals.failed += 1
        if not released[0]:
            opened.release()
        print(f"console_pages: a page failed: {e}", file=sys.stderr)


async def stream(port, totals, parts, need, ready):
    counter = [0]
    task = asyncio.ensure_future(hold_stream(port, "/console/events", totals, counter))
    while counter[0] < need and not task.done():
        await asyncio.sleep(0.1)
    ready.release()
    try:
        await task
    except (OSError, RuntimeError, asyncio.IncompleteReadError) as e:
        totals.failed += 1
        print(f"console_pages: a stream failed: {e}", file=sys.stderr)


async def main():
    mode, port, n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    totals = Totals()
    done = asyncio.Semaphore(0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    began = time.monotonic()
    if mode == "pages":
        spread = float(sys.argv[5]) if len(sys.argv) > 5 else 2.0
        tasks = [asyncio.ensure_future(page(port, spread * i / max(n, 1), totals, done)) for i in range(n)]
    elif mode == "streams":
        need = int(sys.argv[5])
        tasks = [asyncio.ensure_future(stream(port, totals, None, need, done)) for _ in range(n)]
    else:
        sys.exit(f"console_pages: unknown mode {mode}")
    for _ in range(n):
        await done.acquire()
    with open(out, "a") as f:
        median = sorted(totals.page_ms)[len(totals.page_ms) // 2] if totals.page_ms else 0
        f.write(
            f"ready open={totals.open_now} failed={totals.failed} after_s={time.monotonic() - began:.1f} "
            f"page_median_ms={median:.1f}\n"
        )
    await stop.wait()
    still_open = totals.open_now
    for t in tasks:
        t.cancel()
    with open(out, "a") as f:
        f.write(
            f"pages={n} opened={totals.opened} open_at_end={still_open} failed={totals.failed} "
            f"page_bytes={totals.page_bytes} events={totals.events} event_bytes={totals.event_bytes} "
            f"client_cpu_s={sum(os.times()[:2]):.1f}\n"
        )


if __name__ == "__main__":
    asyncio.run(main())
