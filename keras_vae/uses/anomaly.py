"""Anomaly detection with a trained VAE: per-example scores, a calibrated threshold, ROC AUC.

A VAE trained on normal data assigns low likelihood to inputs unlike them.
Three scores, higher meaning more anomalous:

- `negative_elbo`: the negative ELBO, `-log p(x|z) + KL(q(z|x) || p(z))` (nats);
- `iwae_nll`: the importance-weighted estimate of `-log p(x)` (nats), tighter;
- `reconstruction_error`: squared error of the posterior-mean reconstruction.

A threshold is a `quantile` of the scores of held-out *normal* data:
`quantile=0.99` flags about 1% of normal inputs.

Example:

>>> val_scores = keras_vae.uses.anomaly.score(model, val_images)
>>> threshold = keras_vae.uses.anomaly.calibrate_threshold(val_scores, quantile=0.99)
>>> flagged = keras_vae.uses.anomaly.score(model, new_images) > threshold
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from keras_vae import data as data_lib
from keras_vae import evaluation
from keras_vae.parts import objectives
from keras_vae.registry import Registry


def negative_elbo_score(model, data, labels=None, batch_size: int = 100, k: int = 1,
                   seed: int = 0) -> np.ndarray:
    """Negative ELBO of each example, averaged over `k` posterior samples (nats).

    Returns:
        `(n,)` float64.
    """
    k = objectives.check_iwae_k(k)
    out = []
    for index, (x, labels_b, target) in enumerate(
            data_lib.iterate_batches(model, data, labels, batch_size)):
        rng = np.random.default_rng([seed, index])
        eps = rng.standard_normal((k, int(x.shape[0]), model.latent_dim), dtype=np.float32)
        out.append(np.asarray(_negative_elbo(model, x, labels_b, target, eps), np.float64))
    return np.concatenate(out)


def iwae_nll_score(model, data, labels=None, batch_size: int = 100, k: int = 100,
                   seed: int = 0) -> np.ndarray:
    """Importance-weighted NLL estimate of each example with `k` samples (nats).

    Returns:
        `(n,)` float64; see `keras_vae.evaluation.iwae_nll`.
    """
    return evaluation.iwae_nll(model, data, k=k, seed=seed, labels=labels,
                               batch_size=batch_size)


def reconstruction_error_score(model, data, labels=None, batch_size: int = 100, k: int = 1,
                               seed: int = 0) -> np.ndarray:
    """Squared error between each image and its posterior-mean reconstruction.

    Deterministic (`k` and `seed` are ignored): the image means of the decoder
    at `z = E_q[z | x]`, compared pixel by pixel and summed.

    Returns:
        `(n,)` float64.
    """
    del k, seed
    out = []
    for x, labels_b, target in data_lib.iterate_batches(model, data, labels, batch_size):
        target = x if target is None else target
        out.append(np.asarray(_squared_error(model, x, labels_b, target), np.float64))
    return np.concatenate(out)


# Compiled once per process, traced per model: repeated scoring does not retrace.
@tf.function(reduce_retracing=True)
def _negative_elbo(model, x, labels, target, eps):
    # eps is always (k, batch, latent_dim): one rank, so one trace family.
    terms = model.elbo_terms(x, labels, target, eps=eps)
    return terms["reconstruction_loss"] + terms["kl_loss"]  # (batch,), mean over the k samples


@tf.function(reduce_retracing=True)
def _squared_error(model, x, labels, target):
    z_mean, _ = model.encode(x, labels)
    recon = model.decode(z_mean, labels)
    diff = tf.reshape(tf.cast(target, tf.float32) - recon, (tf.shape(recon)[0], -1))
    return tf.reduce_sum(tf.square(diff), axis=-1)  # (batch,)


SCORES = Registry("anomaly score", {
    "negative_elbo": negative_elbo_score,
    "iwae_nll": iwae_nll_score,
    "reconstruction_error": reconstruction_error_score,
})
register = SCORES.register
DEFAULT_K = {"negative_elbo": 1, "iwae_nll": 100, "reconstruction_error": 1}


def get(name: str):
    """Returns the score function registered under `name`.

    Raises:
        ValueError: an unknown name, listing the valid ones.
    """
    return SCORES.get(name)


def score(model, data, method: str = "negative_elbo", labels=None, batch_size: int = 100,
          k: int | None = None, seed: int = 0) -> np.ndarray:
    """Anomaly score of each example (higher is more anomalous).

    Args:
        model: A trained `keras_vae.VAE`.
        data: An image array or a batched dataset (of images or `(image, label)`).
        method: `negative_elbo`, `iwae_nll` or `reconstruction_error`.
        labels: Labels of an image array, for a conditional model.
        batch_size: Batch size for an image array.
        k: Posterior samples (default 1 for `negative_elbo`, 100 for `iwae_nll`).
        seed: Seed of the posterior noise (scores are reproducible).

    Returns:
        `(n,)` float64 scores.

    Raises:
        ValueError: an unknown method, k < 1, bad images or labels.
    """
    fn = get(method)
    return fn(model, data, labels=labels, batch_size=batch_size,
              k=DEFAULT_K[method] if k is None else k, seed=seed)


def calibrate_threshold(scores, quantile: float = 0.99) -> float:
    """The `quantile` of the scores of normal validation data.

    Inputs scoring above it are flagged; on data like the validation set about
    a `1 - quantile` fraction are false alarms.

    Args:
        scores: Scores of held-out normal examples.
        quantile: In (0, 1].

    Raises:
        ValueError: no scores, non-finite scores, or a quantile outside (0, 1].
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.size == 0:
        raise ValueError("Cannot calibrate an anomaly threshold on an empty set of scores: "
                         "give at least one validation example.")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{int(np.sum(~np.isfinite(scores)))} validation scores are NaN or "
                         "infinite; cannot calibrate a threshold.")
    quantile = float(quantile)
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    return float(np.quantile(scores, quantile))


