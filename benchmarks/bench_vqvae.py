"""VQ-VAE on the shared MNIST digits: reconstruction, codebook use, prior bits, speed, edge latency.

    python benchmarks/bench_vqvae.py --epochs 5 --seeds 0 1 2    # the shared MNIST digits
    python benchmarks/bench_vqvae.py --tiny                      # seconds: the test's setting

Trains a VQ-VAE (and, for the speed comparison, the plain conv VAE with the
same batch and epochs) on `train[:7000]`, fits the PixelCNN code prior, and
scores `train[7000:]` (binarized once): reconstruction NLL and the likelihood
figure (reconstruction NLL + code NLL, nats per image, an upper bound on
-log p(x)), bits per code grid, codebook usage and perplexity, and the mean
squared error of the reconstruction means against the grayscale test
images. Then exports to ONNX and times one whole sample (the 49-step
autoregressive loop plus the decoder) at batch 1 in onnxruntime.

Writes `benchmarks/results/vqvae.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import digits, machine  # noqa: E402

machine.quiet_tensorflow()
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

import keras_vae  # noqa: E402
from keras_vae import data, recipes, training  # noqa: E402
from keras_vae.export import reader  # noqa: E402
from keras_vae.models import vqvae  # noqa: E402
from keras_vae.parts import code_prior  # noqa: E402


def images_per_second(model_class, config, source, split, epochs, seed, batch_size=64):
    """`(trained model, training images per second)` over `epochs` of `split`."""
    images = len(data.load_arrays(source, split)[0])
    with tempfile.TemporaryDirectory() as tmp:
        result = training.run(training.RunConfig(
            Path(tmp) / "run", dataset=source, split=split, batch_size=batch_size,
            validation_fraction=0.0, model=model_class, model_config=config, epochs=epochs,
            seed=seed, verbose=0))
    return result.model, images * epochs / result.seconds


def one_seed(args, seed, pictures_dir=None):
    source, train_split, test_split = digits.source_splits(args)
    epochs, prior_epochs = args.epochs, args.prior_epochs
    vq_config = {"codebook_size": 64, "code_dim": 16}
    vq, vq_rate = images_per_second(keras_vae.VQVAE, vq_config, source, train_split, epochs,
                                    seed)
    _, vae_rate = images_per_second(keras_vae.VAE, {"latent_dim": 16, "arch": "conv"}, source,
                                    train_split, epochs, seed)
    train = data.load(source, train_split, batch_size=256, binarize="static",
                      shuffle=False, seed=seed)
    test = data.load(source, test_split, batch_size=256, binarize="static", shuffle=False,
                     seed=seed)
    gray, _ = data.load_arrays(source, test_split)
    start = time.perf_counter()
    code_prior.train_prior(vq, train, epochs=prior_epochs, validation_data=test, seed=seed,
                           verbose=0)
    prior_seconds = time.perf_counter() - start
    figure = code_prior.likelihood(vq, test)
    codes = vq.encode_indices(gray)
    counts = np.bincount(codes.reshape(-1), minlength=vq.codebook_size)
    mse = float(np.mean((vq.reconstruct(gray) - gray) ** 2))
    if pictures_dir:
        from keras_vae.uses import pictures

        Path(pictures_dir).mkdir(parents=True, exist_ok=True)
        pictures.save_grid(vq.sample(64, seed=seed), Path(pictures_dir) / f"samples-{seed}.png")
        pictures.save_reconstructions(gray[:32], vq.reconstruct(gray[:32]),
                                      Path(pictures_dir) / f"reconstructions-{seed}.png")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "export"
        keras_vae.export.export(vq, out, formats="onnx", graphs="decoder,prior")
        sessions = _sessions(out)
        latency = edge_latency(sessions, out)
        keras_samples = vq.sample(4, seed=seed)
        edge_samples = edge_sample(sessions, out, 4, seed)
    return {
        "seed": seed, "epochs": epochs, "prior_epochs": prior_epochs,
        **{f"test_{k}": v for k, v in figure.items()},
        "test_mse_gray": mse,
        "test_codebook_usage": float(np.mean(counts > 0)),
        "test_perplexity": float(vqvae.perplexity(counts.astype("float32"))),
        "train_images_per_s_vqvae": vq_rate, "train_images_per_s_vae": vae_rate,
        "prior_fit_seconds": prior_seconds,
        "edge_sample_ms_batch1": latency,
        "edge_equals_keras_max_abs": float(np.abs(edge_samples - keras_samples).max()),
    }


def _sessions(out):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    prior = ort.InferenceSession(str(out / "prior.onnx"), options,
                                 providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(out / "decoder.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    return prior, decoder


def edge_sample(sessions, out, n, seed):
    prior, decoder = sessions
    manifest = reader.read_manifest(out)
    table = manifest["prior"]
    codes = recipes.autoregressive_codes(
        lambda c: prior.run(["logits"], {"indices": c})[0], n, table["grid_shape"],
        table["codebook_size"], seed)
    return decoder.run(["x"], {"indices": codes})[0]


def edge_latency(sessions, out, repeats=20):
    """Median ms of one whole sample (prior loop + decoder) at batch 1, one thread."""
    edge_sample(sessions, out, 1, 0)  # warm up
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        edge_sample(sessions, out, 1, r)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="seconds: sklearn digits, 1 epoch")
    p.add_argument("--data", default=str(digits.MNIST_8K), help="the shared MNIST digits")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--prior-epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/vqvae.json)")
    p.add_argument("--pictures", default=None, help="folder for sample/reconstruction PNGs")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs, args.prior_epochs, args.seeds = 1, 1, [0]
    elif problem := digits.missing(args):
        print(f"bench_vqvae: error: {problem}", file=sys.stderr)
        return 2
    run = machine.Run("vqvae", args)
    rows = [one_seed(args, seed, args.pictures) for seed in args.seeds]
    print(machine.table(rows, ["seed", "test_negative_elbo", "test_codebook_usage",
                               "test_perplexity", "train_images_per_s_vqvae",
                               "train_images_per_s_vae", "edge_sample_ms_batch1",
                               "edge_equals_keras_max_abs"], floatfmt="{:.3g}"))
    path = run.write({"mode": "tiny" if args.tiny else "full", "rows": rows}, args.out)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
