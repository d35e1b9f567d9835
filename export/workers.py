"""The process model of `--workers N`: a supervisor that hands connections to N servers.

A device module of the server: the standard library only (uvicorn is passed
in). `Workers` runs the server script N times and passes each accepted
connection to the next worker over a Unix socket (round robin);
`worker_server` is the uvicorn server inside a worker that adopts them.

Why not uvicorn's own `--workers` (one socket shared by N processes, each
accepting): a worker's event loop accepts every connection waiting when it
wakes, so connections opened together (a client's pool, a load generator)
land mostly on whichever worker woke first, and keep-alive connections stay
there. `benchmarks/serving_balance.py` (the split) and
`benchmarks/bench_serving.py --systems ours ours-uvicorn-workers` (requests/s,
p99) measure it; the figures are in docs/serving.md ("Workers").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("keras_vae.serve")

MAX_WORKERS = 64  # --workers



class Workers:
    """Runs the server script N times, hands them connections in turn, keeps N running.

    Each worker is the script again with `--worker-fd`: its own onnxruntime
    sessions, batchers and event loop. Reading, parsing and answering requests
    is Python work under one GIL, so one process uses about one core however
    many onnxruntime threads it has; N workers use N (benchmarks/README.md,
    section 5). Coalescing and `/v1/stats` are per worker.

    This process accepts the connections and passes each to the next worker
    over a Unix socket (round robin, as Node's cluster module does), because
    workers accepting from one shared socket do not share a burst (see the
    module docstring).

    SIGTERM or SIGINT here closes the port and is passed on to every worker,
    which finishes its requests in flight; `run` returns 0 once all have
    exited. A worker that dies otherwise is started again (at most
    `max_restarts` times a minute); one that refuses to start (status 2, its
    message on stderr) stops them all. A worker whose supervisor is gone
    (killed) drains and stops by itself.

    Args:
        script: The server script each worker runs (`serve.py`).
        argv: Its command-line arguments (the worker flags are added).
        sock: The listening socket.
        count: How many workers.
        prog: The name in messages.
        max_restarts: Most restarts in a minute before all stop.
    """

    def __init__(self, script, argv: list, sock: socket.socket, count: int, prog: str,
                 max_restarts: int = 5):
        self.script = Path(script).resolve()
        self.argv, self.sock, self.count, self.prog = argv, sock, count, prog
        self.max_restarts = max_restarts
        self.procs: dict[int, subprocess.Popen] = {}
        self.channels: dict[int, socket.socket] = {}
        self.restarts: collections.deque[float] = collections.deque()
        self.stopping = False
        self.turn = 0  # the worker that gets the next connection
        self.status = 0

    def _spawn(self, index: int) -> None:
        if index in self.channels:
            self.channels.pop(index).close()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with theirs:
            self.procs[index] = subprocess.Popen(
                [sys.executable, str(self.script), *self.argv,
                 "--worker-fd", str(theirs.fileno()), "--worker-index", str(index)],
                pass_fds=(theirs.fileno(),), start_new_session=True)  # signals come from here
        self.channels[index] = ours

    def _signal(self, sig, frame=None) -> None:
        self.stopping = True
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)  # a second SIGINT makes uvicorn stop waiting

    def _hand_over(self, conn: socket.socket) -> None:
        """Passes `conn` to the next worker that takes it (none: the client sees it close)."""
        with conn:
            for _ in range(self.count):
                index = self.turn % self.count
                self.turn += 1
                channel = self.channels.get(index)
                if channel is None or self.procs[index].poll() is not None:
                    continue
                try:
                    socket.send_fds(channel, [b"c"], [conn.fileno()])
                    return
                except OSError:  # the worker is gone; it is restarted below
                    continue

    def _reap(self) -> int | None:
        """Restarts workers that died; returns an exit status once they are all gone."""
        for index, proc in list(self.procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.procs[index]
            if self.stopping:
                continue
            now = time.monotonic()
            while self.restarts and now - self.restarts[0] > 60:
                self.restarts.popleft()
            if code == 2 or len(self.restarts) >= self.max_restarts:
                print(f"{self.prog}: error: worker {index} exited with status {code}"
                      f"{'' if code == 2 else ' too often'}; stopping the others",
                      file=sys.stderr, flush=True)
                self.status = 2 if code == 2 else 1
                self._signal(signal.SIGTERM)
                continue
            log.warning("worker %d (pid %d) exited with status %d; starting another",
                        index, proc.pid, code)
            self.restarts.append(now)
            self._spawn(index)
        return None if self.procs else self.status

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._signal)
        for index in range(self.count):
            self._spawn(index)
        self.sock.setblocking(False)
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        try:
            while True:
                if self.stopping and self.sock.fileno() != -1:
                    self.sock.close()  # no new connections while the workers drain
                if self.sock.fileno() == -1:
                    time.sleep(0.1)
                elif poller.poll(100):
                    with contextlib.suppress(BlockingIOError, InterruptedError):
                        self._hand_over(self.sock.accept()[0])
                status = self._reap()
                if status is not None:
                    return status
        finally:
            self.sock.close()
            for channel in self.channels.values():
                channel.close()


def worker_server(uvicorn, config, channel: socket.socket):
    """A uvicorn server whose connections come from the supervisor over `channel`.

    A thread receives each connection's descriptor (`Workers._hand_over`) and
    hands it to the event loop; the end of the channel (the supervisor gone)
    makes the worker drain and stop. The protocol factory is built the way
    uvicorn's own `Server.startup` builds it (its config's protocol class, the
    server's state, the lifespan's state); the worker tests run through it.
    """

    class Worker(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=[])  # the lifespan, listening on nothing
            loop = asyncio.get_running_loop()
            factory = functools.partial(self.config.http_protocol_class, config=self.config,
                                        server_state=self.server_state,
                                        app_state=self.lifespan.state)
            threading.Thread(target=self._receive, args=(loop, factory), daemon=True,
                             name="connections").start()

        def _receive(self, loop, factory) -> None:
            while True:
                try:
                    message, fds, _, _ = socket.recv_fds(channel, 64, 16)
                except OSError:
                    message, fds = b"", []
                if not message:
                    if not self.should_exit:
                        log.warning("the supervisor is gone; stopping")
                        self.should_exit = True
                    return
                for fd in fds:
                    conn = socket.socket(fileno=fd)
                    conn.setblocking(False)
                    try:
                        asyncio.run_coroutine_threadsafe(self._adopt(conn, factory), loop)
                    except RuntimeError:  # the loop has closed: the worker is exiting
                        conn.close()

        async def _adopt(self, conn: socket.socket, factory) -> None:
            if self.should_exit:
                conn.close()
                return
            try:
                await asyncio.get_running_loop().connect_accepted_socket(factory, conn)
            except OSError:  # the client went away meanwhile
                conn.close()

    return Worker(config)


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: any free port).

    Raises:
        OSError: the address is in use, unknown, or not this machine's.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
