"""The numpy recipes the library and the device code share: one copy of each.

A leaf: it imports only numpy and the Python standard library, so the device
programs of an export folder (`sample_onnx.py`, `sample_litert.py`, the
server) run it where no TensorFlow, Keras or keras_vae is installed. The
repository's `export/recipes.py` is a link to this file and every export
bundle carries a copy, so what the library writes and draws and what the
device reads and draws come from the same lines:

- checksums and files: `sha256_of`, `size_of`, `partial_name`, `atomic_write`;
- draws: `prior_z`, `sample_prior` (a prior's manifest table),
  `autoregressive_codes` (a VQ-VAE's code grids), `slerp`, `interpolate`;
- pictures: `grid`, `display_scale`;
- messages and arguments: `clip`, and the argparse types (`bounded_int`,
  `seed_int`, `image_file`, ...) the `keras-vae` command and the samplers use.

Errors are plain `ValueError`s (argparse types raise
`argparse.ArgumentTypeError`), whichever side imported the file.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
from pathlib import Path

import numpy as np

# The most images one command decodes (a grid of 4,096 28x28 digits is a
# 1.9k x 1.9k picture); more is refused with this limit named.
MAX_IMAGES = 4096
# Seeds numpy's Generator, Keras and TensorFlow all accept.
MAX_SEED = 2**32 - 1
IMAGE_SUFFIXES = (".png", ".npy")
# Longest text from a file or an argument echoed in a message.
MAX_ECHO = 200


# ------------------------------------------------------------ checksums and files


def sha256_of(path) -> str:
    """SHA-256 of a file, or of a directory (SavedModel) as a sorted listing.

    A directory hashes the lines `relative/path <sha256 of the file>` of every
    file beneath it, in sorted order, so renaming, adding or changing any file
    changes the digest.
    """
    path = Path(path)
    if path.is_dir():
        listing = hashlib.sha256()
        for item in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = item.relative_to(path).as_posix()
            listing.update(f"{rel} {sha256_of(item)}\n".encode())
        return listing.hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def size_of(path) -> int:
    """Bytes of a file, or of all files under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def partial_name(path) -> Path:
    """The temporary name a file or folder is written under before it is renamed into place.

    Hidden, beside `path` (so the rename is atomic), unique to the process,
    and ending in `path`'s own name, so suffix-checking writers (`.keras`,
    `.weights.h5`) accept it: `.partial-<pid>-<name>`.
    """
    path = Path(path)
    return path.with_name(f".partial-{os.getpid()}-{path.name}")


def atomic_write(path, write, mode: str = "wb") -> Path:
    """Writes a file through a temporary name beside it, then renames it into place.

    `write(f)` gets the open temporary file. An interrupted or failed write
    leaves the previous file (or none), never a truncated one. This is the
    one atomic writer of keras_vae (`keras_vae.files` builds on it).

    Returns:
        `path`.
    """
    path = Path(path)
    tmp = partial_name(path)
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ------------------------------------------------------------ messages


