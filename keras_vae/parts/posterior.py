"""The approximate posterior q(z | x): a part the VAE is given, behind `VAE.encode`.

A posterior turns the encoder's outputs into a distribution with `sample(eps)`
(reparameterized), `mode()`, `log_prob(z)` and, where it has one, the closed-form
`kl()` to N(0, I) per latent dimension. `POSTERIORS` names them; `register`
adds one.

Example:

>>> q = keras_vae.parts.posterior.get("diagonal_gaussian").from_outputs(encoder(x))
>>> z = q.sample(eps)  # (batch, latent_dim)
"""

from __future__ import annotations

import keras
from keras import ops

from keras_vae.registry import Registry

# exp(0.5 * 20) ~ 2.2e4 and exp(-30) ~ 1e-13: wide enough to never bind in
# healthy training, narrow enough that exp, square and KL stay finite in
# float16 and float32 even for raw encoder outputs of +-1e3.
LOG_VAR_MIN = -30.0
LOG_VAR_MAX = 20.0


def clamp_log_var(log_var):
    """Clips a raw log-variance to [LOG_VAR_MIN, LOG_VAR_MAX]."""
    return ops.clip(log_var, LOG_VAR_MIN, LOG_VAR_MAX)


class DiagonalGaussian:
    """N(mean, diag(exp(log_var))), with the KL to N(0, I) in closed form.

    Args:
        mean: `(batch, latent_dim)`.
        log_var: `(batch, latent_dim)`, clamped here.
    """

    def __init__(self, mean, log_var):
        self.mean = ops.cast(mean, "float32")
        self.log_var = clamp_log_var(ops.cast(log_var, "float32"))

    @classmethod
    def from_outputs(cls, outputs):
        """The posterior of encoder outputs `[z_mean, z_log_var]`."""
        z_mean, z_log_var = outputs
        return cls(z_mean, z_log_var)

    def parameters(self) -> dict:
        """Named parameters, as the exported encoder returns them."""
        return {"z_mean": self.mean, "z_log_var": self.log_var}

    @property
    def std(self):
        return ops.exp(0.5 * self.log_var)

    def sample(self, eps):
        """Reparameterized sample `mean + std * eps` for given noise `eps`."""
        return self.mean + self.std * ops.cast(eps, "float32")

    def mode(self):
        return self.mean

    def kl(self):
        """KL(q || N(0, I)) per latent dimension, `(batch, latent_dim)`."""
        return 0.5 * (ops.square(self.mean) + ops.exp(self.log_var) - 1.0 - self.log_var)

    def log_prob(self, z):
        """log q(z), summed over latent dimensions: `(batch,)` (or `(k, batch)`)."""
        z = ops.cast(z, "float32")
        return ops.sum(gaussian_log_density(z, self.mean, self.log_var), axis=-1)


POSTERIORS = Registry("posterior", {"diagonal_gaussian": DiagonalGaussian})
register = POSTERIORS.register


def get(name: str = "diagonal_gaussian"):
    """Returns the posterior class registered under `name`.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    return POSTERIORS.get(name)


def standard_normal_log_prob(z):
    """log N(z; 0, I), summed over the last axis."""
    z = ops.cast(z, "float32")
    return ops.sum(-0.5 * (ops.square(z) + LOG_2PI), axis=-1)


def gaussian_log_density(z, mean, log_var):
    """`log N(z; mean, exp(log_var))` per dimension, broadcasting (the one diagonal-Gaussian
    density: posteriors, mixture priors, the beta-TCVAE's pairwise densities)."""
    return -0.5 * (ops.square(z - mean) * ops.exp(-log_var) + log_var + LOG_2PI)


LOG_2PI = 1.8378770664093453  # log(2 pi)


@keras.saving.register_keras_serializable(package="keras_vae")
class Sampling(keras.layers.Layer):
    """Draws `eps ~ N(0, I)` from a seeded `keras.random.SeedGenerator`.

    The layer holds the generator state, so a model's noise stream is
    reproducible from its seed and saved with it.
    """

    def __init__(self, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, z_mean):
        return keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)

    # Keras saves a layer's weights but not its seed generator's state: save it
    # too, so a reloaded model continues the same noise stream.
    def save_own_variables(self, store):
        store["seed_generator_state"] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        if "seed_generator_state" in store:
            self.seed_generator.state.assign(store["seed_generator_state"])

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}
