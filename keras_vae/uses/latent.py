"""Walks through a trained VAE's latent space: interpolation, attributes, traversals, grids.

Latents are the posterior means `z_mean` of `VAE.encode` (deterministic, the
point a picture of "the latent of x" should show); everything returned here is
numpy.

Example:

>>> strip = keras_vae.uses.latent.interpolate(vae, x[0], x[1], steps=8, method="slerp")
>>> glasses = keras_vae.uses.latent.attribute_vector(vae, x, has_glasses)
>>> edited = keras_vae.uses.latent.add_attribute(vae, x[:4], glasses, strength=1.5)
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from keras import ops

from keras_vae import data as data_lib
from keras_vae import recipes
from keras_vae.registry import Registry

# --------------------------------------------------------------- paths in z


def _check_pair(start, end):
    start = np.asarray(start, dtype=np.float64)
    end = np.asarray(end, dtype=np.float64)
    if start.ndim != 1 or start.shape != end.shape:
        raise ValueError(
            f"Interpolation needs two latents of the same shape (latent_dim,); got "
            f"{start.shape} and {end.shape}."
        )
    return start, end


def _fractions(steps: int) -> np.ndarray:
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (the two endpoints), got {steps}")
    return np.linspace(0.0, 1.0, int(steps))


def lerp(start, end, steps: int = 8) -> np.ndarray:
    """Linear interpolation `(1 - t) * start + t * end` for `steps` values of t in [0, 1].

    Args:
        start: Latent `(latent_dim,)`.
        end: Latent `(latent_dim,)`.
        steps: Number of points, endpoints included.

    Returns:
        `(steps, latent_dim)` float32; the first row is `start`, the last `end`.
    """
    a, b = _check_pair(start, end)
    t = _fractions(steps)[:, None]  # (steps, 1)
    path = (1.0 - t) * a + t * b
    path[0], path[-1] = a, b
    return path.astype(np.float32)


# The one slerp, shared with the edge samplers and the browser page.
slerp = recipes.slerp


INTERPOLATIONS = Registry("interpolation", {"linear": lerp, "slerp": slerp})
register = INTERPOLATIONS.register


def get(name: str):
    """Returns the interpolation registered under `name` (`linear` or `slerp`).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    return INTERPOLATIONS.get(name)


# ------------------------------------------------------------ model helpers


def encode_mean(model, x, labels=None, batch_size: int = 256) -> np.ndarray:
    """Posterior means of images `x` (validated like `fit` input).

    Returns:
        `(batch, latent_dim)` float32 numpy.
    """
    x = data_lib.check_images(x, model.image_shape)
    labels = None if labels is None else np.asarray(labels).reshape(-1)
    out = []
    for start in range(0, len(x), batch_size):
        lb = None if labels is None else labels[start:start + batch_size]
        z_mean, _ = model.encode(ops.convert_to_tensor(x[start:start + batch_size]), lb)
        out.append(ops.convert_to_numpy(z_mean))
    return np.concatenate(out, axis=0)


def decode(model, z, labels=None, batch_size: int = 256) -> np.ndarray:
    """Image means of latents `z` `(n, latent_dim)`, batched; `(n, *image_shape)` numpy."""
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[1] != model.latent_dim:
        raise ValueError(
            f"Latents must have shape (n, {model.latent_dim}) for this model, got {z.shape}."
        )
    labels = _labels_for(model, labels, len(z))
    return data_lib.batched(lambda zb, lb: model.decode(ops.convert_to_tensor(zb), lb), z, labels,
                          batch_size)


def _labels_for(model, labels, n):
    if labels is None:
        if model.num_classes:
            raise ValueError(
                f"This conditional VAE ({model.num_classes} classes) needs labels to decode."
            )
        return None
    labels = np.asarray(labels).reshape(-1)
    if model.num_classes:
        labels = data_lib.check_labels(labels, model.num_classes)
    return np.resize(labels.astype(np.int32), n)


