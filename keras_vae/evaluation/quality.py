"""Sample quality in the features of a small classifier: Frechet distance, precision, recall.

Inception-v3 FID does not apply here: its weights cannot be downloaded and
8x8 or 28x28 digits are nothing like the 299x299 photographs it was trained
on. The features are instead the penultimate layer of `FeatureNet`, a small
convolutional classifier trained once on the dataset itself and cached on
disk. Every result carries the network's `description` (architecture,
training-set size, held-out accuracy, cache key), so a number is never
mistaken for, or compared with, a published Inception FID.

* `frechet_distance`: the Frechet (2-Wasserstein) distance between Gaussians
  fitted to real and generated features (Heusel et al. 2017), computed as
  pytorch-fid does.
* `precision_recall`: improved precision and recall (Kynkaanniemi et al.
  2019): the share of generated samples inside the real k-NN manifold, and of
  real samples inside the generated one.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from keras_vae import data as data_lib
from keras_vae import saving
from keras_vae.version import __version__

_HOLDOUT = 0.1  # share of the classifier's examples kept back to report its accuracy
_BLOCK_BYTES = 64 << 20  # largest float64 distance block of precision_recall


@keras.saving.register_keras_serializable(package="keras_vae")
class FeatureNet(keras.Model):
    """A small convolutional classifier whose activations at three depths are image features.

    Architecture: `Conv2D(f, 3, strides=2, relu)` for each `f` in `filters`,
    `Flatten`, `Dense(units, relu)`, and one linear softmax head per entry
    of `classes` (several heads for several factors, e.g. the shapes
    dataset's shape, scale and position). Build and train one with
    `feature_extractor`.

    The features concatenate one block per depth: the spatial mean of each
    convolution's activations (stroke and edge statistics: they see blur and
    noise) and the dense layer (what the classifier knows: it sees wrong or
    missing classes). Each block is divided by its `feature_scales` entry,
    the square root of the block's total variance on the training images, so
    every depth weighs the same in a distance. The penultimate layer alone
    misses blur: a classifier is trained to ignore it (on MNIST, a blurred
    test set kept 0.97 precision with those features; see docs/metrics.md).

    Args:
        image_shape: `(height, width, channels)` of the images.
        classes: Number of classes of each head (an int for one head).
        filters: Filters of the strided convolutions.
        units: Width of the dense layer.
        seed: Seed of the weight initializers.
        feature_scales: One divisor per feature block (`len(filters) + 1`);
            None for ones (`feature_extractor` sets them after training).
        provenance: JSON-able record of how the weights were trained (set by
            `feature_extractor`; part of `description`).

    Example:

    >>> net = FeatureNet((8, 8, 1), classes=10)
    >>> net.features(np.zeros((2, 8, 8, 1), "float32")).shape
    (2, 224)
    """

    def __init__(self, image_shape, classes, filters=(32, 64), units: int = 128, seed: int = 0,
                 feature_scales=None, provenance: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(s) for s in image_shape)
        if len(self.image_shape) != 3:
            raise ValueError(f"image_shape must be (height, width, channels), got {image_shape}")
        classes = [classes] if isinstance(classes, (int, np.integer)) else list(classes)
        if not classes or any(int(c) < 2 for c in classes):
            raise ValueError(f"Every head needs at least 2 classes, got {classes}")
        self.classes = [int(c) for c in classes]
        self.filters = [int(f) for f in filters]
        if not self.filters:
            raise ValueError("filters must name at least one convolution.")
        self.units = int(units)
        self.seed = int(seed)
        blocks = len(self.filters) + 1
        scales = [1.0] * blocks if feature_scales is None else [float(v) for v in feature_scales]
        if len(scales) != blocks or not all(np.isfinite(v) and v > 0 for v in scales):
            raise ValueError(f"feature_scales must be {blocks} positive numbers, got "
                             f"{feature_scales}")
        self.feature_scales = scales
        self.provenance = dict(provenance or {})

        def init(i):
            return keras.initializers.GlorotUniform(seed=self.seed * 1000 + i)

        self.convs = [layers.Conv2D(f, 3, strides=2, padding="same", activation="relu",
                                    kernel_initializer=init(i), name=f"conv{i}")
                      for i, f in enumerate(self.filters)]
        self.flatten = layers.Flatten(name="flatten")
        self.penultimate = layers.Dense(self.units, activation="relu",
                                        kernel_initializer=init(len(self.filters)),
                                        name="dense")
        self.heads = [layers.Dense(c, kernel_initializer=init(len(self.filters) + 1 + j),
                                   name=f"head{j}") for j, c in enumerate(self.classes)]
        self.build((None, *self.image_shape))

    @property
    def feature_dim(self) -> int:
        """Width of a feature vector: `sum(filters) + units`."""
        return sum(self.filters) + self.units

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
        self.flatten.build(shape)
        shape = self.flatten.compute_output_shape(shape)
        self.penultimate.build(shape)
        for head in self.heads:
            head.build((None, self.units))
        self.built = True

    def blocks(self, x):
        """Unscaled feature blocks of a batch: per conv `(batch, f)` spatial means, then dense."""
        out = []
        h = x
        for conv in self.convs:
            h = conv(h)  # (batch, h', w', f)
            out.append(ops.mean(h, axis=(1, 2)))
        out.append(self.penultimate(self.flatten(h)))  # (batch, units)
        return out

    def call(self, x):
        h = self.penultimate(self.flatten(self._trunk(x)))
        logits = [head(h) for head in self.heads]
        return logits[0] if len(logits) == 1 else tuple(logits)

    def features(self, images, batch_size: int = 512) -> np.ndarray:
        """Feature vectors of images.

        Args:
            images: `(n, *image_shape)` images in [0, 1] (uint8 is rescaled).
            batch_size: Images per forward pass.

        Returns:
            `(n, feature_dim)` float64: the scaled blocks, concatenated.

        Raises:
            ValueError: images of another shape or outside [0, 1].
        """
        x = data_lib.check_images(images, self.image_shape)
        out = []
        for s in range(0, len(x), batch_size):
            parts = self.blocks(ops.convert_to_tensor(x[s:s + batch_size]))
            out.append(np.concatenate([ops.convert_to_numpy(p).astype(np.float64) / scale
                                       for p, scale in zip(parts, self.feature_scales)], axis=1))
        return np.concatenate(out, axis=0)

    @property
    def description(self) -> dict:
        """What the features are, for the metrics' JSON."""
        convs = ", ".join(f"conv3x3/2({f}, relu)" for f in self.filters)
        blocks = " + ".join([f"mean(conv{i}) ({f})" for i, f in enumerate(self.filters)]
                            + [f"dense ({self.units})"])
        return {
            "network": "keras_vae.evaluation.quality.FeatureNet",
            "note": "Frechet distance in the features of a small classifier trained on this "
                    "dataset; not Inception FID, and not comparable with published FIDs.",
            "architecture": f"{convs}, dense({self.units}, relu), heads {self.classes}",
            "features": f"{blocks}, each block divided by the square root of its total "
                        "variance on the training images",
            "feature_dim": self.feature_dim,
            "image_shape": list(self.image_shape),
            **_plain(self.provenance),
        }

    def get_config(self):
        return {
            "keras_vae": {"version": __version__},
            **super().get_config(),
            "image_shape": list(self.image_shape),
            "classes": list(self.classes),
            "filters": list(self.filters),
            "units": self.units,
            "seed": self.seed,
            "feature_scales": [float(v) for v in self.feature_scales],
            "provenance": _plain(self.provenance),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        saving.check_version(config.pop("keras_vae", {}).get("version"))
        return cls(**config)

    def _trunk(self, x):
        for conv in self.convs:
            x = conv(x)
        return x


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/keras_vae/features`, by default `~/.cache/keras_vae/features`."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "keras_vae" / "features"


def feature_extractor(images, labels, *, cache_dir=None, key: str | None = None,
                      epochs: int = 20, seed: int = 0, filters=(32, 64), units: int = 128,
                      batch_size: int = 64, verbose: int = 0) -> FeatureNet:
    """The feature network of a dataset: trained once, then loaded from the cache.

    The network (`FeatureNet`) learns to predict `labels` from `images`; 10%
    of the examples (a seeded draw) are held back to report its accuracy.
    Training is deterministic for a seed (seeded initializers, numpy-shuffled
    epochs). The trained network is saved atomically to
    `cache_dir/<key>.keras`; a later call with the same data and settings
    loads it. A cached file that cannot be loaded, or was trained on other
    data, is retrained and replaced.

    Args:
        images: `(n, h, w, c)` training images in [0, 1] (uint8 is rescaled).
        labels: `(n,)` integer classes, or `(n, k)` integer factors (one
            head per column, e.g. the shapes dataset's factors).
        cache_dir: Folder of cached networks (default `default_cache_dir()`).
        key: File name of the cache entry (default: the SHA-256 of the
            images, labels and settings, in hex).
        epochs: Training epochs.
        seed: Seed of the initializers, the split and the shuffling.
        filters: Filters of the strided convolutions.
        units: Width of the dense layer.
        batch_size: Training batch size.
        verbose: Keras `fit` verbosity.

    Returns:
        A trained `FeatureNet`: `features(images)` gives `(n, feature_dim)` float64
        features and `description` says what they are.

    Raises:
        ValueError: bad images or labels (shape, range, fewer than 2 classes).

    Example:

    >>> x, y = keras_vae.data.load_arrays("digits")
    >>> net = feature_extractor(x, y)
    >>> net.description["test_accuracy"] > 0.9
    True
    """
    x = data_lib.check_images(images)
    if x.ndim == 3:  # (n, h, w): one channel
        x = x[..., None]
    if x.ndim != 4:
        raise ValueError(f"images must be (n, height, width, channels), got shape {x.shape}")
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    y = _check_labels(labels, len(x))
    settings = {"filters": [int(f) for f in filters], "units": int(units), "epochs": int(epochs),
                "seed": int(seed), "batch_size": int(batch_size), "holdout": _HOLDOUT}
    digest = _digest(x, y, settings)
    key = digest if key is None else str(key)
    if not key or os.sep in key or (os.altsep and os.altsep in key) or key.startswith("."):
        raise ValueError(f"key must be a plain file name, got {key!r}")
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{key}.keras"
    net = _load_cached(path, digest)
    if net is not None:
        return net
    net = _train(x, y, settings, verbose)
    net.provenance = {**net.provenance, "key": key, "data_sha256": digest}
    saving.save_model(net, path)
    return net


def feature_stats(features):
    """Mean and covariance of feature vectors.

    Args:
        features: `(n, f)` array, `n >= 2`.

    Returns:
        `(mu, sigma)`: `(f,)` mean and `(f, f)` unbiased covariance, float64.
    """
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be (n, f) with n >= 2, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("features contain NaN or Inf.")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(
        features.shape[1], features.shape[1])


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    `|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))`, computed
    as pytorch-fid does: `scipy.linalg.sqrtm` of the product; if that is not
    finite (a singular product) it is retried with `eps` added to both
    diagonals; a negligible imaginary part from rounding is dropped.

    Args:
        mu1: `(f,)` mean of the first Gaussian.
        sigma1: `(f, f)` covariance of the first Gaussian.
        mu2: `(f,)` mean of the second Gaussian.
        sigma2: `(f, f)` covariance of the second Gaussian.
        eps: Diagonal offset of the retry.

    Returns:
        The distance (>= 0; rounding below 0 is reported as 0).

    Raises:
        ValueError: mismatched shapes, or a square root with a significant
            imaginary part.

    Example:

    >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), np.eye(2))
    2.0
    """
    from scipy import linalg

    mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    f = mu1.shape[0]
    if mu1.shape != (f,) or mu2.shape != (f,) or sigma1.shape != (f, f) or sigma2.shape != (f, f):
        raise ValueError(f"Means must be (f,) and covariances (f, f) of one f; got "
                         f"{mu1.shape}, {sigma1.shape}, {mu2.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # singular: handled below
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            offset = np.eye(f) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"The matrix square root has an imaginary component "
                             f"{np.max(np.abs(covmean.imag)):.3g}: the covariances are "
                             "ill-conditioned.")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def precision_recall(real_features, fake_features, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    Each sample's manifold ball has the radius of its `k`-th nearest
    neighbour in its own set. Precision is the share of generated samples
    inside at least one real ball; recall the share of real samples inside at
    least one generated ball. Distances are computed in blocks of at most
    64 MiB, so 10,000 x 10,000 sets stay small in memory.

    Args:
        real_features: `(n_real, f)` features of real images.
        fake_features: `(n_fake, f)` features of generated images.
        k: Neighbourhood size (the paper uses 3).

    Returns:
        `(precision, recall)`, each in [0, 1].

    Raises:
        ValueError: mismatched feature widths, or `k` not below both set sizes.

    Example:

    >>> a = np.random.default_rng(0).standard_normal((500, 4))
    >>> precision_recall(a, a)
    (1.0, 1.0)
    """
    real = _check_features(real_features, "real_features")
    fake = _check_features(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"Feature widths differ: {real.shape[1]} (real) vs {fake.shape[1]}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k >= min(len(real), len(fake)):
        raise ValueError(f"k={k} needs more than {k} samples in each set; got {len(real)} real "
                         f"and {len(fake)} generated.")
    real_radii = kth_neighbour_sq_radii(real, k)
    fake_radii = kth_neighbour_sq_radii(fake, k)
    precision = np.mean(_inside_any(fake, real, real_radii))
    recall = np.mean(_inside_any(real, fake, fake_radii))
    return float(precision), float(recall)


def kth_neighbour_sq_radii(features, k: int) -> np.ndarray:
    """Squared distance of each row to its `k`-th nearest other row: `(n,)` float64."""
    features = np.asarray(features, dtype=np.float64)
    radii = np.empty(len(features))
    for start, block in _distance_blocks(features, features):
        # Column 0 of the partition is the point itself (distance 0), so the
        # k-th smallest other distance is at index k.
        radii[start:start + len(block)] = np.partition(block, k, axis=1)[:, k]
    return radii


def image_metrics(real_images, fake_images, extractor: FeatureNet, k: int = 3) -> dict:
    """Frechet distance, precision and recall of one image set against another.

    Args:
        real_images: `(n_real, *image_shape)` reference images in [0, 1].
        fake_images: `(n_fake, *image_shape)` images to judge.
        extractor: The dataset's `FeatureNet` (from `feature_extractor`).
        k: Neighbourhood size of precision and recall.

    Returns:
        A JSON-able dict: `fid`, `precision`, `recall`, `k`, `n_real`,
        `n_generated` and `features` (the extractor's description).
    """
    real = extractor.features(real_images)
    fake = extractor.features(fake_images)
    precision, recall = precision_recall(real, fake, k=k)
    return {
        "fid": frechet_distance(*feature_stats(real), *feature_stats(fake)),
        "precision": precision,
        "recall": recall,
        "k": int(k),
        "n_real": len(real),
        "n_generated": len(fake),
        "features": extractor.description,
    }


def sample_metrics(model, real_images, *, extractor: FeatureNet, n: int | None = None,
                   seed: int = 0, k: int = 3, class_ids=None, batch_size: int = 256) -> dict:
    """Sample quality of a generative model against real images.

    Draws `n` images with `model.sample(n, seed=seed)` (image means) and
    compares their features with those of `real_images`.

    Args:
        model: A `keras_vae.VAE` (anything with `sample(n, seed=...)`).
        real_images: `(n_real, *image_shape)` real images in [0, 1], e.g. the
            test split.
        extractor: The dataset's `FeatureNet` (from `feature_extractor`,
            trained on the training split).
        n: Number of generated images (default: as many as real images).
        seed: Seed of the prior draw.
        k: Neighbourhood size of precision and recall.
        class_ids: For a conditional model, the classes to generate (cycled).
        batch_size: Decoding batch size.

    Returns:
        `{"fid", "precision", "recall", "k", "n_real", "n_generated",
        "features", "seed"}`; `fid` is the Frechet distance in the
        extractor's features (see `features`), not Inception FID.

    Example:

    >>> net = feature_extractor(x_train, y_train)
    >>> sample_metrics(vae, x_test, extractor=net)["fid"]
    """
    real = data_lib.check_images(real_images, extractor.image_shape)
    n = len(real) if n is None else n
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    kwargs = {} if class_ids is None else {"class_ids": class_ids}
    fake = model.sample(int(n), seed=seed, batch_size=batch_size, **kwargs)
    return {**image_metrics(real, fake, extractor, k=k), "seed": seed}


# ------------------------------------------------------------------ helpers


def _plain(tree):
    """A JSON copy of `tree` (Keras wraps dicts and lists held by layers in tracked types)."""
    return json.loads(json.dumps(tree))


def _check_labels(labels, n):
    if labels is None:
        raise ValueError("The feature network is a classifier: it needs labels (classes, or "
                         "factor indices) for its training images.")
    y = np.asarray(labels)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or len(y) != n:
        raise ValueError(f"labels must be (n,) or (n, k) with n = {n} images; got {y.shape}")
    # Class (or factor) indices of any number of classes; -1 (missing) cannot train it.
    data_lib.check_labels(y.reshape(-1), None, what="labels")
    return y.astype(np.int64)


def _digest(x, y, settings) -> str:
    h = hashlib.sha256(b"keras_vae.evaluation.quality.FeatureNet/1\n")
    h.update(json.dumps({"x": list(x.shape), "y": list(y.shape), **settings},
                        sort_keys=True).encode())
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.int64).tobytes())
    return h.hexdigest()


def _load_cached(path: Path, digest: str):
    if not path.is_file():
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a version note is not worth a warning here
            net = saving.load_model(path, compile=False)  # checked archive, finite weights
    except Exception as e:  # corrupt or foreign file: retrain and replace it
        warnings.warn(f"Cannot load the cached feature network {path} ({e}); retraining it.",
                      stacklevel=3)
        return None
    if not isinstance(net, FeatureNet) or net.provenance.get("data_sha256") != digest:
        warnings.warn(f"The cached feature network {path} was trained on other data or "
                      "settings; retraining it.", stacklevel=3)
        return None
    return net


def _train(x, y, settings, verbose):
    rng = np.random.default_rng(settings["seed"])
    order = rng.permutation(len(x))
    n_test = max(1, int(round(len(x) * settings["holdout"])))
    if len(x) - n_test < 2:
        raise ValueError(f"{len(x)} images are too few to train the feature network.")
    test, train = order[:n_test], order[n_test:]
    classes = [int(c) + 1 for c in y.max(axis=0)]
    if any(c < 2 for c in classes):
        raise ValueError("Every label column needs at least 2 classes to train the feature "
                         f"network; got class counts {classes}.")
    net = FeatureNet(x.shape[1:], classes, filters=settings["filters"], units=settings["units"],
                     seed=settings["seed"])
    heads = len(classes)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    net.compile(optimizer=keras.optimizers.Adam(1e-3),
                loss=loss if heads == 1 else [loss] * heads)

    def targets(idx):
        cols = tuple(y[idx, j] for j in range(heads))
        return cols[0] if heads == 1 else cols

    batch = settings["batch_size"]
    for _ in range(settings["epochs"]):
        perm = train[rng.permutation(len(train))]  # numpy shuffle: no global RNG involved
        if len(perm) >= batch:  # whole batches only: one traced step shape, not two
            perm = perm[:len(perm) // batch * batch]
        net.fit(x[perm], targets(perm), batch_size=batch, epochs=1, shuffle=False,
                verbose=verbose)
    # Each block's total variance on the training images becomes 1.
    chunks = [[ops.convert_to_numpy(p).astype(np.float64)
               for p in net.blocks(ops.convert_to_tensor(x[train[i:i + 512]]))]
              for i in range(0, len(train), 512)]
    variances = [np.var(np.concatenate(block, axis=0), axis=0).sum() for block in zip(*chunks)]
    net.feature_scales = [float(np.sqrt(v)) if v > 1e-12 else 1.0 for v in variances]
    correct = np.zeros(heads)
    for i in range(0, len(test), 512):
        idx = test[i:i + 512]
        logits = net(ops.convert_to_tensor(x[idx]))  # eager: no predict function to trace
        logits = [logits] if heads == 1 else list(logits)
        correct += [np.sum(np.argmax(ops.convert_to_numpy(lg), axis=1) == y[idx, j])
                    for j, lg in enumerate(logits)]
    accuracy = [float(c / len(test)) for c in correct]
    net.provenance = {
        "train_examples": int(len(train)),
        "test_examples": int(len(test)),
        "test_accuracy": accuracy[0] if heads == 1 else accuracy,
        **settings,
    }
    return net


def _check_features(features, name):
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"{name} must be (n, f) with n >= 2, got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} contain NaN or Inf.")
    return features


def _distance_blocks(a, b):
    """Yields `(start, squared distances of a[start:start+m] to all of b)` blocks."""
    rows = max(1, _BLOCK_BYTES // (8 * len(b)))
    b_sq = np.einsum("ij,ij->i", b, b)
    for start in range(0, len(a), rows):
        block = a[start:start + rows]
        d2 = np.einsum("ij,ij->i", block, block)[:, None] + b_sq[None, :] - 2.0 * block @ b.T
        yield start, np.maximum(d2, 0.0)  # rounding can dip below 0


def _inside_any(points, centres, sq_radii) -> np.ndarray:
    """Whether each point lies in at least one ball (centre, radius): `(n,)` bool."""
    inside = np.empty(len(points), dtype=bool)
    for start, block in _distance_blocks(points, centres):
        inside[start:start + len(block)] = np.any(block <= sq_radii[None, :], axis=1)
    return inside
