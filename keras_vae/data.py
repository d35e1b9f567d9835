"""Input pipelines: a `tf.data.Dataset` of images in [0, 1] from a name or a path.

Sources (see `load`):

- a TensorFlow Datasets name (`mnist`, `fashion_mnist`, `cifar10`, ...);
- `digits`: scikit-learn's bundled 8x8 digits (offline);
- a directory of MNIST-format IDX files (`*images*idx3*`, `*labels*idx1*`, gzip or raw);
- a `.npz` file with an image array (`x`, `images`, `x_train` or `arr_0`) and
  optionally labels (`y`, `labels`, `y_train`);
- a folder of images (PNG/JPEG/BMP), one sub-folder per class or flat.

Local sources have one split, `train`, sliced with the TFDS syntax:
`train[:7000]`, `train[7000:]`, `train[:90%]`.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
import weakref
from pathlib import Path

import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
# Datasets made by `load` from arrays that `check_images` passed: `check_dataset`
# does not re-check their values batch by batch.
_VALIDATED: weakref.WeakSet = weakref.WeakSet()
BINARIZE_MODES = (None, "dynamic", "static")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")




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


# ------------------------------------------------------------------ validation


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


# -------------------------------------------------------------------- sources


def _read_idx(path: Path) -> np.ndarray:
    """Reads one IDX file (gzip or raw), checking its header against its size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"Cannot read IDX file {path}: {e} (truncated or corrupt?)") from e
    if len(raw) < 4:
        raise ValueError(f"IDX file {path} is too short ({len(raw)} bytes) to hold a header.")
    zero, dtype_code, ndim = raw[0] << 8 | raw[1], raw[2], raw[3]
    if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
        raise ValueError(
            f"{path} is not an MNIST-style uint8 IDX file (magic {raw[:4].hex()})."
        )
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise ValueError(f"IDX file {path} is truncated inside its header ({len(raw)} bytes).")
    dims = struct.unpack(f">{ndim}I", raw[4:offset])
    expected = int(np.prod(dims))
    if len(raw) - offset != expected:
        raise ValueError(
            f"IDX file {path} is truncated or padded: its header says {dims} "
            f"({expected} bytes of data), the file has {len(raw) - offset}."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _load_idx_dir(path: Path):
    files = sorted(p for p in path.iterdir() if p.is_file())
    images = [p for p in files if re.search(r"idx3", p.name)]
    labels = [p for p in files if re.search(r"idx1", p.name)]
    if len(images) != 1 or len(labels) > 1:
        raise ValueError(
            f"Expected one '*idx3*' image file and at most one '*idx1*' label file in {path}, "
            f"found {[p.name for p in images]} and {[p.name for p in labels]}."
        )
    x = _read_idx(images[0])
    if x.ndim != 3:
        raise ValueError(f"{images[0]} holds a {x.ndim}-d array, not (n, height, width) images.")
    y = None
    if labels:
        y = _read_idx(labels[0]).astype(np.int64)
        if y.ndim != 1:
            raise ValueError(f"{labels[0]} holds a {y.ndim}-d array, not a list of labels.")
        if len(y) != len(x):
            raise ValueError(f"{labels[0].name} has {len(y)} labels for {len(x)} images.")
    return x[..., None], y


def _load_npz(path: Path):
    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile / format errors
        raise ValueError(f"Cannot read {path} as .npz: {e}") from e
    with arrays:
        x_key = next((k for k in ("x", "images", "x_train", "arr_0") if k in arrays), None)
        if x_key is None:
            raise ValueError(
                f"{path} has no image array; name it 'x' or 'images' (found {list(arrays)})."
            )
        x = arrays[x_key]
        y_key = next((k for k in ("y", "labels", "y_train") if k in arrays), None)
        y = arrays[y_key].astype(np.int64) if y_key else None
    if y is not None and len(y) != len(x):
        raise ValueError(f"{path}: {len(y)} labels for {len(x)} images.")
    if x.ndim == 3:
        x = x[..., None]
    return x, y


def _load_image_folder(path: Path):
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    if class_dirs:
        entries = [(f, i) for i, d in enumerate(class_dirs) for f in sorted(d.iterdir())
                   if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        entries = [(f, -1) for f in sorted(path.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not entries:
        raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in {path}.")
    images, mode, size = [], None, None
    for f, _ in entries:
        try:
            with Image.open(f) as im:
                im.load()
                mode = mode or ("L" if im.mode in ("1", "L", "P", "LA", "I", "I;16") else "RGB")
                im = im.convert(mode)
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"Corrupt or unreadable image {f}: {e}") from e
        size = size or im.size
        if im.size != size:
            raise ValueError(f"Image {f} is {im.size}, the first image is {size}: resize them.")
        arr = np.asarray(im, dtype=np.uint8)
        images.append(arr[..., None] if arr.ndim == 2 else arr)
    labels = np.array([c for _, c in entries], dtype=np.int64) if class_dirs else None
    return np.stack(images), labels


def _load_digits(_=None):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1), 0..16 -> [0, 1]
    return x, bunch.target.astype(np.int64)


NAMED_SOURCES = {"digits": _load_digits}
PATH_SOURCES = {"idx": _load_idx_dir, "npz": _load_npz, "images": _load_image_folder}


def _path_kind(path: Path) -> str:
    if path.is_file():
        if path.suffix == ".npz":
            return "npz"
        raise ValueError(f"Unsupported data file {path}: give a .npz, an IDX directory or an "
                         "image folder.")
    if any(re.search(r"idx3", p.name) for p in path.iterdir()):
        return "idx"
    return "images"


def load_arrays(source: str, split: str = "train"):
    """Loads a local source into memory.

    Returns:
        `(images, labels)`: float32 `(n, h, w, c)` in [0, 1] and int64 `(n,)`
        (or None when the source has no labels).
    """
    name = str(source)
    if name in NAMED_SOURCES:
        x, y = NAMED_SOURCES[name]()
    else:
        path = Path(os.path.expanduser(name))
        if not path.exists():
            raise ValueError(f"Data path {path} does not exist.")
        x, y = PATH_SOURCES[_path_kind(path)](path)
    x = check_images(x)
    sl = _split_slice(split, len(x))
    x = x[sl]
    if len(x) == 0:
        raise ValueError(f"Split {split!r} of {source!r} is empty ({len(x)} examples).")
    return x, (None if y is None else y[sl])


def _split_slice(split: str, n: int) -> slice:
    """Parses `train`, `train[a:b]` or `train[a%:b%]` for a single-split source."""
    m = re.fullmatch(r"(\w+)(?:\[(-?\d*%?):(-?\d*%?)\])?", split.replace(" ", ""))
    if not m or m.group(1) not in ("train", "all"):
        raise ValueError(
            f"Local sources have one split, 'train', sliced like 'train[:7000]' or "
            f"'train[90%:]'; got {split!r}."
        )

    def bound(s):
        if not s:
            return None
        return round(n * int(s[:-1]) / 100) if s.endswith("%") else int(s)

    return slice(bound(m.group(2)), bound(m.group(3)))


def is_local(source: str) -> bool:
    """Whether `source` is a bundled name or an existing path (not a TFDS name)."""
    return str(source) in NAMED_SOURCES or Path(os.path.expanduser(str(source))).exists()


def _network_reachable(host: str = "storage.googleapis.com") -> bool:
    """Whether DNS resolves TFDS' download host (fails at once when offline)."""
    import socket

    try:
        socket.getaddrinfo(host, 443)
        return True
    except OSError:
        return False


def _tfds_dataset(name: str, split: str, data_dir=None, download: bool = True):
    import tensorflow_datasets as tfds

    builder_name = name.split(":")[0].split("/")[0]
    if builder_name not in tfds.list_builders():
        raise ValueError(
            f"Unknown dataset {name!r}: not a TFDS name, not one of {sorted(NAMED_SOURCES)}, "
            "and no such path (IDX directory, .npz file or image folder)."
        )
    offline_help = (
        f"Without network access, prepare it on a connected machine (`tfds build "
        f"{builder_name}`) and pass its data_dir, or give local data: an IDX directory, a "
        ".npz file, an image folder, or 'digits'."
    )
    def tfds_load(allow_download):
        return tfds.load(name, split=split, data_dir=data_dir, shuffle_files=False,
                         download=allow_download)

    try:
        try:
            ds = tfds_load(False)  # prepared already (or mocked in tests)
        except AssertionError:  # not prepared: download, if there is a network
            if not (download and _network_reachable()):
                reason = "download=False" if not download else "no network"
                raise RuntimeError(
                    f"TFDS dataset {name!r} is not prepared in "
                    f"{data_dir or 'the default data_dir'} and cannot be downloaded "
                    f"({reason}). {offline_help}"
                ) from None
            ds = tfds_load(True)
    except RuntimeError:
        raise
    except Exception as e:  # DownloadError, ConnectionError, bad split...
        raise RuntimeError(
            f"Could not load TFDS dataset {name!r} split {split!r}: "
            f"{type(e).__name__}: {e}\n{offline_help}"
        ) from e
    if "image" not in ds.element_spec:
        raise ValueError(f"TFDS dataset {name!r} has no 'image' feature.")
    has_label = "label" in ds.element_spec

    def to_pair(ex):
        image = tf.image.convert_image_dtype(ex["image"], tf.float32)  # uint8 -> [0, 1]
        return image, (tf.cast(ex["label"], tf.int64) if has_label else tf.constant(-1, tf.int64))

    return ds.map(to_pair, num_parallel_calls=AUTOTUNE), has_label


# ------------------------------------------------------------------- pipeline


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
        ds, _ = _tfds_dataset(str(source), split, data_dir, download)
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
            _VALIDATED.add(part)  # values checked by load_arrays: fit skips the per-batch check
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