def _as_latent(model, point, label, role):
    """A latent from `point`: a `(latent_dim,)` latent or one image (encoded to z_mean)."""
    point = np.asarray(point)
    if point.shape == (model.latent_dim,) and point.shape != model.image_shape:
        return point.astype(np.float32)
    shapes = {model.image_shape}
    if model.image_shape[-1] == 1:
        shapes.add(model.image_shape[:-1])  # images without the channel axis
    if point.shape in shapes:
        lb = None if label is None else np.asarray([label])
        return encode_mean(model, point[None], lb)[0]
    raise ValueError(
        f"The {role} of the interpolation has shape {point.shape}: expected an image of "
        f"shape {model.image_shape} or a latent of shape ({model.latent_dim},)."
    )


def interpolate(model, start, end, steps: int = 8, method: str = "slerp",
                label=None) -> np.ndarray:
    """Decoded images along a path between two images or two latents.

    Images are encoded to their posterior means first; the path between the
    latents is `lerp` (`method="linear"`) or `slerp`.

    Args:
        model: A trained `VAE`.
        start: One image `image_shape` or one latent `(latent_dim,)`.
        end: Same, for the other end.
        steps: Number of images, endpoints included.
        method: `"linear"` or `"slerp"`.
        label: Class of both ends, for a conditional model.

    Returns:
        `(steps, *image_shape)` float32 image means.

    Raises:
        ValueError: an endpoint that is neither an image nor a latent of this
            model, `steps < 2`, an unknown method.

    Example:

    >>> strip = interpolate(vae, x_test[0], x_test[1], steps=10)
    """
    path_fn = get(method)
    z0 = _as_latent(model, start, label, "start")
    z1 = _as_latent(model, end, label, "end")
    path = path_fn(z0, z1, steps)  # (steps, latent_dim)
    return decode(model, path, None if label is None else [label])


# ---------------------------------------------------------- attribute vectors


def attribute_vector(model, x, has_attribute, labels=None, batch_size: int = 256) -> np.ndarray:
    """Mean latent of the examples with an attribute minus the mean latent of those without.

    Args:
        model: A trained `VAE`.
        x: Images `(n, *image_shape)`.
        has_attribute: `(n,)` booleans (or 0/1): which images show the attribute.
        labels: Class labels for a conditional model.

    Returns:
        `(latent_dim,)` float32 vector.

    Raises:
        ValueError: a mask of the wrong length, or no example on one side.

    Example:

    >>> smile = attribute_vector(vae, faces, smiling)
    >>> add_attribute(vae, faces[:8], smile, strength=1.0)
    """
    mask = np.asarray(has_attribute).reshape(-1)
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("has_attribute must be booleans or 0/1 values.")
        mask = mask.astype(bool)
    if len(mask) != len(x):
        raise ValueError(f"has_attribute has {len(mask)} entries for {len(x)} images.")
    if mask.all() or not mask.any():
        raise ValueError(
            f"An attribute vector needs examples with and without the attribute; got "
            f"{int(mask.sum())} with and {int((~mask).sum())} without."
        )
    z = encode_mean(model, x, labels, batch_size)  # (n, latent_dim)
    return (z[mask].mean(axis=0) - z[~mask].mean(axis=0)).astype(np.float32)


def add_attribute(model, x, vector, strength: float = 1.0, labels=None,
                  batch_size: int = 256) -> np.ndarray:
    """Decodes `z_mean(x) + strength * vector`: images with the attribute added (or removed).

    Args:
        model: A trained `VAE`.
        x: Images `(n, *image_shape)`.
        vector: `(latent_dim,)`, e.g. from `attribute_vector`.
        strength: Multiple of the vector to add (negative removes it).
        labels: Class labels for a conditional model.

    Returns:
        `(n, *image_shape)` float32 image means.
    """
    vector = np.asarray(vector, dtype=np.float32)
    if vector.shape != (model.latent_dim,):
        raise ValueError(
            f"The attribute vector must have shape ({model.latent_dim},), got {vector.shape}."
        )
    z = encode_mean(model, x, labels, batch_size) + float(strength) * vector
    return decode(model, z, labels, batch_size)


