"""The prior p(z): a part the VAE is given, with a numpy form the edge samplers draw from.

A prior has `log_prob(z)` (summed over latent dimensions), the KL from a
posterior (closed form per dimension where it exists, a Monte Carlo estimate
`log q(z) - log p(z)` otherwise), seeded `sample(n, latent_dim, seed)`, and
`manifest(latent_dim)`: the table written into an export's `manifest.json`,
from which `recipes.sample_prior` draws the same z with numpy alone. `PRIORS`
names them; `register` adds one.

The priors here:

- `StandardNormal`: N(0, I), the KL in closed form;
- `MixturePrior`: a learned mixture of K diagonal Gaussians (weights, means
  and log-variances are trained with the model);
- `VampPrior` (Tomczak & Welling, 2018): the mixture of the model's own
  posteriors at K learned pseudo-inputs, `p(z) = 1/K sum_k q(z | u_k)`;
- `FittedMixture`: a fixed mixture, fitted after training to the aggregate
  posterior (`fit_mixture`), used as a model's `sampling_prior` only: it
  changes what `sample()` and the edge samplers draw, never the objective.

Every one of them reaches the edge as one table, `{"type": "mixture",
"weights", "means", "log_vars"}` (or `{"type": "standard_normal"}`).

Example:

>>> prior = keras_vae.parts.priors.get("standard_normal")
>>> z = prior.sample(16, latent_dim=8, seed=0)          # numpy, (16, 8)
>>> vae = keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=8, prior="vamp",
...                     prior_options={"components": 50})
>>> vae.sampling_prior = keras_vae.parts.priors.fit_mixture(vae, train_images, components=10)
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_vae import data as data_lib
from keras_vae import recipes
from keras_vae.parts.posterior import (
    LOG_2PI,
    clamp_log_var,
    gaussian_log_density,
    standard_normal_log_prob,
)
from keras_vae.registry import Registry


class Prior(keras.layers.Layer):
    """Base class of priors over z.

    Subclasses implement `log_prob` and `manifest`; they override
    `kl_per_dim` (and set `closed_form_kl`) when the KL from a diagonal
    Gaussian posterior factorizes over dimensions in closed form.
    """

    closed_form_kl = False

    def attach(self, model) -> None:
        """Called by the VAE once its networks exist (`latent_dim`, `posterior`, ...).

        A prior whose weights depend on the model (a learned mixture needs
        `latent_dim`, VampPrior the image shape and the encoder) creates them
        here. The default does nothing.
        """

    def log_prob(self, z):
        """`log p(z)` summed over the last axis: `(batch,)` or `(K, batch)`."""
        raise NotImplementedError

    def kl_per_dim(self, posterior):
        """Closed-form KL(q || p) per latent dimension, `(batch, latent_dim)`, or None."""
        return None

    def log_prob_per_dim(self, z):
        """`log p(z_j)` per dimension, `(..., latent_dim)`, for a factorized prior; else None."""
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
        """The prior as a table `recipes.sample_prior` draws from."""
        raise NotImplementedError

    def sample(self, n: int, latent_dim: int, seed: int | None = None) -> np.ndarray:
        """`(n, latent_dim)` float32 latents drawn with numpy, as the edge samplers draw them."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        return recipes.sample_prior(self.manifest(latent_dim), n, latent_dim, seed)


@keras.saving.register_keras_serializable(package="keras_vae")
class StandardNormal(Prior):
    """N(0, I): the KL from a diagonal Gaussian posterior in closed form."""

    closed_form_kl = True

    def log_prob(self, z):
        return standard_normal_log_prob(z)

    def kl_per_dim(self, posterior):
        return posterior.kl()

    def log_prob_per_dim(self, z):
        z = ops.cast(z, "float32")
        return -0.5 * (ops.square(z) + LOG_2PI)

    def manifest(self, latent_dim: int) -> dict:
        return dict(recipes.STANDARD_NORMAL)


