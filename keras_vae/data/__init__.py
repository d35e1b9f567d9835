"""Data for keras_vae: sources, checks, the tf.data pipeline and batch plumbing.

- `sources`: TFDS names, `digits`, IDX folders, `.npz` files, image folders
  (`load_arrays`, `register` for a named source);
- `checks`: image arrays, datasets and labels validated with messages that
  name the problem;
- `pipeline`: `load`, batched `tf.data` pipelines in [0, 1] with
  binarization, shuffling and prefetching;
- `batches`: what a batch holds (`unpack_batch`) and batch-wise mapping;
- `shapes`: a procedural dSprites-like dataset with known factors
  (`--dataset shapes` / `shapes-color`).

Example:

>>> train, val = keras_vae.data.load("digits", validation_fraction=0.1)
"""

from keras_vae.data import shapes
from keras_vae.data.batches import batched, count_classes, pack, unpack_batch
from keras_vae.data.checks import (
    check_dataset,
    check_images,
    check_labels,
    class_labels,
    guard_inputs,
    guard_labels,
    iterate_batches,
    label_assertion,
)
from keras_vae.data.pipeline import BINARIZE_MODES, load, prefetched
from keras_vae.data.sources import (
    IMAGE_SUFFIXES,
    NAMED_SOURCES,
    PATH_SOURCES,
    is_local,
    load_arrays,
    load_factors,
    register,
    tfds_dataset,
)

__all__ = [
    "BINARIZE_MODES", "IMAGE_SUFFIXES", "NAMED_SOURCES", "PATH_SOURCES", "batched",
    "check_dataset", "check_images", "check_labels", "class_labels", "count_classes", "guard_inputs",
    "guard_labels", "is_local", "iterate_batches", "label_assertion", "load", "load_arrays", "load_factors", "pack", "prefetched",
    "register", "shapes", "tfds_dataset", "unpack_batch",
]
