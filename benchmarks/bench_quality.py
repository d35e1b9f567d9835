"""Quality per second: test negative ELBO and IWAE NLL after a fixed wall-clock budget.

Each system trains from scratch for `--budget-s` seconds of wall-clock time
(tracing and compilation included: a user pays them too) on the 7,000
training digits (`train[:7000]`), then is scored on the 1,000 held-out digits
(`train[7000:]`, binarized once with seed 0 by `keras_vae.data.load(...,
binarize="static")`):

- negative ELBO in nats: one reparameterized z per digit, the same numpy
  noise for every system, the closed-form KL;
- IWAE NLL in nats: `-log mean_k p(x, z_k) / q(z_k | x)` with K = `--iwae-k`
  (1000) samples, on the first `--iwae-examples` held-out digits.

Every system is scored by the same numpy code from its own encoder and
decoder: ours from logits (`x*l - softplus(l)`), the references from their
sigmoid probabilities with the clipping their own loss uses (Keras' BCE clips
to [1e-7, 1 - 1e-7]; PyTorch's `binary_cross_entropy` clamps logs at -100).
Training data follow each system's own recipe: ours binarizes dynamically,
the keras.io and PyTorch examples train on grayscale pixels. Seeds run in the
outer loop and systems interleaved inside it; the table gives mean, standard
deviation, min and max over seeds.

Usage (from the repository root):

    python benchmarks/bench_quality.py --budget-s 300 --seeds 0 1 2
    python benchmarks/bench_quality.py --tiny        # seconds-long run (the test's setting)
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

LOG_2PI = float(np.log(2.0 * np.pi))
# How each decoder output kind is turned into log p(x | z); see the module docstring.
PROB_CLIP = {"keras": ("clip", 1e-7), "torch": ("log_floor", -100.0)}


def bernoulli_log_prob(x, out, kind: str, clip=("clip", 1e-7)) -> np.ndarray:
    """log p(x | z) summed over pixels, `(n,)`, from logits or probabilities.

    Args:
        x: Binary images `(n, d)`.
        out: Decoder outputs `(n, d)`: logits, or probabilities.
        kind: `"logits"` or `"probs"`.
        clip: For probabilities, `("clip", eps)` clips p to [eps, 1 - eps]
            (Keras' BCE); `("log_floor", v)` floors the logs at v (PyTorch's BCE).
    """
    out = out.astype(np.float64)
    if kind == "logits":
        return np.sum(x * out - np.logaddexp(0.0, out), axis=-1)
    mode, value = clip
    if mode == "clip":
        p = np.clip(out, value, 1.0 - value)
        log_p, log_1mp = np.log(p), np.log1p(-p)
    elif mode == "log_floor":
        with np.errstate(divide="ignore"):
            log_p = np.maximum(np.log(out), value)
            log_1mp = np.maximum(np.log1p(-out), value)
    else:
        raise ValueError(f"Unknown clip mode {mode!r}; valid: ['clip', 'log_floor']")
    return np.sum(x * log_p + (1.0 - x) * log_1mp, axis=-1)


def _gaussian_log_prob(z, mean, log_var):
    return np.sum(-0.5 * ((z - mean) ** 2 * np.exp(-log_var) + log_var + LOG_2PI), axis=-1)


def negative_elbo(x, mean, log_var, decode, kind, clip=("clip", 1e-7), seed=0,
                  batch_size=500) -> np.ndarray:
    """Per-example negative ELBO `(n,)`: one z per example, closed-form KL.

    Args:
        x: Binary images `(n, d)` (flattened).
        mean, log_var: Posterior parameters `(n, latent_dim)`.
        decode: `z -> decoder outputs`, reshaped here to `(n, d)`.
    """
    mean, log_var = mean.astype(np.float64), log_var.astype(np.float64)
    eps = np.random.default_rng(seed).standard_normal(mean.shape)
    z = (mean + np.exp(0.5 * log_var) * eps).astype(np.float32)
    rec = np.concatenate([
        bernoulli_log_prob(x[i:i + batch_size],
                           decode(z[i:i + batch_size]).reshape(len(z[i:i + batch_size]), -1),
                           kind, clip)
        for i in range(0, len(x), batch_size)])
    kl = 0.5 * np.sum(mean**2 + np.exp(log_var) - 1.0 - log_var, axis=-1)
    return -rec + kl


def iwae_nll(x, mean, log_var, decode, kind, k=1000, clip=("clip", 1e-7), seed=0,
             max_batch=2000) -> np.ndarray:
    """Per-example IWAE bound on -log p(x) with `k` importance samples, `(n,)`.

    `-log (1/k) sum_k p(x | z_k) p(z_k) / q(z_k | x)`, z_k ~ q(z | x), the
    log-mean-exp taken in float64.
    """
    rng = np.random.default_rng(seed)
    mean, log_var = mean.astype(np.float64), log_var.astype(np.float64)
    per_chunk = max(1, max_batch // k)
    out = []
    for i in range(0, len(x), per_chunk):
        xb, mb, lb = x[i:i + per_chunk], mean[i:i + per_chunk], log_var[i:i + per_chunk]
        eps = rng.standard_normal((len(xb), k, mb.shape[-1]))  # (b, k, latent)
        z = mb[:, None] + np.exp(0.5 * lb)[:, None] * eps
        flat = z.reshape(-1, z.shape[-1]).astype(np.float32)
        dec = decode(flat).reshape(len(flat), -1)  # (b * k, d)
        log_px_z = bernoulli_log_prob(np.repeat(xb, k, axis=0), dec, kind, clip)
        log_w = (log_px_z.reshape(len(xb), k)
                 + np.sum(-0.5 * (z**2 + LOG_2PI), axis=-1)
                 - _gaussian_log_prob(z, mb[:, None], lb[:, None]))
        top = log_w.max(axis=1)
        out.append(-(top + np.log(np.mean(np.exp(log_w - top[:, None]), axis=1))))
    return np.concatenate(out)


def score(system, x_test, iwae_k, iwae_examples, seed=0) -> dict:
    kind, decode = system.decoder()
    clip = PROB_CLIP[system.framework]
    flat = x_test.reshape(len(x_test), -1).astype(np.float64)
    start = time.perf_counter()
    mean, log_var = system.encode(x_test)
    nelbo = negative_elbo(flat, mean, log_var, decode, kind, clip, seed=seed)
    m = iwae_examples
    nll = iwae_nll(flat[:m], mean[:m], log_var[:m], decode, kind, iwae_k, clip, seed=seed)
    return {"negative_elbo": float(np.mean(nelbo)), "negative_elbo_same_subset": float(np.mean(nelbo[:m])),
            "iwae_nll": float(np.mean(nll)), "eval_s": time.perf_counter() - start}


def _spread(values):
    return {"mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def paired_differences(runs: list[dict]) -> list[dict]:
    """Ours minus its reference, seed by seed (negative: ours is better).

    The two ran one after the other under about the same machine load, so the
    paired difference is steadier than either system's spread over seeds.
    """
    from benchmarks.systems import BASELINES

    by_key = {(r["system"], r["seed"]): r for r in runs}
    out = []
    for name in dict.fromkeys(r["system"] for r in runs):
        for base in BASELINES.get(name, []):
            pairs = [(r, by_key[(base, r["seed"])]) for r in runs
                     if r["system"] == name and (base, r["seed"]) in by_key]
            if not pairs:
                continue
            row = {"system": name, "baseline": base, "n_seeds": len(pairs)}
            for key in ("negative_elbo", "iwae_nll"):
                diffs = [a[key] - b[key] for a, b in pairs]
                row[f"{key}_diff_mean"] = statistics.mean(diffs)
                row[f"{key}_diff_min"], row[f"{key}_diff_max"] = min(diffs), max(diffs)
            out.append(row)
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None,
                        help="data source (default: the shared MNIST digits, else 'digits')")
    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="wall-clock training budget per system and seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--iwae-k", type=int, default=1000)
    parser.add_argument("--iwae-examples", type=int, default=1000,
                        help="held-out digits scored by IWAE (the ELBO uses all of them)")
    parser.add_argument("--systems", nargs="*",
                        default=["ours-conv", "kerasio-conv", "ours-mlp", "torch-mlp"])
    parser.add_argument("--tiny", action="store_true", help="seconds-long run (tests)")
    parser.add_argument("--out", default=None, help="JSON path (default results/quality.json)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.data = args.data or "digits"
        args.budget_s, args.seeds, args.iwae_k, args.iwae_examples = 1.0, [0, 1], 10, 20
        if "--systems" not in (argv if argv is not None else sys.argv):
            args.systems = ["kerasio-conv", "ours-mlp", "torch-mlp"]
    run = machine.Run("quality", args)

    from benchmarks import systems as systems_lib

    source = digits.mnist_source(args.data)
    x_test = digits.heldout(source)
    runs = []
    for seed in args.seeds:
        for name, system in systems_lib.standard(source, args.batch_size, seed,
                                                 include=args.systems).items():
            start = time.perf_counter()
            images = system.fit_for(args.budget_s)
            train_s = time.perf_counter() - start
            result = {"system": name, "seed": seed, "train_s": train_s, "images": images,
                      "epochs": images / system.n,
                      **score(system, x_test, args.iwae_k, args.iwae_examples, seed)}
            runs.append(result)
            print(f"seed {seed} {name}: {result['epochs']:.1f} epochs in {train_s:.0f} s, "
                  f"-ELBO {result['negative_elbo']:.2f}, IWAE NLL {result['iwae_nll']:.2f}",
                  flush=True)
    rows = []
    for name in dict.fromkeys(r["system"] for r in runs):
        mine = [r for r in runs if r["system"] == name]
        row = {"system": name, "n_seeds": len(mine)}
        for key in ("negative_elbo", "iwae_nll", "epochs"):
            for stat, value in _spread([r[key] for r in mine]).items():
                row[f"{key}_{stat}"] = value
        rows.append(row)
    print(machine.table(rows, ["system", "n_seeds", "negative_elbo_mean", "negative_elbo_std",
                               "negative_elbo_min", "negative_elbo_max", "iwae_nll_mean", "iwae_nll_std",
                               "iwae_nll_min", "iwae_nll_max", "epochs_mean"]))
    paired = paired_differences(runs)
    if paired:
        print(machine.table(paired, ["system", "baseline", "n_seeds", "negative_elbo_diff_mean",
                                     "negative_elbo_diff_max", "iwae_nll_diff_mean",
                                     "iwae_nll_diff_max"]))
    payload = {"data": source, "n_test": len(x_test), "rows": rows, "paired": paired,
               "runs": runs}
    path = run.write(payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()
