"""Data sources by name or path, read into memory or from TensorFlow Datasets.

- a TensorFlow Datasets name (`mnist`, `fashion_mnist`, `cifar10`, ...);
- `digits`: scikit-learn's bundled 8x8 digits (offline);
- a directory of MNIST-format IDX files (`*images*idx3*`, `*labels*idx1*`, gzip or raw);
- a `.npz` file with an image array (`x`, `images`, `x_train` or `arr_0`) and
  optionally labels (`y`, `labels`, `y_train`);
- a folder of images (PNG/JPEG/BMP), one sub-folder per class or flat.

Local sources have one split, `train`, sliced with the TFDS syntax:
`train[:7000]`, `train[7000:]`, `train[:90%]`. `register` adds a named source.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vae.data import shapes
from keras_vae.data.checks import check_images
from keras_vae.registry import Registry

AUTOTUNE = tf.data.AUTOTUNE
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

def _read_idx(path: Path) -> np.ndarray:
    """Reads one IDX file (gzip or raw), checking its header against its size.

    The header is read first: data it declares beyond `MAX_ARRAY_VALUES`
    is refused (`check_declared`), and no more than the declared bytes (plus one, to detect
    padding) are read or inflated, so a gzip bomb costs nothing.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4:
                raise ValueError(f"IDX file {path} is too short ({len(head)} bytes) to hold a "
                                 "header.")
            zero, dtype_code, ndim = head[0] << 8 | head[1], head[2], head[3]
            if zero != 0 or dtype_code != 0x08 or ndim not in (1, 3):
                raise ValueError(
                    f"{path} is not an MNIST-style uint8 IDX file (magic {head.hex()})."
                )
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise ValueError(f"IDX file {path} is truncated inside its header "
                                 f"({4 + len(raw_dims)} bytes).")
            dims = struct.unpack(f">{ndim}I", raw_dims)
            expected = math.prod(dims)
            check_declared(f"IDX file {path}", dims, 1)
            raw = f.read(expected + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"Cannot read IDX file {path}: {e} (truncated or corrupt?)") from e
    if len(raw) != expected:
        got = f"{len(raw)}" if len(raw) <= expected else "more"
        raise ValueError(
            f"IDX file {path} is truncated or padded: its header says {dims} "
            f"({expected} bytes of data), the file has {got}."
        )
    return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


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


# What a local source may make the loader allocate: a file's header declares
# sizes, and they are checked against these before any array is built. A
# source is read whole and turned into float32 (then checked for finiteness,
# one byte per value), so an array of V values of B bytes each costs at most
# V * (B + 5) bytes: under 1 GiB at these limits (measured in docs/scaling.md).
MAX_ARRAY_VALUES = 1 << 27  # 134M values (MNIST's 60k 28x28 images: 47M)
MAX_ARRAY_BYTES = 1 << 29  # 512 MiB as stored (float32 at MAX_ARRAY_VALUES)
MAX_IMAGE_PIXELS = 1 << 24  # one image of a folder (4096 x 4096)
# The most a deflated zip member can inflate (deflate's own limit, 1032:1).
MAX_DEFLATE_RATIO = 1032


def check_declared(what: str, shape, itemsize: int) -> None:
    """Refuses an array a file declares before it is allocated: over `MAX_ARRAY_VALUES`
    values or `MAX_ARRAY_BYTES` bytes.

    Raises:
        ValueError: naming the declared shape, its size and the limit.
    """
    values = math.prod(int(d) for d in shape)
    nbytes = values * int(itemsize)
    if values > MAX_ARRAY_VALUES or nbytes > MAX_ARRAY_BYTES:
        raise ValueError(
            f"{what} declares shape {tuple(shape)[:8]} ({values:.3g} values, "
            f"{nbytes / 2**30:.3g} GiB), over the {MAX_ARRAY_VALUES:.3g} values and "
            f"{MAX_ARRAY_BYTES >> 20} MiB a local source may load; refusing to allocate "
            "it (use a TFDS source, or split the file).")


def as_float32(x: np.ndarray) -> np.ndarray:
    """`x` as float32 in one pass (uint8 divided by 255), with no second full-size copy.

    The same values as `data.checks.check_images` computes, which then
    leaves the array as it is.
    """
    if x.dtype == np.uint8:
        return np.divide(x, np.float32(255.0), dtype=np.float32)
    if x.dtype == bool or x.dtype == np.float32:
        return x.astype(np.float32, copy=False)
    return x


