"""VAE-GAN against the plain conv VAE on the shared digits: sample quality, pixel ELBO, speed.

Both models share the encoder and decoder (`arch="conv"`, same options, same
latent size, same seed) and are trained for the same epochs on the 7,000
training digits (`train[:7000]`, binarized afresh each epoch); the VAE-GAN
adds the discriminator (`keras_vae.VAEGAN`, Larsen et al. 2016).

Reported per model:

- sample quality: Frechet distance, precision and recall of `digits.SAMPLE_N`
  samples (image means) against as many grey training digits, in the features
  of the small classifier `keras_vae.evaluation.quality` trains on the training digits
  (not Inception FID);
- the pixel negative ELBO on the 1,000 held-out digits (`train[7000:]`,
  binarized once): the VAE-GAN is not trained on it, so it is the honest
  likelihood comparison, not its objective;
- training images/s: the median over the epochs after the first (which traces).

It also writes `samples_<seed>.png`: the VAE's samples (left) beside the
VAE-GAN's (right), the same prior draws.

Usage (from the repository root):

    python benchmarks/bench_vaegan.py                 # 3 seeds, 20 epochs
    python benchmarks/bench_vaegan.py --quick         # 1 seed, 5 epochs
    python benchmarks/bench_vaegan.py --tiny          # seconds (sklearn digits; the test)

Writes `benchmarks/results/vaegan.json` (or `--out`) and the pictures beside it
(or in `--pictures`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import digits, machine  # noqa: E402

machine.quiet_tensorflow()

from benchmarks import systems  # noqa: E402

SYSTEMS = ("vae", "vaegan")


def build(system: str, args, image_shape, seed: int):
    import keras

    import keras_vae

    common = {"image_shape": image_shape, "latent_dim": args.latent_dim, "arch": "conv",
              "arch_options": {"filters": args.filters, "dense_units": args.dense_units},
              "seed": seed}
    if system == "vae":
        model = keras_vae.VAE(**common)
    else:
        model = keras_vae.VAEGAN(**common, gamma=args.gamma,
                                 disc_options={"filters": args.filters,
                                               "units": args.disc_units},
                                 disc_learning_rate=args.disc_learning_rate,
                                 pixel_weight=args.pixel_weight)
    model.compile(keras.optimizers.Adam(args.learning_rate))
    return model


def run_seed(seed: int, args, data, pictures_dir: Path) -> list[dict]:
    import keras_vae
    from keras_vae import recipes

    rows, samples = [], {}
    for system in SYSTEMS:
        keras_vae.training.set_seed(seed)
        train = keras_vae.data.load(data.source, data.train_split, batch_size=args.batch_size,
                                    binarize="dynamic", seed=seed)
        model = build(system, args, tuple(data.reference.shape[1:]), seed)
        timer = systems.epoch_clock()
        start = time.perf_counter()
        history = model.fit(train, epochs=args.epochs, verbose=0, callbacks=[timer]).history
        train_s = time.perf_counter() - start
        steady = timer.seconds[1:] or timer.seconds
        elbo = keras_vae.evaluation.evaluate_elbo(model, data.test)
        quality = data.sample_quality(model, seed)
        row = {"system": system, "seed": seed, "epochs": args.epochs,
               "train_s": round(train_s, 1),
               "images_per_s": data.n_train / statistics.median(steady),
               "negative_elbo": elbo["negative_elbo"], "kl": elbo["kl_loss"],
               **quality, "final_train": {k: float(v[-1]) for k, v in history.items()}}
        rows.append(row)
        samples[system] = model.sample(64, seed=seed)
        print(f"  seed {seed} {system:7s} frechet {row['frechet']:.2f}  precision "
              f"{row['precision']:.2f}  recall {row['recall']:.2f}  negative_elbo "
              f"{row['negative_elbo']:.1f}  {row['images_per_s']:.0f} images/s", flush=True)
    left, right = (recipes.grid(samples[s]) for s in SYSTEMS)
    gap = np.full((left.shape[0], 8, *left.shape[2:]), 255, np.uint8)
    picture = pictures_dir / f"samples_{seed}.png"
    keras_vae.uses.pictures.save_png(np.concatenate([left, gap, right], axis=1), picture, scale=3)
    print(f"  seed {seed}: {picture} (left: VAE, right: VAE-GAN, same prior draws)")
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    return machine.summarize(rows, SYSTEMS, ("frechet", "precision", "recall", "negative_elbo",
                                             "images_per_s"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 5 epochs")
    p.add_argument("--tiny", action="store_true", help="seconds: sklearn digits, 1 epoch")
    p.add_argument("--data", default=str(digits.MNIST_8K), help="the shared MNIST digits")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--filters", type=int, nargs="+", default=[32, 64])
    p.add_argument("--dense-units", type=int, default=256)
    p.add_argument("--disc-units", type=int, default=128)
    p.add_argument("--gamma", type=float, default=1.0)
    p.add_argument("--disc-learning-rate", type=float, default=1e-4)
    p.add_argument("--pixel-weight", type=float, default=1.0,
                   help="VAEGAN pixel_weight (the default 1, as the model's; 0: Larsen et al.'s objective)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/vaegan.json)")
    p.add_argument("--pictures", default=None, help="folder of the side-by-side samples")
    args = p.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    seeds, epochs = {"full": ([0, 1, 2], 20), "quick": ([0], 5), "tiny": ([0], 1)}[mode]
    args.seeds = args.seeds or seeds
    args.epochs = args.epochs or epochs
    if args.tiny:
        args.filters, args.dense_units, args.disc_units, args.latent_dim = [4, 8], 16, 16, 4
    if problem := digits.missing(args):
        print(f"bench_vaegan: error: {problem}", file=sys.stderr)
        return 2
    run = machine.Run("vaegan", args)
    data = digits.load(args)
    pictures_dir = machine.pictures_folder(args)
    print(f"bench_vaegan ({mode}): {args.epochs} epochs, seeds {args.seeds}")
    rows = [row for seed in args.seeds for row in run_seed(seed, args, data, pictures_dir)]
    summary = summarize(rows)
    print(machine.table(summary, ["system", "n_seeds", "frechet_mean", "precision_mean",
                                  "recall_mean", "negative_elbo_mean", "images_per_s_mean"],
                        floatfmt="{:.2f}"))
    path = run.write({"mode": mode, "rows": rows, "summary": summary,
                      "notes": {"frechet": digits.frechet_note(digits.SAMPLE_N,
                                                               "grey training digits"),
                                "negative_elbo": "pixel-wise negative ELBO on the held-out digits: "
                                            "the VAE's objective, not the VAE-GAN's"}}, args.out)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
