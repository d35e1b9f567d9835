#!/usr/bin/env python3
"""An inference service over a keras-vae export: Open Inference Protocol, scoring, sampling.

Needs only numpy, onnxruntime, Starlette, uvicorn and Pillow (no TensorFlow,
Keras or keras_vae). An export folder carries this script and the modules
beside it (`protocol`, `batcher`, `service`, `routes`, `uploads`, `workers`,
`http_limits`, and the device modules `reader`, `recipes`), so inside it

    python serve.py .                          # http://127.0.0.1:8000
    python serve.py . --port 9000 --max-batch 64 --threads 2

It checks every exported file against the manifest's SHA-256, opens the fp32
ONNX `decoder`, `encoder` and `scorer` in onnxruntime (one session each) and
serves them as models named after the graphs, the way Triton, KServe,
MLServer and OpenVINO Model Server do (KServe v2 / Open Inference Protocol
over REST, with the binary tensor data extension):

    GET  /v2/health/live, /v2/health/ready, /v2, /v2/models/{name}[/ready]
    POST /v2/models/{name}/infer

plus the keras-vae routes:

    POST /v1/score                  anomaly scores of PNG uploads or JSON images
    GET  /v1/sample.png?n=&seed=[&class_ids=]
    GET  /v1/interpolate.png?seed_a=&seed_b=&steps=[&class_ids=]
    GET  /v1/info, /v1/stats, /manifest.json, /files/<exported file>
    GET  /  (the page in web/), /web/<file>, /ort/<onnxruntime-web file>

Concurrent requests for one model are coalesced into one onnxruntime call
(`batcher`); a model with `--max-queue` requests waiting answers 503 with
Retry-After; a request above `--max-examples` examples or `--max-body-bytes`
bytes answers 413; a request head above `--max-header-bytes` or `--max-headers`
answers 431, one not sent within `--header-timeout-s` 408, a connection above
`--max-connections` 503 (`http_limits`). SIGTERM stops accepting connections, finishes the
requests in flight, then exits with status 0. `--workers N` runs N such
servers (processes) on one port (`workers`).

This file is the command line and the application's assembly; the parts:

    protocol.py  the Open Inference Protocol codec (tensors in and out, refusals)
    batcher.py   request coalescing
    service.py   the export: checked files, onnxruntime sessions, limits, value checks
    routes.py    the HTTP handlers and the route table
    uploads.py   PNG uploads decoded by Pillow
    workers.py   the supervisor of --workers N
    http_limits.py  the HTTP layer's bounds: request heads, read deadlines, connections
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

SERVER_MODULES = ("protocol", "batcher", "service", "routes", "uploads", "workers",
                  "http_limits", "reader", "recipes")


def _missing(error: ImportError):
    """Run as a script: one line and exit status 2; imported: the ImportError."""
    if __name__ != "__main__":
        raise error
    if error.name in SERVER_MODULES:
        message = f"{error.name}.py must sit beside serve.py; copy the export folder whole."
    else:
        message = (f"{error.name} is not installed; the server needs numpy, onnxruntime, "
                   "starlette, uvicorn and Pillow (pip install 'keras-vae[serve]').")
    print(f"serve.py: error: {message}", file=sys.stderr)
    sys.exit(2)


try:
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException

    if __package__:
        from . import http_limits, routes, uploads, workers
        from .reader import EdgeError
        from .service import Limits, Service
    else:  # run as a script: the server's modules sit beside this file
        import http_limits
        import routes
        import uploads
        import workers
        from reader import EdgeError
        from service import Limits, Service
except ImportError as e:  # depends on the machine
    _missing(e)

log = logging.getLogger("keras_vae.serve")


def settle_heap(gen0_threshold: int = 20_000) -> None:
    """Hides the objects loaded at start from the cyclic garbage collector, and runs it less.

    A JSON image is about 800 small lists (one per pixel of a `(28, 28, 1)`
    image); allocating them would set off a collection on every request, and
    now and then a full one over every object of numpy, onnxruntime and
    Starlette: the scoring tail (benchmarks/README.md, section 5). Frozen
    objects are never scanned;
    reference counting still frees the request's lists at once, so a larger
    first threshold only delays the collection of reference cycles.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, *gc.get_threshold()[1:])


def create_app(service: Service, freeze_heap: bool = True) -> Starlette:
    """The Starlette application of a `Service` (its batchers start with the app).

    With `freeze_heap` (the default), starting the app calls `settle_heap()`,
    which changes the garbage collector of the whole process: pass False
    when the app shares its process with other work.

    Example:

    >>> app = create_app(Service("runs/demo/export"))
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)
    """

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for batcher in service.batchers.values():
            batcher.start()
        if freeze_heap:
            settle_heap()
        try:
            yield
        finally:
            for batcher in service.batchers.values():
                await batcher.stop()

    app = Starlette(routes=routes.table(), lifespan=lifespan,
                    exception_handlers={HTTPException: routes.http_error,
                                        Exception: routes.internal_error})
    app.state.service = service
    return app


