"""Honest evaluation of a trained VAE: the test negative ELBO, the importance-weighted
NLL, bits per dimension, the KL of each latent dimension and the active units.

The training loss says little about a VAE's likelihood: it may weight the KL
(beta, warm-up, free bits) and is only a bound. `iwae_nll` estimates
`-log p(x)` itself (Burda et al., 2016); `latent_statistics` tells which
latent dimensions carry information (posterior-collapse check).

Example:

>>> test = keras_vae.data.load("/path/mnist", "train[7000:]", binarize="static")
>>> keras_vae.evaluation.evaluate(model, test, iwae_k=1000)
{'negative_elbo': 101.2, ..., 'nll': 96.4, 'bits_per_dim_nll': 0.177, 'active_units': 14, ...}
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_vae import data as data_lib
from keras_vae.parts import objectives

# Codes decoded per forward pass when estimating the IWAE bound: the memory of
# `iwae_nll` is set by `chunk * batch`, whatever the number of samples K.
DECODE_BUDGET = 2048


def evaluate_elbo(model, dataset: tf.data.Dataset) -> dict:
    """Negative ELBO (beta = 1) of every example of `dataset`, in nats per example.

    One stochastic z per example from the model's seeded sampler: an unbiased
    estimate of the ELBO, not the training objective (which may weight the KL).

    Returns:
        Dict with `negative_elbo`, `reconstruction_loss`, `kl_loss`, `n_examples`,
        `bits_per_dim`.
    """
    dataset = data_lib.check_dataset(dataset, model.image_shape)
    rec_sum = kl_sum = 0.0
    n = 0
    for batch in dataset:
        x, labels, target = data_lib.unpack_batch(batch, model.num_classes)
        rec, kl = _elbo_terms(model, x, labels, target)
        rec_sum += float(np.sum(rec))
        kl_sum += float(np.sum(kl))
        n += int(x.shape[0])
    dims = int(np.prod(model.image_shape))
    negative_elbo = (rec_sum + kl_sum) / n
    return {
        "negative_elbo": negative_elbo,
        "reconstruction_loss": rec_sum / n,
        "kl_loss": kl_sum / n,
        "n_examples": n,
        "bits_per_dim": negative_elbo / (dims * np.log(2.0)),
    }


iterate_batches = data_lib.iterate_batches  # where the uses of a model have called it


def iwae_nll(model, data, k: int = 1000, chunk: int | None = None, seed: int = 0,
             labels=None, batch_size: int = 100) -> np.ndarray:
    """Importance-weighted estimate of `-log p(x)` for each example, in nats.

    `-log (1/K) sum_k exp(log p(x|z_k) + log p(z_k) - log q(z_k|x))` with
    `z_k ~ q(z|x)` (Burda et al., 2016): an upper bound on the NLL that
    tightens as K grows (K = 1 is the single-sample negative ELBO). The K
    samples are decoded `chunk` at a time and combined with a streaming
    log-sum-exp in float64, so memory depends on `chunk * batch`, not on K.

    Args:
        model: A `keras_vae.VAE`.
        data: A batched dataset of images or `(image, label)` pairs, or an
            image array.
        k: Importance samples per example, >= 1.
        chunk: Samples decoded per pass (default: `DECODE_BUDGET // batch`).
        seed: Seed of the noise; with the same batching the estimate is
            reproducible and does not depend on `chunk`.
        labels: Labels of an image array, for a conditional model.
        batch_size: Batch size used for an image array.

    Returns:
        `(n,)` float64 NLL estimates.

    Raises:
        ValueError: K < 1, chunk < 1, bad images or labels.

    Example:

    >>> nll = iwae_nll(model, test_images, k=1000)
    >>> float(nll.mean())  # nats per example
    """
    k = _check_k(k)
    if chunk is not None and (isinstance(chunk, bool) or int(chunk) != chunk or chunk < 1):
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    out = []
    for index, (x, labels_b, target) in enumerate(iterate_batches(model, data, labels, batch_size)):
        n_b = int(x.shape[0])
        step = chunk or max(1, min(k, DECODE_BUDGET // n_b))
        rng = np.random.default_rng([seed, index])  # one noise stream per batch
        total = np.full(n_b, -np.inf)
        for start in range(0, k, step):
            c = min(step, k - start)
            eps = rng.standard_normal((c, n_b, model.latent_dim), dtype=np.float32)
            lse = _chunk_logsumexp(model, x, labels_b, target, eps)
            total = np.logaddexp(total, np.asarray(lse, dtype=np.float64))
        out.append(math.log(k) - total)
    if not out:
        raise ValueError("No examples to evaluate.")
    return np.concatenate(out)


# Compiled once per process and traced per model (and shape family): repeated
# calls from a notebook do not retrace.
@tf.function(reduce_retracing=True)
def _elbo_terms(model, x, labels, target):
    terms = model.elbo_terms(x, labels, target)
    return terms["reconstruction_loss"], terms["kl_loss"]  # (batch,) each


@tf.function(reduce_retracing=True)
def _chunk_logsumexp(model, x, labels, target, eps):
    terms = model.elbo_terms(x, labels, target, eps=eps)
    log_weights = terms["log_likelihood"] + terms["log_ratio"]  # (chunk, batch)
    return tf.reduce_logsumexp(log_weights, axis=0)  # (batch,)


@tf.function(reduce_retracing=True)
def _encode(model, x, labels):
    return model.encode(x, labels)


def latent_statistics(model, data, labels=None, batch_size: int = 256,
                      threshold: float = 0.01) -> dict:
    """KL of each latent dimension and the number of active units.

    A unit u is active when `Cov_x(E_q[z_u | x]) > threshold` (Burda et al.,
    2016): its posterior mean moves with the input. An inactive unit has
    collapsed to the prior and carries no information.

    Args:
        model: A `keras_vae.VAE`.
        data: A batched dataset or an image array.
        labels: Labels of an image array, for a conditional model.
        batch_size: Batch size used for an image array.
        threshold: Activity above which a unit counts as active.

    Returns:
        Dict with `kl_per_dim` (mean KL of each dimension, nats), `activity`
        (variance over the data of each posterior mean) and `active_units`.
    """
    means, kl_sum, n = [], 0.0, 0
    for x, labels_b, _ in iterate_batches(model, data, labels, batch_size):
        z_mean, z_log_var = (np.asarray(t, np.float64) for t in _encode(model, x, labels_b))
        # KL(N(m, s^2) || N(0, 1)) per dimension, summed over the batch.
        kl_sum = kl_sum + np.sum(0.5 * (z_mean**2 + np.exp(z_log_var) - 1.0 - z_log_var), 0)
        means.append(z_mean)
        n += len(z_mean)
    if not n:
        raise ValueError("No examples to evaluate.")
    activity = np.var(np.concatenate(means), axis=0)  # (latent_dim,)
    return {
        "kl_per_dim": (kl_sum / n).tolist(),
        "activity": activity.tolist(),
        "active_units": int(np.sum(activity > threshold)),
    }


def evaluate(model, dataset: tf.data.Dataset, iwae_k: int | None = None, seed: int = 0,
             chunk: int | None = None) -> dict:
    """The test negative ELBO and, with `iwae_k`, the IWAE NLL and latent statistics.

    Args:
        model: A `keras_vae.VAE`.
        dataset: A batched dataset (a fixed evaluation set: statically binarized).
        iwae_k: Importance samples for the NLL estimate; None skips it.
        seed: Seed of the IWAE noise.
        chunk: Samples decoded per pass in `iwae_nll`.

    Returns:
        `evaluate_elbo`'s dict, plus `nll`, `bits_per_dim_nll`, `iwae_k`,
        `active_units` and `kl_per_dim` when `iwae_k` is given.

    Raises:
        ValueError: `iwae_k` < 1.
    """
    if iwae_k is not None:
        iwae_k = _check_k(iwae_k)
    result = evaluate_elbo(model, dataset)
    if iwae_k is None:
        return result
    nll = float(np.mean(iwae_nll(model, dataset, k=iwae_k, chunk=chunk, seed=seed)))
    stats = latent_statistics(model, dataset)
    dims = int(np.prod(model.image_shape))
    return {
        **result,
        "nll": nll,
        "bits_per_dim_nll": nll / (dims * math.log(2.0)),
        "iwae_k": iwae_k,
        "active_units": stats["active_units"],
        "kl_per_dim": stats["kl_per_dim"],
    }


def _check_k(k) -> int:
    try:
        return objectives.check_iwae_k(k)
    except (TypeError, ValueError):
        raise ValueError(f"IWAE needs K >= 1 importance samples (an integer), got {k!r}") from None
