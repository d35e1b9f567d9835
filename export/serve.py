#!/usr/bin/env python3
"""An inference service over a keras-vae export: Open Inference Protocol, scoring, sampling.

Needs only numpy, onnxruntime, Starlette and uvicorn (no TensorFlow, Keras or
keras_vae): copy this file, `edge_io.py` (and the `web/` folder for the page)
beside the export directory, then

    python serve.py EXPORT_DIR                      # http://127.0.0.1:8000
    python serve.py EXPORT_DIR --port 9000 --max-batch 64 --threads 2

It checks every exported file against the manifest's SHA-256, opens the fp32
ONNX `decoder`, `encoder` and `scorer` in onnxruntime (one session each) and
serves them as models named after the graphs, the way Triton, KServe,
MLServer and OpenVINO Model Server do (KServe v2 / Open Inference Protocol
over REST, with the binary tensor data extension):

    GET  /v2/health/live, /v2/health/ready, /v2, /v2/models/{name}[/ready]
    POST /v2/models/{name}/infer

plus the keras-vae routes:

    POST /v1/score                  anomaly scores of PNG uploads or JSON images
    GET  /v1/sample.png?n=&seed=[&class_id=]
    GET  /v1/interpolate.png?seed_a=&seed_b=&steps=[&class_id=]
    GET  /v1/info, /v1/stats, /manifest.json, /files/<exported file>
    GET  /  (the page in web/), /web/<file>, /ort/<onnxruntime-web file>

Concurrent requests for one model are coalesced into one onnxruntime call
(those that queued while the previous call ran, up to `--max-batch` examples;
`--batch-window-ms` waits for more);
a model with `--max-queue` requests waiting answers 503 with Retry-After; a
request above `--max-examples` examples or `--max-body-bytes` bytes answers
413. SIGTERM stops accepting connections, finishes the requests in flight,
then exits with status 0. `--workers N` runs N such servers (processes) on
one port, so that the Python work of reading and answering requests spreads
over N cores.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import gc
import json
import logging
import math
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402


def _missing(message: str):
    """Run as a script: one line and exit status 2; imported: an ImportError."""
    if __name__ == "__main__":
        print(f"serve.py: error: {message}", file=sys.stderr)
        sys.exit(2)
    raise ImportError(message)


try:
    from . import edge_io  # imported as part of the installed package
except ImportError:
    try:
        import edge_io  # run as a script: the helper sits beside this file
    except ImportError:
        _missing("edge_io.py must sit beside serve.py; copy both.")

try:
    import orjson  # optional: 10-20x faster float formatting than json
except ImportError:
    orjson = None

try:
    import onnxruntime as ort
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route
except ImportError as e:  # depends on the machine
    _missing(f"{e.name} is not installed; the server needs numpy, onnxruntime, starlette "
             "and uvicorn (pip install 'keras-vae[serve]').")

log = logging.getLogger("keras_vae.serve")

GRAPHS = ("decoder", "encoder", "scorer")
MODEL_VERSION = "1"
HERE = Path(__file__).resolve().parent

MAX_WORKERS = 64  # --workers

# Datatype names of the protocol <-> numpy dtypes of the manifest.
DATATYPES = {"float32": "FP32", "float16": "FP16", "float64": "FP64", "int32": "INT32",
             "int64": "INT64", "uint8": "UINT8", "bool": "BOOL"}
NUMPY_OF = {v: np.dtype(k) for k, v in DATATYPES.items()}


@dataclasses.dataclass
class Limits:
    """The service's settings (each one a command-line flag).

    Attributes:
        max_batch: Most examples one onnxruntime call runs; 1 turns coalescing
            off (every request is its own call).
        batch_window_ms: How long the first waiting request may wait for
            others to join its call. 0 (the default) adds no latency: the
            requests that queued while the previous call ran join it.
        max_queue: Requests per model admitted and not yet answered; the next
            one is refused with 503 and `Retry-After`.
        max_examples: Most examples (images, codes) in one request (413 above).
        max_body_bytes: Largest request body, after decompression (413 above).
        body_timeout_s: Time a client has to send its whole body (408 after).
        threads: onnxruntime intra-op threads per session (0: its default). Two
            spread a coalesced call over two cores (1.4-1.6x the decodes per
            second of one thread at 16 clients on 2 cores); a lone batch-1
            call gains nothing from them.
        parallel_runs: onnxruntime calls per model that may run at once.
    """

    max_batch: int = 64
    batch_window_ms: float = 0.0
    max_queue: int = 256
    max_examples: int = 256
    max_body_bytes: int = 8 << 20
    body_timeout_s: float = 10.0
    threads: int = 2
    parallel_runs: int = 1

    def check(self) -> None:
        """Raises edge_io.EdgeError for settings that make no sense."""
        for name in ("max_batch", "max_queue", "max_examples", "max_body_bytes",
                     "parallel_runs"):
            if getattr(self, name) < 1:
                raise edge_io.EdgeError(f"--{name.replace('_', '-')} must be >= 1, "
                                        f"got {getattr(self, name)}")
        if self.batch_window_ms < 0 or not math.isfinite(self.batch_window_ms):
            raise edge_io.EdgeError(f"--batch-window-ms must be >= 0, got {self.batch_window_ms}")
        if self.body_timeout_s <= 0:
            raise edge_io.EdgeError(f"--body-timeout-s must be > 0, got {self.body_timeout_s}")
        if self.threads < 0:
            raise edge_io.EdgeError(f"--threads must be >= 0, got {self.threads}")


class ServeError(Exception):
    """A request the service refuses: an HTTP status and a one-line reason.

    Args:
        status: HTTP status code (4xx for the client's mistakes, 503 when busy).
        message: What is wrong, naming the offending field or limit.
        headers: Extra response headers (`Retry-After`, `Connection`).
    """

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


# ------------------------------------------------------------------ PNG


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_COLOURS = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale + alpha", 6: "RGBA"}


def encode_png(pixels: np.ndarray) -> bytes:
    """A PNG file of `(h, w)` grey or `(h, w, 3)` RGB uint8 pixels (no filtering)."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    height, width = pixels.shape[:2]
    colour = 0 if pixels.ndim == 2 else 2
    rows = pixels.reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter byte 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return (PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + chunk(b"IEND", b""))


def decode_png(data: bytes, image_shape) -> np.ndarray:
    """Decodes a PNG into `image_shape` float32 pixels in [0, 1], or says why not.

    Greyscale (bit depth 1 to 16) for single-channel models, 8- or 16-bit RGB
    for three-channel ones; values are scaled by `2**depth - 1` (8-bit / 255,
    16-bit / 65535). The PNG's size must equal the model's image size.

    Raises:
        ServeError: 400 for a file that is not a PNG, corrupt, interlaced, of
            the wrong size, or with alpha, a palette or colour the model lacks.
    """
    height, width, channels = (tuple(image_shape) + (1,))[:3]
    if not data.startswith(PNG_SIGNATURE):
        raise ServeError(400, "the upload is not a PNG file (no PNG signature)")
    chunks, pos, header, idat = [], len(PNG_SIGNATURE), None, []
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4:
            raise ServeError(400, "the PNG file is truncated")
        if struct.unpack(">I", crc)[0] != zlib.crc32(kind + body) & 0xFFFFFFFF:
            raise ServeError(400, f"the PNG file is corrupt (bad CRC in its {kind!r} chunk)")
        chunks.append(kind)
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"tRNS":
            raise ServeError(400, "the PNG has transparency (tRNS); save it without alpha")
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat or chunks[-1] != b"IEND":
        raise ServeError(400, "the PNG file is truncated or has no image data")
    png_w, png_h, depth, colour, _, _, interlace = header
    kind = _PNG_COLOURS.get(colour, f"colour type {colour}")
    if colour in (4, 6):
        raise ServeError(400, f"the PNG is {kind}: alpha channels are not accepted; save it "
                              f"as {'8-bit greyscale' if channels == 1 else 'RGB'}")
    wanted = {1: 0, 3: 2}.get(channels)
    if colour != wanted:
        need = {0: "greyscale", 2: "RGB"}.get(wanted, f"{channels}-channel")
        raise ServeError(400, f"the PNG is {kind} but the model takes {need} images "
                              f"{list(image_shape)}; convert it to {need}")
    if (png_h, png_w) != (height, width):
        raise ServeError(400, f"the PNG is {png_w}x{png_h} pixels but the model takes "
                              f"{width}x{height} ({list(image_shape)}); resize it first")
    if interlace:
        raise ServeError(400, "interlaced (Adam7) PNGs are not supported; save it without "
                              "interlacing")
    samples = channels * width
    row_bytes = (samples * depth + 7) // 8
    expected = height * (1 + row_bytes)
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(b"".join(idat), expected + 1)
    except zlib.error as e:
        raise ServeError(400, f"the PNG's image data is corrupt ({e})") from None
    if len(raw) != expected:
        raise ServeError(400, f"the PNG's image data has {len(raw)} bytes where "
                              f"{expected} were expected")
    rows = _unfilter(np.frombuffer(raw, np.uint8).reshape(height, 1 + row_bytes),
                     max(1, channels * depth // 8))
    if depth == 16:
        values = rows.view(">u2").astype(np.float32)
    elif depth == 8:
        values = rows.astype(np.float32)
    else:  # 1, 2 or 4 bits per sample, packed big-end first
        bits = np.unpackbits(rows, axis=1)[:, :samples * depth].reshape(height, samples, depth)
        values = (bits @ (1 << np.arange(depth - 1, -1, -1))).astype(np.float32)
    return (values / float(2**depth - 1)).reshape(height, width, channels)


def _unfilter(filtered: np.ndarray, bpp: int) -> np.ndarray:
    """Reverses PNG's per-row filters; `filtered` is `(h, 1 + row_bytes)` uint8."""
    height, width = filtered.shape[0], filtered.shape[1] - 1
    out = np.zeros((height, width), np.uint8)
    prev = np.zeros(width, np.int64)
    for r in range(height):
        kind, row = int(filtered[r, 0]), filtered[r, 1:].astype(np.int64)
        if kind == 0:  # None
            cur = row
        elif kind == 1:  # Sub: running sum over bytes bpp apart
            cur = np.cumsum(np.pad(row, (0, -width % bpp)).reshape(-1, bpp), axis=0)
            cur = cur.reshape(-1)[:width] & 0xFF
        elif kind == 2:  # Up
            cur = (row + prev) & 0xFF
        elif kind in (3, 4):  # Average, Paeth: each byte depends on the one before
            a_row, up, vals = [0] * bpp, prev.tolist(), row.tolist()
            for i, v in enumerate(vals):
                a, b = a_row[i], up[i]
                if kind == 3:
                    vals[i] = (v + ((a + b) >> 1)) & 0xFF
                else:
                    c = up[i - bpp] if i >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                    vals[i] = (v + pred) & 0xFF
                a_row.append(vals[i])
            cur = np.asarray(vals, np.int64)
        else:
            raise ServeError(400, f"the PNG is corrupt (unknown row filter {kind})")
        out[r] = cur
        prev = cur
    return out


# --------------------------------------------------------------- tensors


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One input or output of a served model, as the manifest describes it."""

    name: str
    datatype: str  # protocol name: FP32, INT32, ...
    shape: tuple  # -1 for the batch dimension

    @classmethod
    def from_manifest(cls, spec: dict) -> TensorSpec:
        dtype = spec["dtype"]
        if dtype not in DATATYPES:
            raise edge_io.EdgeError(f"tensor {spec['name']!r} has dtype {dtype}, which the "
                                    f"server does not map ({sorted(DATATYPES)})")
        return cls(spec["name"], DATATYPES[dtype],
                   tuple(-1 if d is None else int(d) for d in spec["shape"]))

    @property
    def dtype(self) -> np.dtype:
        return NUMPY_OF[self.datatype]

    def metadata(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Model:
    """One exported graph in an onnxruntime session, with its protocol metadata.

    Args:
        name: The graph's name (`decoder`, `encoder`, `scorer`).
        path: The ONNX file (for messages; the bytes loaded are `content`).
        entry: The file's manifest entry (input/output names, dtypes, shapes).
        threads: onnxruntime intra-op threads (0: onnxruntime's default).
        content: The file's bytes as `edge_io.read_verified` checked them: the
            session runs exactly what was checked.
    """

    def __init__(self, name: str, path: Path, entry: dict, content: bytes, threads: int = 1):
        self.name = name
        self.path = path
        self.inputs = [TensorSpec.from_manifest(s) for s in entry["inputs"]]
        self.outputs = [TensorSpec.from_manifest(s) for s in entry["outputs"]]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        if threads != 1:  # idle pool threads must not spin on the cores the event loop needs
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if edge_io.onnx_uses_external_data(content):
            raise edge_io.EdgeError(f"{entry['path']} keeps tensors in external data files, "
                                    "which the manifest's checksum does not cover; refused.")
        try:
            self.session = ort.InferenceSession(content, options,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise edge_io.EdgeError(f"onnxruntime cannot load {path}: {first}") from None
        have = {i.name for i in self.session.get_inputs()}
        missing = [s.name for s in self.inputs if s.name not in have]
        if missing:
            raise edge_io.EdgeError(f"{path} lacks the inputs {missing} that the manifest lists")
        self.output_names = [s.name for s in self.outputs]

    def run(self, feeds: dict) -> list:
        """One onnxruntime call; returns the outputs in manifest order."""
        return self.session.run(self.output_names, feeds)

    def warm_up(self) -> None:
        """Runs one example of zeros, so the first request is not the slow one."""
        self.run({s.name: np.zeros((1, *s.shape[1:]), s.dtype) for s in self.inputs})

    def metadata(self) -> dict:
        """The model metadata response of the protocol."""
        return {"name": self.name, "versions": [MODEL_VERSION], "platform": "onnxruntime_onnx",
                "inputs": [s.metadata() for s in self.inputs],
                "outputs": [s.metadata() for s in self.outputs]}


# ------------------------------------------------------------- batching


@dataclasses.dataclass
class _Pending:
    feeds: dict
    size: int
    future: asyncio.Future


class Batcher:
    """Coalesces concurrent requests for one model into single onnxruntime calls.

    One worker per model takes the oldest waiting request, waits for a free
    run slot (requests keep arriving meanwhile), lets others join for up to
    `window_s` (those already queued join at once) until the call holds
    `max_batch` examples, starts the call in a thread (onnxruntime releases
    the GIL, so the event loop keeps reading and answering requests), and
    hands each request its rows. A request larger than `max_batch` runs alone.

    Args:
        model: The `Model` to run.
        max_batch: Most examples per call (1: no coalescing).
        window_s: Longest wait for more requests after the first.
        max_queue: Requests admitted and not yet answered; more get 503.
        parallel: Calls of this model that may run at once, each on its own
            thread (onnxruntime sessions take concurrent calls).
    """

    def __init__(self, model: Model, max_batch: int, window_s: float, max_queue: int,
                 parallel: int = 1):
        self.model = model
        self.max_batch = max_batch
        self.window_s = window_s
        self.max_queue = max_queue
        self.parallel = parallel
        self._waiting: collections.deque[_Pending] = collections.deque()
        self._wakeup: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._task: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=parallel, thread_name_prefix=f"ort-{model.name}")
        self.admitted = 0  # requests admitted and not yet answered
        self.stats = {"requests": 0, "examples": 0, "runs": 0, "largest_run_requests": 0,
                      "largest_run_examples": 0, "refused_busy": 0}

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(self.parallel)
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Stops taking requests; calls already started finish first."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def run(self, feeds: dict) -> list:
        """Runs `feeds` (arrays sharing their first dimension) in the next call.

        Returns:
            The model's outputs for these rows, in manifest order.

        Raises:
            ServeError: 503 with `Retry-After` when `max_queue` requests wait.
        """
        if self.admitted >= self.max_queue:
            self.stats["refused_busy"] += 1
            raise ServeError(503, f"model {self.model.name!r} has {self.admitted} requests "
                                  f"queued (--max-queue {self.max_queue}); retry shortly",
                             {"Retry-After": "1"})
        size = len(next(iter(feeds.values())))
        future = asyncio.get_running_loop().create_future()
        self.admitted += 1
        try:
            self._waiting.append(_Pending(feeds, size, future))
            self._wakeup.set()
            return await future
        finally:
            self.admitted -= 1

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._wakeup.clear()
                await self._wakeup.wait()
            await self._slots.acquire()
            deadline = loop.time() + self.window_s
            while self._queued_examples() < self.max_batch:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
            batch = [self._waiting.popleft()]
            total = batch[0].size
            while self._waiting and total + self._waiting[0].size <= self.max_batch:
                total += self._waiting[0].size
                batch.append(self._waiting.popleft())
            batch = [p for p in batch if not p.future.done()]  # handler cancelled meanwhile
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._run(loop, batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._slots.release()

    def _queued_examples(self) -> int:
        return sum(p.size for p in self._waiting)

    async def _run(self, loop, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            feeds = batch[0].feeds
        else:
            feeds = {name: np.concatenate([p.feeds[name] for p in batch])
                     for name in batch[0].feeds}
        try:
            outputs = await loop.run_in_executor(self._executor, self.model.run, feeds)
        except Exception as e:  # onnxruntime's own types; reported to every waiting request
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(ServeError(
                        500, f"onnxruntime failed on model {self.model.name!r}: {e}"))
            return
        sizes = [p.size for p in batch]
        stats = self.stats
        stats["requests"] += len(batch)
        stats["examples"] += sum(sizes)
        stats["runs"] += 1
        stats["largest_run_requests"] = max(stats["largest_run_requests"], len(batch))
        stats["largest_run_examples"] = max(stats["largest_run_examples"], sum(sizes))
        offsets = np.cumsum(sizes)[:-1]
        parts = [np.split(out, offsets) for out in outputs]
        for i, p in enumerate(batch):
            if not p.future.done():
                p.future.set_result([part[i] for part in parts])


# --------------------------------------------------------------- service


class Service:
    """The export directory behind the routes: models, batchers, limits, anomaly threshold.

    Args:
        export_dir: A keras-vae export directory with fp32 ONNX files.
        limits: The `Limits` (defaults if None).
        web_dir: The page's folder (default: `web/` beside this file).

    Raises:
        edge_io.EdgeError: no manifest, a file whose size or SHA-256 differs
            from the manifest, no ONNX graph to serve, a file onnxruntime
            cannot open.
    """

    def __init__(self, export_dir, limits: Limits | None = None, web_dir=None):
        self.export_dir = Path(export_dir)
        self.limits = limits or Limits()
        self.limits.check()
        self.web_dir = Path(web_dir) if web_dir else HERE / "web"
        self.manifest = edge_io.read_manifest(self.export_dir)
        if edge_io.is_code_model(self.manifest):
            raise edge_io.EdgeError(
                f"{self.export_dir} is a VQ-VAE export (discrete code grids, no z); this "
                "service serves exports with continuous latents. Sample it with "
                "sample_onnx.py.")
        self.prior = self.manifest.get("prior")  # what /v1/sample.png draws z from
        self.image_shape = tuple(int(d) for d in self.manifest["image"]["shape"])
        self.latent_dim = int(self.manifest["latent_dim"])
        self.num_classes = int(self.manifest.get("num_classes") or 0)
        value_range = self.manifest["image"].get("value_range")
        self.value_range = None if value_range is None else tuple(map(float, value_range))
        self.anomaly = self.manifest.get("anomaly")
        self.files = self._verify_files()
        self.models = {}
        for graph in GRAPHS:
            try:
                entry = edge_io.find_file(self.manifest, graph, "onnx", "fp32")
            except edge_io.EdgeError:
                continue
            model = Model(graph, self.export_dir / entry["path"], entry,
                          edge_io.read_verified(self.export_dir, entry), self.limits.threads)
            model.warm_up()
            self.models[graph] = model
        if not self.models:
            raise edge_io.EdgeError(
                f"{self.export_dir} has no fp32 ONNX decoder, encoder or scorer to serve; "
                "export with formats including 'onnx'.")
        window = self.limits.batch_window_ms / 1e3
        self.batchers = {name: Batcher(m, self.limits.max_batch, window, self.limits.max_queue,
                                       self.limits.parallel_runs)
                         for name, m in self.models.items()}
        self.errors = collections.Counter()  # HTTP status -> count of refused requests
        self.worker = {"index": 0, "workers": 1, "pid": os.getpid()}  # see `Workers`

    def _verify_files(self) -> dict:
        """Checks size and SHA-256 of every file of the manifest; returns the servable ones.

        A changed file stops the start; a listed file that is absent (an
        export copied in part) is only skipped, unless it is an fp32 ONNX
        graph this server would run.
        """
        files = {}
        for entry in self.manifest["files"]:
            path = self.export_dir / entry["path"]
            served = entry.get("format") == "onnx" and entry.get("precision") == "fp32"
            if not path.exists() and not served:
                log.warning("%s is listed in the manifest but absent; not served", path)
                continue
            if not (served and entry.get("graph") in GRAPHS):  # those: when read to load
                edge_io.verify_file(self.export_dir, entry)
            if path.is_file():
                files[entry["path"]] = path
        return files

    # ------------------------------------------------------------ inputs

    def model(self, name: str, version: str | None = None) -> Model:
        if name not in self.models:
            raise ServeError(404, f"unknown model {name!r}; this server has "
                                  f"{', '.join(self.models)}")
        if version not in (None, "", MODEL_VERSION):
            raise ServeError(404, f"model {name!r} has no version {version!r} "
                                  f"(it has {MODEL_VERSION})")
        return self.models[name]

    def check_examples(self, n: int, what: str = "examples") -> None:
        if n > self.limits.max_examples:
            raise ServeError(413, f"{n} {what} in one request is above the limit of "
                                  f"{self.limits.max_examples} (--max-examples)")

    def check_values(self, x: np.ndarray, where: str, pixels: bool = True) -> None:
        """Refuses NaN/Inf, and for `pixels` values outside the manifest's range (400)."""
        bad = ~np.isfinite(x)
        if bad.any():
            raise ServeError(400, f"{where} contains {int(bad.sum())} NaN/Inf values (first at "
                                  f"index {tuple(int(i) for i in np.argwhere(bad)[0])})")
        if pixels and self.value_range is not None and x.size:
            lo, hi = float(x.min()), float(x.max())
            if lo < self.value_range[0] or hi > self.value_range[1]:
                hint = " (looks like 0..255 pixels: divide by 255)" if 1 < hi <= 255 else ""
                raise ServeError(400, f"{where} has values in [{lo:g}, {hi:g}] outside the "
                                      f"model's range {list(self.value_range)}{hint}")

    def check_labels(self, labels, n: int, where: str) -> np.ndarray | None:
        """int32 labels `(n,)` for a conditional model (None otherwise), range-checked."""
        if not self.num_classes:
            if labels is not None:
                raise ServeError(400, f"{where}: this model is unconditional; drop the labels")
            return None
        if labels is None:
            names = self.manifest.get("class_names")
            hint = f" ({', '.join(map(str, names))})" if names else ""
            raise ServeError(400, f"{where}: this conditional model needs class labels in "
                                  f"[0, {self.num_classes}){hint}")
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu" or labels.ndim > 1:
            raise ServeError(400, f"{where}: labels must be integers, got {labels.dtype} "
                                  f"of shape {list(labels.shape)}")
        labels = labels.reshape(-1)
        bad = labels[(labels < 0) | (labels >= self.num_classes)]
        if bad.size:
            raise ServeError(400, f"{where}: labels must lie in [0, {self.num_classes}); "
                                  f"got {sorted(set(bad.tolist()))[:5]}")
        if labels.size == 1 and n > 1:
            labels = np.repeat(labels, n)
        if labels.size != n:
            raise ServeError(400, f"{where}: {labels.size} labels for {n} examples")
        return labels.astype(np.int32)

    # ---------------------------------------------------- the protocol

    def parse_infer(self, model: Model, body: bytes, header_length: str | None):
        """Reads an inference request: `(feeds, requested outputs, binary outputs, id)`.

        Raises:
            ServeError: 400 naming what is malformed, 413 for too many examples.
        """
        if header_length is not None:
            try:
                json_size = int(header_length)
            except ValueError:
                raise ServeError(400, "Inference-Header-Content-Length is not an integer") \
                    from None
            if not 0 < json_size <= len(body):
                raise ServeError(400, f"Inference-Header-Content-Length {json_size} does not "
                                      f"fit a body of {len(body)} bytes")
            head, binary = body[:json_size], memoryview(body)[json_size:]
        else:
            head, binary = body, memoryview(b"")
        request = _json(head)
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
            raise ServeError(400, "the request must be a JSON object with a list 'inputs'")
        params = request.get("parameters") or {}
        if not isinstance(params, dict):
            raise ServeError(400, "'parameters' must be a JSON object")
        specs = {s.name: s for s in model.inputs}
        feeds, offset = {}, 0
        for tensor in request["inputs"]:
            if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
                raise ServeError(400, "every entry of 'inputs' needs a 'name'")
            name = tensor["name"]
            if name not in specs:
                raise ServeError(400, f"model {model.name!r} has no input {name!r}; its inputs "
                                      f"are {', '.join(specs)}")
            if name in feeds:
                raise ServeError(400, f"input {name!r} is given twice")
            array, offset = self._tensor(tensor, specs[name], binary, offset)
            feeds[name] = array
        if offset != len(binary):
            raise ServeError(400, f"the body has {len(binary) - offset} bytes of binary data "
                                  "that no input claims (binary_data_size)")
        missing = [s for s in specs if s not in feeds]
        if missing:
            raise ServeError(400, f"model {model.name!r} needs the inputs {missing}")
        sizes = {a.shape[0] for a in feeds.values()}
        if len(sizes) != 1:
            raise ServeError(400, "all inputs must have the same batch size, got "
                                  + ", ".join(f"{k}: {v.shape[0]}" for k, v in feeds.items()))
        n = sizes.pop()
        if n < 1:
            raise ServeError(400, "the batch is empty (first dimension 0)")
        self.check_examples(n)
        for name, array in feeds.items():
            if array.dtype.kind == "f":
                self.check_values(array, f"input {name!r}", pixels=name == "image")
            elif name == "label":
                self.check_labels(array, n, f"input {name!r}")
        all_binary = bool(params.get("binary_data_output", False))
        wanted, binary_out = self._requested_outputs(model, request.get("outputs"), all_binary)
        return feeds, wanted, binary_out, request.get("id")

    def _tensor(self, tensor: dict, spec: TensorSpec, binary: memoryview, offset: int):
        """One input tensor of the request as a numpy array, checked against `spec`."""
        name = spec.name
        datatype = tensor.get("datatype")
        if datatype != spec.datatype:
            raise ServeError(400, f"input {name!r} has datatype {datatype!r}; model expects "
                                  f"{spec.datatype}")
        shape = tensor.get("shape")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                   and d >= 0 for d in shape)):
            raise ServeError(400, f"input {name!r} needs a 'shape' list of non-negative ints")
        if len(shape) != len(spec.shape) or any(
                want != -1 and got != want for got, want in zip(shape, spec.shape)):
            raise ServeError(400, f"input {name!r} has shape {shape}; model expects "
                                  f"{list(spec.shape)} (-1: any batch size)")
        if shape and shape[0] > self.limits.max_examples:
            self.check_examples(shape[0])
        count = math.prod(shape)
        params = tensor.get("parameters") or {}
        if not isinstance(params, dict):
            raise ServeError(400, f"input {name!r}: 'parameters' must be a JSON object")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            want = count * spec.dtype.itemsize
            if not isinstance(size, int) or size != want:
                raise ServeError(400, f"input {name!r}: binary_data_size {size!r} does not "
                                      f"match shape {shape} of {datatype} ({want} bytes)")
            if offset + size > len(binary):
                raise ServeError(400, f"input {name!r}: the body ends before its "
                                      f"{size} bytes of binary data")
            array = np.frombuffer(binary[offset:offset + size],
                                  spec.dtype.newbyteorder("<")).astype(spec.dtype)
            return array.reshape(shape), offset + size
        if "data" not in tensor:
            raise ServeError(400, f"input {name!r} has neither 'data' nor "
                                  "parameters.binary_data_size")
        try:
            array = np.asarray(tensor["data"])
        except (ValueError, TypeError):
            raise ServeError(400, f"input {name!r}: 'data' is ragged (rows of different "
                                  "lengths)") from None
        if array.size and array.dtype.kind not in ("iuf" if spec.dtype.kind == "f" else "iu"):
            kind = "numbers" if spec.dtype.kind == "f" else "integers"
            got = "ragged or mixed values" if array.dtype == object else array.dtype
            raise ServeError(400, f"input {name!r}: {datatype} data must be {kind}, got {got}")
        if array.size != count:
            raise ServeError(400, f"input {name!r} has {array.size} values but shape {shape} "
                                  f"needs {count}")
        if spec.dtype.kind in "iu" and array.size:
            info = np.iinfo(spec.dtype)
            if array.min() < info.min or array.max() > info.max:
                raise ServeError(400, f"input {name!r} has values outside {datatype}")
        return array.astype(spec.dtype).reshape(shape), offset

    @staticmethod
    def _requested_outputs(model: Model, outputs, all_binary: bool):
        names = [s.name for s in model.outputs]
        if outputs is None:
            return names, dict.fromkeys(names, all_binary)
        if not isinstance(outputs, list) or not all(
                isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
            raise ServeError(400, "'outputs' must be a list of objects with a 'name'")
        wanted, binary = [], {}
        for o in outputs:
            if o["name"] not in names:
                raise ServeError(400, f"model {model.name!r} has no output {o['name']!r}; its "
                                      f"outputs are {', '.join(names)}")
            params = o.get("parameters") or {}
            if not isinstance(params, dict):
                raise ServeError(400, f"output {o['name']!r}: 'parameters' must be an object")
            if "classification" in params:
                raise ServeError(400, "the classification extension is not supported")
            wanted.append(o["name"])
            binary[o["name"]] = bool(params.get("binary_data", all_binary))
        return wanted, binary

    def infer_response(self, model: Model, outputs: list, wanted: list, binary: dict,
                       request_id) -> Response:
        """The inference response: JSON, or JSON header plus binary tensors."""
        by_name = dict(zip(model.output_names, outputs))
        specs = {s.name: s for s in model.outputs}
        tensors, blobs = [], []
        for name in wanted:
            array = np.ascontiguousarray(by_name[name], specs[name].dtype)
            tensor = {"name": name, "datatype": specs[name].datatype, "shape": list(array.shape)}
            if binary[name]:
                blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
                tensor["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                tensor["data"] = array.reshape(-1)
            tensors.append(tensor)
        body = {"model_name": model.name, "model_version": MODEL_VERSION, "outputs": tensors}
        if request_id is not None:
            body["id"] = request_id
        head = dumps(body)
        if not blobs:
            return Response(head, media_type="application/json")
        return Response(head + b"".join(blobs), media_type="application/octet-stream",
                        headers={"Inference-Header-Content-Length": str(len(head))})

    # ------------------------------------------------------- keras-vae

    def score_inputs(self, images: np.ndarray, labels) -> dict:
        """Scorer feeds for checked images: eps = 0 (the posterior mean)."""
        n = len(images)
        feeds = {"image": images, "eps": np.zeros((n, self.latent_dim), np.float32)}
        labels = self.check_labels(labels, n, "labels")
        if labels is not None:
            feeds["label"] = labels
        return feeds

    def images_from_json(self, value, where: str = "images") -> np.ndarray:
        """`(n, *image_shape)` float32 from a nested list (one image or a batch)."""
        try:
            x = np.asarray(value)
        except (ValueError, TypeError):
            raise ServeError(400, f"'{where}' is ragged (rows of different lengths)") from None
        if x.dtype.kind not in "iuf":
            raise ServeError(400, f"'{where}' must hold numbers, got "
                                  f"{'ragged or mixed values' if x.dtype == object else x.dtype}")
        x = x.astype(np.float32)
        shape = self.image_shape
        squeezed = shape[:-1] if shape[-1] == 1 else None
        if x.shape == shape or (squeezed and x.shape == squeezed):
            x = x[None]
        if squeezed and x.shape[1:] == squeezed:
            x = x[..., None]
        if x.shape[1:] != shape:
            raise ServeError(400, f"'{where}' has shape {list(x.shape)}; the model takes images "
                                  f"of shape {list(shape)} (or a batch of them)")
        if len(x) < 1:
            raise ServeError(400, f"'{where}' is empty")
        self.check_examples(len(x), "images")
        self.check_values(x, f"'{where}'")
        return x


def dumps(obj) -> bytes:
    """Compact JSON bytes; numpy arrays become flat-or-nested lists (orjson when present)."""
    if orjson is not None:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(obj, separators=(",", ":"), default=_tolist).encode()


def _tolist(value):
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_response(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(obj), status_code=status, headers=headers,
                    media_type="application/json")


def _json(raw: bytes):
    """Parses a JSON body (orjson when present; the standard library for NaN tokens, errors)."""
    if orjson is not None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # NaN/Infinity tokens, huge ints, or an error: json says which
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ServeError(400, "the JSON body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise ServeError(400, f"malformed JSON: {e}") from None
    except RecursionError:
        raise ServeError(400, "malformed JSON: nested too deeply") from None


# ---------------------------------------------------------------- routes


_MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript",
                ".mjs": "text/javascript", ".css": "text/css", ".json": "application/json",
                ".wasm": "application/wasm", ".png": "image/png", ".svg": "image/svg+xml",
                ".onnx": "application/octet-stream", ".tflite": "application/octet-stream",
                ".map": "application/json", ".txt": "text/plain; charset=utf-8"}


def _error(status: int, message: str, headers: dict | None = None) -> Response:
    return _json_response({"error": message}, status, headers)


def _route(handler):
    """Wraps a handler `(request, service) -> Response` so refusals become `{"error": ...}`."""

    async def endpoint(request: Request) -> Response:
        service = request.app.state.service
        try:
            return await handler(request, service)
        except ServeError as e:
            service.errors[e.status] += 1
            return _error(e.status, e.message, e.headers)

    endpoint.__name__ = handler.__name__
    return endpoint


async def read_body(request: Request, limits: Limits) -> bytes:
    """The request body, bounded in size and time, decompressed if gzip/deflate.

    Raises:
        ServeError: 413 above `max_body_bytes` (declared or streamed), 408 when
            the body does not arrive within `body_timeout_s`, 400 when the
            client goes away or the compressed body is corrupt, 415 for an
            unknown Content-Encoding.
    """
    limit, close = limits.max_body_bytes, {"Connection": "close"}
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ServeError(400, f"Content-Length {declared!r} is not a number", close)
        if int(declared) > limit:
            raise ServeError(413, f"the body has {int(declared)} bytes, above the limit of "
                                  f"{limit} bytes (--max-body-bytes)", close)

    async def collect() -> bytes:
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ServeError(413, f"the body is larger than the limit of {limit} bytes "
                                      "(--max-body-bytes)", close)
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        if hasattr(asyncio, "timeout"):  # Python 3.11+: no extra task per request
            async with asyncio.timeout(limits.body_timeout_s):
                body = await collect()
        else:
            body = await asyncio.wait_for(collect(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise ServeError(408, f"the body did not arrive within {limits.body_timeout_s:g} s",
                         close) from None
    except ClientDisconnect:
        raise ServeError(400, "the client went away before sending its whole body",
                         close) from None
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise ServeError(415, f"Content-Encoding {encoding!r} is not supported (gzip, "
                              "deflate or identity)")
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise ServeError(400, f"the {encoding} body is corrupt ({e})") from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise ServeError(413, f"the decompressed body is larger than the limit of {limit} "
                              "bytes (--max-body-bytes)")
    if not inflater.eof:
        raise ServeError(400, f"the {encoding} body is truncated")
    return plain


def _int_param(request: Request, name: str, default: int | None, low: int,
               high: int | None = None, limit_flag: str | None = None) -> int:
    """An integer query parameter: 400 when malformed or below `low`, 413 above `high`."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ServeError(400, f"query parameter {name!r} is required")
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ServeError(400, f"query parameter {name}={raw!r} is not an integer") from None
    if value < low:
        raise ServeError(400, f"query parameter {name} must be >= {low}, got {value}")
    if high is not None and value > high:
        flag = f" ({limit_flag})" if limit_flag else ""
        raise ServeError(413 if limit_flag else 400,
                         f"query parameter {name}={value} is above the limit of {high}{flag}")
    return value


def _int_list(raw: str | None, name: str) -> list | None:
    if raw is None or raw.strip() == "":
        return None
    try:
        return [int(v) for v in raw.split(",")]
    except ValueError:
        raise ServeError(400, f"{name}={raw!r} must be an integer or a comma-separated "
                              "list of integers") from None


# Protocol: health, metadata, inference.


@_route
async def live(request, service):
    return _json_response({"live": True})


@_route
async def ready(request, service):
    return _json_response({"ready": True})


@_route
async def server_metadata(request, service):
    return _json_response({"name": "keras-vae", "version": service.manifest.get(
        "keras_vae_version", "unknown"), "extensions": ["binary_tensor_data"]})


@_route
async def model_metadata(request, service):
    p = request.path_params
    return _json_response(service.model(p["name"], p.get("version")).metadata())


@_route
async def model_ready(request, service):
    p = request.path_params
    model = service.model(p["name"], p.get("version"))
    return _json_response({"name": model.name, "ready": True})


@_route
async def infer(request, service):
    p = request.path_params
    model = service.model(p["name"], p.get("version"))
    body = await read_body(request, service.limits)
    feeds, wanted, binary, request_id = service.parse_infer(
        model, body, request.headers.get("inference-header-content-length"))
    outputs = await service.batchers[model.name].run(feeds)
    return service.infer_response(model, outputs, wanted, binary, request_id)


# keras-vae: scoring and pictures.


@_route
async def score(request, service):
    if "scorer" not in service.models:
        raise ServeError(404, "this export has no ONNX scorer; export with graphs "
                              "including 'scorer'")
    body = await read_body(request, service.limits)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    labels = _int_list(request.query_params.get("label"), "label")
    if body.startswith(PNG_SIGNATURE):
        images = decode_png(body, service.image_shape)[None]
    elif ctype == "multipart/form-data":
        images, form_labels = await _uploads(request, body, service)
        labels = form_labels if form_labels is not None else labels
    elif ctype in ("", "application/json", "text/json") or body.lstrip()[:1] == b"{":
        request_json = _json(body)
        if not isinstance(request_json, dict) or "images" not in request_json:
            raise ServeError(400, "the JSON body must be an object {\"images\": [...]} "
                                  "(one image or a batch, nested lists)")
        images = service.images_from_json(request_json["images"])
        if request_json.get("labels") is not None:
            labels = request_json["labels"]
    elif ctype.startswith("image/"):
        raise ServeError(415, f"{ctype} uploads are not accepted: send PNG images")
    else:
        raise ServeError(415, f"Content-Type {ctype!r} is not accepted: send a PNG, a "
                              "multipart/form-data upload of PNGs or JSON {\"images\": [...]}")
    feeds = service.score_inputs(images, labels)
    (scores,) = await service.batchers["scorer"].run(feeds)
    scores = [float(s) for s in scores]
    anomaly = service.anomaly or {}
    threshold = anomaly.get("threshold")
    return _json_response({
        "scores": scores,
        "threshold": threshold,
        "is_anomaly": None if threshold is None else [s > threshold for s in scores],
        "score": anomaly.get("score", "negative_elbo"),
        "quantile": anomaly.get("quantile"),
        "meaning": "negative ELBO in nats at the posterior mean (eps = 0); higher is more "
                   "anomalous",
    })


async def _uploads(request: Request, body: bytes, service: Service):
    """PNG files (and an optional `label` field) of a multipart upload."""

    async def replay():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=service.limits.max_examples + 1, max_fields=16,
            max_part_size=service.limits.max_body_bytes)
    except HTTPException as e:
        raise ServeError(400, f"malformed multipart upload: {e.detail}") from None
    except AssertionError as e:  # python-multipart is missing
        raise ServeError(415, f"multipart uploads need python-multipart ({e}); send the PNG "
                              "as the raw body with Content-Type image/png") from None
    try:
        files = [v for _, v in form.multi_items() if not isinstance(v, str)]
        if not files:
            raise ServeError(400, "the multipart upload has no file; attach PNG images")
        service.check_examples(len(files), "images")
        images = []
        for upload in files:
            data = await upload.read()
            try:
                images.append(decode_png(data, service.image_shape))
            except ServeError as e:
                raise ServeError(e.status, f"{upload.filename or 'upload'}: {e.message}") \
                    from None
        raw_labels = form.get("label") or form.get("labels")
        labels = _int_list(raw_labels if isinstance(raw_labels, str) else None, "label")
    finally:
        await form.close()
    return np.stack(images), labels


async def _picture(request, service, z: np.ndarray, ncols: int | None) -> Response:
    """Decodes `z` through the coalescing decoder and answers a PNG grid."""
    if "decoder" not in service.models:
        raise ServeError(404, "this export has no ONNX decoder")
    if service.image_shape[-1] not in (1, 3):
        raise ServeError(400, f"images of shape {list(service.image_shape)} have no PNG form "
                              "(1 or 3 channels)")
    labels = _int_list(request.query_params.get("class_id"), "class_id")
    if labels is not None and len(labels) not in (1, len(z)):
        labels = np.resize(labels, len(z)).tolist()  # cycled over the images
    feeds = {"z": z}
    labels = service.check_labels(labels, len(z), "class_id")
    if labels is not None:
        feeds["label"] = labels
    scale = _int_param(request, "scale", 1, 1, 16)
    (images,) = await service.batchers["decoder"].run(feeds)  # (n, *image_shape)
    picture = edge_io.grid(images, ncols)
    if scale > 1:
        picture = np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)
    return Response(encode_png(picture), media_type="image/png",
                    headers={"Cache-Control": "no-store"})


@_route
async def sample_png(request, service):
    n = _int_param(request, "n", 16, 1, service.limits.max_examples, "--max-examples")
    seed = _int_param(request, "seed", 0, 0, edge_io.MAX_SEED)
    z = edge_io.sample_prior(service.prior, n, service.latent_dim, seed)  # as VAE.sample
    return await _picture(request, service, z, None)


@_route
async def interpolate_png(request, service):
    steps = _int_param(request, "steps", 8, 2, service.limits.max_examples, "--max-examples")
    seed_a = _int_param(request, "seed_a", 0, 0, edge_io.MAX_SEED)
    seed_b = _int_param(request, "seed_b", 1, 0, edge_io.MAX_SEED)
    z = edge_io.interpolate(seed_a, seed_b, steps, service.latent_dim, service.prior)
    return await _picture(request, service, z, steps)


@_route
async def info(request, service):
    m = service.manifest
    return _json_response({
        "latent_dim": service.latent_dim, "image_shape": list(service.image_shape),
        "num_classes": service.num_classes, "class_names": m.get("class_names"),
        "value_range": m["image"].get("value_range"), "prior": m.get("prior"),
        "models": list(service.models), "anomaly": service.anomaly,
        "max_examples": service.limits.max_examples})


@_route
async def stats(request, service):
    return _json_response({
        "models": {name: {**b.stats, "queued": b.admitted} for name, b in service.batchers.items()},
        "refused": {str(k): v for k, v in sorted(service.errors.items())},
        "limits": dataclasses.asdict(service.limits),
        "tensorflow_imported": "tensorflow" in sys.modules,
        "json_library": "orjson" if orjson is not None else "json",
        "worker": service.worker,  # with --workers N: this worker's counters only
        "gc": {"frozen_objects": gc.get_freeze_count(), "thresholds": gc.get_threshold()},
    })


# Static files: the page, onnxruntime-web, the manifest and exported files.


def _file(path: Path | None, what: str) -> Response:
    if path is None:
        raise ServeError(404, f"{what} not found")
    return FileResponse(path, media_type=_MEDIA_TYPES.get(path.suffix.lower()))


def _inside(root: Path, relative: str) -> Path | None:
    """`root/relative` if it is a file inside `root` (no `..` escapes), else None."""
    try:
        root = root.resolve()
        path = (root / relative).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return path if path.is_file() and path.is_relative_to(root) else None


@_route
async def index(request, service):
    page = _inside(service.web_dir, "index.html")
    if page is None:
        raise ServeError(404, f"the page is not installed: no index.html in {service.web_dir}")
    return _file(page, "index.html")


@_route
async def web_file(request, service):
    rel = request.path_params["path"]
    return _file(_inside(service.web_dir, rel), f"/web/{rel}")


@_route
async def ort_file(request, service):
    rel = request.path_params["path"]
    roots = [service.export_dir / "web" / "ort", service.web_dir / "ort",
             service.web_dir / "node_modules" / "onnxruntime-web" / "dist"]
    for root in roots:
        path = _inside(root, rel)
        if path is not None:
            return _file(path, rel)
    raise ServeError(404, f"onnxruntime-web file {rel!r} not found in "
                          f"{', '.join(map(str, roots))}; run `npm ci` in {service.web_dir}")


@_route
async def exported_file(request, service):
    rel = request.path_params["path"]
    if rel not in service.files:
        raise ServeError(404, f"{rel!r} is not a file of this export "
                              f"({', '.join(sorted(service.files))})")
    return _file(service.files[rel], rel)


@_route
async def manifest_json(request, service):
    return _json_response(service.manifest)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    message = {404: f"not found: {request.url.path}",
               405: f"method {request.method} not allowed on {request.url.path}"}
    return _error(exc.status_code, message.get(exc.status_code, str(exc.detail)),
                  getattr(exc, "headers", None))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s", request.url.path)
    return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def settle_heap(gen0_threshold: int = 20_000) -> None:
    """Hides the objects loaded at start from the cyclic garbage collector, and runs it less.

    A JSON image is about 800 small lists (one per pixel of a `(28, 28, 1)`
    image); allocating them set off a collection on every request, and now
    and then a full one that walked every object of numpy, onnxruntime and
    Starlette: at 16 clients that made scoring's p99 22 ms for a 9.6 ms median
    (benchmarks/README.md, section 5). Frozen objects are never scanned;
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
    v = "/v2/models/{name}"
    vv = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route(v, model_metadata), Route(vv, model_metadata),
        Route(f"{v}/ready", model_ready), Route(f"{vv}/ready", model_ready),
        Route(f"{v}/infer", infer, methods=["POST"]),
        Route(f"{vv}/infer", infer, methods=["POST"]),
        Route("/v1/score", score, methods=["POST"]),
        Route("/v1/sample.png", sample_png),
        Route("/v1/interpolate.png", interpolate_png),
        Route("/v1/info", info),
        Route("/v1/stats", stats),
        Route("/manifest.json", manifest_json),
        Route("/files/{path:path}", exported_file),
        Route("/", index),
        Route("/web/{path:path}", web_file),
        Route("/ort/{path:path}", ort_file),
    ]

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

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error, Exception: _internal_error})
    app.state.service = service
    return app


# ------------------------------------------------------------------- CLI


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
                   help="most images or codes in one request (413 above)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help="largest request body (413 above)")
    p.add_argument("--body-timeout-s", type=float, default=d.body_timeout_s,
                   help="time a client has to send its body (408 after)")
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


def main(argv=None, prog: str = "serve.py") -> int:
    """Checks the export, then serves it until SIGINT/SIGTERM.

    Returns:
        0 after a clean shutdown (in-flight requests answered); 2 with a
        one-line message for a bad export or bad flags.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(prog).parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=f"{prog}: %(message)s")
    try:
        import uvicorn
    except ImportError:
        print(f"{prog}: error: uvicorn is not installed (pip install 'keras-vae[serve]')",
              file=sys.stderr)
        return 2
    worker = args.worker_fd is not None
    if args.threads is None:
        args.threads = Limits.threads if args.workers == 1 else 1
    limits = Limits(max_batch=args.max_batch, batch_window_ms=args.batch_window_ms,
                    max_queue=args.max_queue, max_examples=args.max_examples,
                    max_body_bytes=args.max_body_bytes, body_timeout_s=args.body_timeout_s,
                    threads=args.threads, parallel_runs=args.parallel_runs)
    try:
        if not 0 <= args.port <= 65535:
            raise edge_io.EdgeError(f"--port must be in [0, 65535], got {args.port}")
        if not 1 <= args.workers <= MAX_WORKERS:
            raise edge_io.EdgeError(f"--workers must be in [1, {MAX_WORKERS}], got "
                                    f"{args.workers}")
        if args.workers > 1 and not hasattr(socket, "send_fds"):
            raise edge_io.EdgeError("--workers above 1 needs Unix sockets that pass file "
                                    "descriptors (Linux, macOS)")
        # With --workers N this process only checks the export (each worker opens its own).
        service = Service(args.export_dir, limits, web_dir=args.web_dir)
    except (edge_io.EdgeError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    try:
        sock = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=args.worker_fd)
                if worker else listen(args.host, args.port))
    except OSError as e:
        print(f"{prog}: error: cannot listen on {args.host}:{args.port}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    if not worker:
        host, port = sock.getsockname()[:2]
        workers = f", {args.workers} workers" if args.workers > 1 else ""
        print(f"{prog}: serving {', '.join(service.models)} of {args.export_dir} on "
              f"http://{host}:{port} (coalescing up to {limits.max_batch} examples, window "
              f"{limits.batch_window_ms:g} ms{workers})", file=sys.stderr, flush=True)
    if args.workers > 1 and not worker:
        del service
        return Workers(argv, sock, args.workers, prog).run()
    service.worker = {"index": args.worker_index, "workers": args.workers, "pid": os.getpid()}
    config = uvicorn.Config(create_app(service), log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=args.drain_timeout_s,
                            timeout_keep_alive=5, server_header=False)
    server = worker_server(uvicorn, config, sock) if worker else uvicorn.Server(config)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the
    # handler in place before it started: make that one a clean exit.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    started = time.monotonic()
    with contextlib.suppress(SystemExit):  # our exit after the drain
        server.run(sockets=None if worker else [sock])
    log.info("stopped after %.0f s", time.monotonic() - started)
    return 0


class Workers:
    """Runs this script N times, hands them connections in turn, and keeps N running.

    Each worker is `serve.py` again with `--worker-fd`: its own onnxruntime
    sessions, batchers and event loop. Reading, parsing and answering requests
    is Python work under one GIL, so one process uses about one core however
    many onnxruntime threads it has; N workers use N (at 16 clients on 2 cores,
    two workers: 1.8x the decodes and 1.7x the scores per second of one,
    benchmarks/README.md section 5).
    Coalescing and `/v1/stats` are per worker.

    This process accepts the connections and passes each to the next worker
    over a Unix socket (round robin, as Node's cluster module does). Workers
    accepting from one shared socket do not share: uvicorn's listener accepts
    every connection waiting on a wake-up, and 16 clients connecting at once
    all landed on one of two workers in 4 tries of 5 here.

    SIGTERM or SIGINT here closes the port and is passed on to every worker,
    which finishes its requests in flight; `run` returns 0 once all have
    exited. A worker that dies otherwise is started again (at most
    `max_restarts` times a minute); one that refuses to start (status 2, its
    message on stderr) stops them all. A worker whose supervisor is gone
    (killed) drains and stops by itself.
    """

    def __init__(self, argv: list, sock: socket.socket, count: int, prog: str,
                 max_restarts: int = 5):
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
                [sys.executable, str(Path(__file__).resolve()), *self.argv,
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


if __name__ == "__main__":
    sys.exit(main())
