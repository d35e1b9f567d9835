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