# ------------------------------------------------------------ traversals


def traversal(model, z=None, dims=None, values=None, label=None) -> np.ndarray:
    """Decodes a latent `z` with one dimension at a time set to each of `values`.

    Args:
        model: A trained `VAE`.
        z: Base latent `(latent_dim,)`; the prior mean (zeros) when None.
        dims: Latent dimensions to vary (all by default).
        values: Values given to the varied dimension (default `linspace(-3, 3, 9)`).
        label: Class for a conditional model.

    Returns:
        `(len(dims), len(values), *image_shape)` float32: row `i` varies `dims[i]`.
    """
    z = np.zeros(model.latent_dim, np.float32) if z is None else np.asarray(z, np.float32)
    if z.shape != (model.latent_dim,):
        raise ValueError(f"z must have shape ({model.latent_dim},), got {z.shape}.")
    dims = list(range(model.latent_dim)) if dims is None else [int(d) for d in dims]
    bad = [d for d in dims if not 0 <= d < model.latent_dim]
    if bad or not dims:
        raise ValueError(f"dims must be in [0, {model.latent_dim}); got {dims}.")
    values = np.linspace(-3.0, 3.0, 9) if values is None else np.asarray(values, np.float32)
    latents = np.repeat(z[None, None], len(dims), axis=0).repeat(len(values), axis=1)
    for row, d in enumerate(dims):
        latents[row, :, d] = values  # (len(dims), len(values), latent_dim)
    images = decode(model, latents.reshape(-1, model.latent_dim),
                    None if label is None else [label])
    return images.reshape(len(dims), len(values), *model.image_shape)


# -------------------------------------------------------- 2-D latent spaces


def _check_2d(model):
    if model.latent_dim != 2:
        raise ValueError(
            f"This picture needs a 2-D latent space; the model has latent_dim="
            f"{model.latent_dim}. Train with latent_dim=2 (or use `traversal`)."
        )


def manifold_latents(n: int = 15, epsilon: float = 0.05) -> np.ndarray:
    """The latents of an `n` x `n` manifold grid (Kingma & Welling, 2014, fig. 4).

    Evenly spaced quantiles in `[epsilon, 1 - epsilon]` of each axis go
    through the standard normal inverse CDF, so the grid covers the prior's
    mass rather than a box. Rows run from high to low `z[1]` (top of a
    picture is up), columns from low to high `z[0]`.

    Returns:
        `(n * n, 2)` float32, row-major.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if not 0.0 < epsilon < 0.5:
        raise ValueError(f"epsilon must be in (0, 0.5), got {epsilon}")
    inv_cdf = NormalDist().inv_cdf
    axis = np.array([inv_cdf(p) for p in np.linspace(epsilon, 1.0 - epsilon, n)])
    z0, z1 = np.meshgrid(axis, axis[::-1])  # (n, n) each
    return np.stack([z0.ravel(), z1.ravel()], axis=-1).astype(np.float32)


def manifold_grid(model, n: int = 15, epsilon: float = 0.05, label=None) -> np.ndarray:
    """Decodes the `manifold_latents` grid of a model with 2-D latents.

    Returns:
        `(n * n, *image_shape)` float32 image means, row-major (tile with
        `pictures.grid(images, ncols=n)`).

    Raises:
        ValueError: when `model.latent_dim != 2`.
    """
    _check_2d(model)
    return decode(model, manifold_latents(n, epsilon), None if label is None else [label])


def latent_scatter_data(model, x, labels, batch_size: int = 256):
    """Latents and labels for a scatter of a 2-D latent space coloured by label.

    Returns:
        `(z_mean (n, 2), labels (n,))`; draw with `pictures.save_latent_scatter`.

    Raises:
        ValueError: when `model.latent_dim != 2` or labels do not match `x`.
    """
    _check_2d(model)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(x):
        raise ValueError(f"{len(labels)} labels for {len(x)} images.")
    conditioning = labels if model.num_classes else None
    return encode_mean(model, x, conditioning, batch_size), labels
