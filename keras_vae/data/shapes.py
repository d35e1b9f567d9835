"""A procedural dSprites-like dataset with known generative factors, rendered offline.

Every image is one shape (square, ellipse or heart) drawn from five factors:
shape, scale, orientation, posX and posY; the colour variant adds the
object's hue and the background's brightness. The images are rendered with
numpy alone (no download, no PIL), deterministically for a seed, so
disentanglement metrics (`keras_vae.evaluation.disentanglement`) can be checked against
ground truth.

Symmetries, as in dSprites: a square looks the same after a quarter turn and
an ellipse after a half turn, so orientation is only identifiable modulo
pi/2 (square) or pi (ellipse); the heart has no rotational symmetry.
"""

from __future__ import annotations

import warnings

import numpy as np

from keras_vae.registry import Registry

SHAPE_NAMES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
COLOR_FACTOR_NAMES = FACTOR_NAMES + ("object_hue", "background")
NUM_SCALES = 6
NUM_ORIENTATIONS = 40
NUM_POSITIONS = 32
NUM_HUES = 8
BACKGROUND_LEVELS = (0.0, 0.2, 0.4, 0.6)  # grey levels of the colour variant's background

# The object's largest radius at scale 1, as a fraction of the image side.
_REACH = 0.2
# Heart curve (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0: its area centroid is at
# y = 0.2935 and its farthest point from there 1.2935 away (measured on a
# 3001^2 grid), so every shape fits in the unit circle about its centroid.
_HEART_CENTROID = 0.2935
_HEART_RADIUS = 1.2935
_WARN_BYTES = 1 << 30
_MAX_BYTES = 64 << 30
_CHUNK = 1024  # images rendered at once (bounds the float temporaries)


def factor_sizes(color: bool = False) -> dict:
    """Number of values of each factor, in factor order.

    Args:
        color: The colour variant (two more factors).

    Returns:
        An ordered dict `{factor name: number of values}`.

    Example:

    >>> factor_sizes()
    {'shape': 3, 'scale': 6, 'orientation': 40, 'posX': 32, 'posY': 32}
    """
    sizes = {"shape": len(SHAPE_NAMES), "scale": NUM_SCALES, "orientation": NUM_ORIENTATIONS,
             "posX": NUM_POSITIONS, "posY": NUM_POSITIONS}
    if color:
        sizes.update(object_hue=NUM_HUES, background=len(BACKGROUND_LEVELS))
    return sizes


def factor_values(size: int = 64) -> dict:
    """The physical value behind each factor index.

    Args:
        size: Image side in pixels.

    Returns:
        A dict of arrays: `scale` (fraction of full size, 0.5 to 1),
        `orientation` (radians, 40 values over [0, 2 pi)), `posX` / `posY`
        (pixel coordinates of the shape's centroid; x is the column, y the
        row, growing downwards), `object_hue` (hue in [0, 1)) and `background`
        (grey level).
    """
    _check_size(size)
    margin = _REACH * size + 0.5  # the whole object stays inside the frame
    positions = np.linspace(margin, size - margin, NUM_POSITIONS)
    return {
        "shape": np.arange(len(SHAPE_NAMES)),
        "scale": np.linspace(0.5, 1.0, NUM_SCALES),
        "orientation": np.arange(NUM_ORIENTATIONS) * (2 * np.pi / NUM_ORIENTATIONS),
        "posX": positions,
        "posY": positions,
        "object_hue": np.arange(NUM_HUES) / NUM_HUES,
        "background": np.asarray(BACKGROUND_LEVELS),
    }


