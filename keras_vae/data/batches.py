"""What a batch holds and how to walk arrays in batches: the plumbing every model step shares.

A batch is `x`, `(x, labels)` with integer labels, `(x, target)` with a float
target image (denoising: corrupted input, clean target), or
`([x, labels], target)` for a conditional denoising model. `unpack_batch`
turns each into `(inputs, labels, target)`, as `keras.utils.unpack_x_y_sample_weight`
does for plain Keras models.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


def unpack_batch(data, num_classes: int = 0):
    """Splits a batch into `(x, labels, target)`; labels are None for unconditional models.

    Example:

    >>> x, labels, target = unpack_batch((images, clean_images))  # labels None
    """
    x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
    labels, target = None, None
    if isinstance(x, (list, tuple)):  # [x, labels] as model inputs
        x, labels = x[0], x[1]
    if y is not None:
        if y.dtype.is_floating and len(y.shape) == len(x.shape):
            target = y
        elif labels is None:
            labels = y
    if not num_classes:
        labels = None
    return x, labels, target


def pack(x, labels):
    """Model inputs: `x`, or `[x, labels]` when there are labels."""
    return x if labels is None else [x, labels]


def class_labels(n: int, class_ids, num_classes: int) -> np.ndarray | None:
    """int32 labels for `n` generated images, cycling `class_ids`; None when unconditional.

    Raises:
        ValueError: ids for an unconditional model, none for a conditional
            one, or ids outside `[0, num_classes)`.
    """
    if not num_classes:
        if class_ids is not None:
            raise ValueError("class_ids given to an unconditional VAE (num_classes=0).")
        return None
    if class_ids is None:
        raise ValueError(f"This conditional VAE needs class_ids in [0, {num_classes}).")
    ids = np.asarray(class_ids, dtype=np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= num_classes)]
    if ids.size == 0 or bad.size:
        raise ValueError(
            f"class_ids must be in [0, {num_classes}); got {sorted(set(bad.tolist()))}"
        )
    return np.resize(ids, n).astype(np.int32)


def batched(fn, inputs, labels, batch_size: int) -> np.ndarray:
    """`fn(inputs_batch, labels_batch)` over batches of arrays, concatenated as numpy."""
    out = []
    for start in range(0, len(inputs), batch_size):
        lb = None if labels is None else labels[start:start + batch_size]
        out.append(ops.convert_to_numpy(fn(inputs[start:start + batch_size], lb)))
    return np.concatenate(out, axis=0)


def count_classes(dataset) -> int:
    """Number of classes of a dataset of `(image, label)` batches: max label + 1.

    Raises:
        ValueError: the data has no labels (label -1).
    """
    labels = np.concatenate([np.asarray(y).reshape(-1) for _, y in dataset])
    if labels.min() < 0:
        raise ValueError("A conditional model needs labelled data; this dataset has no labels "
                         "(label -1).")
    return int(labels.max()) + 1
