"""The prior p(z): a part the VAE is given, with a numpy form the edge samplers draw from.

A prior has `log_prob(z)` (summed over latent dimensions), the KL from a
posterior (closed form per dimension where it exists, a Monte Carlo estimate
`log q(z) - log p(z)` otherwise), seeded `sample(n, latent_dim, seed)`, and
`manifest(latent_dim)`: the table written into an export's `manifest.json`,
from which `edge_io.sample_prior` draws the same z with numpy alone. `PRIORS`
names them; `register` adds one.

Example:

>>> prior = keras_vae.priors.get("standard_normal")
>>> z = prior.sample(16, latent_dim=8, seed=0)          # numpy, (16, 8)
>>> vae = keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=8, prior=prior)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_vae.export import edge_io
from keras_vae.posterior import standard_normal_log_prob
from keras_vae.registry import Registry


class Prior(keras.layers.Layer):
    """Base class of priors over z.

    Subclasses implement `log_prob` and `manifest`; they override
    `kl_per_dim` (and set `closed_form_kl`) when the KL from a diagonal
    Gaussian posterior factorizes over dimensions in closed form.
    """

    closed_form_kl = False

    def log_prob(self, z):
        """`log p(z)` summed over the last axis: `(batch,)` or `(K, batch)`."""
        raise NotImplementedError

    def kl_per_dim(self, posterior):
        """Closed-form KL(q || p) per latent dimension, `(batch, latent_dim)`, or None."""
        return None

    def kl(self, posterior, z):
        """KL(q || p) per example, `(batch,)`: closed form if any, else `log q(z) - log p(z)`.

        Args:
            posterior: The posterior distribution (e.g. `DiagonalGaussian`).
            z: A sample of it, `(batch, latent_dim)`: the Monte Carlo estimate's point.
        """
        per_dim = self.kl_per_dim(posterior)
        if per_dim is not None:
            return ops.sum(per_dim, axis=-1)
        return posterior.log_prob(z) - self.log_prob(z)

    def manifest(self, latent_dim: int) -> dict:
        """The prior as a table `edge_io.sample_prior` draws from."""
        raise NotImplementedError

    def sample(self, n: int, latent_dim: int, seed: int | None = None) -> np.ndarray:
        """`(n, latent_dim)` float32 codes drawn with numpy, as the edge samplers draw them."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return edge_io.sample_prior(self.manifest(latent_dim), n, latent_dim, seed)


@keras.saving.register_keras_serializable(package="keras_vae")
class StandardNormal(Prior):
    """N(0, I): the KL from a diagonal Gaussian posterior in closed form."""

    closed_form_kl = True

    def log_prob(self, z):
        return standard_normal_log_prob(z)

    def kl_per_dim(self, posterior):
        return posterior.kl()

    def manifest(self, latent_dim: int) -> dict:
        return dict(edge_io.STANDARD_NORMAL)


PRIORS = Registry("prior", {"standard_normal": StandardNormal, "normal": StandardNormal})
register = PRIORS.register


def get(identifier="standard_normal") -> Prior:
    """Returns a prior from a name, a config dict or an instance.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if isinstance(identifier, Prior):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    return PRIORS.get(identifier)()


def prior_z(n: int, latent_dim: int, seed: int | None = None) -> np.ndarray:
    """Draws `(n, latent_dim)` float32 codes from N(0, I) with numpy's seeded Generator.

    The edge samplers' own function (`keras_vae.export.edge_io`), so one
    seed gives the same codes in Keras, onnxruntime, LiteRT and the browser.
    """
    return edge_io.prior_z(n, latent_dim, seed)
