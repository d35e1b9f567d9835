"""Priors and samplers on the shared digits: held-out IWAE NLL and negative ELBO per prior.

For each seed, the same architecture is trained for the same epochs on the
7,000 training digits (`train[:7000]`, binarized afresh each epoch) with

- `normal`: the standard normal prior;
- `mixture`: a learned mixture of `--components` Gaussians (`MixturePrior`);
- `vamp`: VampPrior with `--pseudo-inputs` pseudo-inputs (`VampPrior`),
  started from random training digits;
- `normal+gmm`: the `normal` model itself with a diagonal Gaussian mixture
  fitted to its training codes as its sampling prior (`priors.fit_mixture`):
  the objective, and so the NLL and ELBO, are the `normal` model's; only
  what `sample()` draws changes.

Each model is scored on the 1,000 held-out digits (`train[7000:]`, binarized
once with seed 0): the negative ELBO (one z per digit; Monte Carlo KL for the
learned priors) and the IWAE NLL with K importance samples (K = 1000 in the
full run, 100 with `--quick`), in nats. For the samplers it also reports the
mean log-density of the *held-out* codes (posterior means) under the sampling
prior: how well the sampler covers where the aggregate posterior lies. That is
not a sample-quality figure: that is the Frechet distance and precision/recall
of 2,000 samples against 2,000 training digits (grey), in the features of a
small classifier trained on the training digits (`keras_vae.evaluation.quality`; not
Inception FID).

Usage (from the repository root):

    python benchmarks/bench_priors.py                  # full: 3 seeds, K = 1000
    python benchmarks/bench_priors.py --quick          # 1 seed, few epochs, K = 100
    python benchmarks/bench_priors.py --tiny           # seconds (sklearn digits; the test)
    python benchmarks/bench_priors.py --seeds 1 --systems vamp   # one prior, one seed
    python benchmarks/bench_priors.py --warmup-epochs 20         # KL warm-up, every system

Writes `benchmarks/results/priors.json` (or `--out`).
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

SYSTEMS = ("normal", "mixture", "vamp", "normal+gmm")


def binarized_training(data):
    """The training digits binarized once (seed 0), in batches of 256: what the fitted
    sampler is fitted to and the VampPrior's pseudo-inputs start from."""
    import keras_vae

    return keras_vae.data.load(data.source, data.train_split, batch_size=256,
                               binarize="static", shuffle=False, seed=0)


def build(system: str, args, image_shape, seed: int, train_static):
    import keras_vae

    prior, options = {"normal": ("standard_normal", {}),
                      "normal+gmm": ("standard_normal", {}),
                      "mixture": ("mixture", {"components": args.components, "seed": seed}),
                      "vamp": ("vamp", {"components": args.pseudo_inputs, "seed": seed})}[system]
    # KL warm-up (Tomczak & Welling, 2018), the same for every system: the KL weight
    # rises linearly from 0 to 1 over the first `--warmup-epochs` epochs.
    steps = args.warmup_epochs * args.steps_per_epoch
    schedule = keras_vae.parts.objectives.get("linear", steps=steps) if steps else None
    vae = keras_vae.VAE(image_shape=image_shape, latent_dim=args.latent_dim, arch="mlp",
                        arch_options={"hidden_units": args.hidden_units}, prior=prior,
                        prior_options=options, seed=seed, kl_schedule=schedule)
    if system == "vamp":  # start the pseudo-inputs at random training digits
        x = np.concatenate([b[0].numpy() for b in train_static])
        pick = np.random.default_rng(seed).choice(len(x), args.pseudo_inputs, replace=False)
        vae.prior.set_pseudo_inputs(x[pick])
    vae.compile(keras_vae_optimizer(args.learning_rate))
    return vae


def keras_vae_optimizer(learning_rate):
    import keras

    return keras.optimizers.Adam(learning_rate)


def score(model, data, args, seed: int) -> dict:
    import keras_vae

    elbo = keras_vae.evaluation.evaluate_elbo(model, data.test)
    nll = keras_vae.evaluation.iwae_nll(model, data.test, k=args.iwae_k, seed=seed)
    return {"negative_elbo": elbo["negative_elbo"], "kl": elbo["kl_loss"],
            "nll": float(np.mean(nll)), **data.sample_quality(model, seed)}


def held_out_code_density(model, test_x) -> float:
    """Mean log-density of the held-out posterior means under the model's sampling prior."""
    import keras_vae

    z = keras_vae.parts.priors.aggregate_latents(model, test_x)
    prior = model.prior if model.sampling_prior is None else model.sampling_prior
    return float(np.mean(prior.log_prob(z)))


