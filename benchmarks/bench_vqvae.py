"""VQ-VAE on the shared MNIST digits: reconstruction, codebook use, prior bits, speed, edge latency.

    python benchmarks/bench_vqvae.py --data /work/shared/data/mnist-8k --epochs 5 --seeds 0

Trains a VQ-VAE (and, for the speed comparison, the plain conv VAE with the
same batch and epochs) on `train[:7000]`, fits the PixelCNN code prior, and
scores `train[7000:]` (binarized once): reconstruction NLL and the likelihood
figure (reconstruction NLL + code NLL, nats per image, an upper bound on
-log p(x)), bits per code grid, codebook usage and perplexity, and the mean
squared error of the reconstruction means against the grayscale test
images. Then exports to ONNX and times one whole sample (the 49-step
autoregressive loop plus the decoder) at batch 1 in onnxruntime.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import numpy as np  # noqa: E402

import keras_vae  # noqa: E402
from keras_vae import code_prior, data, training  # noqa: E402
from keras_vae.export import edge_io  # noqa: E402


def images_per_second(model_class, config, source, epochs, seed, batch_size=64):
    result = training.run(tempfile.mkdtemp() + "/run", dataset=source, split="train[:7000]",
                          batch_size=batch_size, validation_split=0.0, model_class=model_class,
                          model_config=config, epochs=epochs, seed=seed, verbose=0)
    return result.model, 7000 * epochs / result.seconds


def one_seed(source, epochs, prior_epochs, seed, pictures_dir=None):
    vq_config = {"codebook_size": 64, "code_dim": 16}
    vq, vq_rate = images_per_second(keras_vae.VQVAE, vq_config, source, epochs, seed)
    _, vae_rate = images_per_second(keras_vae.VAE, {"latent_dim": 16, "arch": "conv"}, source,
                                    epochs, seed)
    train = data.load(source, "train[:7000]", batch_size=256, binarize="static",
                      shuffle=False, seed=seed)
    test = data.load(source, "train[7000:]", batch_size=256, binarize="static", shuffle=False,
                     seed=seed)
    gray, _ = data.load_arrays(source, "train[7000:]")
    start = time.perf_counter()
    code_prior.train_prior(vq, train, epochs=prior_epochs, validation_data=test, seed=seed,
                           verbose=0)
    prior_seconds = time.perf_counter() - start
    figure = code_prior.likelihood(vq, test)
    codes = vq.encode_indices(gray)
    counts = np.bincount(codes.reshape(-1), minlength=vq.codebook_size)
    p = counts / counts.sum()
    mse = float(np.mean((vq.reconstruct(gray) - gray) ** 2))
    if pictures_dir:
        from keras_vae import pictures

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
        "test_perplexity": float(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0])))),
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
    manifest = edge_io.read_manifest(out)
    table = manifest["prior"]
    codes = edge_io.autoregressive_codes(
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


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="/work/shared/data/mnist-8k")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--prior-epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--pictures", default=None, help="folder for sample/reconstruction PNGs")
    args = p.parse_args()
    rows = [one_seed(args.data, args.epochs, args.prior_epochs, s, args.pictures) for s in args.seeds]
    print(json.dumps(rows, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