def _npz_header(zf, key: str, path: Path) -> tuple:
    """`(shape, dtype)` of one `.npz` member from its `.npy` header, checked before loading.

    The header declares the array's shape and dtype; an array over the
    limits of `check_declared`, or larger than the member's own uncompressed
    size (or than its compressed bytes could inflate to), is refused before
    anything is allocated.
    """
    fmt = np.lib.format
    names = set(zf.namelist())
    info = zf.getinfo(f"{key}.npy" if f"{key}.npy" in names else key)
    with zf.open(info) as f:
        try:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path}: the header of {key!r} is not a valid .npy header "
                             f"({str(e)[:200]}).") from None
        header_bytes = f.tell()
    check_declared(f"{path}: array {key!r} of {dtype}", shape, dtype.itemsize)
    nbytes = math.prod(shape) * dtype.itemsize
    ratio = MAX_DEFLATE_RATIO if info.compress_type else 1
    if nbytes > info.file_size - header_bytes or info.file_size > ratio * info.compress_size:
        raise ValueError(
            f"{path}: array {key!r} declares shape {shape[:8]} of {dtype} "
            f"({nbytes / 2**30:.3g} GiB), more than the file holds; refusing to allocate it.")
    return shape, dtype


def _load_npz(path: Path):
    import zipfile

    try:
        arrays = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile / format errors
        raise ValueError(f"Cannot read {path} as .npz: {e}") from e
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is a single .npy array, not a .npz archive of named arrays.")
    with arrays:
        x_key = next((k for k in ("x", "images", "x_train", "arr_0") if k in arrays), None)
        if x_key is None:
            raise ValueError(
                f"{path} has no image array; name it 'x' or 'images' (found {list(arrays)[:20]})."
            )
        y_key = next((k for k in ("y", "labels", "y_train") if k in arrays), None)
        try:
            with zipfile.ZipFile(path) as zf:
                for key in filter(None, (x_key, y_key)):
                    _npz_header(zf, key, path)
            x = as_float32(arrays[x_key])
            y = arrays[y_key].astype(np.int64) if y_key else None
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ValueError(f"Cannot read {path} as .npz: {e}") from None
    if y is not None and len(y) != len(x):
        raise ValueError(f"{path}: {len(y)} labels for {len(x)} images.")
    if x.ndim == 3:
        x = x[..., None]
    return x, y


# Pillow modes of one grey channel, and of 16-bit (or wider integer) grey.
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _is_grey(im) -> bool:
    """Whether an image has one grey channel (a palette counts when all its colours are grey)."""
    if im.mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGB"))
        return bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))
    return im.mode in _GREY_MODES


def _pixels(im, grey: bool) -> np.ndarray:
    """One image's pixels as float32 `(h, w, 1 or 3)` in [0, 1], by its real bit depth.

    - 8-bit modes (`L`, `RGB`, ...) are divided by 255, 16-bit ones (`I;16`,
      and `I` holding 0..65535) by 65535, `1` (bilevel) gives 0 and 1,
      `F` is taken as is (checked to lie in [0, 1] later);
    - a palette (`P`) is replaced by its colours;
    - an alpha channel (`LA`, `RGBA`, `PA`, a palette's transparency) is
      composited on a black background: each value is multiplied by its
      alpha, so a transparent pixel is 0 (the background of MNIST-style
      digits) and an opaque one keeps its value;
    - a colour image in a grey folder becomes its luma (ITU-R 601:
      0.299 R + 0.587 G + 0.114 B; exactly its value when R = G = B), a grey
      image in a colour folder is repeated over three channels.
    """
    if im.mode in ("P", "PA"):
        im = im.convert("RGBA")  # the palette's colours, and its transparency as alpha
    alpha = None
    if im.mode in ("LA", "La", "RGBA", "RGBa"):
        if im.mode in ("La", "RGBa"):  # premultiplied: undo it first
            im = im.convert("RGBA" if im.mode == "RGBa" else "LA")
        alpha = np.asarray(im.getchannel("A"), np.float32) / 255.0  # (h, w)
        im = im.convert("L" if im.mode == "LA" else "RGB")
    if im.mode in _WIDE_MODES:
        arr = np.asarray(im).astype(np.float64)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{im.mode} values outside 0..65535 (not a 16-bit image)")
        arr = (arr / 65535.0).astype(np.float32)
    elif im.mode == "F":
        arr = np.asarray(im, np.float32)
    elif im.mode == "1":
        arr = np.asarray(im, bool).astype(np.float32)
    else:
        im = im if im.mode in ("L", "RGB") else im.convert("RGB")
        arr = np.asarray(im, np.uint8).astype(np.float32) / 255.0
    arr = arr[..., None] if arr.ndim == 2 else arr  # (h, w, c)
    if alpha is not None:
        arr = arr * alpha[..., None]  # composite on black
    if grey and arr.shape[-1] == 3:
        same = np.all(arr[..., :1] == arr[..., 1:])
        arr = arr[..., :1] if same else (arr @ np.float32([0.299, 0.587, 0.114]))[..., None]
    elif not grey and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return arr.astype(np.float32)


