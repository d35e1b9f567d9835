"""Decoder speed on every export path: latency at batch 1, throughput at batch 256.

One run times, side by side on the same machine and thread setting:

- Keras `predict` (what most notebooks call),
- a direct Keras call in a `tf.function`, and the same with XLA (`jit_compile=True`),
- the exported SavedModel signature,
- onnxruntime on the float32 and int8 (dynamic) ONNX files,
- LiteRT on the float32, fp16, int8-dynamic and full-int8 `.tflite` files,

and, as a yardstick in the same run, the keras.io example's decoder
(`reference_kerasio.build_decoder`, 11.4 MFLOP) converted with tf2onnx and
timed in onnxruntime the same way; all of them are put against the
decoder's FLOPs per sample (from layer shapes, see
`flops.keras_flops`) and a measured float32 matmul peak: the achieved
fraction of peak, and the compute floor `FLOPs / peak` per sample.

Usage (from the repository root):

    python benchmarks/bench_sampling.py                 # 28x28 conv decoder, 1 thread
    python benchmarks/bench_sampling.py --threads 2 --model runs/demo/model.keras
    python benchmarks/bench_sampling.py --tiny          # seconds: the test's setting

Writes `benchmarks/results/sampling.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import machine  # noqa: E402

machine.quiet_tensorflow()

from benchmarks.flops import keras_flops  # noqa: E402

# The reference figures for these machines (ms per sample, one core).
FLOOR_MS = 0.07
TARGET_FLOOR_FACTOR = 3.0
TARGET_SPEEDUP_VS_PREDICT = 100.0


def build_model(args):
    """The benchmarked VAE: `--model`, else the default 28x28 conv (tiny 8x8 with --tiny)."""
    import keras_vae
    from keras_vae import saving

    if args.model:
        return saving.load_model(args.model, compile=False)
    if args.tiny:
        return keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=4, arch="conv", seed=0,
                             arch_options={"filters": [4, 8], "dense_units": 16})
    return keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=16, arch="conv", seed=0)


# ------------------------------------------------------------------ runners


def keras_runners(model) -> dict:
    """`name -> decode(z)` for the Keras paths (outputs are pixel probabilities)."""
    import keras
    import tensorflow as tf

    probs = keras.Model(model.decoder.inputs,
                        keras.layers.Activation("sigmoid")(model.decoder.outputs[0]))
    call = tf.function(lambda z: model.decode(z))
    xla = tf.function(lambda z: model.decode(z), jit_compile=True)
    return {
        "keras predict": lambda z: probs.predict(z, batch_size=len(z), verbose=0),
        "keras tf.function": lambda z: call(tf.constant(z)).numpy(),
        "keras tf.function XLA": lambda z: xla(tf.constant(z)).numpy(),
    }


def savedmodel_runner(path):
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda z: serve(z=tf.constant(z))["x"].numpy()


def onnx_runner(path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda z: session.run(["x"], {"z": z})[0]


def litert_runner(path, threads: int):
    """LiteRT with tensors resized once per batch size (no per-call signature overhead)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    shape = [None]

    def run(z):
        if shape[0] != z.shape:
            interpreter.resize_tensor_input(inp, z.shape)
            interpreter.allocate_tensors()
            shape[0] = z.shape
        interpreter.set_tensor(inp, z)
        interpreter.invoke()
        return interpreter.get_tensor(out)

    return run


def kerasio_onnx_runner(model, threads: int, tmp: Path):
    """onnxruntime fp32 on the keras.io decoder of the same image shape and latent size."""
    import tensorflow as tf
    import tf2onnx

    from benchmarks import reference_kerasio

    decoder = reference_kerasio.build_decoder(model.latent_dim, tuple(model.image_shape))
    fn = tf.function(lambda z: {"x": decoder(z)})
    spec = [tf.TensorSpec((None, model.latent_dim), tf.float32, name="z")]
    path = tmp / "kerasio_decoder.onnx"
    tf2onnx.convert.from_function(fn, input_signature=spec, opset=17, output_path=str(path))
    return onnx_runner(path, threads), keras_flops(decoder)


def time_calls(fn, z, seconds: float, min_calls: int = 5) -> dict:
    """Median and best seconds per call of `fn(z)` over about `seconds` (after warm-up)."""
    for _ in range(3):
        fn(z)
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn(z)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "best_s": min(times), "calls": len(times)}


