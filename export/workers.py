"""The process model of `--workers N`: uvicorn's own workers, and what a worker adds to them.

A device module of the server: the standard library only (uvicorn is passed
in). `run` binds nothing itself: the caller's listening socket goes to
uvicorn's process manager (`uvicorn.supervisors.Multiprocess`), which starts
N processes that accept from that one socket, replaces a worker that dies,
and on SIGTERM or SIGINT asks every worker to drain and waits for them.
This module adds what the command promises beyond that:

- a worker that cannot start reports its reason, and the command exits with
  status 2 and that one line (uvicorn's parent would stop, and exit 0);
- a worker whose parent is gone (killed, so it never asked them to drain)
  drains and stops by itself, instead of serving on as an orphan.

The balance of connections between workers that share a socket is measured
by `benchmarks/serving_balance.py`; the figures are in docs/serving.md
("Workers").
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time

log = logging.getLogger("keras_vae.serve")

MAX_WORKERS = 64  # --workers
PARENT_POLL_S = 0.5


class WorkerApp:
    """The app factory each worker calls: builds the app, watches the parent.

    Pickled into every worker (uvicorn starts them with multiprocessing's
    `spawn`), so it holds only picklable things: a module-level `build`
    function and its argument.

    Args:
        build: `build(arg) -> ASGI app`, run in the worker.
        arg: Its argument (the parsed command line).
        report: The write end of a pipe to the parent, for a start-up failure.
        parent: The parent's process id.
        failure_status: The exit status of a worker that never served
            (uvicorn's `STARTUP_FAILURE`: its parent then stops the others
            instead of restarting it).
    """

    def __init__(self, build, arg, report, parent: int, failure_status: int):
        self.build, self.arg, self.report, self.parent = build, arg, report, parent
        self.failure_status = failure_status

    def __call__(self):
        watch_parent(self.parent)
        try:
            return self.build(self.arg)
        except Exception as e:  # noqa: BLE001 (any failure to start is reported the same way)
            self.report.send(str(e) or type(e).__name__)
            sys.exit(self.failure_status)


def watch_parent(parent: int) -> threading.Thread:
    """Sends this process SIGTERM (uvicorn's drain) once `parent` is no longer its parent.

    A parent killed with SIGKILL cannot pass a signal on; its orphans are
    adopted by another process, which is what the thread sees.
    """

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        log.warning("the parent process is gone; stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, daemon=True, name="parent-watch")
    thread.start()
    return thread


class _StartFailureLine(logging.Filter):
    """Drops uvicorn's own line about a worker that failed to start (`run` prints the reason)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "failed to start" not in record.getMessage()


def run(uvicorn, config, sock: socket.socket, build, arg, prog: str) -> int:
    """Serves `build(arg)` in `config.workers` processes on `sock` until SIGTERM/SIGINT.

    Args:
        uvicorn: The uvicorn module.
        config: The workers' `uvicorn.Config` (its app is replaced by a `WorkerApp`).
        sock: The listening socket the workers share.
        build: A module-level function `build(arg) -> ASGI app`, run in each worker.
        arg: Its argument (picklable).
        prog: The name in messages.

    Returns:
        0 once every worker has drained and exited; 2 (with one line on
        stderr) when a worker could not start.
    """
    failure = uvicorn.config.STARTUP_FAILURE
    reasons, report = multiprocessing.Pipe(duplex=False)
    config.app = WorkerApp(build, arg, report, os.getpid(), failure)
    config.factory = True
    logging.getLogger("uvicorn.error").addFilter(_StartFailureLine())
    supervisor = uvicorn.supervisors.Multiprocess(config, sockets=[sock])
    supervisor.run()
    if not any(p.exitcode == failure for p in supervisor.processes):
        return 0
    reason = reasons.recv() if reasons.poll() else f"exit status {failure}"
    print(f"{prog}: error: a worker could not start: {reason}", file=sys.stderr, flush=True)
    return 2


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