def roc_auc(normal_scores, anomalous_scores) -> float:
    """Area under the ROC curve of scores separating anomalies from normal data.

    The probability that a random anomaly scores higher than a random normal
    example, ties counting one half (the Mann-Whitney U statistic).

    Raises:
        ValueError: either set empty, or non-finite scores.
    """
    neg = np.asarray(normal_scores, dtype=np.float64).reshape(-1)
    pos = np.asarray(anomalous_scores, dtype=np.float64).reshape(-1)
    if neg.size == 0 or pos.size == 0:
        raise ValueError(f"ROC AUC needs normal and anomalous scores; got {neg.size} normal "
                         f"and {pos.size} anomalous.")
    both = np.concatenate([neg, pos])
    if not np.all(np.isfinite(both)):
        raise ValueError("ROC AUC got NaN or infinite scores.")
    # Average ranks (1-based) with ties sharing the mean of their positions.
    order = np.argsort(both, kind="mergesort")
    sorted_scores = both[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg_rank = first + (counts + 1) / 2.0  # per distinct value
    ranks = np.empty_like(both)
    ranks[order] = np.repeat(avg_rank, counts)
    u = ranks[neg.size:].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def held_out_class_example(source: str = "digits", anomaly_classes=(0,), *,
                           latent_dim: int = 8, arch: str = "mlp",
                           arch_options: dict | None = None, epochs: int = 40,
                           batch_size: int = 64, quantile: float = 0.95, k: int = 100,
                           methods=tuple(SCORES), seed: int = 0, verbose: int = 0) -> dict:
    """Worked example: train on some classes, detect a held-out class.

    The normal classes (all but `anomaly_classes`) are split 70/15/15 into
    training, validation (for the threshold) and test; the test set is the
    normal test images plus every image of the held-out classes.

    Args:
        source: A labelled local source (`digits`, an IDX directory, ...).
        anomaly_classes: Classes never seen in training.
        latent_dim, arch, arch_options: The VAE.
        epochs, batch_size: Training.
        quantile: Threshold quantile of the validation scores, in (0, 1].
        k: Posterior samples per score: `negative_elbo` averages k draws, `iwae_nll`
            uses k importance samples.
        methods: Scores to compare.
        seed: Seed of the split, the model and the scores.
        verbose: Keras verbosity of `fit`.

    Returns:
        Dict with `auc` (per method), `threshold`, `detection_rate` and
        `false_alarm_rate` (per method, on the test set), the sizes, and (not
        JSON) the trained `model` and the `indices` of the `train`, `val`,
        `test` (normal) and `anomalies` examples in the source.

    Example:

    >>> result = held_out_class_example("digits", anomaly_classes=[0])
    >>> result["auc"]["negative_elbo"]
    """
    import keras

    from keras_vae import data as data_lib
    from keras_vae.models.vae import VAE

    x, y = data_lib.load_arrays(source)
    if y is None:
        raise ValueError(f"{source!r} has no labels: the example needs classes to hold out.")
    anomaly_classes = sorted({int(c) for c in np.atleast_1d(anomaly_classes)})
    present = set(np.unique(y).tolist())
    if not anomaly_classes or not set(anomaly_classes) <= present:
        raise ValueError(f"anomaly_classes {anomaly_classes} must be non-empty and among the "
                         f"labels of {source!r}: {sorted(present)}")
    is_anomaly = np.isin(y, anomaly_classes)
    if is_anomaly.all():
        raise ValueError("Every class is held out: nothing is left to train on.")
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(~is_anomaly))
    n_train, n_val = int(0.7 * len(normal)), int(0.15 * len(normal))
    train, val, test = np.split(normal, [n_train, n_train + n_val])
    anomalies = np.flatnonzero(is_anomaly)

    keras.utils.set_random_seed(seed)
    model = VAE(image_shape=x.shape[1:], latent_dim=latent_dim, arch=arch,
                arch_options=arch_options, seed=seed)
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(x[train], epochs=epochs, batch_size=batch_size, verbose=verbose)

    result = {"anomaly_classes": anomaly_classes, "n_train": len(train), "n_val": len(val),
              "n_test_normal": len(test), "n_test_anomalous": len(anomalies),
              "auc": {}, "threshold": {}, "detection_rate": {}, "false_alarm_rate": {}}
    for method in methods:
        val_scores = score(model, x[val], method, k=k, seed=seed)
        normal_scores = score(model, x[test], method, k=k, seed=seed)
        anomalous_scores = score(model, x[anomalies], method, k=k, seed=seed)
        threshold = calibrate_threshold(val_scores, quantile)
        result["auc"][method] = roc_auc(normal_scores, anomalous_scores)
        result["threshold"][method] = threshold
        result["detection_rate"][method] = float(np.mean(anomalous_scores > threshold))
        result["false_alarm_rate"][method] = float(np.mean(normal_scores > threshold))
    result["model"] = model
    result["indices"] = {"train": train, "val": val, "test": test, "anomalies": anomalies}
    return result


def summarize(scores, threshold: float | None = None) -> dict:
    """JSON-able summary of scores (and of the examples above `threshold`)."""
    scores = np.asarray(scores, dtype=np.float64)
    out = {
        "n_examples": int(scores.size),
        "mean": float(np.mean(scores)),
        "std": float(np.std(scores)),
        "min": float(np.min(scores)),
        "median": float(np.median(scores)),
        "max": float(np.max(scores)),
    }
    if threshold is not None and math.isfinite(threshold):
        flagged = scores > threshold
        out.update({"threshold": float(threshold), "n_flagged": int(flagged.sum()),
                    "flagged_fraction": float(flagged.mean())})
    return out