def mixture_log_prob(z, log_weights, means, log_vars):
    """`log sum_k w_k N(z; mean_k, diag(exp(log_var_k)))`, summed over dimensions.

    Args:
        z: Latents `(..., latent_dim)`.
        log_weights: `(K,)` log mixture weights (normalized).
        means: `(K, latent_dim)`.
        log_vars: `(K, latent_dim)`.

    Returns:
        `(...,)` float32 log densities, by a log-sum-exp over the components.
    """
    z = ops.cast(z, "float32")[..., None, :]  # (..., 1, latent_dim)
    means = ops.cast(means, "float32")
    log_vars = ops.cast(log_vars, "float32")
    per_component = ops.sum(gaussian_log_density(z, means, log_vars), axis=-1)  # (..., K)
    return ops.logsumexp(per_component + ops.cast(log_weights, "float32"), axis=-1)


def mixture_table(weights, means, log_vars) -> dict:
    """The manifest form of a Gaussian mixture: weights in float64, the rest float32 lists."""
    return {"type": "mixture",
            "weights": np.asarray(weights, np.float64).tolist(),
            "means": np.asarray(means, np.float32).tolist(),
            "log_vars": np.asarray(log_vars, np.float32).tolist()}


def _check_components(components) -> int:
    if isinstance(components, bool) or int(components) != components or components < 1:
        raise ValueError(f"A mixture prior needs components >= 1 (an integer), got "
                         f"{components!r}")
    return int(components)


def _check_latent_dim(prior, latent_dim) -> None:
    if prior.latent_dim is None:
        raise ValueError(f"{type(prior).__name__} has no weights yet: give it to a VAE "
                         "(or pass latent_dim) first.")
    if int(latent_dim) != prior.latent_dim:
        raise ValueError(f"{type(prior).__name__} is over {prior.latent_dim} latent "
                         f"dimensions, asked for {latent_dim}.")


