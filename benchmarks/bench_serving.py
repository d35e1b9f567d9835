"""Serving under concurrency: requests/s and p50/p99 latency of batch-1 decoding and scoring.

Four servers (five with `ours-uvicorn-workers`) run side by side on
127.0.0.1, each in its own process(es), and are called five (six) ways:

- `ours`: `export/serve.py` over the ONNX export with `--workers 2` (one
  server process per core, connections handed out in turn), each coalescing
  concurrent requests into one onnxruntime call (`--max-batch 64`, the
  server's default window and threads unless given), called with JSON:
  KServe v2 for decoding, `/v1/score` for scoring;
- `ours-binary`: the same server called with the binary tensor extension (as
  tritonclient does), decoding with `decoder`, scoring with `scorer` at eps = 0;
- `ours-one-worker`: the same server as one process (`--workers 1`, the
  default), called with JSON;
- `ours-no-coalescing`: a server with `--max-batch 1` (one onnxruntime call
  per request) and the same workers as `ours`, called with JSON;
- `flask-predict`: `flask_predict.py`, a Flask app calling Keras
  `model.predict` per request (the plain way, on Flask's threaded server);
- `ours-uvicorn-workers` (only when named in `--systems`): the same app as
  `ours` under uvicorn's own `--workers` (the processes accept from one shared
  socket; `serving_balance.export_app`), called with JSON: the comparison
  behind serve.py's own process model (docs/serving.md, "Workers").

N clients (asyncio, one keep-alive connection each, in this process) send
batch-1 requests back to back for `--seconds`: a decode (one latent ->
one image) and a score (one image -> its negative ELBO). Segments are
interleaved (round by round, every system and task) so that the load of a
shared machine falls on all of them alike. The same request gives the same
numbers from every server (checked before timing).

Usage (from the repository root):

    python benchmarks/bench_serving.py                       # 28x28 conv, 16 clients
    python benchmarks/bench_serving.py --clients 1 4 16 --rounds 5 --seconds 3
    python benchmarks/bench_serving.py --tiny                # seconds: the test's setting

Writes `benchmarks/results/serving.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import machine, serving_balance  # noqa: E402

machine.quiet_tensorflow()

ROOT = machine.ROOT
SERVE = ROOT / "export" / "serve.py"
FLASK = ROOT / "benchmarks" / "flask_predict.py"
BALANCE = ROOT / "benchmarks" / "serving_balance.py"

# The targets at 16 concurrent clients on 2 cores.
TARGET_CLIENTS = 16
TARGET_SPEEDUP = 20.0
TARGET_P99_MS = 10.0


def build_model(args):
    """The served VAE: the default 28x28 conv (latent 16), or a tiny 8x8 one with --tiny."""
    import keras_vae

    if args.tiny:
        return keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp", seed=0,
                             arch_options={"hidden_units": [16]})
    return keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=16, arch="conv", seed=0)


# ------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A server subprocess; its output goes to a log file in `workdir`."""

    def __init__(self, name: str, command: list, workdir: Path, port: int, ready_path: str,
                 env=None, timeout: float = 180):
        self.name, self.port = name, port
        self.log = workdir / f"{name}.log"
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})}, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited {self.proc.returncode}:\n"
                                   f"{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}",
                                            timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{name} not ready after {timeout:.0f} s")
            time.sleep(0.2)

    def cpu_s(self) -> float:
        """User + system CPU seconds so far of the server and its workers (Linux)."""
        pid = self.proc.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            children = []
        total = 0.0
        for p in [pid, *children]:
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                return float("nan")
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def get_json(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


# ----------------------------------------------------------------- requests

# system -> (server process it talks to, request encoding)
SYSTEMS = {
    "ours": ("ours", "json"),
    "ours-binary": ("ours", "binary"),
    "ours-one-worker": ("ours-one-worker", "json"),
    "ours-no-coalescing": ("ours-no-coalescing", "json"),
    "flask-predict": ("flask-predict", "json"),
    "ours-uvicorn-workers": ("ours-uvicorn-workers", "json"),
}
DEFAULT_SYSTEMS = ["ours", "ours-binary", "ours-one-worker", "ours-no-coalescing",
                   "flask-predict"]


def build_requests(system: str, task: str, latents, images) -> list[bytes]:
    """HTTP requests: one batch-1 request per latent or image, in the system's API.

    ours: KServe v2 JSON for decoding, `/v1/score` JSON for scoring; ours-binary:
    KServe v2 with the binary tensor extension (what tritonclient sends), the
    scorer with eps = 0; flask: `{"z": [[...]]}` and `{"images": [...]}`.
    """
    import numpy as np

    server, encoding = SYSTEMS[system]
    requests = []
    for z, x in zip(latents, images):
        headers = {"Content-Type": "application/json"}
        if encoding == "binary":
            if task == "decode":
                path, tensors, output = "/v2/models/decoder/infer", {"z": z[None]}, "x"
            else:
                path, output = "/v2/models/scorer/infer", "negative_elbo"
                tensors = {"image": x[None], "eps": np.zeros((1, len(latents[0])), np.float32)}
            head = json.dumps({
                "inputs": [{"name": name, "shape": list(a.shape), "datatype": "FP32",
                            "parameters": {"binary_data_size": a.nbytes}}
                           for name, a in tensors.items()],
                "outputs": [{"name": output, "parameters": {"binary_data": True}}]}).encode()
            body = head + b"".join(a.astype("<f4").tobytes() for a in tensors.values())
            headers = {"Content-Type": "application/octet-stream",
                       "Inference-Header-Content-Length": str(len(head))}
        elif server.startswith("ours") and task == "decode":
            path = "/v2/models/decoder/infer"
            body = json.dumps({"inputs": [{"name": "z", "shape": [1, len(z)], "datatype": "FP32",
                                           "data": z.tolist()}]}).encode()
        elif server.startswith("ours"):
            path, body = "/v1/score", json.dumps({"images": [x.tolist()]}).encode()
        elif task == "decode":
            path, body = "/decode", json.dumps({"z": [z.tolist()]}).encode()
        else:
            path, body = "/score", json.dumps({"images": [x.tolist()]}).encode()
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        requests.append((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
                         f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    return requests


def answer_numbers(request: bytes, port: int, task: str):
    """Sends one request; returns the numbers of its answer (images or scores), flat."""
    import numpy as np

    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        reader = sock.makefile("rb")
        status = int(reader.readline().split()[1])
        headers = {}
        while (line := reader.readline().strip()):
            key, value = line.decode("latin-1").split(":", 1)
            headers[key.strip().lower()] = value.strip()
        body = reader.read(int(headers["content-length"]))
    if status != 200:
        raise SystemExit(f"{task} request failed with {status}: {body[:300]!r}")
    if "inference-header-content-length" in headers:  # binary tensor extension
        return np.frombuffer(body[int(headers["inference-header-content-length"]):], "<f4")
    answer = json.loads(body)
    if "outputs" in answer:
        return np.asarray(answer["outputs"][0]["data"], np.float32)
    return np.asarray(answer["scores" if task == "score" else "x"], np.float32).reshape(-1)


# ------------------------------------------------------------------- clients


async def _read_response(reader) -> tuple[int, bool]:
    """Reads one HTTP/1.x response; returns (status, server keeps the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ", 2)[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:  # no length: the body runs to the end of the connection
        await reader.read()
        return int(status), False
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    return int(status), keep


async def _client(port: int, requests: list[bytes], offset: int, deadline: float,
                  latencies: list, failures: list, timeout: float) -> None:
    reader = writer = None
    i = offset
    while time.perf_counter() < deadline:
        request = requests[i % len(requests)]
        i += 1
        start = time.perf_counter()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            status, keep = await asyncio.wait_for(_read_response(reader), timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as e:
            failures.append(type(e).__name__)
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        latencies.append(time.perf_counter() - start)
        if status != 200:
            failures.append(str(status))
        if not keep:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def run_segment(port: int, requests: list[bytes], clients: int, seconds: float,
                timeout: float = 30.0) -> dict:
    """`clients` concurrent clients for `seconds`: request count, latencies, failures."""

    async def main():
        latencies, failures = [], []
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()
        await asyncio.gather(*(
            _client(port, requests, k * 7, deadline, latencies, failures, timeout)
            for k in range(clients)))
        return latencies, failures, time.perf_counter() - start

    cpu = time.process_time()
    latencies, failures, wall = _loop_run(main())
    return {"latencies": latencies, "failures": failures, "wall_s": wall,
            "client_cpu_s": time.process_time() - cpu}


def _loop_run(coroutine):
    try:
        import uvloop

        return uvloop.run(coroutine)
    except ImportError:
        return asyncio.run(coroutine)


def percentile_ms(values: list, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values) * 1e3, q)) if values else float("nan")


# ---------------------------------------------------------------------- main


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[TARGET_CLIENTS],
                        help="numbers of concurrent clients to measure")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one segment")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds (every system and task in each)")
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="unrecorded seconds per system and task before the rounds")
    parser.add_argument("--max-batch", type=int, default=64, help="ours: coalescing limit")
    parser.add_argument("--workers", type=int, default=2,
                        help="ours: server processes (ours-one-worker: 1)")
    parser.add_argument("--batch-window-ms", type=float, default=None,
                        help="ours: coalescing window (default: the server's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ours: onnxruntime intra-op threads per model (default: the "
                             "server's)")
    parser.add_argument("--systems", nargs="+", default=DEFAULT_SYSTEMS, choices=list(SYSTEMS))
    parser.add_argument("--tasks", nargs="+", default=["decode", "score"],
                        choices=["decode", "score"])
    parser.add_argument("--tiny", action="store_true", help="seconds-long run (tests)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/serving.json)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.seconds, args.rounds, args.warmup = 0.4, 1, 0.2
        args.clients = [min(c, 4) for c in args.clients]
    run = machine.Run("serving", args)

    import numpy as np

    import keras_vae.export
    from keras_vae import saving

    model = build_model(args)
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((64, model.latent_dim), dtype=np.float32)
    images = rng.random((64, *model.image_shape), dtype=np.float32)
    servers, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_dir = tmp / "export"
        keras_vae.export.export(model, export_dir, formats="onnx", graphs=("decoder", "scorer"))
        model_path = tmp / "model.keras"
        saving.save_model(model, model_path)
        try:
            flags = ["--max-examples", "64", "--max-queue", "4096"]
            if args.threads is not None:
                flags += ["--threads", str(args.threads)]
            window = ([] if args.batch_window_ms is None
                      else ["--batch-window-ms", str(args.batch_window_ms)])
            quiet = {"ORT_DISABLE_TELEMETRY": "1"}
            ours_flags = ["--max-batch", str(args.max_batch), *window, *flags]
            workers = ["--workers", str(args.workers)]
            commands = {
                "ours": [sys.executable, str(SERVE), str(export_dir), *ours_flags, *workers],
                "ours-one-worker": [sys.executable, str(SERVE), str(export_dir), *ours_flags,
                                    "--workers", "1"],
                "ours-no-coalescing": [sys.executable, str(SERVE), str(export_dir),
                                       "--max-batch", "1", *flags, *workers],
                "flask-predict": [sys.executable, str(FLASK), str(model_path)],
                "ours-uvicorn-workers": serving_balance.uvicorn_workers(args.workers),
            }
            envs = {"ours-uvicorn-workers": {serving_balance.SERVE_ARGS: shlex.join(
                [str(export_dir), *ours_flags, *workers])}}
            for server in dict.fromkeys(SYSTEMS[s][0] for s in args.systems):
                port = free_port()
                ready = "/health" if server == "flask-predict" else "/v2/health/ready"
                servers[server] = Process(server, [*commands[server], "--port", str(port)],
                                          tmp, port, ready, env={**quiet, **envs.get(server, {})})
            requests, reference = {}, {}
            for system in args.systems:
                port = servers[SYSTEMS[system][0]].port
                for task in args.tasks:
                    requests[system, task] = build_requests(system, task, latents, images)
                    # The same request gives the same numbers on every server.
                    got = answer_numbers(requests[system, task][0], port, task)
                    want = reference.setdefault(task, got)
                    error = float(np.abs(got - want).max() / max(1.0, np.abs(want).max()))
                    if got.shape != want.shape or error > 1e-4:
                        raise SystemExit(f"{system} {task}: answers differ from "
                                         f"{args.systems[0]}'s by {error:.2e} (relative)")
            for clients in args.clients:
                for system in args.systems:
                    for task in args.tasks:
                        run_segment(servers[SYSTEMS[system][0]].port, requests[system, task],
                                    clients, args.warmup)
                segments = {key: [] for key in requests}
                for _ in range(args.rounds):
                    for task in args.tasks:
                        for system in args.systems:
                            segments[system, task].append(_measure(
                                servers[SYSTEMS[system][0]], system, task,
                                requests[system, task], clients, args.seconds))
                for (system, task), parts in segments.items():
                    rows.append(_row(system, task, clients, parts))
                _add_ratios(rows, clients)
                print(f"{clients} clients:", flush=True)
                for row in rows:
                    if row["clients"] == clients:
                        print(f"  {row['system']:20s} {row['task']:7s} {row['requests_per_s']:9.1f}"
                              f" req/s  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms"
                              f"  failures {row['failures']}"
                              f"{_shares(row)}", flush=True)
        finally:
            for proc in servers.values():
                proc.stop()

    targets = _targets(rows, args)
    columns = ["system", "task", "clients", "requests_per_s", "p50_ms", "p99_ms",
               "speedup_vs_flask", "requests_per_onnx_call", "server_cpu_per_request_ms",
               "client_cpu_share", "failures"]
    print(machine.table(rows, columns, floatfmt="{:.3g}"))
    for key, value in targets.items():
        print(f"  {key}: {value}")
    payload = {
        "model": {"image_shape": list(model.image_shape), "latent_dim": model.latent_dim,
                  "arch": model.arch},
        "setup": {"ours_flags": [*ours_flags, *workers],
                  "requests": "batch 1; ours: KServe v2 JSON (decode), /v1/score JSON (score); "
                              "ours-binary: KServe v2 binary tensors (decoder, scorer with "
                              "eps = 0); flask: {'z': [[...]]} / {'images': [...]}",
                  "clients": "asyncio in the benchmark process, one keep-alive connection "
                             "each, requests back to back"},
        "rows": rows,
        "targets": targets,
    }
    path = run.write(payload, args.out)
    print(f"wrote {path}")
    return payload


def _measure(proc: Process, system: str, task: str, requests: list, clients: int,
             seconds: float) -> dict:
    """One timed segment, with the server's CPU time and (ours) its onnxruntime calls."""
    before_stats = _stats(proc, system, task)
    cpu = proc.cpu_s()
    seg = run_segment(proc.port, requests, clients, seconds)
    seg["server_cpu_s"] = proc.cpu_s() - cpu
    after_stats = _stats(proc, system, task)
    if before_stats and after_stats:
        seg["onnx_calls"] = after_stats["runs"] - before_stats["runs"]
        seg["served_requests"] = after_stats["requests"] - before_stats["requests"]
        seg["worker_requests"] = [n - before_stats["by_worker"].get(pid, 0)
                                  for pid, n in after_stats["by_worker"].items()]
    return seg


def _shares(row: dict) -> str:
    shares = row.get("largest_worker_share_rounds")
    return "" if not shares else f"  busiest worker {' '.join(f'{x:.2f}' for x in shares)}"


def _stats(proc: Process, system: str, task: str) -> dict | None:
    """The model's counters summed over the server's workers (None: not ours)."""
    if not system.startswith("ours"):
        return None
    model = "decoder" if task == "decode" else "scorer"
    first = get_json(proc.port, "/v1/stats")
    count = first["worker"]["workers"]
    seen = {first["worker"]["pid"]: first}
    # Each request a new connection: serve.py's go to the workers in turn, a shared
    # socket's to whichever worker accepts first.
    for _ in range(20 * count):
        if len(seen) == count:
            break
        stats = get_json(proc.port, "/v1/stats")
        seen[stats["worker"]["pid"]] = stats
    if len(seen) != count:
        return None
    totals = {key: sum(s["models"][model][key] for s in seen.values())
              for key in ("runs", "requests")}
    return {**totals, "by_worker": {pid: s["models"][model]["requests"]
                                    for pid, s in seen.items()}}


def _row(system: str, task: str, clients: int, parts: list) -> dict:
    latencies = [v for p in parts for v in p["latencies"]]
    wall = sum(p["wall_s"] for p in parts)
    served = sum(len(p["latencies"]) for p in parts)
    row = {
        "system": system, "task": task, "clients": clients,
        "requests": served,
        "requests_per_s": served / wall,
        "requests_per_s_rounds": [len(p["latencies"]) / p["wall_s"] for p in parts],
        "p50_ms": percentile_ms(latencies, 50),
        "p90_ms": percentile_ms(latencies, 90),
        "p99_ms": percentile_ms(latencies, 99),
        "max_ms": max(latencies) * 1e3 if latencies else float("nan"),
        "failures": sum(len(p["failures"]) for p in parts),
        "failure_kinds": sorted({f for p in parts for f in p["failures"]}),
        "server_cpu_per_request_ms": sum(p["server_cpu_s"] for p in parts) / max(served, 1)
        * 1e3,
        "client_cpu_share": sum(p["client_cpu_s"] for p in parts) / wall,
        "server_cpu_share": sum(p["server_cpu_s"] for p in parts) / wall,
    }
    if all("onnx_calls" in p for p in parts):
        calls = sum(p["onnx_calls"] for p in parts)
        row["onnx_calls"] = calls
        row["requests_per_onnx_call"] = sum(p["served_requests"] for p in parts) / max(calls, 1)
        # How the clients' connections split: the busiest worker's share of each segment.
        row["largest_worker_share_rounds"] = [
            max(p["worker_requests"]) / max(sum(p["worker_requests"]), 1) for p in parts]
    return row


def _add_ratios(rows: list, clients: int) -> None:
    """Requests/s over Flask's, overall and round by round (same load in each round)."""
    flask = {r["task"]: r for r in rows
             if r["clients"] == clients and r["system"] == "flask-predict"}
    for row in rows:
        base = flask.get(row["task"])
        if row["clients"] != clients or base is None or row is base:
            continue
        row["speedup_vs_flask"] = row["requests_per_s"] / base["requests_per_s"]
        row["speedup_vs_flask_rounds"] = [a / b for a, b in zip(
            row["requests_per_s_rounds"], base["requests_per_s_rounds"])]


def _targets(rows: list, args) -> dict:
    clients = TARGET_CLIENTS if TARGET_CLIENTS in args.clients else max(args.clients)
    out = {"clients": clients, "cores": os.cpu_count()}
    for row in rows:
        if row["system"] != "ours" or row["clients"] != clients:
            continue
        task = row["task"]
        speedup = row.get("speedup_vs_flask")
        out[f"{task}_speedup_vs_flask"] = speedup
        if row.get("speedup_vs_flask_rounds"):
            out[f"{task}_speedup_vs_flask_round_median"] = statistics.median(
                row["speedup_vs_flask_rounds"])
        out[f"{task}_p99_ms"] = row["p99_ms"]
        out[f"{task}_meets_{TARGET_SPEEDUP:g}x"] = None if speedup is None else \
            speedup >= TARGET_SPEEDUP
        out[f"{task}_meets_p99_{TARGET_P99_MS:g}ms"] = row["p99_ms"] < TARGET_P99_MS
    return out


if __name__ == "__main__":
    main()
