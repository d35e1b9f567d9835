"""Training objectives around the ELBO: KL weight schedules, free bits, the IWAE bound.

A VAE's per-example objective (see `VAE.per_example_loss`) is

    reconstruction + beta * w(step) * KL_free_bits

or, with `iwae_k > 1`, the negative importance-weighted bound (Burda et al.,
2016) with the log prior ratio weighted by `beta * w(step)`. Here `w` is a
KL schedule evaluated at the optimizer's iteration count *inside* the
compiled step (a tensor, no Python-side counter), so warm-up keeps working
under `tf.function`, XLA and distribution strategies, and resumes where a
saved model left off.

Schedules are small serializable objects registered with Keras and saved in
`VAE.get_config`:

>>> schedule = keras_vae.parts.objectives.get("linear", steps=1000)
>>> vae = keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=16, kl_schedule=schedule,
...                     free_bits=0.1)
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vae.registry import Registry


def _as_step(step):
    return ops.cast(step, "float32")


@keras.saving.register_keras_serializable(package="keras_vae")
class ConstantSchedule:
    """A KL weight that never changes.

    Args:
        value: The weight, >= 0.
    """

    name_in_registry = "constant"

    def __init__(self, value: float = 1.0):
        value = float(value)
        if not value >= 0.0:
            raise ValueError(f"ConstantSchedule value must be >= 0, got {value}")
        self.value = value

    def __call__(self, step):
        """The weight at optimizer step `step` (a scalar tensor or int): a float32 scalar."""
        return ops.cast(self.value, "float32") + 0.0 * _as_step(step)

    def get_config(self) -> dict:
        return {"value": self.value}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"ConstantSchedule(value={self.value})"


@keras.saving.register_keras_serializable(package="keras_vae")
class LinearWarmup:
    """KL warm-up: the weight rises linearly from `start` to 1 over `steps` steps.

    `w(t) = start + (1 - start) * min(1, t / steps)` (Bowman et al., 2016;
    Sønderby et al., 2016). Step `t` counts optimizer updates already applied,
    so the first batch is trained with `w = start`.

    Args:
        steps: Length of the ramp in optimizer steps, >= 1.
        start: Weight at step 0, in [0, 1].

    Example:

    >>> LinearWarmup(100)(50)  # 0.5
    """

    name_in_registry = "linear"

    def __init__(self, steps: int, start: float = 0.0):
        steps, start = int(steps), float(start)
        if steps < 1:
            raise ValueError(f"LinearWarmup steps must be >= 1, got {steps}")
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"LinearWarmup start must be in [0, 1], got {start}")
        self.steps = steps
        self.start = start

    def __call__(self, step):
        """The weight at optimizer step `step` (a scalar tensor or int): a float32 scalar."""
        ramp = ops.minimum(_as_step(step) / float(self.steps), 1.0)
        return self.start + (1.0 - self.start) * ramp

    def get_config(self) -> dict:
        return {"steps": self.steps, "start": self.start}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"LinearWarmup(steps={self.steps}, start={self.start})"


@keras.saving.register_keras_serializable(package="keras_vae")
class CyclicalSchedule:
    """Cyclical KL annealing (Fu et al., 2019): repeated linear ramps.

    Within each cycle of `period` steps the weight rises linearly from 0 to 1
    over the first `ramp_fraction` of the cycle and stays at 1 for the rest:
    `w(t) = min(1, (t mod period) / (ramp_fraction * period))`. After `cycles`
    full cycles (if given) it stays at 1.

    Args:
        period: Steps per cycle, >= 1.
        ramp_fraction: Fraction of each cycle spent rising, in (0, 1].
        cycles: Number of cycles before the weight stays at 1; None cycles forever.

    Example:

    >>> CyclicalSchedule(100)(25), CyclicalSchedule(100)(125)  # 0.5, 0.5
    """

    name_in_registry = "cyclical"

    def __init__(self, period: int, ramp_fraction: float = 0.5, cycles: int | None = None):
        period, ramp_fraction = int(period), float(ramp_fraction)
        if period < 1:
            raise ValueError(f"CyclicalSchedule period must be >= 1, got {period}")
        if not 0.0 < ramp_fraction <= 1.0:
            raise ValueError(
                f"CyclicalSchedule ramp_fraction must be in (0, 1], got {ramp_fraction}")
        if cycles is not None:
            cycles = int(cycles)
            if cycles < 1:
                raise ValueError(f"CyclicalSchedule cycles must be >= 1 or None, got {cycles}")
        self.period = period
        self.ramp_fraction = ramp_fraction
        self.cycles = cycles

    def __call__(self, step):
        """The weight at optimizer step `step` (a scalar tensor or int): a float32 scalar."""
        t = _as_step(step)
        phase = t - float(self.period) * ops.floor(t / float(self.period))  # t mod period
        w = ops.minimum(phase / (self.ramp_fraction * self.period), 1.0)
        if self.cycles is not None:
            w = ops.where(t >= float(self.cycles * self.period), 1.0, w)
        return w

    def get_config(self) -> dict:
        return {"period": self.period, "ramp_fraction": self.ramp_fraction,
                "cycles": self.cycles}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return (f"CyclicalSchedule(period={self.period}, ramp_fraction={self.ramp_fraction}, "
                f"cycles={self.cycles})")


SCHEDULES = Registry("KL schedule", {
    "constant": ConstantSchedule,
    "linear": LinearWarmup,
    "cyclical": CyclicalSchedule,
})
register = SCHEDULES.register


def get(identifier, **kwargs):
    """Returns a KL schedule from a name, a serialized config, an instance or None.

    Args:
        identifier: `"constant"`, `"linear"`, `"cyclical"`, a dict from
            `keras.saving.serialize_keras_object`, a schedule instance, any
            callable `step -> weight` with `get_config`, or None (no schedule).
        **kwargs: Constructor arguments when `identifier` is a name.

    Raises:
        ValueError: an unknown name (listing the valid ones) or a bad argument.

    Example:

    >>> get("cyclical", period=2000)
    CyclicalSchedule(period=2000, ramp_fraction=0.5, cycles=None)
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    if isinstance(identifier, str):
        return SCHEDULES.get(identifier.lower())(**kwargs)
    if callable(identifier) and hasattr(identifier, "get_config"):
        return identifier
    raise ValueError(
        f"A KL schedule must be a name in {sorted(SCHEDULES)}, a config dict or a schedule "
        f"object with get_config; got {type(identifier).__name__}"
    )


