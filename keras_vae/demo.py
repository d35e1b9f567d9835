"""The main job, end to end: train, evaluate, export, sample on onnxruntime.

    python -m keras_vae.demo --data ../shared/data/mnist-8k --out saved_models/demo

It runs the same `keras-vae` commands a user types, then the TensorFlow-free
edge sampler `export/sample_onnx.py` in a separate process, and writes:

    OUT/model.keras, history.json, samples.png, reconstructions.png   (train)
    OUT/evaluation.json                                                 (evaluate)
    OUT/export/  decoder/encoder/scorer in SavedModel, ONNX, TFLite     (export)
    OUT/onnx_samples.png, OUT/onnx_interpolation.png                    (edge sampler)

Without the shared MNIST digits it falls back to scikit-learn's `digits`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from keras_vae import cli
from keras_vae.export import edge_io

SAMPLER = Path(edge_io.__file__).with_name("sample_onnx.py")  # installed with the package


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _keras_vae(*args) -> str:
    """Runs one `keras-vae` command in-process; returns what it printed."""
    buffer = StringIO()
    with redirect_stdout(buffer):
        code = cli.main([str(a) for a in args])
    print(buffer.getvalue(), end="")
    if code:
        raise SystemExit(f"keras-vae {args[0]} failed (exit {code})")
    return buffer.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m keras_vae.demo", description=__doc__)
    p.add_argument("--data", default="../shared/data/mnist-8k",
                   help="IDX directory of MNIST digits (falls back to 'digits' if absent)")
    p.add_argument("--out", default="saved_models/demo")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--arch", default="conv")
    p.add_argument("--latent-dim", type=int, default=16)
    args = p.parse_args(argv)

    if Path(args.data).is_dir():
        dataset, train_split, test_split = args.data, "train[:7000]", "train[7000:]"
    else:
        print(f"{args.data} not found: using scikit-learn's bundled 8x8 digits instead.")
        dataset, train_split, test_split = "digits", "train[:1600]", "train[1600:]"
    out = Path(args.out)

    _step(f"Train {args.arch} VAE (latent {args.latent_dim}) on {dataset} {train_split}")
    _keras_vae("train", "--dataset", dataset, "--split", train_split, "--arch", args.arch,
               "--latent-dim", args.latent_dim, "--epochs", args.epochs, "--out", out,
               "--overwrite", "--verbose", 2)

    _step(f"Evaluate on held-out {test_split} (binarized once, fixed seed)")
    report = _keras_vae("evaluate", out / "model.keras", "--dataset", dataset,
                        "--split", test_split, "--iwae-k", 100)
    (out / "evaluation.json").write_text(report)

    _step("Export decoder, encoder and scorer (each checked against Keras)")
    _keras_vae("export", out / "model.keras", "--formats", "savedmodel,onnx,tflite",
               "--quantize", "fp16,int8", "--out", out / "export", "--overwrite")

    _step("Sample on onnxruntime with the TensorFlow-free edge sampler")
    for extra, name in ((["--n", 64], "onnx_samples.png"),
                        (["--interpolate", 0, 1, "--steps", 10], "onnx_interpolation.png")):
        cmd = [sys.executable, str(SAMPLER), str(out / "export"), "--seed", "0",
               *map(str, extra), "--out", str(out / name)]
        subprocess.run(cmd, check=True)

    result = json.loads(report.strip().splitlines()[-1])
    _step("Done")
    print(f"held-out negative ELBO {result['neg_elbo']:.2f} nats"
          + (f", IWAE-100 NLL {result['nll']:.2f} nats" if "nll" in result else ""))
    print(f"pictures: {out}/samples.png, reconstructions.png, onnx_samples.png, "
          f"onnx_interpolation.png; exported files: {out}/export/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
