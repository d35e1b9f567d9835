"""The main job, end to end: train, evaluate, export, sample on onnxruntime.

    python -m keras_vae.demo --data ../shared/data/mnist-8k --out saved_models/demo

It runs the same `keras-vae` commands a user types, then the TensorFlow-free
edge sampler `export/sample_onnx.py` in a separate process, and writes:

    OUT/model.keras, history.json, samples.png, reconstructions.png   (train)
    OUT/evaluation.json                                                 (evaluate)
    OUT/export/  decoder/encoder/scorer in SavedModel, ONNX, LiteRT     (export)
    OUT/onnx_samples.png, OUT/onnx_interpolation.png                    (edge sampler)

Without the shared MNIST digits it falls back to scikit-learn's 8x8 `digits`
(1,797 images with 17 grey levels) with settings of their own (`FALLBACK`):
binarizing so few, so coarse pixels leaves too little for the decoder to
explain, and the default conv VAE's posterior collapses (KL about 1 nat,
grey blurs). On the grey values with a Gaussian likelihood of learned scale,
a small mlp and 4 latent dimensions, 100 epochs (under a minute on 2 cores)
give recognizable digits, every latent unit active and about 8 nats of KL.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

from keras_vae import cli, files

SAMPLER = cli.device_program("sample_onnx.py")  # installed with the package


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


# Settings of the demo on the shared MNIST digits (28x28, 7,000 for training)...
MNIST = {"arch": "conv", "latent_dim": 16, "epochs": 10, "likelihood": "bernoulli",
         "binarize": "dynamic", "arch_options": None}
# ...and on the fallback, scikit-learn's 8x8 digits (1,600 for training): see the
# module docstring; tests/cli/test_demo_fallback.py bounds its held-out KL and
# active units.
FALLBACK = {"arch": "mlp", "latent_dim": 4, "epochs": 100, "likelihood": "gaussian_learned",
            "binarize": "none", "arch_options": {"hidden_units": [256, 128]}}


def train_args(settings: dict) -> list:
    """The `keras-vae train` flags of a settings dict (`MNIST`, `FALLBACK`)."""
    args = ["--arch", settings["arch"], "--latent-dim", settings["latent_dim"],
            "--epochs", settings["epochs"], "--likelihood", settings["likelihood"],
            "--binarize", settings["binarize"]]
    if settings["arch_options"]:
        args += ["--arch-options", json.dumps(settings["arch_options"])]
    return args


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m keras_vae.demo", description=__doc__)
    p.add_argument("--data", default="../shared/data/mnist-8k",
                   help="IDX directory of MNIST digits (falls back to 'digits' if absent)")
    p.add_argument("--out", default="saved_models/demo")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (a previous run of the demo)")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"default {MNIST['epochs']} (MNIST), {FALLBACK['epochs']} (digits)")
    p.add_argument("--arch", default=None,
                   help=f"default {MNIST['arch']} (MNIST), {FALLBACK['arch']} (digits)")
    p.add_argument("--latent-dim", type=int, default=None,
                   help=f"default {MNIST['latent_dim']} (MNIST), {FALLBACK['latent_dim']} "
                        "(digits)")
    args = p.parse_args(argv)
    try:  # before the long work: the rule of every command that writes
        out = files.check_output(args.out, overwrite=args.overwrite, inputs=(args.data,))
    except (ValueError, OSError) as e:
        p.exit(2, f"{p.prog}: error: {e}\n")

    if Path(args.data).is_dir():
        dataset, train_split, test_split = args.data, "train[:7000]", "train[7000:]"
        settings = dict(MNIST)
    else:
        print(f"{args.data} not found: using scikit-learn's bundled 8x8 digits instead.")
        dataset, train_split, test_split = "digits", "train[:1600]", "train[1600:]"
        settings = dict(FALLBACK)
    if args.arch is not None and args.arch != settings["arch"]:
        settings["arch_options"] = None  # options belong to one architecture
    for key in ("epochs", "arch", "latent_dim"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)

    _step(f"Train {settings['arch']} VAE (latent {settings['latent_dim']}, "
          f"{settings['likelihood']} likelihood) on {dataset} {train_split}")
    _keras_vae("train", *train_args(settings), "--dataset", dataset, "--split", train_split,
               "--out", out, *(["--overwrite"] if args.overwrite else []), "--verbose", 2)

    how = ("binarized once, fixed seed" if settings["binarize"] != "none"
           else "grey values")
    _step(f"Evaluate on held-out {test_split} ({how})")
    report = _keras_vae("evaluate", out / "model.keras", "--dataset", dataset,
                        "--split", test_split, "--iwae-k", 100,
                        "--binarize", "static" if settings["binarize"] != "none" else "none")
    files.atomic_write(out / "evaluation.json", lambda f: f.write(report), mode="w")

    _step("Export decoder, encoder and scorer (each checked against Keras)")
    _keras_vae("export", out / "model.keras", "--formats", "savedmodel,onnx,litert",
               "--quantize", "fp16,int8", "--out", out / "export", "--overwrite")

    _step("Sample on onnxruntime with the TensorFlow-free edge sampler")
    for extra, name in ((["--n", 64], "onnx_samples.png"),
                        (["--interpolate", 0, 1, "--steps", 10], "onnx_interpolation.png")):
        cmd = [sys.executable, str(SAMPLER), str(out / "export"), "--seed", "0",
               *map(str, extra), "--out", str(out / name)]
        subprocess.run(cmd, check=True)

    result = json.loads(report.strip().splitlines()[-1])
    _step("Done")
    density = " (a density of grey values: it can be negative)" if settings["binarize"] == "none" \
        else ""
    print(f"held-out negative ELBO {result['negative_elbo']:.2f} nats{density}"
          + (f", IWAE-100 NLL {result['nll']:.2f} nats" if "nll" in result else ""))
    print(f"pictures: {out}/samples.png, reconstructions.png, onnx_samples.png, "
          f"onnx_interpolation.png; exported files: {out}/export/manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
