"""Pictures a sampler writes: a PNG grid with Pillow, or the raw images as `.npy`.

A device module: the Python standard library, numpy, Pillow when installed,
and the shared `recipes` (beside it in an export folder).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

if __package__:
    from keras_vae import recipes
else:  # run from an export folder: the shared recipes sit beside this file
    import recipes


def save_images(images: np.ndarray, out, ncols: int | None = None) -> Path:
    """Writes images as a PNG grid, or as a float32 `.npy` array.

    A path ending in `.npy`, or a `.png` when Pillow is not installed, gets
    the raw `(n, h, w, c)` images (a `.npy` beside the requested name). A PNG
    is upscaled so 8x8 or 28x28 digits stay visible. Writes are atomic.

    Args:
        images: `(n, h, w, c)` images in [0, 1].
        out: The file to write, ending in `.png` or `.npy`.
        ncols: Columns of the grid (None: about square).

    Returns:
        The path written.

    Raises:
        ValueError: a suffix other than `.png` or `.npy`.
    """
    out = Path(out)
    if out.suffix.lower() not in recipes.IMAGE_SUFFIXES:
        raise ValueError(f"{recipes.clip(out)} must end in .png or .npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() != ".npy":
        try:
            from PIL import Image
        except ImportError:
            print("Pillow is not installed: writing the images as a .npy array instead.",
                  file=sys.stderr)
            out = out.with_suffix(".npy")
        else:
            picture = recipes.grid(images, ncols)
            scale = recipes.display_scale(images)
            picture = np.repeat(np.repeat(picture, scale, axis=0), scale, axis=1)
            return recipes.atomic_write(
                out, lambda tmp: Image.fromarray(picture).save(tmp, format="PNG"))
    return recipes.atomic_write(out, lambda tmp: np.save(tmp, np.asarray(images, np.float32)))
