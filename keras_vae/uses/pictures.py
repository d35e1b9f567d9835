"""Pictures of a VAE's work: image grids written as PNG."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from keras_vae import files, recipes

# One tiling and one display scale for the library and the edge samplers
# (`keras_vae.recipes`, copied into every export), so a grid from `VAE.sample`
# and one from onnxruntime match pixel for pixel.
grid = recipes.grid
display_scale = recipes.display_scale


def save_png(array: np.ndarray, path, scale: int = 1) -> Path:
    """Writes a uint8 picture atomically, upscaled by `scale` (nearest neighbour)."""
    from PIL import Image

    if scale > 1:
        array = np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)
    return files.atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def save_grid(images, path, ncols: int | None = None) -> Path:
    """Saves images as a PNG grid."""
    return save_png(grid(images, ncols), path, display_scale(images))


def save_reconstructions(originals, reconstructions, path, ncols: int = 8) -> Path:
    """Saves rows of inputs, each above its reconstruction (see `reconstruction_rows`)."""
    return save_grid(reconstruction_rows(originals, reconstructions, ncols), path, ncols)


def save_interpolation(strips, path) -> Path:
    """Saves interpolation strips, one row per path.

    Args:
        strips: `(steps, h, w, c)` (one strip, e.g. from
            `latent.interpolate`) or `(rows, steps, h, w, c)`.
        path: PNG file to write.
    """
    strips = np.asarray(strips)
    if strips.ndim == 4:
        strips = strips[None]
    if strips.ndim != 5:
        raise ValueError(
            f"Interpolation strips must be (steps, h, w, c) or (rows, steps, h, w, c), "
            f"got shape {strips.shape}"
        )
    rows, steps = strips.shape[:2]
    return save_grid(strips.reshape(rows * steps, *strips.shape[2:]), path, ncols=steps)


def save_traversal(images, path) -> Path:
    """Saves a `latent.traversal` result `(dims, values, h, w, c)`: one row per dimension."""
    return save_interpolation(images, path)


def save_manifold(images, path) -> Path:
    """Saves a `latent.manifold_grid` result `(n * n, h, w, c)` as an `n` x `n` picture."""
    images = np.asarray(images)
    n = math.isqrt(len(images))
    if n * n != len(images):
        raise ValueError(f"A manifold grid has n * n images; got {len(images)}.")
    return save_grid(images, path, ncols=n)


def save_latent_scatter(z, labels, path, size: float = 6.0, dpi: int = 100,
                        title: str | None = None) -> Path:
    """Scatter plot of 2-D latents coloured by label, written as a PNG with matplotlib.

    Args:
        z: `(n, 2)` latents (e.g. `latent.latent_scatter_data`).
        labels: `(n,)` integer labels (colours; a legend for up to 20 classes).
        path: PNG file to write.
        size: Figure side in inches; the PNG is `size * dpi` pixels square.
        dpi: Dots per inch.
        title: Optional title.

    Raises:
        ValueError: latents that are not `(n, 2)` or labels of another length.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    z = np.asarray(z, dtype=np.float32)
    labels = np.asarray(labels).reshape(-1)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"A latent scatter needs (n, 2) latents, got shape {z.shape}")
    if len(labels) != len(z):
        raise ValueError(f"{len(labels)} labels for {len(z)} latents.")
    fig = Figure(figsize=(size, size), dpi=dpi)  # no pyplot: no global state, any backend
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    classes = np.unique(labels)
    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    for i, c in enumerate(classes):
        pts = z[labels == c]
        ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.7, color=cmap(i % cmap.N), label=str(c))
    if len(classes) <= 20:
        ax.legend(markerscale=2, fontsize="small", loc="best")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return files.atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))


def reconstruction_rows(originals, reconstructions, ncols: int = 8) -> np.ndarray:
    """Interleaves up to four rows of `ncols` inputs, each above its reconstructions.

    Returns:
        `(2 * rows * ncols, h, w, c)` images, the layout of `save_reconstructions`;
        tile with `grid(..., ncols=ncols)`.
    """
    originals = np.asarray(originals)[:ncols * 4]
    reconstructions = np.asarray(reconstructions)[:len(originals)]
    if originals.shape != reconstructions.shape:
        raise ValueError(
            f"Reconstructions {reconstructions.shape} do not match inputs {originals.shape}."
        )
    rows = []
    for start in range(0, len(originals), ncols):
        rows.append(originals[start:start + ncols])
        rows.append(reconstructions[start:start + ncols])
    return np.concatenate(rows)
