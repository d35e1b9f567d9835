"""Roofline: FLOPs per training example and per decoded sample, the machine's
matmul peak, and the fraction of it each system achieves.

FLOPs come from layer shapes (`flops.py`: multiply-adds x 2, element-wise work
left out, a training step as 3x the forward pass of encoder plus decoder). The
peak is the best of a numpy and a TensorFlow float32 matmul probe.

Usage:

    python benchmarks/roofline.py                # measure, print, write results/roofline.json
    python benchmarks/roofline.py --tiny         # seconds: the test's setting
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import machine  # noqa: E402

machine.quiet_tensorflow()

from benchmarks import digits, reference_torch, systems  # noqa: E402
from benchmarks.flops import training_flops  # noqa: E402

# -------------------------------------------------------------------- peak


def matmul_peak(n: int = 1024, repeats: int = 10) -> dict:
    """Best float32 matmul GFLOP/s of numpy and TensorFlow on square matrices.

    Sizes `n/2`, `n` and `2n` are tried, `repeats` times each, and the best
    counts: on a shared machine any one probe can only underestimate the peak.
    """
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    out = {"n": [n // 2, n, 2 * n], "numpy_gflops": 0.0, "tensorflow_gflops": 0.0}
    tf_matmul = tf.function(lambda a, b: tf.linalg.matmul(a, b))
    for size in out["n"]:
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        ta, tb = tf.constant(a), tf.constant(b)
        flops = 2.0 * size**3
        for key, fn in (("numpy_gflops", lambda a=a, b=b: a @ b),
                        ("tensorflow_gflops", lambda ta=ta, tb=tb: tf_matmul(ta, tb).numpy())):
            fn()  # warm-up
            best = min(_timed(fn) for _ in range(repeats))
            out[key] = max(out[key], flops / best / 1e9)
    out["peak_gflops"] = max(out["numpy_gflops"], out["tensorflow_gflops"])
    return out


def denormal_probe(n: int = 384, repeats: int = 15) -> dict:
    """Slow-down of a float32 matmul whose results are denormal, against a normal one.

    A ratio near 1 means the runtime flushes denormals to zero (TensorFlow
    sets flush-to-zero in its op threads); a large one means it does not.
    Normal and denormal products alternate and the best time of each counts,
    so that the machine's load falls on both alike.
    """
    import numpy as np
    import tensorflow as tf

    normal = np.full((n, n), 1.0, dtype=np.float32)
    # Normal inputs whose products and sums (~3e-39) are denormal: the slow case.
    tiny = np.full((n, n), 3e-21, dtype=np.float32)
    probes = {"numpy": (lambda: normal @ normal, lambda: tiny @ tiny)}
    tn, tt = tf.constant(normal), tf.constant(tiny)
    fn = tf.function(lambda a: tf.linalg.matmul(a, a))
    probes["tensorflow"] = (lambda: fn(tn).numpy(), lambda: fn(tt).numpy())
    torch = None
    if reference_torch.available():
        import torch

        pn, pt = torch.from_numpy(normal), torch.from_numpy(tiny)
        probes["torch"] = (lambda: pn @ pn, lambda: pt @ pt)
        probes["torch_flush_denormal"] = probes["torch"]
    out = {}
    for name, (f_normal, f_tiny) in probes.items():
        if torch is not None:
            torch.set_flush_denormal(name == "torch_flush_denormal")
        f_normal(), f_tiny()
        t_normal = t_tiny = math.inf
        for _ in range(repeats):
            t_normal = min(t_normal, _timed(f_normal))
            t_tiny = min(t_tiny, _timed(f_tiny))
        out[f"{name}_normal_s"], out[f"{name}_denormal_s"] = t_normal, t_tiny
        out[f"{name}_slowdown"] = t_tiny / t_normal
    if torch is not None:
        torch.set_flush_denormal(False)
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------- throughputs


def decode_throughput(decode, latent_dim: int, batch: int, seconds: float) -> float:
    """Decoded samples per second of `decode(z)` at a fixed batch size (best of repeats)."""
    import numpy as np

    z = np.random.default_rng(0).standard_normal((batch, latent_dim), dtype=np.float32)
    decode(z)  # trace / warm up
    best = math.inf
    deadline = time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        decode(z)
        best = min(best, time.perf_counter() - start)
        if time.perf_counter() >= deadline:
            break
    return batch / best


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="data source (default: shared MNIST)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--decode-batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2,
                        help="steady-state training epochs per system (after one warm-up)")
    parser.add_argument("--seconds", type=float, default=3.0, help="decode timing per system")
    parser.add_argument("--matmul-n", type=int, default=1024)
    parser.add_argument("--systems", nargs="*", default=None)
    parser.add_argument("--tiny", action="store_true", help="seconds-long run (tests)")
    parser.add_argument("--out", default=None, help="JSON path (default results/roofline.json)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.data = args.data or "digits"
        args.epochs, args.seconds, args.matmul_n = 1, 0.2, 256
    run = machine.Run("roofline", args)
    source = digits.mnist_source(args.data)
    peak = matmul_peak(args.matmul_n)
    print(f"matmul peak (float32, n = {peak['n']}): numpy {peak['numpy_gflops']:.1f}, "
          f"TensorFlow {peak['tensorflow_gflops']:.1f} GFLOP/s")
    denormal = denormal_probe()
    print("denormal inputs slow a matmul by " + ", ".join(
        f"x{v:.1f} ({k[:-9]})" for k, v in denormal.items() if k.endswith("_slowdown")))
    rows = []
    for name, system in systems.standard(source, args.batch_size,
                                         include=args.systems).items():
        forward = system.flops_forward()
        system.fit_epochs(1)  # warm-up: tracing, first-epoch allocations
        start = time.perf_counter()
        images = system.fit_epochs(args.epochs)
        train_ips = images / (time.perf_counter() - start)
        kind, decode = system.decoder()
        latent = system.encode(system.x_gray[:2])[0].shape[-1]
        sample_ips = decode_throughput(decode, latent, args.decode_batch, args.seconds)
        train_flops = training_flops(forward)
        row = {
            "system": name,
            "mflops_forward": (forward["encoder"] + forward["decoder"]) / 1e6,
            "mflops_train_example": train_flops / 1e6,
            "mflops_decoded_sample": forward["decoder"] / 1e6,
            "train_images_per_s": train_ips,
            "train_gflops": train_ips * train_flops / 1e9,
            "sample_images_per_s": sample_ips,
            "sample_gflops": sample_ips * forward["decoder"] / 1e9,
        }
        row["train_fraction_of_peak"] = row["train_gflops"] / peak["peak_gflops"]
        row["sample_fraction_of_peak"] = row["sample_gflops"] / peak["peak_gflops"]
        rows.append(row)
    print(machine.table(rows, ["system", "mflops_train_example", "mflops_decoded_sample",
                               "train_images_per_s", "train_gflops", "train_fraction_of_peak",
                               "sample_images_per_s", "sample_gflops",
                               "sample_fraction_of_peak"]))
    payload = {"data": source, "peak": peak, "denormal_probe": denormal, "rows": rows}
    path = run.write(payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
