"""beta-TCVAE against the plain VAE on the procedural shapes: MIG, DCI, held-out ELBO and TC.

For each seed, a plain `keras_vae.VAE` and a `keras_vae.TCVAE` (`--tc-beta`,
default 6, `dataset_size` = the training images) with the same architecture
(an MLP, `--hidden-units`), latent size, seed, batch size and epochs are
trained on the first `--train` images of the `shapes` dataset (64x64 binary
dSprites-like images from five known factors: shape, scale, orientation,
posX, posY; `keras_vae.data.shapes`). Each is scored on the next `--held-out`
images, which neither model saw:

- MIG and DCI (disentanglement, completeness, informativeness) of the
  posterior means against the ground-truth factors
  (`keras_vae.evaluation.disentanglement.disentanglement_metrics`, DCI forests seeded
  with the run's seed);
- the negative ELBO (beta = 1, one z per image; `evaluation.evaluate_elbo`):
  the TCVAE is not trained on it, so it is the honest likelihood comparison;
- the total correlation of the posterior on held-out batches of
  `--batch-size` (the same minibatch-weighted sampling estimate the TCVAE
  trains on, `tcvae.tc_decomposition`, for both models, so the two compare;
  its absolute value carries MWS's offset, see `keras_vae/models/tcvae.py`), and the
  TC the TCVAE logged on its last training epoch;
- the number of active latent units (`evaluation.latent_statistics`).

It also writes `traversal_<system>_<seed>.png` per model: starting at the latent
of the first held-out image, one latent dimension per row moved over
`linspace(-2.5, 2.5, 9)`, rows ordered by KL (most informative first).

Usage (from the repository root):

    python benchmarks/bench_disentangle.py             # 3 seeds, 5,000 shapes, 15 epochs
    python benchmarks/bench_disentangle.py --quick     # 1 seed, 5 epochs
    python benchmarks/bench_disentangle.py --tiny      # seconds (600 shapes; the test)

Writes `benchmarks/results/disentangle.json` (or `--out`) and the pictures
beside it (or in `--pictures`).
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

from benchmarks import machine  # noqa: E402

machine.quiet_tensorflow()

SYSTEMS = ("vae", "tcvae")
TRAVERSAL_VALUES = np.linspace(-2.5, 2.5, 9)
SUMMARY_KEYS = ("mig", "dci_disentanglement", "dci_completeness", "dci_informativeness",
                "negative_elbo", "held_out_tc", "train_tc", "active_units", "train_s")


def load_shapes(args):
    """Training and held-out shapes with their factors: one render of the fixed draw."""
    import keras_vae

    if args.tiny:  # render only what the smoke test needs (the full draw takes ~10 s)
        x, factors, _ = keras_vae.data.shapes.shapes(n=args.train + args.held_out, seed=0)
    else:  # what load_arrays("shapes", ...) and load_factors("shapes", ...) slice
        x, factors = keras_vae.data.shapes.load_shapes_arrays("shapes")
    if args.train + args.held_out > len(x):
        raise ValueError(f"--train + --held-out must be at most {len(x)} shapes.")
    end = args.train + args.held_out
    return (x[:args.train], factors[:args.train], x[args.train:end],
            np.asarray(factors[args.train:end]))


def build(system: str, args, seed: int):
    import keras

    import keras_vae

    keras_vae.training.set_seed(seed)
    common = {"image_shape": (64, 64, 1), "latent_dim": args.latent_dim, "arch": "mlp",
              "arch_options": {"hidden_units": args.hidden_units}, "seed": seed}
    if system == "vae":
        model = keras_vae.VAE(**common)
    else:
        model = keras_vae.TCVAE(**common, tc_beta=args.tc_beta, dataset_size=args.train)
    model.compile(keras.optimizers.Adam(args.learning_rate))
    return model


def held_out_tc(model, x, batch_size: int, dataset_size: int) -> float:
    """Mean MWS total correlation of the posterior over held-out batches of `batch_size`."""
    import keras

    import keras_vae

    values = []
    for start in range(0, len(x) - batch_size + 1, batch_size):  # full batches only
        terms = model.elbo_terms(keras.ops.convert_to_tensor(x[start:start + batch_size]))
        parts = keras_vae.models.tcvae.tc_decomposition(
            terms["z"], terms["z_mean"], terms["z_log_var"], dataset_size,
            model.prior.log_prob_per_dim(terms["z"]))
        values.append(float(np.mean(keras.ops.convert_to_numpy(parts["total_correlation"]))))
    return float(np.mean(values))


def save_traversal(model, held_x, path: Path) -> list[int]:
    """Writes the traversal picture; returns the latent dimension of each row."""
    import keras_vae

    kl = np.asarray(keras_vae.evaluation.latent_statistics(model, held_x)["kl_per_dim"])
    dims = [int(d) for d in np.argsort(-kl)]  # most informative first
    base = keras_vae.uses.latent.encode_mean(model, held_x[:1])[0]
    rows = keras_vae.uses.latent.traversal(model, z=base, dims=dims, values=TRAVERSAL_VALUES)
    keras_vae.uses.pictures.save_traversal(rows, path)
    return dims


def run_seed(seed: int, args, data, pictures_dir: Path) -> list[dict]:
    import tensorflow as tf

    import keras_vae

    train_x, _, held_x, held_factors = data
    names = list(keras_vae.data.shapes.FACTOR_NAMES)
    held = tf.data.Dataset.from_tensor_slices(held_x).batch(250)
    rows = []
    for system in SYSTEMS:
        model = build(system, args, seed)
        start = time.perf_counter()
        history = model.fit(train_x, batch_size=args.batch_size, epochs=args.epochs,
                            shuffle=True, verbose=0).history
        train_s = time.perf_counter() - start
        scores = keras_vae.evaluation.disentanglement.disentanglement_metrics(
            model, held_x, held_factors, factor_names=names, seed=seed)
        elbo = keras_vae.evaluation.evaluate_elbo(model, held)
        stats = keras_vae.evaluation.latent_statistics(model, held_x)
        picture = pictures_dir / f"traversal_{system}_{seed}.png"
        dims = save_traversal(model, held_x, picture)
        row = {"system": system, "seed": seed, "train_s": round(train_s, 1),
               "mig": scores["mig"], "mig_per_factor": scores["mig_per_factor"],
               "dci_disentanglement": scores["dci"]["disentanglement"],
               "dci_completeness": scores["dci"]["completeness"],
               "dci_informativeness": scores["dci"]["informativeness"],
               "dci_importance": scores["dci"].get("importance"),
               "negative_elbo": elbo["negative_elbo"], "reconstruction": elbo["reconstruction_loss"],
               "kl": elbo["kl_loss"],
               "held_out_tc": held_out_tc(model, held_x, args.batch_size, args.train),
               "train_tc": (float(history["total_correlation"][-1])
                            if "total_correlation" in history else None),
               "final_train_loss": float(history["loss"][-1]),
               "kl_per_dim": stats["kl_per_dim"], "active_units": stats["active_units"],
               "traversal": picture.name, "traversal_rows": dims}
        rows.append(row)
        print(f"  seed {seed} {system:5s} MIG {row['mig']:.3f}  DCI-D "
              f"{row['dci_disentanglement']:.3f}  negative_elbo {row['negative_elbo']:.1f}  held-out TC "
              f"{row['held_out_tc']:.2f}  active {row['active_units']}  ({train_s:.0f} s)  "
              f"{picture.name} rows = dims {dims}", flush=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    out = machine.summarize(rows, SYSTEMS, SUMMARY_KEYS)
    base = {r["seed"]: r["mig"] for r in rows if r["system"] == "vae"}
    for summary in out:  # MIG gain over the plain VAE, paired by seed
        gains = [r["mig"] - base[r["seed"]] for r in rows if r["system"] == summary["system"]]
        summary["mig_gain_vs_vae_mean"] = statistics.fmean(gains)
        summary["mig_gain_vs_vae_min"] = min(gains)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1 seed, 5 epochs")
    p.add_argument("--tiny", action="store_true", help="seconds: 600 shapes, 1 epoch")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--train", type=int, default=None, help="training shapes (default 5000)")
    p.add_argument("--held-out", type=int, default=None, help="held-out shapes (default 2000)")
    p.add_argument("--latent-dim", type=int, default=6)
    p.add_argument("--hidden-units", type=int, nargs="+", default=[256, 128])
    p.add_argument("--tc-beta", type=float, default=6.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--out", default=None,
                   help="JSON path (default benchmarks/results/disentangle.json)")
    p.add_argument("--pictures", default=None, help="folder of the traversal pictures")
    args = p.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    defaults = {"full": ([0, 1, 2], 15, 5000, 2000), "quick": ([0], 5, 5000, 2000),
                "tiny": ([0], 1, 400, 200)}
    seeds, epochs, train, held_out = defaults[mode]
    args.seeds = args.seeds or seeds
    args.epochs = args.epochs or epochs
    args.train = args.train or train
    args.held_out = args.held_out or held_out
    if args.tiny:
        args.hidden_units, args.latent_dim = [32], 4
    if min(args.train, args.held_out, args.epochs, args.batch_size, args.latent_dim) < 1 or \
            args.held_out < args.batch_size:
        print("bench_disentangle: error: --train, --epochs, --batch-size and --latent-dim must "
              "be >= 1 and --held-out at least one batch", file=sys.stderr)
        return 2
    run = machine.Run("disentangle", args)
    machine.quiet_retracing()
    try:
        data = load_shapes(args)
    except ValueError as e:
        print(f"bench_disentangle: error: {e}", file=sys.stderr)
        return 2
    pictures_dir = machine.pictures_folder(args)
    print(f"bench_disentangle ({mode}): {args.train} shapes, {args.epochs} epochs, "
          f"latent {args.latent_dim}, tc_beta {args.tc_beta}, seeds {args.seeds}")
    rows = [row for seed in args.seeds for row in run_seed(seed, args, data, pictures_dir)]
    summary = summarize(rows)
    print(machine.table(summary, ["system", "n_seeds", "mig_mean", "mig_std",
                                  "mig_gain_vs_vae_mean", "dci_disentanglement_mean",
                                  "dci_disentanglement_std", "dci_completeness_mean",
                                  "dci_informativeness_mean", "negative_elbo_mean", "negative_elbo_std",
                                  "held_out_tc_mean", "held_out_tc_std", "train_tc_mean",
                                  "active_units_mean"],
                        floatfmt="{:.3f}"))
    path = run.write({"mode": mode, "rows": rows, "summary": summary,
                      "notes": {"data": f"shapes train[:{args.train}], held out "
                                        f"train[{args.train}:{args.train + args.held_out}]",
                                "held_out_tc": "minibatch-weighted-sampling TC on held-out "
                                               f"batches of {args.batch_size}, N = "
                                               f"{args.train}; biased by a constant offset, "
                                               "compare the two systems, not absolute values",
                                "negative_elbo": "beta = 1 negative ELBO on the held-out shapes: "
                                            "the VAE's objective, not the TCVAE's"}}, args.out)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