def check_free_bits(free_bits) -> float:
    """Validates a free-bits floor (nats per latent dimension) and returns it as a float."""
    try:
        value = float(free_bits)
    except (TypeError, ValueError):
        raise ValueError(f"free_bits must be a number >= 0, got {free_bits!r}") from None
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"free_bits must be a finite number >= 0 (nats per dimension), "
                         f"got {free_bits!r}")
    return value


def check_iwae_k(k) -> int:
    """Validates a number of importance samples and returns it as an int."""
    if isinstance(k, bool) or not float(k).is_integer() or int(k) < 1:
        raise ValueError(f"The number of importance samples K must be an integer >= 1, got {k!r}")
    return int(k)


def free_bits_kl(kl_per_dim, free_bits: float):
    """KL with a per-dimension floor (Kingma et al., 2016), spread over examples.

    The objective of free bits is `sum_j max(lambda, mean_batch KL_j)`: a
    latent dimension whose batch-average KL is below `lambda` nats costs the
    constant `lambda` and gets no gradient toward collapse. This returns
    per-example values whose batch mean equals that sum exactly (a dimension
    above its floor contributes each example's own KL, one below it the
    constant), so it plugs into the per-example loss.

    Args:
        kl_per_dim: `(batch, latent_dim)` KL of each dimension.
        free_bits: `lambda` in nats per dimension; 0 gives the plain KL sum.

    Returns:
        `(batch,)` float32.
    """
    if not free_bits:
        return ops.sum(kl_per_dim, axis=-1)
    mean_kl = ops.stop_gradient(ops.mean(kl_per_dim, axis=0, keepdims=True))  # (1, latent_dim)
    floored = ops.where(mean_kl > free_bits, kl_per_dim, ops.zeros_like(kl_per_dim) + free_bits)
    return ops.sum(floored, axis=-1)


def log_mean_exp(log_weights, axis: int = 0):
    """`log(mean(exp(log_weights)))` along `axis`, stable for any magnitude."""
    n = ops.cast(ops.shape(log_weights)[axis], log_weights.dtype)
    return ops.logsumexp(log_weights, axis=axis) - ops.log(n)


def iwae_loss(log_likelihood, log_ratio, kl_weight=1.0):
    """Negative importance-weighted bound per example.

    `-log (1/K) sum_k exp(log p(x|z_k) + kl_weight * (log p(z_k) - log q(z_k|x)))`
    with `z_k ~ q(z|x)`: the IWAE bound for `kl_weight = 1` (K = 1 gives the
    single-sample negative ELBO).

    Args:
        log_likelihood: `(K, batch)` `log p(x | z_k)`.
        log_ratio: `(K, batch)` `log p(z_k) - log q(z_k | x)`.
        kl_weight: Scalar weight of the log prior ratio (beta times warm-up).

    Returns:
        `(batch,)` float32.
    """
    return -log_mean_exp(log_likelihood + kl_weight * log_ratio, axis=0)