def shapes(n: int | None = None, seed: int = 0, color: bool = False, size: int = 64):
    """Renders shapes images with their ground-truth factors.

    Args:
        n: Number of images, each with factors drawn uniformly and
            independently (numpy Generator seeded with `seed`). None renders
            the full product of all factor values in order, the last factor
            varying fastest (737,280 images, 12 GB as float32; 23.6 million
            in colour, which is refused): a warning states the size.
        seed: Seed of the factor draw.
        color: Colour variant: RGB images of a fully saturated object of one
            of 8 hues on a grey background of one of 4 levels.
        size: Image side in pixels (at least 16).

    Returns:
        `(images, factors, factor_names)`: float32 `(n, size, size, 1)` binary
        images (`(n, size, size, 3)` in [0, 1] for colour), int64 factor
        indices `(n, 5)` (`(n, 7)` for colour), and the factor names.

    Raises:
        ValueError: a bad `n` or `size`, or a full product too large to hold.

    Example:

    >>> x, factors, names = shapes(1000, seed=0)
    >>> x.shape, factors.shape, names[:2]
    ((1000, 64, 64, 1), (1000, 5), ('shape', 'scale'))
    """
    _check_size(size)
    sizes = list(factor_sizes(color).values())
    if n is None:
        total = int(np.prod(sizes))
        nbytes = total * size * size * (3 if color else 1) * 4
        if nbytes > _MAX_BYTES:
            raise ValueError(
                f"The full shapes{'-color' if color else ''} product is {total:,} images "
                f"({nbytes / 2**30:.0f} GiB as float32); pass n to draw a sample instead."
            )
        if nbytes > _WARN_BYTES:
            warnings.warn(f"Rendering the full product of {total:,} shapes images "
                          f"({nbytes / 2**30:.1f} GiB as float32).", stacklevel=2)
        factors = all_factors(color)
    else:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer or None, got {n!r}")
        rng = np.random.default_rng(seed)
        factors = np.stack([rng.integers(0, k, int(n)) for k in sizes], axis=1).astype(np.int64)
    names = COLOR_FACTOR_NAMES if color else FACTOR_NAMES
    return render(factors, size=size), factors, names


def all_factors(color: bool = False) -> np.ndarray:
    """Every factor combination, row-major (the last factor varies fastest).

    Returns:
        int64 `(prod(factor_sizes), k)`: 737,280 x 5, or 23,592,960 x 7 in colour.
    """
    sizes = list(factor_sizes(color).values())
    total = int(np.prod(sizes))
    return np.stack(np.unravel_index(np.arange(total), sizes), axis=1).astype(np.int64)


def render(factors, size: int = 64) -> np.ndarray:
    """Draws the images of given factor indices.

    Args:
        factors: int array `(n, 5)` (binary images) or `(n, 7)` (colour), the
            columns in the order of `FACTOR_NAMES` / `COLOR_FACTOR_NAMES`.
        size: Image side in pixels.

    Returns:
        float32 images `(n, size, size, 1)` in {0, 1}, or `(n, size, size, 3)`
        RGB in [0, 1] for colour factors.

    Raises:
        ValueError: a factor array of the wrong width or with an index out of
            range.
    """
    _check_size(size)
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] not in (len(FACTOR_NAMES), len(COLOR_FACTOR_NAMES)):
        raise ValueError(f"factors must have shape (n, {len(FACTOR_NAMES)}) or "
                         f"(n, {len(COLOR_FACTOR_NAMES)}), got {factors.shape}")
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f"factors must be integer indices, got dtype {factors.dtype}")
    color = factors.shape[1] == len(COLOR_FACTOR_NAMES)
    for j, (name, k) in enumerate(factor_sizes(color).items()):
        bad = (factors[:, j] < 0) | (factors[:, j] >= k)
        if bad.any():
            raise ValueError(f"factor {name!r} must lie in [0, {k}); got "
                             f"{int(factors[bad, j][0])} at row {int(np.argmax(bad))}")
    values = factor_values(size)
    out = np.empty((len(factors), size, size, 3 if color else 1), dtype=np.float32)
    for start in range(0, len(factors), _CHUNK):
        f = factors[start:start + _CHUNK]
        mask = _masks(f, values, size)  # (m, size, size) bool
        if not color:
            out[start:start + len(f), ..., 0] = mask
        else:
            rgb = _hue_to_rgb(values["object_hue"][f[:, 5]])  # (m, 3)
            grey = values["background"][f[:, 6]]  # (m,)
            img = np.where(mask[..., None], rgb[:, None, None, :], grey[:, None, None, None])
            out[start:start + len(f)] = img
    return out


