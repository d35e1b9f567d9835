"""Checks of what a model is given: image arrays, datasets, labels.

Every entry point (fit, evaluate, the evaluation and augmentation helpers)
validates through these functions, so one message names each problem.
"""

from __future__ import annotations

import weakref

import numpy as np
import tensorflow as tf

from keras_vae.data.batches import unpack_batch
from keras_vae.recipes import check_labels

# Datasets made by `load` from arrays that `check_images` passed: `check_dataset`
# does not re-check their values batch by batch.
AUTOTUNE = tf.data.AUTOTUNE
_VALIDATED: weakref.WeakSet = weakref.WeakSet()


def mark_validated(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Records that `ds` was built from arrays `check_images` passed; returns it."""
    _VALIDATED.add(ds)
    return ds

def check_images(x, image_shape=None) -> np.ndarray:
    """Validates an image array and returns it as float32 in [0, 1].

    uint8 arrays are rescaled by 1/255 (their range is unambiguous); float
    arrays must already lie in [0, 1]. Arrays without a channel axis get one
    when the model expects a single channel.

    Raises:
        ValueError: empty array, NaN/Inf, values outside [0, 1], or a shape
            that does not match `image_shape`.
    """
    x = np.asarray(x)
    if x.size == 0:
        raise ValueError("Empty image array: no examples to train or evaluate on.")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    elif x.dtype == bool:
        x = x.astype(np.float32)
    elif not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"Images must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        raise ValueError(
            f"Images contain {int(bad.sum())} NaN/Inf values (first at index "
            f"{tuple(int(i) for i in np.argwhere(bad)[0])}); clean the data before training."
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        hint = " (looks like 0..255 pixels: divide by 255)" if hi > 1.0 and hi <= 255.0 else ""
        raise ValueError(
            f"Pixel values must lie in [0, 1]; got range [{lo:g}, {hi:g}]{hint}. "
            "A Bernoulli likelihood on such values is not a likelihood (the loss goes negative)."
        )
    if image_shape is not None:
        x = _match_shape(x, tuple(image_shape))
    return x


def _match_shape(x, image_shape):
    if x.shape[1:] == image_shape:
        return x
    if image_shape[-1] == 1 and x.shape[1:] == image_shape[:-1]:
        return x[..., None]
    raise ValueError(
        f"Images of shape {x.shape[1:]} (batch {x.shape[0]}) do not fit a model for "
        f"images of shape {image_shape}."
    )


def _image_of(element):
    """The image component of a dataset element (x, or (x, ...))."""
    if isinstance(element, (tuple, list)):
        element = element[0]
        if isinstance(element, (tuple, list)):  # ([x, labels], ...)
            element = element[0]
    return element


def _assert_valid_images(*element):
    element = element[0] if len(element) == 1 else element  # map() unpacks tuples
    image = _image_of(element)
    checks = [
        tf.debugging.assert_all_finite(
            tf.cast(image, tf.float32), "keras_vae: images contain NaN or Inf values"),
        tf.debugging.assert_greater_equal(
            tf.cast(image, tf.float32), 0.0,
            message="keras_vae: pixel values must lie in [0, 1] (found < 0)"),
        tf.debugging.assert_less_equal(
            tf.cast(image, tf.float32), 1.0,
            message="keras_vae: pixel values must lie in [0, 1] (found > 1; divide 0..255 "
                    "pixels by 255)"),
    ]
    with tf.control_dependencies(checks):
        return tf.nest.map_structure(tf.identity, element)


def check_dataset(ds: tf.data.Dataset, image_shape=None) -> tf.data.Dataset:
    """Checks a dataset's image shape now and its values as it is read.

    Raises:
        ValueError: an empty dataset, a non-float/uint8 image, or a shape that
            does not match `image_shape` (values outside [0, 1] or NaN raise
            `InvalidArgumentError` from the pipeline with a keras_vae message).
    """
    if int(ds.cardinality()) == 0:
        raise ValueError("The dataset is empty: no examples to train or evaluate on.")
    spec = _image_of(ds.element_spec)
    if image_shape is not None and spec.shape.rank is not None:
        got = tuple(spec.shape[1:])
        if spec.shape.rank != len(image_shape) + 1 or any(
                g is not None and g != w for g, w in zip(got, image_shape)):
            raise ValueError(
                f"Dataset images have shape {tuple(spec.shape)} (batch first); the model "
                f"expects batches of {tuple(image_shape)}. Batch the dataset and match the "
                "image size."
            )
    if spec.dtype == tf.uint8:
        raise ValueError(
            "Dataset images are uint8 (0..255): map them to float32 in [0, 1] first, or use "
            "keras_vae.data.load, which does."
        )
    if ds in _VALIDATED:  # from `load`, its values already checked in memory
        return ds
    return ds.map(_assert_valid_images, num_parallel_calls=AUTOTUNE)


def guard_inputs(x, y, image_shape):
    """Validates what `fit`/`evaluate` receive; returns `(x, y)` ready for Keras."""
    if isinstance(x, tf.data.Dataset):
        return check_dataset(x, image_shape), y
    if isinstance(x, (np.ndarray, list)) or hasattr(x, "__array__") and not tf.is_tensor(x):
        return check_images(x, image_shape), y
    return x, y


def class_labels(n: int, class_ids, num_classes: int) -> np.ndarray | None:
    """int32 labels for `n` generated images, cycling `class_ids`; None when unconditional.

    Raises:
        ValueError: ids for an unconditional model, none for a conditional
            one, or ids outside `[0, num_classes)` (`check_labels`).
    """
    if not num_classes:
        if class_ids is not None:
            raise ValueError("class_ids given to an unconditional VAE (num_classes=0).")
        return None
    if class_ids is None:
        raise ValueError(f"This conditional VAE needs class_ids in [0, {num_classes}).")
    ids = check_labels(np.asarray(class_ids).reshape(-1), num_classes, what="class_ids")
    return np.resize(ids, n).astype(np.int32)


def label_assertion(num_classes: int):
    """A `Dataset.map` function asserting each batch's labels lie in `[0, num_classes)`.

    The graph twin of `check_labels`, for labels read from a dataset.
    """
    message = (f"keras_vae: labels must be in [0, {num_classes}) for this conditional VAE "
               "(-1 means the data has no labels)")

    def check(*element):
        label = element[0][1] if isinstance(element[0], (tuple, list)) else element[1]
        checks = [tf.debugging.assert_non_negative(label, message=message),
                  tf.debugging.assert_less(label, tf.cast(num_classes, label.dtype),
                                           message=message)]
        with tf.control_dependencies(checks):
            return tf.nest.map_structure(tf.identity, element)

    return check


def guard_labels(x, y, num_classes: int):
    """Checks the labels a conditional model is fit or evaluated on; returns `(x, y)`.

    Arrays are checked now; a dataset must yield `(image, label)` and gets
    an assertion on each label as it is read (an out-of-range label would
    otherwise gather a wrong or zero embedding row without a word).
    Unconditional models (`num_classes=0`) pass everything through.
    """
    if not num_classes:
        return x, y
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        label_spec = None
        if isinstance(spec, tuple) and len(spec) > 1:
            label_spec = spec[0][1] if isinstance(spec[0], (tuple, list)) else spec[1]
        elif isinstance(spec, tuple) and isinstance(spec[0], (tuple, list)):
            label_spec = spec[0][1]
        if label_spec is None or not (label_spec.dtype.is_integer
                                      or label_spec.shape.rank == 1):
            raise ValueError(
                f"This conditional VAE ({num_classes} classes) needs (image, label) "
                f"batches with integer labels; the dataset yields {spec}."
            )
        return x.map(label_assertion(num_classes)), y
    if isinstance(x, (list, tuple)) and len(x) == 2:  # [images, labels] as inputs
        check_labels(x[1], num_classes, len(x[0]))
    elif x is not None:
        if y is None:
            raise ValueError(
                f"This conditional VAE ({num_classes} classes) needs labels: "
                "call fit(images, labels) or give (image, label) batches."
            )
        check_labels(y, num_classes, len(x))
    return x, y


def iterate_batches(model, data, labels=None, batch_size: int = 100):
    """Yields checked `(x, labels, target)` batches from a dataset or an image array.

    Images are validated (range, shape); a conditional model's labels are
    required and range-checked. `target` is None unless a dataset yields
    `(input, clean target)` pairs.
    """
    if isinstance(data, tf.data.Dataset):
        if labels is not None:
            raise ValueError("Pass labels inside the dataset ((image, label) batches), "
                             "not as `labels=`.")
        data = check_dataset(data, model.image_shape)
        data, _ = guard_labels(data, None, model.num_classes)
        for batch in data:
            yield unpack_batch(batch, model.num_classes)
        return
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    x = check_images(data, model.image_shape)
    if model.num_classes:
        if labels is None:
            raise ValueError(f"This conditional VAE ({model.num_classes} classes) needs labels: "
                             "pass `labels=`, one per image.")
        labels = check_labels(labels, model.num_classes, len(x))
    else:
        labels = None
    for start in range(0, len(x), batch_size):
        stop = start + batch_size
        yield x[start:stop], None if labels is None else labels[start:stop], None
