"""Observation models p(x | z): small Keras layers that score decoder outputs.

The decoder produces distribution parameters (logits for Bernoulli, means for
Gaussian). A likelihood turns them into a per-example log-probability, summed
over every pixel and channel, and into the image mean used for pictures and
export.

Each likelihood declares what the rest of the library asks of it:

- `params_per_pixel`: decoder outputs per value; architectures build
  `channels * params_per_pixel` output channels (parameters of one value sit
  side by side on the last axis, split with `split_params`);
- `value_range`: `(low, high)` of the values it scores and of its means
  (`(0, 1)` for Bernoulli), or None when unbounded; export and the data
  checks read it.

`LIKELIHOODS` names them; `register` adds one.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vae.registry import Registry

_LOG_2PI = math.log(2.0 * math.pi)


def sum_over_values(values):
    """Sums `(batch, ...)` to `(batch,)`."""
    return ops.sum(ops.reshape(values, (ops.shape(values)[0], -1)), axis=-1)


@keras.saving.register_keras_serializable(package="keras_vae")
class Bernoulli(keras.layers.Layer):
    """Bernoulli pixels parameterized by logits.

    `log p(x | l) = x * l - softplus(l)`, which stays finite for any finite
    logit (no `log(sigmoid(l))`, which saturates to `log 0`).

    Example:

    >>> Bernoulli().log_prob(x, logits)  # (batch,)
    """

    name_in_registry = "bernoulli"
    params_per_pixel = 1
    value_range = (0.0, 1.0)

    def log_prob(self, x, params):
        """Log-likelihood of `x` in [0, 1], summed over pixels.

        Args:
            x: Targets, `(batch, *image_shape)`, values in [0, 1].
            params: Logits of the same shape.

        Returns:
            `(batch,)` log-probabilities in nats.
        """
        logits = ops.cast(params, "float32")
        x = ops.cast(x, "float32")
        return sum_over_values(x * logits - ops.softplus(logits))

    def mean(self, params):
        """Pixel probabilities `sigmoid(logits)`."""
        return ops.sigmoid(params)

    def call(self, params):
        return self.mean(params)


@keras.saving.register_keras_serializable(package="keras_vae")
class Gaussian(keras.layers.Layer):
    """Gaussian pixels with the decoder output as mean.

    Args:
        scale: Standard deviation. A float fixes it (`scale=1/sqrt(2)` makes the
            negative log-likelihood MSE-sum plus a constant); `"learned"` learns
            one log-scale per image (a scalar), clamped to [-7, 2].
    """

    name_in_registry = "gaussian"
    params_per_pixel = 1
    value_range = None

    def __init__(self, scale: float | str = 1.0, **kwargs):
        super().__init__(**kwargs)
        if scale != "learned":
            try:
                scale = float(scale)
            except (TypeError, ValueError):
                raise ValueError(
                    f"Gaussian scale must be a positive float or 'learned', got {scale!r}"
                ) from None
            if not scale > 0:
                raise ValueError(f"Gaussian scale must be positive, got {scale}")
        self.scale = scale
        if scale == "learned":
            self.log_scale = self.add_weight(
                shape=(), initializer="zeros", name="log_scale", dtype="float32"
            )

    def _log_scale(self):
        if self.scale == "learned":
            return ops.clip(ops.convert_to_tensor(self.log_scale), -7.0, 2.0)
        return ops.convert_to_tensor(math.log(self.scale), dtype="float32")

    def log_prob(self, x, params):
        """Gaussian log-density of `x` around `params`, summed over pixels."""
        mu = ops.cast(params, "float32")
        x = ops.cast(x, "float32")
        log_scale = self._log_scale()
        z = (x - mu) * ops.exp(-log_scale)
        return sum_over_values(-0.5 * ops.square(z) - log_scale - 0.5 * _LOG_2PI)

    def mean(self, params):
        return params

    def call(self, params):
        return self.mean(params)

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def split_params(params, count: int) -> list:
    """Splits `(..., channels * count)` decoder outputs into `count` `(..., channels)` tensors."""
    channels = ops.shape(params)[-1] // count
    return [params[..., i * channels:(i + 1) * channels] for i in range(count)]


@keras.saving.register_keras_serializable(package="keras_vae")
class GaussianPixel(keras.layers.Layer):
    """Gaussian pixels with a mean and a learned log-scale per pixel, both from the decoder.

    The decoder outputs `2 * channels` values per pixel: the means, then the
    log-scales (clamped to [min_log_scale, 2]); a heteroscedastic decoder
    that says how sure it is of each pixel.

    Args:
        min_log_scale: Floor on each pixel's log-scale, which keeps the
            density finite on constant pixels (MNIST's black background).
    """

    name_in_registry = "gaussian_pixel"
    params_per_pixel = 2
    value_range = None

    def __init__(self, min_log_scale: float = -5.0, **kwargs):
        super().__init__(**kwargs)
        self.min_log_scale = float(min_log_scale)

    def log_prob(self, x, params):
        """Gaussian log-density of `x` with per-pixel mean and scale, summed over pixels."""
        mu, log_scale = split_params(ops.cast(params, "float32"), 2)
        log_scale = ops.clip(log_scale, self.min_log_scale, 2.0)
        z = (ops.cast(x, "float32") - mu) * ops.exp(-log_scale)
        return sum_over_values(-0.5 * ops.square(z) - log_scale - 0.5 * _LOG_2PI)

    def mean(self, params):
        return split_params(params, 2)[0]

    def call(self, params):
        return self.mean(params)

    def get_config(self):
        return {**super().get_config(), "min_log_scale": self.min_log_scale}


LIKELIHOODS = Registry("likelihood", {"bernoulli": Bernoulli, "gaussian": Gaussian,
                                      "gaussian_pixel": GaussianPixel})
register = LIKELIHOODS.register
ALIASES = {"mse": {"scale": 1.0}, "gaussian_learned": {"scale": "learned"}}


def names() -> list[str]:
    """Every name `get` accepts: registered likelihoods and aliases."""
    return sorted([*LIKELIHOODS, *ALIASES])


def get(identifier) -> keras.layers.Layer:
    """Returns a likelihood layer from a name, a config dict or an instance.

    Args:
        identifier: `"bernoulli"`, `"gaussian"`, `"gaussian_pixel"`, `"mse"`
            (Gaussian, unit scale), `"gaussian_learned"`, a serialized
            config, or a layer.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if isinstance(identifier, keras.layers.Layer):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    name = str(identifier).lower()
    if name in ALIASES:
        return Gaussian(**ALIASES[name])
    if name not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {identifier!r}; valid names: {names()}")
    return LIKELIHOODS[name]()