def _load_image_folder(path: Path):
    """Reads a folder of images (one sub-folder per class, or flat) by their real bit depth.

    Pixels are scaled by each file's bit depth (8-bit / 255, 16-bit / 65535),
    palettes become their colours, and alpha is composited on a black
    background (see `_pixels`). The first image decides grey or colour.

    Raises:
        ValueError: no images, a corrupt one, one of another size, or one
            over `MAX_IMAGE_PIXELS` (checked from its header, before decoding).
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    if class_dirs:
        entries = [(f, i) for i, d in enumerate(class_dirs) for f in sorted(d.iterdir())
                   if f.suffix.lower() in IMAGE_SUFFIXES]
    else:
        entries = [(f, -1) for f in sorted(path.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not entries:
        raise ValueError(f"No images ({', '.join(IMAGE_SUFFIXES)}) found in {path}.")
    images, grey, size = [], None, None
    for f, _ in entries:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as im:  # reads the header only
                    if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                        raise ValueError(
                            f"Image {f} declares {im.size[0]}x{im.size[1]} pixels, more than "
                            f"the {MAX_IMAGE_PIXELS} a VAE image may have; refusing to decode "
                            "it.")
                    im.load()
                    grey = _is_grey(im) if grey is None else grey
                    arr = _pixels(im, grey)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ValueError(f"Image {f} is too large to decode ({str(e)[:200]}).") from None
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise ValueError(f"Corrupt or unreadable image {f}: {str(e)[:200]}") from e
        size = size or arr.shape[:2]
        if arr.shape[:2] != size:
            raise ValueError(f"Image {f} is {arr.shape[1]}x{arr.shape[0]}, the first image is "
                             f"{size[1]}x{size[0]}: resize them.")
        images.append(arr)
    labels = np.array([c for _, c in entries], dtype=np.int64) if class_dirs else None
    return np.stack(images), labels


def _load_digits(_=None):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1), 0..16 -> [0, 1]
    return x, bunch.target.astype(np.int64)


def _shapes_source(name):
    def load(_=None):
        x, factors = shapes.load_shapes_arrays(name)
        return x, factors[:, 0]  # the label of a pipeline: the shape; all factors: `load_factors`
    return load


NAMED_SOURCES = Registry("named data source", {
    "digits": _load_digits,
    **{name: _shapes_source(name) for name in shapes.SOURCES},
})
PATH_SOURCES = Registry("data file kind",
                        {"idx": _load_idx_dir, "npz": _load_npz, "images": _load_image_folder})


def register(name: str, loader=None):
    """Registers a named in-memory source: `loader() -> (images, labels or None)`.

    Images are uint8 or float in [0, 1], `(n, h, w, c)`; `load` and
    `load_arrays` then accept `name` like `digits`. Usable as a decorator.

    Example:

    >>> @keras_vae.data.register("blobs")
    ... def blobs():
    ...     return make_blobs(), None
    """
    return NAMED_SOURCES.register(name, loader)


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
    x = check_images(as_float32(np.asarray(x)))
    sl = _split_slice(split, len(x))
    x = x[sl]
    if len(x) == 0:
        raise ValueError(f"Split {split!r} of {source!r} is empty ({len(x)} examples).")
    return x, (None if y is None else y[sl])


def load_factors(source: str, split: str = "train") -> np.ndarray:
    """The ground-truth factor table `(n, k)` of a procedural source, sliced like `load_arrays`.

    Raises:
        ValueError: a source without known factors (only `shapes` and
            `shapes-color` have them).
    """
    if str(source) not in shapes.SOURCES:
        raise ValueError(f"{source!r} has no ground-truth factors; disentanglement metrics "
                         f"need one of {sorted(shapes.SOURCES)}.")
    _, factors = shapes.load_shapes_arrays(str(source))
    return factors[_split_slice(split, len(factors))]


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


def tfds_dataset(name: str, split: str, data_dir=None, download: bool = True):
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
