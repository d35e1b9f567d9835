"""Training speed: images per second of keras-vae against the keras.io and PyTorch VAEs.

Every system trains on the same 7,000 shared MNIST digits (`train[:7000]`),
with the same batch size and epochs. After one warm-up epoch each (tracing,
first allocations: reported apart), the systems run in interleaved rounds
(A, B, C, A, B, C, ...), so that the load of the shared machine falls on all
of them alike; the table gives the median images/s over rounds, and each of
ours is divided by its reference round by round (ratio = median of those;
against the fastest reference where there are several, e.g. PyTorch with its
default threads and with one). Images per CPU-second (`time.process_time`)
are given too: on a loaded machine they show work done rather than the share
of the cores each system happened to get. `images_per_s_in_epochs` times only
the inside of `fit`'s epochs (a callback clock): the difference to the wall
time of the call is what `fit` spends around them, such as deleting an input
iterator, which waits for tf.data's autotune thread (keras_vae.data.prefetched).

Usage (from the repository root):

    python benchmarks/bench_training.py                   # the comparison table
    python benchmarks/bench_training.py --sweep conv      # ours under jit/steps_per_execution/input settings
    python benchmarks/bench_training.py --pipeline        # also the input pipelines alone
    python benchmarks/bench_training.py --tiny            # seconds-long run (the test's setting)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import digits, machine  # noqa: E402

machine.quiet_tensorflow()

# Settings compared by `--sweep ARCH`: name -> Ours(...) keyword arguments.
# "defaults" is whatever `VAE.compile()` picks today; the others pin a setting.
SWEEP = {
    "defaults": {},
    "jit=off,spe=1": {"compile_options": {"jit_compile": False, "steps_per_execution": 1}},
    "jit=on,spe=1": {"compile_options": {"jit_compile": True, "steps_per_execution": 1}},
    "jit=off,spe=16": {"compile_options": {"jit_compile": False, "steps_per_execution": 16}},
    "jit=on,spe=16": {"compile_options": {"jit_compile": True, "steps_per_execution": 16}},
    "jit=on,spe=64": {"compile_options": {"jit_compile": True, "steps_per_execution": 64}},
    "defaults,numpy-input": {"numpy_input": True},
}


def build_systems(args, source):
    from benchmarks import systems as systems_lib

    if not args.sweep:
        return systems_lib.standard(source, args.batch_size, args.seed, include=args.systems)
    arch, latent = args.sweep, {"conv": 16, "mlp": 20}[args.sweep]
    names = args.systems or list(SWEEP)
    out = {}
    for name in names:
        if name not in SWEEP:
            raise ValueError(f"Unknown sweep setting {name!r}; valid: {list(SWEEP)}")
        out[f"{arch}:{name}"] = systems_lib.Ours(f"{arch}:{name}", source, arch, latent,
                                                 args.batch_size, args.seed, **SWEEP[name])
    return out


def measure(systems: dict, epochs: int, rounds: int) -> dict:
    """Warm-up epoch each, then `rounds` interleaved timings of `epochs` epochs each."""
    times = {name: {"warmup_s": None, "rounds": []} for name in systems}
    for name, system in systems.items():
        start = time.perf_counter()
        system.fit_epochs(1)
        times[name]["warmup_s"] = time.perf_counter() - start
    for r in range(rounds):
        for name, system in systems.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            images = system.fit_epochs(epochs)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            in_epochs = getattr(system, "last_epoch_seconds", None) or elapsed
            times[name]["rounds"].append({"images": images, "seconds": elapsed,
                                          "cpu_seconds": cpu, "images_per_s": images / elapsed,
                                          "images_per_cpu_s": images / cpu,
                                          "epoch_seconds": in_epochs,
                                          "images_per_s_in_epochs": images / in_epochs})
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{n} {t['rounds'][-1]['images_per_s']:.0f}/s" for n, t in times.items()),
            flush=True)
    return times


def summarize(systems: dict, times: dict, baselines: dict) -> list[dict]:
    rows = []
    for name, system in systems.items():
        ips = [r["images_per_s"] for r in times[name]["rounds"]]
        per_cpu = [r["images_per_cpu_s"] for r in times[name]["rounds"]]
        in_epochs = [r["images_per_s_in_epochs"] for r in times[name]["rounds"]]
        row = {
            "system": name,
            "framework": system.framework,
            "description": system.description,
            "images_per_s": statistics.median(ips),
            "images_per_s_min": min(ips),
            "images_per_s_max": max(ips),
            "images_per_cpu_s": statistics.median(per_cpu),
            "images_per_s_in_epochs": statistics.median(in_epochs),
            "warmup_epoch_s": times[name]["warmup_s"],
            "rounds": times[name]["rounds"],
        }
        ratios = {}
        for base in baselines.get(name, []):
            if base not in times:
                continue
            pairs = list(zip(times[name]["rounds"], times[base]["rounds"]))
            wall = [a["images_per_s"] / b["images_per_s"] for a, b in pairs]
            ratios[base] = {
                "ratio": statistics.median(wall), "ratio_min": min(wall),
                "ratio_max": max(wall),
                "ratio_per_cpu_s": statistics.median(
                    a["images_per_cpu_s"] / b["images_per_cpu_s"] for a, b in pairs),
                "ratio_in_epochs": statistics.median(
                    a["images_per_s_in_epochs"] / b["images_per_s_in_epochs"]
                    for a, b in pairs),
            }
        if ratios:
            # Quote the ratio to the fastest reference of the run.
            base = max(ratios, key=lambda b: statistics.median(
                r["images_per_s"] for r in times[b]["rounds"]))
            row.update(baseline=base, **ratios[base], ratios=ratios)
        rows.append(row)
    return rows


def pipeline_speed(source: str, batch_size: int, rounds: int) -> list[dict]:
    """Images/s of input pipelines alone (no training): the library's against per-image.

    "per-image" is the common tf.data recipe `from_tensor_slices -> shuffle ->
    batch -> binarize map`, plus the per-batch value check `fit` adds to
    datasets it cannot trust; `keras_vae.data.load` gathers whole batches of
    in-memory arrays and binarizes them in the same map.
    """
    import tensorflow as tf

    import keras_vae

    split = digits.splits(source)[0]
    x, _ = digits.training_arrays(source)

    def per_image():
        seeds = tf.data.Dataset.random(seed=0, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.from_tensor_slices(x).shuffle(len(x), seed=0).batch(batch_size)

        def binarize(image, pair):
            u = tf.random.stateless_uniform(tf.shape(image), seed=pair)
            return tf.cast(u < image, tf.float32)

        ds = tf.data.Dataset.zip((ds, seeds)).map(binarize, num_parallel_calls=tf.data.AUTOTUNE)
        return keras_vae.data.check_dataset(ds.prefetch(tf.data.AUTOTUNE), x.shape[1:])

    def library():
        ds = keras_vae.data.load(source, split, batch_size=batch_size, binarize="dynamic",
                                 with_labels=False)
        return keras_vae.data.check_dataset(ds, x.shape[1:])

    pipelines = {"per-image tf.data + fit's value check": per_image(),
                 "keras_vae.data.load": library()}
    times = {name: [] for name in pipelines}
    for ds in pipelines.values():
        for _ in ds:  # warm-up epoch
            pass
    for _ in range(rounds):
        for name, ds in pipelines.items():
            start, cpu = time.perf_counter(), time.process_time()
            for _ in ds:
                pass
            times[name].append((len(x) / (time.perf_counter() - start),
                                len(x) / (time.process_time() - cpu)))
    return [{"pipeline": name, "images_per_s": statistics.median(t[0] for t in ts),
             "images_per_cpu_s": statistics.median(t[1] for t in ts)}
            for name, ts in times.items()]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None,
                        help="data source (default: the shared MNIST digits, else 'digits')")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--systems", nargs="*", default=None,
                        help="subset of systems (or sweep settings) to run")
    parser.add_argument("--sweep", choices=["conv", "mlp"], default=None,
                        help="compare our settings (jit, steps_per_execution, input) instead")
    parser.add_argument("--pipeline", action="store_true",
                        help="also time the input pipelines alone (no training)")
    parser.add_argument("--tiny", action="store_true", help="seconds-long run (tests)")
    parser.add_argument("--out", default=None, help="JSON path (default results/<name>.json)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.data = args.data or "digits"
        args.epochs, args.rounds = 1, 1
    run = machine.Run("training_sweep_" + args.sweep if args.sweep else "training", args)

    from benchmarks import systems as systems_lib

    source = digits.mnist_source(args.data)
    systems = build_systems(args, source)
    baselines = ({n: [f"{args.sweep}:jit=off,spe=1"] for n in systems} if args.sweep
                 else systems_lib.BASELINES)
    times = measure(systems, args.epochs, args.rounds)
    rows = summarize(systems, times, baselines)
    print(machine.table(rows, ["system", "images_per_s", "images_per_s_min",
                               "images_per_s_max", "baseline", "ratio", "ratio_min",
                               "ratio_max", "images_per_cpu_s", "ratio_per_cpu_s",
                               "images_per_s_in_epochs", "ratio_in_epochs",
                               "warmup_epoch_s"]))
    n_train = next(iter(systems.values())).n if systems else 0
    payload = {"data": source, "n_train": n_train, "rows": rows}
    if args.pipeline:
        payload["pipelines"] = pipeline_speed(source, args.batch_size, max(3, args.rounds))
        print(machine.table(payload["pipelines"],
                            ["pipeline", "images_per_s", "images_per_cpu_s"]))
    path = run.write(payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