def run_seed(seed: int, args, data, test_x, train_static) -> list[dict]:
    """Trains and scores every system of `args.systems` on one seed.

    Args:
        data: The run's `digits.Digits`.
        test_x: The held-out digits as one array (`digits.heldout`).
        train_static: The training digits binarized once (`binarized_training`).
    """
    import keras_vae

    rows = []
    trained = {}
    args.steps_per_epoch = -(-data.n_train // args.batch_size)
    for system in args.systems:
        start = time.perf_counter()
        if system == "normal+gmm":
            model = trained["normal"]  # --systems keeps normal+gmm with normal
            model.sampling_prior = keras_vae.parts.priors.fit_mixture(
                model, train_static, components=args.gmm_components, seed=seed)
            train_s = time.perf_counter() - start
        else:
            keras_vae.training.set_seed(seed)
            train = keras_vae.data.load(data.source, data.train_split,
                                        batch_size=args.batch_size, binarize="dynamic",
                                        seed=seed)
            model = build(system, args, tuple(test_x.shape[1:]), seed, train_static)
            model.fit(train, epochs=args.epochs, verbose=0)
            train_s = time.perf_counter() - start
            trained[system] = model
        if system == "normal+gmm":
            # The normal model itself: its NLL and ELBO (the objective's figures) are
            # the normal row's; only the sampler, and so the sample figures, differ.
            normal_row = next(r for r in rows if r["system"] == "normal")
            figures = {**{k: normal_row[k] for k in ("negative_elbo", "kl", "nll")},
                       **data.sample_quality(model, seed)}
        else:
            figures = score(model, data, args, seed)
        row = {"system": system, "seed": seed, "train_s": round(train_s, 1), **figures,
               "held_out_code_log_density": held_out_code_density(model, test_x)}
        if system == "normal+gmm":
            model.sampling_prior = None  # leave the normal model as trained
        rows.append(row)
        print(f"  seed {seed} {system:11s} nll {row['nll']:.2f}  negative_elbo {row['negative_elbo']:.2f}"
              f"  code log-density {row['held_out_code_log_density']:.2f}  "
              f"({row['train_s']:.0f} s)", flush=True)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    out = machine.summarize(rows, [s for s in SYSTEMS if any(r["system"] == s for r in rows)],
                            ("nll", "negative_elbo", "held_out_code_log_density", "frechet",
                             "precision", "recall"))
    base = {r["seed"]: r["nll"] for r in rows if r["system"] == "normal"}
    for summary in out:  # NLL gain over the standard normal, paired by seed
        gains = [base[r["seed"]] - r["nll"] for r in rows
                 if r["system"] == summary["system"] and r["seed"] in base]
        summary["nll_gain_vs_normal_mean"] = statistics.fmean(gains) if gains else None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="1 seed, 10 epochs, K = 100 (minutes on 2 CPU cores)")
    p.add_argument("--tiny", action="store_true", help="seconds: sklearn digits, 1 epoch")
    p.add_argument("--data", default=str(digits.MNIST_8K), help="the shared MNIST digits")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--iwae-k", type=int, default=None)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--hidden-units", type=int, nargs="+", default=[300, 300])
    p.add_argument("--components", type=int, default=50, help="mixture prior components")
    p.add_argument("--pseudo-inputs", type=int, default=100, help="VampPrior components")
    p.add_argument("--gmm-components", type=int, default=10, help="fitted sampler components")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS,
                   help="which systems to run (normal+gmm needs normal)")
    p.add_argument("--warmup-epochs", type=int, default=0,
                   help="KL warm-up for every system: the KL weight rises linearly from 0 "
                        "to 1 over this many epochs (0: none)")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/priors.json)")
    args = p.parse_args(argv)
    mode = "tiny" if args.tiny else "quick" if args.quick else "full"
    defaults = {"full": ([0, 1, 2], 100, 1000), "quick": ([0], 10, 100), "tiny": ([0], 1, 10)}
    seeds, epochs, k = defaults[mode]
    args.seeds = args.seeds or seeds
    args.epochs = args.epochs or epochs
    args.iwae_k = args.iwae_k or k
    if args.tiny:
        args.components, args.pseudo_inputs, args.gmm_components = 5, 10, 3
        args.hidden_units, args.latent_dim = [32], 4
    if "normal+gmm" in args.systems and "normal" not in args.systems:
        p.error("--systems normal+gmm needs normal (it is the normal model's sampler)")
    args.systems = [s for s in SYSTEMS if s in args.systems]
    if args.warmup_epochs < 0 or args.warmup_epochs > args.epochs:
        p.error(f"--warmup-epochs must be in [0, epochs], got {args.warmup_epochs}")
    if problem := digits.missing(args):
        print(f"bench_priors: error: {problem}", file=sys.stderr)
        return 2
    run = machine.Run("priors", args)
    machine.quiet_retracing()
    data = digits.load(args)
    test_x, train_static = digits.heldout(data.source), binarized_training(data)
    print(f"bench_priors ({mode}): {args.epochs} epochs, K = {args.iwae_k}, seeds {args.seeds}")
    rows = [row for seed in args.seeds
            for row in run_seed(seed, args, data, test_x, train_static)]
    summary = summarize(rows)
    print(machine.table(summary, ["system", "n_seeds", "nll_mean", "nll_std", "negative_elbo_mean",
                                  "nll_gain_vs_normal_mean", "held_out_code_log_density_mean",
                                  "frechet_mean", "precision_mean", "recall_mean"],
                        floatfmt="{:.2f}"))
    path = run.write({"mode": mode, "rows": rows, "summary": summary,
                      "notes": {"frechet": digits.frechet_note(digits.SAMPLE_N),
                                "normal+gmm": "the normal model with a fitted sampling prior: "
                                              "same NLL and ELBO by construction"}}, args.out)
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