def parser(prog: str = "serve.py") -> argparse.ArgumentParser:
    """The command line (also `keras-vae serve`)."""
    d = Limits()
    p = argparse.ArgumentParser(
        prog=prog, description="Serve a keras-vae export over HTTP (Open Inference Protocol, "
                               "anomaly scores, samples) with onnxruntime; no TensorFlow.")
    p.add_argument("export_dir", help="directory with manifest.json and the ONNX files")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=d.max_batch,
                   help="most examples coalesced into one onnxruntime call (1: no coalescing)")
    p.add_argument("--batch-window-ms", type=float, default=d.batch_window_ms,
                   help="extra wait for requests to join a call (default 0: those that "
                        "queued while the previous call ran)")
    p.add_argument("--max-queue", type=int, default=d.max_queue,
                   help="requests waiting per model before 503 + Retry-After")
    p.add_argument("--max-examples", type=int, default=d.max_examples,
                   help="most images or latents in one request (413 above)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help="largest request body (413 above)")
    p.add_argument("--body-timeout-s", type=float, default=d.body_timeout_s,
                   help="time a client has to send its body (408 after)")
    h = http_limits.HttpLimits()
    p.add_argument("--max-header-bytes", type=int, default=h.max_header_bytes,
                   help="largest request head, request line and headers together (431 above)")
    p.add_argument("--max-headers", type=int, default=h.max_headers,
                   help="most header lines in one request (431 above)")
    p.add_argument("--header-timeout-s", type=float, default=h.header_timeout_s,
                   help="time a client has, from connecting or from its request's first "
                        "byte, to send the request head (408 after)")
    p.add_argument("--max-connections", type=int, default=h.max_connections,
                   help="open connections per server process (per worker with --workers); "
                        "the next one is answered 503 and closed")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port, each with its own onnxruntime "
                        "sessions and coalescing (default 1; up to one per core)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"onnxruntime intra-op threads per model (0: onnxruntime's default; "
                        f"default {d.threads} with one worker, 1 with several)")
    p.add_argument("--parallel-runs", type=int, default=d.parallel_runs,
                   help="onnxruntime calls per model that may run at once, each on its own "
                        "thread")
    p.add_argument("--drain-timeout-s", type=float, default=30.0,
                   help="on SIGTERM, longest wait for requests in flight")
    p.add_argument("--web-dir", default=None, help="folder of the page (default: web/ beside "
                                                   "this file)")
    p.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"])
    # Set by `Workers` for the processes it starts: the shared socket, and which one.
    p.add_argument("--worker-fd", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    return p


def limits_of(args: argparse.Namespace) -> Limits:
    """The `Limits` of a parsed command line (`--threads` defaults to 1 with several workers)."""
    threads = args.threads
    if threads is None:
        threads = Limits.threads if args.workers == 1 else 1
    return Limits(max_batch=args.max_batch, batch_window_ms=args.batch_window_ms,
                  max_queue=args.max_queue, max_examples=args.max_examples,
                  max_body_bytes=args.max_body_bytes, body_timeout_s=args.body_timeout_s,
                  threads=threads, parallel_runs=args.parallel_runs)


def http_limits_of(args: argparse.Namespace) -> http_limits.HttpLimits:
    """The HTTP layer's bounds of a parsed command line.

    Raises:
        ValueError: a bound that is not a positive number.
    """
    return http_limits.HttpLimits(
        max_header_bytes=args.max_header_bytes, max_headers=args.max_headers,
        header_timeout_s=args.header_timeout_s, body_timeout_s=args.body_timeout_s,
        max_connections=args.max_connections)


def main(argv=None, prog: str = "serve.py") -> int:
    """Checks the export, then serves it until SIGINT/SIGTERM.

    Returns:
        0 after a clean shutdown (in-flight requests answered); 2 with a
        one-line message for a bad export or bad flags.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(prog).parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=f"{prog}: %(message)s")
    uploads.tell_why_unreadable()
    try:
        import uvicorn
    except ImportError:
        print(f"{prog}: error: uvicorn is not installed (pip install 'keras-vae[serve]')",
              file=sys.stderr)
        return 2
    worker = args.worker_fd is not None
    limits = limits_of(args)
    try:
        bounds = http_limits_of(args)
    except ValueError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    try:
        if not 0 <= args.port <= 65535:
            raise EdgeError(f"--port must be in [0, 65535], got {args.port}")
        if not 1 <= args.workers <= workers.MAX_WORKERS:
            raise EdgeError(f"--workers must be in [1, {workers.MAX_WORKERS}], got "
                                    f"{args.workers}")
        if args.workers > 1 and not hasattr(socket, "send_fds"):
            raise EdgeError("--workers above 1 needs Unix sockets that pass file "
                                    "descriptors (Linux, macOS)")
        # With --workers N this process only checks the export (each worker opens its own).
        service = Service(args.export_dir, limits, web_dir=args.web_dir)
    except (EdgeError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    try:
        sock = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=args.worker_fd)
                if worker else workers.listen(args.host, args.port))
    except OSError as e:
        print(f"{prog}: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    if not worker:
        host, port = sock.getsockname()[:2]
        count = f", {args.workers} workers" if args.workers > 1 else ""
        print(f"{prog}: serving {', '.join(service.models)} of {args.export_dir} on "
              f"http://{host}:{port} (coalescing up to {limits.max_batch} examples, window "
              f"{limits.batch_window_ms:g} ms{count})", file=sys.stderr, flush=True)
    if args.workers > 1 and not worker:
        del service
        return workers.Workers(__file__, argv, sock, args.workers, prog).run()
    service.worker = {"index": args.worker_index, "workers": args.workers, "pid": os.getpid()}
    config = uvicorn.Config(create_app(service), log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=args.drain_timeout_s,
                            timeout_keep_alive=5, server_header=False,
                            **http_limits.config_options(bounds))
    server = workers.worker_server(uvicorn, config, sock) if worker else uvicorn.Server(config)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the
    # handler in place before it started: make that one a clean exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    started = time.monotonic()
    with contextlib.suppress(SystemExit):  # our exit after the drain
        server.run(sockets=None if worker else [sock])
    log.info("stopped after %.0f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
