"""How N server processes share connections: uvicorn's own workers against serve.py's hand-over.

Counts which worker answered each connection, on 127.0.0.1, for:

- by default, `uvicorn --workers N` over a tiny ASGI app that answers its process id;
- with `--export DIR`, the real server twice, side by side: `serve.py DIR --workers N`
  (its supervisor accepts and hands each connection to the next worker) and the same
  app under `uvicorn --workers N` (N processes accepting from one shared socket; the
  app factory `export_app` below), asking `/v1/stats` which worker answered.

Four patterns, `--tries` times each, the servers alternating:

- burst: `--connections` threads open a connection at the same instant (a barrier),
  one request each, closed as soon as answered;
- held: the same, but every connection stays open until all are answered;
- pool: `--connections` connections opened at once from one asyncio loop and held,
  as a load generator or a client's connection pool opens its long-lived connections
  (they reach the listening socket within microseconds of each other);
- in turn: connections one after another.

    python benchmarks/serving_balance.py --tries 20
    python benchmarks/serving_balance.py --export runs/demo/export --tries 20

The figures are in docs/serving.md ("Workers").
"""

import argparse
import asyncio
import collections
import http.client
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVE = HERE.parent / "export" / "serve.py"
SERVE_ARGS = "SERVING_BALANCE_SERVE_ARGS"  # serve.py's arguments, for `export_app`


async def app(scope, receive, send):
    """ASGI: answers this worker's process id."""
    if scope["type"] != "http":
        return
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def export_app():
    """ASGI app factory: serve.py's app, for `uvicorn --factory --workers N` (one per worker).

    The export and the flags are serve.py's command line, in the environment
    variable `SERVING_BALANCE_SERVE_ARGS`; `--workers` there only sets the
    threads default (1 with several), as in serve.py. The server's modules are
    imported as an export folder holds them (no TensorFlow).
    """
    sys.path.insert(0, str(SERVE.parent))
    import serve

    args = serve.parser().parse_args(shlex.split(os.environ[SERVE_ARGS]))
    service = serve.Service(args.export_dir, serve.limits_of(args), web_dir=args.web_dir)
    service.worker = {"index": None, "workers": args.workers, "pid": os.getpid()}
    return serve.create_app(service)


def uvicorn_workers(workers: int) -> list:
    """`export_app` under uvicorn's own workers, with serve.py's uvicorn settings (add --port)."""
    return [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "serving_balance:export_app",
            "--factory", "--workers", str(workers), "--host", "127.0.0.1", "--no-access-log",
            "--no-server-header", "--timeout-keep-alive", "5", "--log-level", "warning"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(body: bytes) -> str:
    """The worker's process id in an answer: the tiny app's text, or serve.py's `/v1/stats`."""
    text = body.decode()
    return str(json.loads(text)["worker"]["pid"]) if text.startswith("{") else text


def burst(port: int, path: str, connections: int, hold: bool = False) -> collections.Counter:
    """Which worker answered each of `connections` requests opened together.

    With `hold`, no connection closes before every one has its answer.
    """
    start, done = threading.Barrier(connections), threading.Barrier(connections)
    pids = [None] * connections

    def one(i):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        start.wait()
        try:
            conn.request("GET", path)
            pids[i] = _worker(conn.getresponse().read())
        except OSError:  # not listening yet, or refused: counted as None
            pass
        finally:
            if hold:
                done.wait()
            conn.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return collections.Counter(pids)


def pool(port: int, path: str, connections: int) -> collections.Counter:
    """Which worker answered each of `connections` held connections opened at once by asyncio."""

    async def ask(reader, writer):
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
        length = int(re.search(r"content-length: *(\d+)", head)[1])
        return _worker(await reader.readexactly(length))

    async def main():
        pairs = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                       for _ in range(connections)))
        try:
            return await asyncio.wait_for(asyncio.gather(*(ask(*pair) for pair in pairs)), 30)
        finally:
            for _, writer in pairs:
                writer.close()

    return collections.Counter(asyncio.run(main()))