def paired_rounds(fns: dict, z, rounds: int, seconds: float) -> dict:
    """Interleaved rounds of `time_calls` for each of `fns`: medians per round, in ms.

    On a shared machine the load changes from one second to the next; timing
    two runtimes in alternating short rounds and taking the ratio round by
    round compares them under the same load.
    """
    per_round = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            per_round[name].append(time_calls(fn, z, seconds)["median_s"] * 1e3)
    return per_round


# --------------------------------------------------------------------- peak


def matmul_peak(n: int, threads: int, repeats: int = 10) -> dict:
    """Best float32 numpy matmul GFLOP/s on `n x n` matrices, BLAS limited to `threads`."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        a @ b  # warm-up
        best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return {"n": n, "threads": threads, "gflops": 2.0 * n**3 / best / 1e9}


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------- main


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help=".keras file (default: untrained "
                        "28x28 conv decoder, latent 16; latency does not depend on weights)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for every runtime and the matmul probe")
    parser.add_argument("--batch", type=int, default=256, help="throughput batch size")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per measurement")
    parser.add_argument("--matmul-n", type=int, default=1024)
    parser.add_argument("--tiny", action="store_true", help="seconds-long run (tests)")
    parser.add_argument("--out", default=None,
                        help="JSON path (default benchmarks/results/sampling.json)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch, args.seconds, args.matmul_n = 16, 0.05, 256
    run = machine.Run("sampling", args)

    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    import keras_vae.export

    model = build_model(args)
    if model.num_classes:
        raise SystemExit("bench_sampling.py times unconditional decoders only")
    flops = keras_flops(model.decoder)
    peak = matmul_peak(args.matmul_n, args.threads)
    floor_ms = flops / (peak["gflops"] * 1e9) * 1e3
    print(f"decoder: {flops / 1e6:.2f} MFLOP/sample; numpy matmul peak "
          f"{peak['gflops']:.1f} GFLOP/s on {args.threads} thread(s): compute floor "
          f"{floor_ms * 1e3:.1f} us/sample")

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        manifest = keras_vae.export.export(
            model, out, formats=("savedmodel", "onnx", "litert"),
            quantize=("fp16", "int8_dynamic", "int8_full"), graphs=("decoder",))
        files = {(e["format"], e["precision"]): out / e["path"] for e in manifest["files"]}
        runners = keras_runners(model)
        runners["savedmodel"] = savedmodel_runner(files["savedmodel", "fp32"])
        for precision in ("fp32", "int8_dynamic"):
            runners[f"onnxruntime {precision}"] = onnx_runner(files["onnx", precision],
                                                              args.threads)
        for precision in ("fp32", "fp16", "int8_dynamic", "int8_full"):
            runners[f"litert {precision}"] = litert_runner(files["litert", precision],
                                                           args.threads)
        parity = {f"{e['format']} {e['precision']}": e["parity"] for e in manifest["files"]}
        kerasio_decode, reference_flops = kerasio_onnx_runner(model, args.threads, Path(tmp))

        rng = np.random.default_rng(0)
        z1 = rng.standard_normal((1, model.latent_dim), dtype=np.float32)
        zb = rng.standard_normal((args.batch, model.latent_dim), dtype=np.float32)
        reference = np.asarray(model.decode(tf.constant(zb)))
        rows = []
        for name, fn in runners.items():
            error = float(np.abs(fn(zb) - reference).max())
            one = time_calls(fn, z1, args.seconds)
            many = time_calls(fn, zb, args.seconds)
            per_sample = many["median_s"] / args.batch
            rows.append({
                "runtime": name,
                "b1_ms": one["median_s"] * 1e3,
                "b1_best_ms": one["best_s"] * 1e3,
                f"b{args.batch}_ms_per_sample": per_sample * 1e3,
                f"b{args.batch}_samples_per_s": 1.0 / per_sample,
                "gflops": flops / per_sample / 1e9,
                "fraction_of_peak": flops / per_sample / 1e9 / peak["gflops"],
                "b1_fraction_of_peak": flops / one["median_s"] / 1e9 / peak["gflops"],
                "max_abs_vs_keras": error,
                "calls": [one["calls"], many["calls"]],
            })
            print(f"  {name:24s} b1 {rows[-1]['b1_ms']:8.3f} ms   b{args.batch} "
                  f"{per_sample * 1e3:7.4f} ms/sample", flush=True)
        # The keras.io decoder is timed only against ours, in alternating rounds.
        paired = paired_rounds({"ours": runners["onnxruntime fp32"], "kerasio": kerasio_decode},
                               z1, rounds=7, seconds=max(args.seconds / 4, 0.05))
        ratios = [a / b for a, b in zip(paired["ours"], paired["kerasio"])]
        yardstick = {"runtime": "onnxruntime fp32, keras.io decoder",
                     "flops_per_sample": reference_flops,
                     "b1_ms": statistics.median(paired["kerasio"]),
                     "paired_b1_ms": paired,
                     "paired_ratio_median": statistics.median(ratios),
                     "paired_ratio_range": [min(ratios), max(ratios)]}
        print(f"  {yardstick['runtime']} ({reference_flops / 1e6:.1f} MFLOP/sample), 7 "
              f"alternating batch-1 rounds: ours / keras.io median "
              f"{yardstick['paired_ratio_median']:.2f} ({min(ratios):.2f}-{max(ratios):.2f}); "
              f"ours {statistics.median(paired['ours']):.3f} ms, keras.io "
              f"{yardstick['b1_ms']:.3f} ms")

    by_name = {r["runtime"]: r for r in rows}
    predict_b1 = by_name["keras predict"]["b1_ms"]
    for r in rows:
        r["b1_speedup_vs_predict"] = predict_b1 / r["b1_ms"]
    ort_b1 = by_name["onnxruntime fp32"]["b1_ms"]
    edge = min((r for r in rows if r["runtime"].startswith(("onnxruntime", "litert"))),
               key=lambda r: r["b1_ms"])
    targets = {
        "reference_floor_ms": FLOOR_MS,
        "measured_compute_floor_ms": floor_ms,
        "onnxruntime_fp32_b1_ms": ort_b1,
        "onnxruntime_within_3x_reference_floor": ort_b1 <= TARGET_FLOOR_FACTOR * FLOOR_MS,
        "onnxruntime_b1_speedup_vs_predict": predict_b1 / ort_b1,
        "onnxruntime_at_least_100x_faster_than_predict":
            predict_b1 / ort_b1 >= TARGET_SPEEDUP_VS_PREDICT,
        "fastest_b1": min(rows, key=lambda r: r["b1_ms"])["runtime"],
        "fastest_edge_b1": edge["runtime"],
        "fastest_edge_b1_ms": edge["b1_ms"],
        "fastest_edge_within_3x_reference_floor":
            edge["b1_ms"] <= TARGET_FLOOR_FACTOR * FLOOR_MS,
        "kerasio_decoder_onnxruntime_b1_ms": yardstick["b1_ms"],
        "onnxruntime_fp32_b1_vs_kerasio_decoder": yardstick["paired_ratio_median"],
    }
    columns = ["runtime", "b1_ms", f"b{args.batch}_ms_per_sample",
               f"b{args.batch}_samples_per_s", "fraction_of_peak", "b1_speedup_vs_predict",
               "max_abs_vs_keras"]
    print(machine.table(rows, columns))
    print(f"onnxruntime fp32 batch 1: {ort_b1:.3f} ms ({ort_b1 / FLOOR_MS:.1f}x the "
          f"{FLOOR_MS} ms reference floor, {predict_b1 / ort_b1:.0f}x faster than predict; "
          f"the keras.io decoder: {yardstick['b1_ms']:.3f} ms)")
    print(f"fastest edge path at batch 1: {edge['runtime']} {edge['b1_ms']:.3f} ms "
          f"({edge['b1_ms'] / FLOOR_MS:.1f}x the floor, {predict_b1 / edge['b1_ms']:.0f}x "
          "faster than predict)")
    payload = {
        "model": {"path": args.model, "image_shape": list(model.image_shape),
                  "latent_dim": model.latent_dim, "arch": model.arch,
                  "decoder_params": int(model.decoder.count_params())},
        "decoder_flops_per_sample": flops,
        "flops_rule": "Dense 2*in*out, Conv2D 2*Hout*Wout*k*k*Cin*Cout, Conv2DTranspose "
                      "2*Hin*Win*k*k*Cin*Cout; element-wise ops left out",
        "matmul_peak": peak,
        "runtime_threads": {"tensorflow_intra_op": args.threads, "tensorflow_inter_op": 1,
                            "onnxruntime_intra_op": args.threads, "litert": args.threads},
        "rows": rows,
        "yardstick": yardstick,
        "targets": targets,
        "parity": parity,
    }
    path = run.write(payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
