"""The anomaly threshold of an export: a quantile of the scorer's scores on normal data.

The exported `scorer` graph returns each image's negative ELBO in nats, and
with `eps = 0` it scores the reconstruction at the posterior mean, so the
score is deterministic. `calibrate` computes that same score in Keras (the
float32 model the exporter traces, `model.negative_elbo(x, labels, eps=0)`)
on held-out *normal* images and keeps their `quantile`: the service
(`serve.py`) flags an input as anomalous when its score is above it, which
on data like the calibration set happens for about `1 - quantile` of inputs.

The result is stored in the export's manifest as

    "anomaly": {"score": "negative_elbo", "eps": "zeros", "threshold": 431.2,
                "quantile": 0.99, "calibration_examples": 1000,
                "calibration_source": "mnist-8k train[7000:]"}

Example:

>>> anomaly = calibration.calibrate(vae, x_val, quantile=0.99, source="mnist val")
>>> keras_vae.export.export(vae, "runs/demo/export", anomaly=anomaly)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_vae import data as data_lib
from keras_vae.export import graphs as graphs_lib
from keras_vae.models.family import CONTINUOUS, family_of
from keras_vae.uses import anomaly as anomaly_lib

SCORE = "negative_elbo"
EPS = "zeros"


def scores(model, images, labels=None, batch_size: int = 256) -> np.ndarray:
    """Per-example negative ELBO at the posterior mean (eps = 0), as the ONNX scorer gives it.

    Args:
        model: A `keras_vae.VAE` (a mixed-precision one is scored in float32,
            as it is exported).
        images: Images in the model's range, `(n, *image_shape)`, or a batched
            dataset of images or `(image, label)` pairs.
        labels: One label per image for a conditional model (arrays only).
        batch_size: Batch size for an image array.

    Returns:
        `(n,)` float32 scores in nats.

    Raises:
        ValueError: a model of discrete codes (it has no negative ELBO), bad
            images (range, shape, NaN) or labels.
    """
    family_of(model).require(CONTINUOUS, "Anomaly calibration", f"this {type(model).__name__}")
    model = graphs_lib.float32_model(model)
    out = []
    for x, labels_b, _ in data_lib.iterate_batches(model, images, labels, batch_size):
        x = tf.convert_to_tensor(x, tf.float32)
        eps = tf.zeros((tf.shape(x)[0], model.latent_dim), tf.float32)  # (batch, latent_dim)
        out.append(_negative_elbo(model, x, labels_b, eps).numpy())
    return np.concatenate(out)


# Compiled once per process, traced per model: the exporter's scorer is a tf.function too.
@tf.function(reduce_retracing=True)
def _negative_elbo(model, x, labels, eps):
    return model.negative_elbo(x, labels, eps=eps)  # (batch,)


def calibrate(model, images, quantile: float = 0.99, labels=None, batch_size: int = 256, *,
              source: str | None = None) -> dict:
    """The `manifest["anomaly"]` entry: the `quantile` of the scores of normal images.

    Args:
        model: The exported `keras_vae.VAE`.
        images: Held-out normal images (array or batched dataset, see `scores`).
        quantile: In (0, 1]; about `1 - quantile` of normal inputs are flagged.
        labels: Labels of an image array, for a conditional model.
        batch_size: Batch size for an image array.
        source: What the images are (data source and split), for the manifest.

    Returns:
        `{"score": "negative_elbo", "eps": "zeros", "threshold": float,
        "quantile": float, "calibration_examples": int,
        "calibration_source": str}`.

    Raises:
        ValueError: a quantile outside (0, 1], no images, bad images or labels.

    Example:

    >>> entry = calibrate(vae, x_val, quantile=0.99, source="digits test")
    >>> entry["threshold"]
    58.7
    """
    quantile = float(quantile)
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    values = scores(model, images, labels, batch_size)
    threshold = anomaly_lib.calibrate_threshold(values, quantile)
    return {"score": SCORE, "eps": EPS, "threshold": threshold, "quantile": quantile,
            "calibration_examples": int(values.size),
            "calibration_source": str(source) if source else "in-memory images"}


def check(anomaly: dict) -> dict:
    """Checks an `anomaly` entry (from `calibrate`) before an export stores it; returns a copy.

    Raises:
        ValueError: not a dict, no finite threshold, or a quantile outside (0, 1].
    """
    if not isinstance(anomaly, dict):
        raise ValueError(f"anomaly must be the dict calibrate() returns, got {type(anomaly).__name__}")
    threshold = anomaly.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not np.isfinite(threshold):
        raise ValueError(f"anomaly entry has no finite threshold: {anomaly!r}")
    quantile = anomaly.get("quantile")
    if quantile is not None and not (isinstance(quantile, (int, float)) and 0.0 < quantile <= 1.0):
        raise ValueError(f"anomaly entry's quantile must be in (0, 1], got {quantile!r}")
    return dict(anomaly)