def load_shapes_arrays(name: str, split: str = "train"):
    """The data layer's entry for `--dataset shapes` / `shapes-color`.

    Each name is one fixed, seeded draw (see `SOURCES`): 20,000 binary images
    for `shapes`, 10,000 colour ones for `shapes-color`. There is a single
    split; the caller slices it (`train[:7000]`).

    Args:
        name: `"shapes"` or `"shapes-color"`.
        split: `"train"` (a slice suffix such as `train[:7000]` is accepted
            and left to the caller).

    Returns:
        `(x, factors)`: float32 images in [0, 1] and int64 factor indices.

    Raises:
        ValueError: an unknown name or split.

    Example:

    >>> x, y = load_shapes_arrays("shapes")
    >>> x.shape, y.shape
    ((20000, 64, 64, 1), (20000, 5))
    """
    options = SOURCES.get(name)
    base = str(split).split("[", 1)[0].strip()
    if base not in ("train", "all"):
        raise ValueError(f"The shapes datasets have one split, 'train'; got {split!r}.")
    x, factors, _ = shapes(**options)
    return x, factors


SOURCES = Registry("shapes dataset", {
    "shapes": {"n": 20_000, "seed": 0, "color": False},
    "shapes-color": {"n": 10_000, "seed": 0, "color": True},
})


# ------------------------------------------------------------------ drawing


def _check_size(size):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")


def _square(u, v):
    # Unit circumradius: half side 1/sqrt(2).
    return np.maximum(np.abs(u), np.abs(v)) <= np.sqrt(0.5)


def _ellipse(u, v):
    return u * u + (v / 0.5) ** 2 <= 1.0


def _heart(u, v):
    # Point of the heart upwards in the picture (rows grow downwards).
    x = u * _HEART_RADIUS
    y = -v * _HEART_RADIUS + _HEART_CENTROID
    r = x * x + y * y - 1.0
    return r * r * r - x * x * y * y * y <= 0.0


_INSIDE = (_square, _ellipse, _heart)


def _masks(f, values, size):
    """Inside-tests of every pixel for factor rows `f`: `(m, size, size)` bool."""
    centres = np.arange(size, dtype=np.float64) + 0.5  # pixel centres
    radius = values["scale"][f[:, 1]] * (_REACH * size)  # (m,) pixels at unit radius
    theta = values["orientation"][f[:, 2]]
    dx = (centres[None, None, :] - values["posX"][f[:, 3], None, None]) / radius[:, None, None]
    dy = (centres[None, :, None] - values["posY"][f[:, 4], None, None]) / radius[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    # Object frame: rotate the offset by -theta. (m, size, size) each.
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    mask = np.zeros(u.shape, dtype=bool)
    for shape_id, inside in enumerate(_INSIDE):
        sel = f[:, 0] == shape_id
        if sel.any():
            mask[sel] = inside(u[sel], v[sel])
    return mask


def _hue_to_rgb(hue):
    """Fully saturated, full-value colours of hues in [0, 1): `(m, 3)`."""
    # HSV -> RGB with s = v = 1 (piecewise-linear channels of h6 = 6 h in [0, 6)).
    h6 = np.asarray(hue, dtype=np.float64)[:, None] * 6.0
    rgb = np.concatenate([np.abs(h6 - 3.0) - 1.0, 2.0 - np.abs(h6 - 2.0),
                          2.0 - np.abs(h6 - 4.0)], axis=1)
    return np.clip(rgb, 0.0, 1.0)