@keras.saving.register_keras_serializable(package="keras_vae")
class MixturePrior(Prior):
    """A learned mixture of K diagonal Gaussians, trained with the model.

    `p(z) = sum_k softmax(logits)_k N(z; means_k, diag(exp(log_vars_k)))`.
    The KL has no closed form: the VAE uses the Monte Carlo estimate
    `log q(z | x) - log p(z)` at its sample, and the IWAE bound this
    `log_prob`. Its weights are created when the VAE attaches it (or at
    construction when `latent_dim` is given), and saved with the model.

    Args:
        components: K, the number of components.
        latent_dim: Size of z; None to take the model's.
        init_scale: Standard deviation of the initial component means
            (log-variances start at 0, weights uniform).
        seed: Seed of the means' initializer.

    Example:

    >>> vae = keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=16,
    ...                     prior="mixture", prior_options={"components": 10})
    """

    def __init__(self, components: int = 10, latent_dim: int | None = None,
                 init_scale: float = 1.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.components = _check_components(components)
        self.init_scale = float(init_scale)
        self.seed = seed
        self.latent_dim = None
        if latent_dim is not None:
            self._create_weights(int(latent_dim))

    def attach(self, model) -> None:
        self._create_weights(int(model.latent_dim))

    def _create_weights(self, latent_dim: int) -> None:
        if self.latent_dim is not None:
            _check_latent_dim(self, latent_dim)
            return
        self.latent_dim = latent_dim
        k = self.components
        self.logits = self.add_weight(name="logits", shape=(k,), initializer="zeros")
        self.means = self.add_weight(
            name="means", shape=(k, latent_dim),
            initializer=keras.initializers.RandomNormal(stddev=self.init_scale, seed=self.seed))
        self.log_vars = self.add_weight(name="log_vars", shape=(k, latent_dim),
                                        initializer="zeros")
        self.built = True

    def log_prob(self, z):
        if self.latent_dim is None:
            _check_latent_dim(self, ops.shape(z)[-1])
        return mixture_log_prob(z, ops.log_softmax(ops.cast(self.logits, "float32")),
                                self.means, clamp_log_var(self.log_vars))

    def manifest(self, latent_dim: int) -> dict:
        _check_latent_dim(self, latent_dim)
        logits = np.asarray(ops.convert_to_numpy(self.logits), np.float64)
        weights = np.exp(logits - logits.max())
        return mixture_table(weights / weights.sum(), ops.convert_to_numpy(self.means),
                             ops.convert_to_numpy(clamp_log_var(self.log_vars)))

    def get_config(self):
        return {**super().get_config(), "components": self.components,
                "latent_dim": self.latent_dim, "init_scale": self.init_scale,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_vae")
class VampPrior(Prior):
    """VampPrior (Tomczak & Welling, 2018): the posteriors at K learned pseudo-inputs.

    `p(z) = 1/K sum_k q(z | u_k)`, where the pseudo-inputs `u_k` are
    image-shaped weights trained with the model and `q` is the model's own
    encoder (so the prior moves with it). When the likelihood has a
    `value_range` (Bernoulli: [0, 1]) the pseudo-inputs are kept in it by a
    hardtanh, `clip(params, low, high)`, as in Tomczak & Welling's
    implementation: inside the range a pseudo-input pixel *is* its parameter
    (gradient 1), so pseudo-inputs started at (binarized) data keep learning.
    (A sigmoid of logits, the `squash="sigmoid"` of models saved before,
    starts data at logits of about +-7, where its gradient is about 1e-3: the
    pseudo-inputs stay frozen copies of training digits and the encoder
    learns wide posteriors at exactly those inputs, which it extrapolates to
    enormous variances on some held-out digits.) The KL is the Monte Carlo
    estimate `log q(z | x) - log p(z)`.

    The prior needs the model's encoder: the VAE hands it over in
    `attach(model)` (at construction and on loading), so only the number of
    components and the pseudo-inputs are saved. Its manifest is the mixture
    of the encoder's posteriors at the pseudo-inputs, computed when exported.

    Args:
        components: K, the number of pseudo-inputs (Tomczak & Welling use 500).
        init_scale: Spread of the random initialization (`set_pseudo_inputs`
            starts them from data instead): with a `value_range`, pixels start
            at `low + (high - low) * (0.05 +- 0.01 * init_scale)` (a normal
            truncated at two standard deviations, the paper's N(0.05, 0.01));
            without one, N(0, init_scale).
        seed: Seed of that initializer.
        squash: How free parameters map into the `value_range`: `"hardtanh"`
            (a clip, the default) or `"sigmoid"` (the parameterization of
            models saved before `squash` existed, which load with it).

    Example:

    >>> vae = keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=16, prior="vamp",
    ...                     prior_options={"components": 100})
    >>> vae.prior.set_pseudo_inputs(train_images[:100])   # optional: start from data
    """

    SQUASHES = ("hardtanh", "sigmoid")

    def __init__(self, components: int = 10, init_scale: float = 1.0,
                 seed: int | None = None, squash: str = "hardtanh", **kwargs):
        super().__init__(**kwargs)
        self.components = _check_components(components)
        self.init_scale = float(init_scale)
        self.seed = seed
        if squash not in self.SQUASHES:
            raise ValueError(f"VampPrior squash must be one of {list(self.SQUASHES)}, got "
                             f"{squash!r}")
        self.squash = squash
        self.latent_dim = None
        self.value_range = None
        self._posterior = None  # the model's `posterior(x)`, set by `attach`

    def attach(self, model) -> None:
        if getattr(model, "num_classes", 0):
            raise ValueError("VampPrior takes the encoder's posterior at unlabelled "
                             "pseudo-inputs: use it with an unconditional model "
                             f"(this one has {model.num_classes} classes).")
        if self._posterior is not None:
            raise ValueError("This VampPrior is already attached to a model; give each "
                             "model its own prior.")
        self.latent_dim = int(model.latent_dim)
        value_range = getattr(model.likelihood, "value_range", None)
        self.value_range = None if value_range is None else tuple(float(v) for v in value_range)
        self.pseudo_params = self.add_weight(
            name="pseudo_params", shape=(self.components, *model.image_shape),
            initializer=self._initializer())
        self._posterior = model.posterior
        self.built = True

    def pseudo_inputs(self):
        """The K pseudo-inputs, `(K, *image_shape)`, in the data's range."""
        self._check_attached()
        params = ops.cast(self.pseudo_params, "float32")
        if self.value_range is None:
            return params
        low, high = self.value_range
        if self.squash == "sigmoid":
            return low + (high - low) * ops.sigmoid(params)
        return ops.clip(params, low, high)  # hardtanh: gradient 1 inside the range

    def _initializer(self):
        if self.value_range is None:
            return keras.initializers.RandomNormal(stddev=self.init_scale, seed=self.seed)
        low, high = self.value_range
        if self.squash == "sigmoid":  # logits, as saved models have them
            return keras.initializers.RandomNormal(stddev=self.init_scale, seed=self.seed)
        return keras.initializers.TruncatedNormal(
            mean=low + 0.05 * (high - low), stddev=0.01 * self.init_scale * (high - low),
            seed=self.seed)

    def set_pseudo_inputs(self, images) -> None:
        """Starts the pseudo-inputs at `images` `(K, *image_shape)` (inside the data's range)."""
        self._check_attached()
        images = np.asarray(images, np.float32)
        if images.shape != tuple(self.pseudo_params.shape):
            raise ValueError(f"Pseudo-inputs must have shape {tuple(self.pseudo_params.shape)}"
                             f", got {images.shape}")
        if self.value_range is not None:
            low, high = self.value_range
            if self.squash == "sigmoid":
                # Clipped away from the edges, where the inverse sigmoid is infinite.
                p = np.clip((images - low) / (high - low), 1e-3, 1 - 1e-3)
                images = np.log(p) - np.log1p(-p)
            else:
                images = np.clip(images, low, high)
        self.pseudo_params.assign(images)

    def mixture(self):
        """`(means, log_vars)` of the K components, each `(K, latent_dim)`."""
        q = self._posterior(self.pseudo_inputs())
        return q.mean, q.log_var

    def log_prob(self, z):
        means, log_vars = self.mixture()
        log_weights = ops.full((self.components,), -float(np.log(self.components)))
        return mixture_log_prob(z, log_weights, means, log_vars)

    def manifest(self, latent_dim: int) -> dict:
        self._check_attached()
        _check_latent_dim(self, latent_dim)
        means, log_vars = (ops.convert_to_numpy(t) for t in self.mixture())
        return mixture_table(np.full(self.components, 1.0 / self.components), means, log_vars)

    def _check_attached(self):
        if self._posterior is None:
            raise ValueError("VampPrior needs a model's encoder: give it to a VAE first.")

    def get_config(self):
        return {**super().get_config(), "components": self.components,
                "init_scale": self.init_scale, "seed": self.seed, "squash": self.squash}

    @classmethod
    def from_config(cls, config):
        # Models saved before `squash` existed hold sigmoid logits.
        return cls(**{"squash": "sigmoid", **config})


@keras.saving.register_keras_serializable(package="keras_vae")
class FittedMixture(Prior):
    """A fixed Gaussian mixture, its table the config: the prior `fit_mixture` returns.

    Meant as a model's `sampling_prior`: `VAE.sample`, the manifest and the
    edge samplers draw from it, while training keeps the model's `prior`.

    Args:
        weights: `(K,)` non-negative mixture weights (normalized here).
        means: `(K, latent_dim)`.
        log_vars: `(K, latent_dim)` log-variances.
        source: A note of what it was fitted to (kept in the config).
    """

    def __init__(self, weights, means, log_vars, source: str | None = None, **kwargs):
        super().__init__(**kwargs)
        weights = np.asarray(weights, np.float64)
        means = np.asarray(means, np.float32)
        log_vars = np.asarray(log_vars, np.float32)
        k = weights.shape[0] if weights.ndim == 1 else -1
        if (k < 1 or means.ndim != 2 or means.shape[0] != k or log_vars.shape != means.shape
                or not np.all(np.isfinite(weights)) or np.any(weights < 0)
                or weights.sum() <= 0 or not np.all(np.isfinite(means))
                or not np.all(np.isfinite(log_vars))):
            raise ValueError(f"A fitted mixture needs K >= 1 finite non-negative weights and "
                             f"(K, latent_dim) finite means and log_vars; got weights "
                             f"{weights.shape}, means {means.shape}, log_vars "
                             f"{log_vars.shape}.")
        self.weights_table = weights / weights.sum()
        self.means_table = means
        self.log_vars_table = log_vars
        self.latent_dim = int(means.shape[1])
        self.source = source
        self.built = True

    def log_prob(self, z):
        with np.errstate(divide="ignore"):  # a zero weight is a component never drawn
            log_weights = np.log(self.weights_table).astype(np.float32)
        return mixture_log_prob(z, log_weights, self.means_table, self.log_vars_table)

    def manifest(self, latent_dim: int) -> dict:
        _check_latent_dim(self, latent_dim)
        return mixture_table(self.weights_table, self.means_table, self.log_vars_table)

    def get_config(self):
        return {**super().get_config(), "weights": self.weights_table.tolist(),
                "means": self.means_table.tolist(), "log_vars": self.log_vars_table.tolist(),
                "source": self.source}


PRIORS = Registry("prior", {"standard_normal": StandardNormal, "normal": StandardNormal,
                            "mixture": MixturePrior, "vamp": VampPrior})
register = PRIORS.register


def get(identifier="standard_normal", **options) -> Prior:
    """Returns a prior from a name (with constructor `options`), a config dict or an instance.

    Example:

    >>> keras_vae.parts.priors.get("mixture", components=5)

    Raises:
        ValueError: for an unknown name, listing the valid ones, or options
            the prior does not take.
    """
    if isinstance(identifier, (Prior, dict)) and options:
        raise ValueError(f"Prior options {sorted(options)} apply to a prior given by name, "
                         f"not to {type(identifier).__name__}.")
    if isinstance(identifier, Prior):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    cls = PRIORS.get(identifier)
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        # Keras layers answer unknown keyword arguments with a ValueError.
        if isinstance(e, ValueError) and "keyword argument" not in str(e):
            raise
        raise ValueError(f"The {identifier!r} prior does not take options "
                         f"{sorted(options)} ({e}).") from None


def aggregate_latents(model, data, labels=None, latents: str = "mean", seed: int = 0,
                      batch_size: int = 256) -> np.ndarray:
    """The latents of `data` under `model`'s posterior: samples of the aggregate posterior.

    Args:
        model: A `keras_vae.VAE`.
        data: A batched dataset of images or `(image, label)` pairs, or an image array.
        labels: Labels of an image array, for a conditional model.
        latents: `"mean"` (each posterior's mean) or `"sample"` (one draw
            `mean + std * eps` per image, numpy noise from `seed`).
        seed: Seed of the noise for `"sample"`.
        batch_size: Batch size used for an image array.

    Returns:
        `(n, latent_dim)` float64 latents.
    """
    if latents not in ("mean", "sample"):
        raise ValueError(f"latents must be 'mean' or 'sample', got {latents!r}")
    means, log_vars = [], []
    for x, labels_b, _ in data_lib.iterate_batches(model, data, labels, batch_size):
        mean, log_var = model.encode(x, labels_b)
        means.append(np.asarray(mean, np.float64))
        log_vars.append(np.asarray(log_var, np.float64))
    if not means:
        raise ValueError("No examples to fit the sampling prior to.")
    mean, log_var = np.concatenate(means), np.concatenate(log_vars)
    if latents == "mean":
        return mean
    eps = np.random.default_rng(seed).standard_normal(mean.shape)
    return mean + np.exp(0.5 * log_var) * eps


def fit_mixture(model, data, components: int = 10, seed: int = 0, labels=None,
                latents: str = "mean", batch_size: int = 256, max_iter: int = 200,
                reg_covar: float = 1e-6) -> FittedMixture:
    """Fits a diagonal Gaussian mixture to the aggregate posterior of `data` (a post-hoc sampler).

    Sampling N(0, I) from a VAE visits regions its aggregate posterior
    `q(z) = mean_x q(z | x)` leaves empty ("holes"); drawing from a mixture
    fitted to the training latents avoids them (Ghosh et al., 2020; pythae's
    GMM sampler). The training objective is untouched: set the result as the
    model's `sampling_prior`.

    Args:
        model: A trained `keras_vae.VAE`.
        data: The training images (a batched dataset or an array).
        components: K, the number of mixture components.
        seed: Seed of the mixture's initialization (and of `latents="sample"`).
        labels: Labels of an image array, for a conditional model.
        latents: Fit to the posterior `"mean"`s or to one `"sample"` per image.
        batch_size: Batch size used for an image array.
        max_iter, reg_covar: Passed to `sklearn.mixture.GaussianMixture`.

    Returns:
        A `FittedMixture` over `model.latent_dim` dimensions.

    Raises:
        ValueError: fewer images than components, bad data or arguments.

    Example:

    >>> vae.sampling_prior = keras_vae.parts.priors.fit_mixture(vae, train_ds, components=10)
    >>> vae.sample(16, seed=0)  # drawn from the fitted mixture
    """
    z = aggregate_latents(model, data, labels, latents=latents, seed=seed,
                          batch_size=batch_size)
    return fit_latents(z, components, seed=seed, max_iter=max_iter, reg_covar=reg_covar,
                       source=f"posterior {latents}s")


def fit_latents(z, components: int = 10, seed: int = 0, max_iter: int = 200,
                reg_covar: float = 1e-6, source: str = "latents") -> FittedMixture:
    """Fits a diagonal Gaussian mixture (`sklearn.mixture.GaussianMixture`) to latents.

    Args:
        z: `(n, latent_dim)` latents, e.g. from `aggregate_latents`.
        components: K, the number of components.
        seed: Seed of the initialization (k-means).
        max_iter, reg_covar: As for `GaussianMixture`.
        source: What the latents are, kept in the prior's config.

    Returns:
        A `FittedMixture`.

    Raises:
        ValueError: fewer latents than components, or non-finite latents.
    """
    from sklearn.mixture import GaussianMixture  # slow to import: loaded on first use

    components = _check_components(components)
    z = np.asarray(z, np.float64)
    if z.ndim != 2 or not np.all(np.isfinite(z)):
        raise ValueError(f"Latents must be a finite (n, latent_dim) array, got shape {z.shape}")
    if len(z) < components:
        raise ValueError(f"{len(z)} latents cannot fit {components} mixture components.")
    gmm = GaussianMixture(n_components=components, covariance_type="diag",
                          random_state=seed, max_iter=max_iter, reg_covar=reg_covar).fit(z)
    return FittedMixture(gmm.weights_, gmm.means_, np.log(gmm.covariances_),
                         source=f"GaussianMixture(diag, K={components}) on {len(z)} {source}")


def prior_z(n: int, latent_dim: int, seed: int | None = None) -> np.ndarray:
    """Draws `(n, latent_dim)` float32 latents from N(0, I) with numpy's seeded Generator.

    The edge samplers' own function (`keras_vae.recipes`), so one
    seed gives the same latents in Keras, onnxruntime, LiteRT and the browser.
    """
    return recipes.prior_z(n, latent_dim, seed)