def in_turn(port: int, path: str, connections: int) -> collections.Counter:
    """Which worker answered each of `connections` requests, one connection after another."""
    pids = []
    for _ in range(connections):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        pids.append(_worker(conn.getresponse().read()))
        conn.close()
    return collections.Counter(pids)


def _servers(args) -> dict:
    """name -> (command without the port, environment additions)."""
    if args.export is None:
        tiny = [sys.executable, "-m", "uvicorn", "--app-dir", str(HERE), "serving_balance:app",
                "--host", "127.0.0.1", "--workers", str(args.workers), "--log-level", "warning"]
        return {"uvicorn --workers, tiny app": (tiny, {})}
    export = str(args.export.resolve())
    flags = ["--workers", str(args.workers)]
    return {"serve.py --workers (hand-over)": ([sys.executable, str(SERVE), export, *flags], {}),
            "uvicorn --workers, serve.py's app": (uvicorn_workers(args.workers),
                                                  {SERVE_ARGS: shlex.join([export, *flags])})}


def _start(command: list, env: dict, port: int, path: str, workers: int) -> subprocess.Popen:
    """Starts a server on `port` and waits until each of its workers has answered."""
    proc = subprocess.Popen([*command, "--port", str(port)], cwd=HERE, stderr=subprocess.DEVNULL,
                            env={**os.environ, **env})
    seen, deadline = set(), time.monotonic() + 90
    while len(seen) < workers:
        if proc.poll() is not None:
            raise SystemExit(f"{command[:4]} exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit(f"{command[:4]}: the workers did not all start")
        seen |= set(burst(port, path, 4)) - {None}
        time.sleep(0.2)
    return proc


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tries", type=int, default=5, choices=range(1, 51), metavar="1..50")
    p.add_argument("--connections", type=int, default=16, choices=range(2, 257),
                   metavar="2..256")
    p.add_argument("--workers", type=int, default=2, choices=range(2, 9), metavar="2..8")
    p.add_argument("--export", type=Path, default=None,
                   help="run the real server over this export (serve.py and uvicorn's workers)")
    args = p.parse_args(argv)
    path = "/" if args.export is None else "/v1/stats"
    servers, ports, procs = _servers(args), {}, {}
    patterns = ("burst", "held", "pool", "in_turn")
    results = {name: {pattern: [] for pattern in patterns} for name in servers}
    try:
        for name, (command, env) in servers.items():
            ports[name] = _free_port()
            procs[name] = _start(command, env, ports[name], path, args.workers)
        for pattern in patterns:
            for i in range(args.tries):
                for name, port in ports.items():
                    time.sleep(0.5)  # every worker idle, waiting in accept
                    if pattern == "pool":
                        counts = pool(port, path, args.connections)
                    elif pattern == "in_turn":
                        counts = in_turn(port, path, args.connections)
                    else:
                        counts = burst(port, path, args.connections, hold=pattern == "held")
                    split = sorted(counts.values(), reverse=True) + [0] * args.workers
                    results[name][pattern].append(split[:args.workers])
                    print(f"{name}: {pattern} {i + 1}: {split[:args.workers]}", flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(30)
    even = -(-args.connections // args.workers)  # the largest share of an even split
    print(f"uvicorn {_version()}, {args.workers} workers, {os.cpu_count()} cores, "
          f"{args.connections} connections, {args.tries} tries")
    for name, by_pattern in results.items():
        print(name)
        for pattern, splits in by_pattern.items():
            largest = [s[0] for s in splits]
            print(f"  {pattern:8s} largest share {min(largest)}..{max(largest)}; "
                  f"within {even + 2}: {sum(m <= even + 2 for m in largest)}/{len(splits)}; "
                  f"all on one worker: {sum(m == args.connections for m in largest)}/"
                  f"{len(splits)}")
    return results


def _version() -> str:
    import uvicorn

    return re.sub(r"[^0-9.]", "", uvicorn.__version__)


if __name__ == "__main__":
    main()