def clip(text, limit: int = MAX_ECHO) -> str:
    """`str(text)` cut to `limit` characters: what a message may quote from a file."""
    text = str(text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ------------------------------------------------------------- draws


def prior_z(n: int, latent_dim: int, seed: int | None = None) -> np.ndarray:
    """`(n, latent_dim)` float32 draws from N(0, I), the same call as `keras_vae.prior_z`."""
    return np.random.default_rng(seed).standard_normal((n, latent_dim), dtype=np.float32)


STANDARD_NORMAL = {"type": "standard_normal"}


# Bounds on a mixture table (far above any fitted sampler or learned prior): its
# components, and values whose draws stay finite in float32 (exp(100 / 2) ~ 5e21).
MAX_COMPONENTS = 1 << 12
MAX_ABS_MEAN = 1e6
MAX_ABS_LOG_VAR = 100.0


def _number_table(value, name: str, shape: tuple) -> np.ndarray:
    """A table of JSON numbers (no booleans, strings or ragged rows) as float64 of `shape`."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = None
    if array is None or array.dtype.kind not in "iuf" or array.shape != shape:
        found = "ragged or not numbers" if array is None or array.dtype.kind not in "iuf" \
            else f"shape {list(array.shape)}"
        raise ValueError(f"The manifest's mixture prior needs {name} of shape {list(shape)} "
                         f"holding numbers ({found}).")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"The manifest's mixture prior has non-finite {name} (NaN or inf).")
    return array


def check_prior(prior: dict | None, latent_dim: int):
    """Checks a continuous prior table; None for N(0, I), else `(weights, means, log_vars)`.

    A mixture needs 1 to `MAX_COMPONENTS` finite non-negative `weights` with a
    positive sum, and `(K, latent_dim)` finite `means` (|m| <= `MAX_ABS_MEAN`)
    and `log_vars` (|v| <= `MAX_ABS_LOG_VAR`): every value `sample_prior`
    reads, so its draws are finite.

    Raises:
        ValueError: an unknown prior type or a malformed mixture table.
    """
    prior = STANDARD_NORMAL if prior is None else prior
    kind = prior.get("type") if isinstance(prior, dict) else None
    if kind == "standard_normal":
        return None
    if kind != "mixture":
        raise ValueError(f"Unknown prior {clip(repr(kind))} in the manifest; this sampler knows "
                         "'standard_normal' and 'mixture'.")
    raw = prior.get("weights")
    k = len(raw) if isinstance(raw, (list, tuple, np.ndarray)) else -1
    if not 1 <= k <= MAX_COMPONENTS:
        raise ValueError(f"The manifest's mixture prior must have a list of 1 to "
                         f"{MAX_COMPONENTS} weights (K >= 1 components).")
    weights = _number_table(raw, "weights", (k,))
    means = _number_table(prior.get("means"), "means", (k, latent_dim))
    log_vars = _number_table(prior.get("log_vars"), "log_vars", (k, latent_dim))
    if np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError("The manifest's mixture prior must have non-negative weights with a "
                         "positive sum.")
    if np.any(np.abs(means) > MAX_ABS_MEAN) or np.any(np.abs(log_vars) > MAX_ABS_LOG_VAR):
        raise ValueError(f"The manifest's mixture prior has means beyond +-{MAX_ABS_MEAN:g} or "
                         f"log_vars beyond +-{MAX_ABS_LOG_VAR:g}.")
    return weights, means.astype(np.float32), log_vars.astype(np.float32)


def sample_prior(prior: dict | None, n: int, latent_dim: int,
                 seed: int | None = None) -> np.ndarray:
    """`(n, latent_dim)` float32 draws from a prior in its manifest form.

    The one recipe for every runtime (Keras, onnxruntime, LiteRT, the browser):

    - `{"type": "standard_normal"}`: `default_rng(seed).standard_normal((n, d), float32)`;
    - `{"type": "mixture", "weights": (K,), "means": (K, d), "log_vars": (K, d)}`:
      with one generator `rng = default_rng(seed)`, first `u = rng.random(n)`
      (float64) picks component `k = searchsorted(cumsum(w) / sum(w), u, "right")`,
      then `eps = rng.standard_normal((n, d), float32)` and
      `z = means[k] + exp(log_vars[k] / 2) * eps` in float32.

    Raises:
        ValueError: an unknown prior type or a malformed mixture table.
    """
    table = check_prior(prior, latent_dim)
    if table is None:
        return prior_z(n, latent_dim, seed)
    weights, means, log_vars = table
    k = len(weights)
    rng = np.random.default_rng(seed)
    u = rng.random(n)  # (n,) float64 in [0, 1)
    cdf = np.cumsum(weights) / weights.sum()
    comps = np.minimum(np.searchsorted(cdf, u, side="right"), k - 1)  # (n,)
    eps = rng.standard_normal((n, latent_dim), dtype=np.float32)
    return (means[comps] + np.exp(0.5 * log_vars[comps]) * eps).astype(np.float32)


AUTOREGRESSIVE_CODES = "autoregressive_codes"

# Bounds on a code grid (far above any VQ-VAE's): the autoregressive loop runs the
# prior once per cell on the whole grid, so its cost grows with cells squared.
MAX_CODE_CELLS = 4096
MAX_CODEBOOK = 1 << 16


def _is_count(value, hi: int) -> bool:
    return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            and 1 <= value <= hi)


def check_code_grid(grid_shape, codebook_size) -> tuple[int, int]:
    """`(height, width)` of a code grid, checked with its codebook size.

    Raises:
        ValueError: a grid that is not two positive integers, more than
            `MAX_CODE_CELLS` cells, or a codebook size outside [1, `MAX_CODEBOOK`].
    """
    if not (isinstance(grid_shape, (list, tuple)) and len(grid_shape) == 2
            and all(_is_count(d, MAX_CODE_CELLS) for d in grid_shape)
            and int(grid_shape[0]) * int(grid_shape[1]) <= MAX_CODE_CELLS):
        raise ValueError(f"The code grid must be two positive integers with at most "
                         f"{MAX_CODE_CELLS} cells in all, got {clip(repr(grid_shape))}.")
    if not _is_count(codebook_size, MAX_CODEBOOK):
        raise ValueError(f"The codebook size must be an integer in [1, {MAX_CODEBOOK}], got "
                         f"{clip(repr(codebook_size))}.")
    return int(grid_shape[0]), int(grid_shape[1])


def autoregressive_codes(run_logits, n: int, grid_shape, codebook_size: int,
                         seed: int | None = None) -> np.ndarray:
    """`(n, height, width)` int32 code grids drawn position by position from a code prior.

    The one recipe for every runtime (Keras, onnxruntime, LiteRT): with
    `rng = default_rng(seed)` and the grid starting at zeros, for each
    position `(i, j)` in raster order, `logits = run_logits(codes)[:, i, j]`
    (the prior network on the partial grid; causal, so later zeros do not
    matter), `p = softmax(logits)` in float64, `u = rng.random(n)` and
    `code = searchsorted(cumsum(p), u, "right")` (inverse CDF, clipped to the
    last code).

    Args:
        run_logits: `run_logits(codes (n, h, w) int32) -> (n, h, w, codebook_size)`
            logits; a function returning zeros draws uniform codes.
        n: Number of grids.
        grid_shape: `(height, width)`.
        codebook_size: Number of codes.
        seed: Seed of numpy's Generator.

    Returns:
        int32 codes in `[0, codebook_size)`.

    Raises:
        ValueError: a malformed grid or codebook size (`check_code_grid`),
            logits of the wrong shape or non-finite.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    height, width = check_code_grid(grid_shape, codebook_size)
    rng = np.random.default_rng(seed)
    codes = np.zeros((n, height, width), np.int32)
    expected = (n, height, width, int(codebook_size))
    for i in range(height):
        for j in range(width):
            logits = np.asarray(run_logits(codes))
            if logits.shape != expected or not np.all(np.isfinite(logits)):
                raise ValueError(f"The code prior gave logits {logits.shape} (finite: "
                                 f"{bool(np.all(np.isfinite(logits)))}), expected finite "
                                 f"{expected}.")
            step = logits[:, i, j].astype(np.float64)  # (n, codebook_size)
            p = np.exp(step - step.max(axis=1, keepdims=True))
            cdf = np.cumsum(p, axis=1)
            cdf /= cdf[:, -1:]
            u = rng.random(n)  # (n,) float64 in [0, 1)
            picked = (cdf <= u[:, None]).sum(axis=1)  # searchsorted(cdf, u, "right")
            codes[:, i, j] = np.minimum(picked, codebook_size - 1)
    return codes


# Below this angle (radians) between two latents, slerp is numerically lerp.
SLERP_MIN_ANGLE = 1e-4


def slerp(start, end, steps: int = 8) -> np.ndarray:
    """Spherical interpolation along the great circle from `start` to `end`.

    `z(t) = sin((1 - t) w) / sin(w) * start + sin(t w) / sin(w) * end`, with
    `w` the angle between the latents: the angle to `start` grows linearly in
    t, and between latents of equal norm every point keeps that norm (a linear
    path cuts through the low-density centre of a Gaussian prior instead).
    Zero, nearly parallel or nearly opposite latents (`sin(w)` ~ 0, no unique
    great circle) fall back to linear interpolation. Computed in float64.

    Args:
        start: Latent `(latent_dim,)`.
        end: Latent `(latent_dim,)`.
        steps: Number of points, endpoints included (>= 2).

    Returns:
        `(steps, latent_dim)` float32; the first row equals `start` and the
        last equals `end` exactly.

    Raises:
        ValueError: latents of different shapes or steps < 2.
    """
    a = np.asarray(start, dtype=np.float64)
    b = np.asarray(end, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"Interpolation needs two latents of the same shape (latent_dim,); got "
                         f"{a.shape} and {b.shape}.")
    if int(steps) < 2:
        raise ValueError(f"steps must be >= 2 (the two endpoints), got {steps}")
    t = np.linspace(0.0, 1.0, int(steps))[:, None]  # (steps, 1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    omega = 0.0
    if na > 0.0 and nb > 0.0:
        omega = float(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0)))
    if omega < SLERP_MIN_ANGLE or np.pi - omega < SLERP_MIN_ANGLE:
        path = (1.0 - t) * a + t * b
    else:
        path = (np.sin((1.0 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)
    path[0], path[-1] = a, b  # exact endpoints, not sin(w)/sin(w) rounding
    return path.astype(np.float32)


def interpolate(seed_a: int, seed_b: int, steps: int, latent_dim: int,
                prior: dict | None = None) -> np.ndarray:
    """`slerp` between the first prior draws of two seeds.

    Returns:
        `(steps, latent_dim)` float32; the first row is the first draw of
        `seed_a`, the last that of `seed_b`.
    """
    a = sample_prior(prior, 1, latent_dim, seed_a)[0]
    b = sample_prior(prior, 1, latent_dim, seed_b)[0]
    return slerp(a, b, steps)


# -------------------------------------------------------------- pictures


def grid(images: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles `(n, h, w, c)` images in [0, 1] into one uint8 picture (white gaps)."""
    images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    canvas = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, ncols)
        canvas[r * (h + pad):r * (h + pad) + h, col * (w + pad):col * (w + pad) + w] = image
    canvas = np.round(canvas * 255).astype(np.uint8)
    return canvas[..., 0] if c == 1 else canvas


def display_scale(images) -> int:
    """Upscale factor (nearest neighbour) that makes small images (8x8 digits) visible."""
    return max(1, 64 // max(np.asarray(images).shape[1:3]))


# ------------------------------------------------------ argument types


def bounded_int(lo: int, hi: int | None = None, what: str = "an integer"):
    """An argparse `type=`: an integer in `[lo, hi]`, else a usage error naming the range.

    Example:

    >>> p.add_argument("--n", type=bounded_int(1, MAX_IMAGES))
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {clip(text)!r}") from None
        if value < lo or (hi is not None and value > hi):
            bound = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {clip(text)}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


def bounded_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                  hi_open: bool = False, what: str = "a number"):
    """An argparse `type=`: a finite float in the range, else a usage error naming it."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {clip(text)!r}") from None
        bad = not math.isfinite(value)
        if lo is not None:
            bad |= value <= lo if lo_open else value < lo
        if hi is not None:
            bad |= value >= hi if hi_open else value > hi
        if bad:
            left = "finite" if lo is None else f"{'>' if lo_open else '>='} {lo:g}"
            right = "" if hi is None else f" and {'<' if hi_open else '<='} {hi:g}"
            raise argparse.ArgumentTypeError(f"must be {left}{right}, got {clip(text)}")
        return value

    parse.__name__ = what
    return parse


seed_int = bounded_int(0, MAX_SEED, "a seed")
non_negative_int = bounded_int(0, None, "a non-negative integer")
positive_int = bounded_int(1, None, "a positive integer")
image_count = bounded_int(1, MAX_IMAGES, "a number of images")
non_negative_float = bounded_float(0.0, what="a non-negative number")
positive_float = bounded_float(0.0, lo_open=True, what="a positive number")


def output_file(suffixes=IMAGE_SUFFIXES):
    """An argparse `type=`: a file to write, with one of `suffixes`, that is not a folder."""
    def parse(text: str) -> Path:
        path = Path(text)
        if path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"{clip(text)!r} must end in {' or '.join(suffixes)}")
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{clip(text)!r} is a directory; name a file")
        if path.parent.exists() and not path.parent.is_dir():
            raise argparse.ArgumentTypeError(f"{clip(str(path.parent))!r} is not a directory")
        return path

    parse.__name__ = "an output file"
    return parse


image_file = output_file()


def check_labels(labels, num_classes: int | None, n: int | None = None,
                 what: str = "Labels") -> np.ndarray:
    """The one check of class labels and class ids; returns them as int32 `(n,)`.

    Labels must be integers (integral floats pass), one per image, in
    `[0, num_classes)`. The library and the device programs call this one (it is numpy only);
    a dataset's labels get `keras_vae.data.label_assertion`, its graph twin.

    Args:
        labels: Array-like `(n,)` or `(n, 1)`.
        num_classes: The number of classes; None for no upper bound.
        n: The number of images, one label each; None for any number but none.
        what: The labels' name in messages (`"Labels"`, `"class_ids"`).

    Raises:
        ValueError: labels that are not integers, not one per image, or
            outside the range (-1 marks a source without labels).

    Example:

    >>> check_labels([0, 3, 1], num_classes=10)
    array([0, 3, 1], dtype=int32)
    """
    arr = np.asarray(labels)
    valid = f"in [0, {num_classes})" if num_classes is not None else ">= 0"
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or (
            np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0))):
        raise ValueError(f"{what} must be integers {valid}, got dtype {arr.dtype}")
    arr = arr.reshape(-1) if arr.ndim == 2 and arr.shape[-1] == 1 else arr
    if arr.ndim != 1 or (n is not None and len(arr) != n):
        raise ValueError(f"Expected one label per image ({n} images), got labels of shape "
                         f"{np.shape(labels)}")
    if n is None and arr.size == 0:
        raise ValueError(f"{what} must be {valid}; got none")
    too_big = arr >= num_classes if num_classes is not None else np.zeros(arr.shape, bool)
    bad = arr[(arr < 0) | too_big]
    if bad.size:
        hint = " (-1 means the data has no labels)" if (bad == -1).any() else ""
        raise ValueError(f"{what} must be {valid}; got "
                         f"{sorted(set(bad.astype(np.int64).tolist()))[:10]}{hint}")
    return arr.astype(np.int32)
