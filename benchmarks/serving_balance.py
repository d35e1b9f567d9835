"""How uvicorn's own `--workers` shares a burst of connections (why `serve.py` hands them over).

Starts `uvicorn --workers 2` on 127.0.0.1 over a tiny ASGI app that answers its process id,
opens `--connections` connections at the same instant (a barrier), and counts which worker
answered each; `--tries` bursts. `export/workers.py` exists because of this figure
(docs/serving.md, "Workers"); its own round robin is tested in tests/serve/test_server.py.

    python benchmarks/serving_balance.py --tries 5 --connections 16
"""

import argparse
import collections
import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


async def app(scope, receive, send):
    """ASGI: answers this worker's process id."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def burst(port: int, connections: int) -> collections.Counter:
    """Which worker answered each of `connections` requests opened together."""
    barrier = threading.Barrier(connections)
    pids = [None] * connections

    def one(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        barrier.wait()
        try:
            conn.request("GET", "/")
            pids[i] = conn.getresponse().read().decode()
        except OSError:  # not listening yet, or refused: counted as None
            pass
        finally:
            conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return collections.Counter(pids)


def in_turn(port: int, connections: int) -> collections.Counter:
    """Which worker answered each of `connections` requests, one connection after another."""
    pids = []
    for _ in range(connections):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        pids.append(conn.getresponse().read().decode())
        conn.close()
    return collections.Counter(pids)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=5, choices=range(1, 51), metavar="1..50")
    p.add_argument("--connections", type=int, default=16, choices=range(2, 257),
                   metavar="2..256")
    p.add_argument("--workers", type=int, default=2, choices=range(2, 9), metavar="2..8")
    args = p.parse_args(argv)
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "serving_balance:app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(args.workers), "--log-level", "warning"],
        cwd=Path(__file__).resolve().parent)
    try:
        workers, deadline = set(), time.monotonic() + 60
        while len(workers) < args.workers:  # every worker up and answering
            assert time.monotonic() < deadline, "uvicorn's workers did not all start"
            workers |= set(burst(port, 4)) - {None}
            time.sleep(0.2)
        lopsided = 0
        for i in range(args.tries):
            time.sleep(0.5)  # every worker idle, waiting in accept
            counts = burst(port, args.connections)
            most = max(counts.values())
            lopsided += most == args.connections
            print(f"burst {i + 1}: {sorted(counts.values(), reverse=True)} "
                  f"(largest share {most}/{args.connections})")
        print(f"all {args.connections} on one worker in {lopsided} of {args.tries} bursts "
              f"(uvicorn {_version()}, {args.workers} workers, {os.cpu_count()} cores)")
        for i in range(args.tries):
            counts = in_turn(port, args.connections)
            print(f"in turn {i + 1}: {sorted(counts.values(), reverse=True)}")
    finally:
        proc.terminate()
        proc.wait(30)
    return 0


def _version() -> str:
    import uvicorn

    return re.sub(r"[^0-9.]", "", uvicorn.__version__)


if __name__ == "__main__":
    sys.exit(main())
