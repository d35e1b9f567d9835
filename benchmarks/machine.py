"""What every benchmark records beside its figures: machine, versions, threads, load.

The benchmark scripts import this module (so can `bench_sampling.py`):

>>> from benchmarks import machine
>>> machine.write_json("training", {"rows": rows, "args": vars(args)})

Absolute times on the shared 2-core machines drift with the other jobs
running there, so each result file also records `os.getloadavg()` before and
after the run; compare ratios measured side by side in one run, not
absolute figures across runs.

A leaf: it imports nothing of the benchmarks, so that every other module can
import it.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("KERAS_VAE_BENCH_RESULTS", ROOT / "benchmarks" / "results"))

_PACKAGES = ("numpy", "tensorflow", "keras", "keras-vae", "torch", "onnxruntime",
             "ai-edge-litert", "tf2onnx")


def quiet_retracing() -> None:
    """Silences TensorFlow's retracing notes: a benchmark traces each model's evaluation
    functions once, as expected."""
    import logging

    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)


def quiet_tensorflow() -> None:
    """Silences TensorFlow's C++ start-up logging (call before importing it)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or `platform.processor()`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags(wanted=("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")):
    """Which of the vector/matrix instruction sets that matter here the CPU has."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in wanted if f in have]
    except OSError:
        pass
    return []


def memory_gib() -> float | None:
    """Total memory in GiB (Linux), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def versions() -> dict:
    """Installed versions of the packages a benchmark may use (None where absent)."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def threads() -> dict:
    """Thread settings of the frameworks already imported, and the relevant env vars."""
    out = {key: os.environ.get(key) for key in (
        "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
        "TF_ENABLE_ONEDNN_OPTS", "TF_XLA_FLAGS")}
    if "tensorflow" in sys.modules:
        tf = sys.modules["tensorflow"]
        # 0 means "TensorFlow picks": one thread per core.
        out["tf_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
        out["tf_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        out["torch_threads"] = torch.get_num_threads()
        out["torch_interop_threads"] = torch.get_num_interop_threads()
    return out


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def info() -> dict:
    """Machine, versions, thread settings, load and time: the header of every result file."""
    return {
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cpu_flags": cpu_flags(),
            "cores": os.cpu_count(),
            "memory_gib": memory_gib(),
            "gpu": gpu_devices(),
        },
        "versions": versions(),
        "threads": threads(),
        "load_average": load_average(),
        "git_commit": git_commit(),
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def gpu_devices() -> list[str]:
    """GPUs TensorFlow sees (empty on the CPU-only machines)."""
    if "tensorflow" not in sys.modules:
        return []
    tf = sys.modules["tensorflow"]
    return [d.name for d in tf.config.list_physical_devices("GPU")]


class Run:
    """Collects a benchmark's header at start and its load average at the end.

    Example:

    >>> run = machine.Run("training", args)
    >>> run.write({"rows": rows})   # benchmarks/results/training.json
    """

    def __init__(self, name: str, args=None):
        self.name = name
        self.args = dict(vars(args)) if args is not None and hasattr(args, "__dict__") else args
        self.start = time.perf_counter()
        self.load_before = load_average()

    def write(self, payload: dict, out: str | os.PathLike | None = None) -> Path:
        header = info()
        header["load_average_before"] = self.load_before
        header["load_average_after"] = header.pop("load_average")
        header["wall_s"] = round(time.perf_counter() - self.start, 2)
        return write_json(self.name, {"benchmark": self.name, "args": self.args,
                                      **header, **payload}, out)


def write_json(name: str, payload: dict, out: str | os.PathLike | None = None) -> Path:
    """Writes `payload` to `out` (default `benchmarks/results/<name>.json`), atomically."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_finite(payload), indent=2, default=_default) + "\n")
    os.replace(tmp, path)
    return path


def _finite(obj):
    """Replaces NaN/Inf (not JSON) by None, recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _default(obj):
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def table(rows: list[dict], columns: list[str], floatfmt: str = "{:.4g}") -> str:
    """Formats `rows` as a Markdown table of `columns` (what the scripts print)."""
    def cell(v):
        if isinstance(v, float):
            return floatfmt.format(v)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def pictures_folder(args) -> Path:
    """Where a benchmark writes its pictures: `args.pictures`, else beside `args.out`, else
    `RESULTS` (the folder is made)."""
    folder = Path(args.pictures) if args.pictures else (
        Path(args.out).parent if args.out else RESULTS)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def summarize(rows: list[dict], systems, keys, *, group: str = "system") -> list[dict]:
    """Per-system mean and standard deviation of `keys` over the rows (seeds) of a benchmark.

    Returns:
        One dict per system: `system`, `n_seeds`, `<key>_mean`, `<key>_std`
        (None where a figure is missing or a single seed leaves no spread).
    """
    import statistics

    out = []
    for system in systems:
        mine = [r for r in rows if r[group] == system]
        summary = {group: system, "n_seeds": len(mine)}
        for key in keys:
            values = [r[key] for r in mine if r.get(key) is not None]
            summary[f"{key}_mean"] = statistics.fmean(values) if values else None
            summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else None
        out.append(summary)
    return out
