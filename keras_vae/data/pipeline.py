"""The input pipeline: a batched `tf.data.Dataset` of images in [0, 1] from any source."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_vae.data.checks import mark_validated
from keras_vae.data.sources import is_local, load_arrays, tfds_dataset

AUTOTUNE = tf.data.AUTOTUNE
BINARIZE_MODES = (None, "dynamic", "static")


def prefetched(ds: tf.data.Dataset) -> tf.data.Dataset:
    """`ds.prefetch(AUTOTUNE)` with tf.data's model-based autotuning switched off.

    The autotuner runs a thread that sleeps 10 ms, 20 ms, 40 ms, ... (doubling
    up to 60 s) between optimizations, and deleting an iterator waits for that
    sleep to end. Every `fit`/`evaluate` call deletes its iterator, so each
    one was padded up to the next wake-up: a one-epoch `fit` of 3.5 s took
    5.12 s, a 0.50 s `evaluate` 0.63 s (benchmarks/README.md). Without it,
    `AUTOTUNE` still means one parallel call per core for `map` and the
    prefetch buffer still grows on demand; in-memory pipelines lose nothing.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(AUTOTUNE).with_options(options)


def _binarize_static(seed):
    def fn(index, element):
        image, label = element
        u = tf.random.stateless_uniform(tf.shape(image), seed=tf.stack([seed, index]))
        return tf.cast(u < image, tf.float32), label
    return fn


def _gathered_batches(x, y, batch_size, shuffle, seed, binarize_dynamic=False):
    """Batches of in-memory arrays, one `tf.gather` per batch of shuffled indices.

    Building batches image by image (`from_tensor_slices().shuffle().batch()`)
    and binarizing in a second stage costs about 2-3x more pipeline CPU, which
    the training step shares on a 2-core machine (benchmarks/README.md); Keras
    batches numpy input the same way. With `binarize_dynamic`, each batch gets
    fresh Bernoulli draws in the same map (as `_binarize_dynamic`).
    """
    images, labels = tf.constant(x), tf.constant(y)
    index = tf.data.Dataset.range(len(x))
    if shuffle:
        index = index.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    index = index.batch(batch_size)
    if not binarize_dynamic:
        return index.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)),
                         num_parallel_calls=AUTOTUNE)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def gather_binarized(i, pair):
        image = tf.gather(images, i)
        u = tf.random.stateless_uniform(tf.shape(image), seed=pair)
        return tf.cast(u < image, tf.float32), tf.gather(labels, i)

    return tf.data.Dataset.zip((index, seeds)).map(gather_binarized, num_parallel_calls=AUTOTUNE)


def _binarize_dynamic(ds, seed):
    """Fresh Bernoulli draws of each batch on every epoch, reproducible from `seed`."""
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def fn(element, pair):
        image, label = element
        u = tf.random.stateless_uniform(tf.shape(image), seed=pair)
        return tf.cast(u < image, tf.float32), label

    return tf.data.Dataset.zip((ds, seeds)).map(fn, num_parallel_calls=AUTOTUNE)


def load(source: str, split: str = "train", *, batch_size: int = 128,
         validation_fraction: float = 0.0, binarize: str | None = None,
         shuffle: bool | None = None, seed: int = 0, with_labels: bool = True,
         cache: bool = True, data_dir: str | None = None, download: bool = True):
    """Returns a batched `tf.data.Dataset` of `(image, label)` (or images).

    Args:
        source: TFDS name, `digits`, or a path (IDX directory, `.npz`, image folder).
        split: Split name; for local sources `train` sliced like `train[:7000]`.
        batch_size: Examples per batch.
        validation_fraction: If > 0, hold out this last fraction of the split
            and return `(train, validation)`; validation is never shuffled and
            binarized once ("static") when `binarize` is set.
        binarize: None, `"dynamic"` (a fresh Bernoulli sample each epoch) or
            `"static"` (one fixed sample, from `seed`).
        shuffle: Shuffle each epoch (default: True for training data).
        seed: Seed of shuffling and binarization.
        with_labels: Yield `(image, label)` pairs; labels are -1 where the
            source has none.
        cache: Cache decoded images in memory (TFDS sources).
        data_dir: TFDS data directory.
        download: Let TFDS download a dataset that is not prepared yet.

    Returns:
        A dataset, or `(train, validation)` when `validation_fraction > 0`.

    Raises:
        ValueError: unknown source, bad split, empty data, invalid pixels,
            unknown `binarize` mode, batch_size < 1.
        RuntimeError: a TFDS dataset that cannot be downloaded (offline).

    Example:

    >>> train, val = keras_vae.data.load("digits", validation_fraction=0.1)
    """
    if binarize not in BINARIZE_MODES:
        raise ValueError(f"Unknown binarize mode {binarize!r}; valid: {list(BINARIZE_MODES)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    shuffle = True if shuffle is None else shuffle

    arrays = None  # in-memory (images, labels): batches are gathered, not built per image
    if is_local(source):
        x, y = load_arrays(source, split)
        y = np.full(len(x), -1, np.int64) if y is None else y
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        n = len(x)
        arrays = (x, y)
    else:
        ds, _ = tfds_dataset(str(source), split, data_dir, download)
        if cache:
            ds = ds.cache()
        n = int(ds.cardinality())
        if n < 0:
            n = int(ds.reduce(0, lambda c, _: c + 1))
        if n == 0:
            raise ValueError(f"TFDS dataset {source!r} split {split!r} is empty.")

    def finish(part, count, train, part_arrays=None):
        per_image = binarize == "static" or (binarize == "dynamic" and not train)
        if per_image:
            part = part.enumerate().map(_binarize_static(tf.constant(seed, tf.int64)),
                                        num_parallel_calls=AUTOTUNE)
            if cache:
                part = part.cache()
        if part_arrays is not None and not per_image:
            part = _gathered_batches(*part_arrays, batch_size, train and shuffle, seed,
                                     binarize_dynamic=train and binarize == "dynamic")
        else:
            if train and shuffle:
                part = part.shuffle(min(count, 60000), seed=seed, reshuffle_each_iteration=True)
            part = part.batch(batch_size, num_parallel_calls=AUTOTUNE)
            if train and binarize == "dynamic":
                part = _binarize_dynamic(part, seed)
        if not with_labels:
            part = part.map(lambda image, label: image)
        part = prefetched(part)
        if part_arrays is not None:
            mark_validated(part)  # values checked by load_arrays: fit skips the per-batch check
        return part

    if validation_fraction > 0:
        n_val = max(1, int(round(n * validation_fraction)))
        if n_val >= n:
            raise ValueError(f"validation_fraction {validation_fraction} leaves no training data.")
        head = tail = None
        if arrays is not None:
            head = tuple(a[:n - n_val] for a in arrays)
            tail = tuple(a[n - n_val:] for a in arrays)
        return (finish(ds.take(n - n_val), n - n_val, True, head),
                finish(ds.skip(n - n_val), n_val, False, tail))
    return finish(ds, n, True, arrays)
