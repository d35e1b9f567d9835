"""The variational autoencoder: a `keras.Model` whose steps optimize the ELBO."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_vae import data as data_lib
from keras_vae.models.built import BuiltModel, as_model
from keras_vae.models.family import CONTINUOUS, Family, Option, register
from keras_vae.models.signatures import GraphSignature
from keras_vae.parts import distribute, likelihoods, networks, objectives, priors
from keras_vae.parts import posterior as posterior_lib
from keras_vae.parts.posterior import Sampling


@keras.saving.register_keras_serializable(package="keras_vae")
class VAE(BuiltModel):
    """Variational autoencoder trained with `fit` on the negative ELBO.

    The per-example objective is
    `-log p(x | z) + beta * KL(q(z | x) || p(z))` with
    `z = mean + exp(log_var / 2) * eps` (reparameterization), the
    reconstruction term summed over pixels, the KL summed over latent
    dimensions (closed form for N(0, I), a Monte Carlo estimate for priors
    without one), both averaged over the (global) batch.

    Its parts are objects it is given: the `likelihood` p(x | z), the
    `prior` p(z) and the `posterior` q(z | x). Variants override one hook:
    `regularizer(terms)` for the KL-side penalty (beta-TCVAE), or
    `export_graphs()` for what a model exports.

    Args:
        encoder: A Keras model `image -> [z_mean, z_log_var]` (with a `label`
            input for conditional models), or None to build one from `arch`.
        decoder: A Keras model `z -> distribution parameters`, or None.
        image_shape: `(height, width, channels)` (or any shape for `mlp`).
        latent_dim: Size of z.
        arch: Architecture name from `keras_vae.parts.networks.ARCHITECTURES`.
        arch_options: Extra keyword arguments for the architecture builder.
        likelihood: Name, config or layer from `keras_vae.parts.likelihoods`; the
            architecture builds `channels * likelihood.params_per_pixel`
            decoder outputs.
        prior: Name, config or layer from `keras_vae.parts.priors` (`standard_normal`,
            `mixture`, `vamp`), the p(z) of the objective.
        prior_options: Constructor arguments of a prior given by name, e.g.
            `{"components": 10}`.
        sampling_prior: A prior that `sample()`, the export manifest and the
            edge samplers draw from instead of `prior`, without changing the
            objective (e.g. `priors.fit_mixture`'s fit to the aggregate
            posterior); None to sample from `prior`. Settable after training.
        posterior: Name from `keras_vae.parts.posterior.POSTERIORS`.
        beta: Weight of the KL term (1 gives the ELBO).
        num_classes: Number of classes for a conditional VAE, 0 for none.
        seed: Seed of the reparameterization noise.
        kl_schedule: KL warm-up: a name, config or schedule from
            `keras_vae.parts.objectives` (`linear`, `cyclical`), multiplying `beta`
            at the optimizer's current step; None for a constant weight.
        free_bits: Floor in nats on each latent dimension's batch-average KL
            (Kingma et al., 2016); 0 for none.
        iwae_k: Importance samples per example; > 1 trains on the IWAE bound
            (Burda et al., 2016) instead of the ELBO.

    Example:

    >>> vae = keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=16, arch="conv")
    >>> vae.compile(keras.optimizers.Adam(1e-3))
    >>> vae.fit(keras_vae.data.load("digits", batch_size=64), epochs=5)
    >>> images = vae.sample(16, seed=0)  # (16, 28, 28, 1) in [0, 1]
    """

    # The saved constructor arguments (`BuiltModel.get_config`); the networks
    # carry image_shape and latent_dim.
    CONFIG_KEYS = ("encoder", "decoder", "arch", "arch_options", "likelihood", "beta",
                   "num_classes", "seed", "kl_schedule", "free_bits", "iwae_k", "prior",
                   "sampling_prior", "posterior")
    NESTED_CONFIG_KEYS = ("encoder", "decoder", "likelihood", "kl_schedule", "prior",
                          "sampling_prior")

    def __init__(self, encoder=None, decoder=None, *, image_shape=None, latent_dim=None,
                 arch: str = "conv", arch_options: dict | None = None,
                 likelihood="bernoulli", beta: float = 1.0, num_classes: int = 0,
                 seed: int | None = None, kl_schedule=None, free_bits: float = 0.0,
                 iwae_k: int = 1, prior="standard_normal", prior_options: dict | None = None,
                 sampling_prior=None, posterior: str = "diagonal_gaussian", **kwargs):
        super().__init__(**kwargs)
        self.arch = arch
        self.arch_options = dict(arch_options or {})
        self.num_classes = int(num_classes)
        self.beta = float(beta)
        self.seed = seed
        self.kl_schedule = objectives.get(kl_schedule)
        self.free_bits = objectives.check_free_bits(free_bits)
        self.iwae_k = objectives.check_iwae_k(iwae_k)
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if self.free_bits and self.iwae_k > 1:
            raise ValueError("free_bits applies to the ELBO's KL term; the IWAE bound "
                             f"(iwae_k={self.iwae_k}) has none: use one or the other.")
        if (encoder is None) != (decoder is None):
            raise ValueError("Pass both encoder and decoder, or neither (to build `arch`).")
        likelihood = likelihoods.get(likelihood)
        prior = priors.get(prior, **(prior_options or {}))
        self.posterior_name = posterior
        self.posterior_class = posterior_lib.get(posterior)
        if self.free_bits and not prior.closed_form_kl:
            raise ValueError(f"free_bits floors each dimension's closed-form KL, which the "
                             f"{type(prior).__name__} prior has not; use one or the other.")
        if encoder is None:
            if image_shape is None or latent_dim is None:
                raise ValueError("Give image_shape and latent_dim to build an architecture.")
            encoder, decoder = networks.build(
                arch, image_shape, latent_dim, self.num_classes,
                params_per_pixel=likelihood.params_per_pixel, **self.arch_options
            )
        else:
            encoder = as_model(encoder)
            decoder = as_model(decoder)
        self.encoder = encoder
        self.decoder = decoder
        self.image_shape = tuple(int(d) for d in encoder.inputs[0].shape[1:])
        self.latent_dim = int(decoder.inputs[0].shape[-1])
        if image_shape is not None and tuple(image_shape) != self.image_shape:
            raise ValueError(
                f"image_shape {tuple(image_shape)} does not match the encoder's "
                f"input {self.image_shape}"
            )
        self.likelihood = likelihood  # tracked after the networks: the weight order of old files
        prior.attach(self)  # a prior's weights may depend on latent_dim, image_shape, encoder
        self.prior = prior
        self.sampling_prior = sampling_prior
        self.sampling = Sampling(seed, name="sampling")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        # Every variable exists now (functional sub-models are built at
        # construction): mark the model built so saving keeps the optimizer.
        self.built = True

    # ------------------------------------------------------------------ API

    def encode(self, x, labels=None, training=False):
        """Posterior parameters of images `x`.

        Returns:
            `(z_mean, z_log_var)`, each `(batch, latent_dim)` float32, the
            log-variance clamped to a range where `exp` cannot overflow.
        """
        q = self.posterior(x, labels, training=training)
        return q.mean, q.log_var

    @property
    def sampling_prior(self):
        """The prior `sample()` and exports draw from: None means `prior`."""
        return self._sampling_prior

    @sampling_prior.setter
    def sampling_prior(self, value):
        if value is not None:
            value = priors.get(value)
            value.attach(self)
            value.manifest(self.latent_dim)  # fails now, not at sampling, on a mismatch
            value.trainable = False  # a sampler only: never part of the objective
        self._sampling_prior = value

    def prior_table(self) -> dict:
        """The manifest table of the prior samples are drawn from (`recipes.sample_prior`)."""
        return self._drawn_prior().manifest(self.latent_dim)

    def manifest_latents(self) -> dict:
        """The export manifest's `latent_dim` and `prior`: the table samples are drawn from."""
        return {
            "latent_dim": int(self.latent_dim),
            "prior": {**self.prior_table(),
                      "meaning": "z for a seed: keras_vae.recipes.sample_prior(prior, n, latent_dim, "
                                 "seed), the same draws as the model's sample()"},
        }

    def _drawn_prior(self):
        return self.prior if self.sampling_prior is None else self.sampling_prior

    def posterior(self, x, labels=None, training=False):
        """The posterior distribution q(z | x) of images `x` (e.g. a `DiagonalGaussian`)."""
        outputs = self.encoder(self._with_labels(x, labels), training=training)
        return self.posterior_class.from_outputs(outputs)

    def decode_params(self, z, labels=None, training=False):
        """Decoder output (logits for Bernoulli, means for Gaussian), float32."""
        params = self.decoder(self._with_labels(z, labels), training=training)
        return ops.cast(params, "float32")

    def decode(self, z, labels=None):
        """Image means (pixel probabilities for Bernoulli) of codes `z`."""
        return self.likelihood.mean(self.decode_params(z, labels))

    def call(self, inputs, training=False):
        """Reconstruction means from the posterior mean; `inputs` is `x` or `[x, labels]`."""
        x, labels = (inputs[0], inputs[1]) if isinstance(inputs, (list, tuple)) else (inputs, None)
        z_mean, _ = self.encode(x, labels, training=training)
        return self.decode(z_mean, labels)

    def sample(self, n: int, seed: int | None = None, class_ids=None,
               batch_size: int = 256) -> np.ndarray:
        """Draws `n` images from the prior (the `sampling_prior` when one is set).

        Args:
            n: Number of images.
            seed: Seed of numpy's Generator for z (same z as the edge samplers).
            class_ids: For conditional models, the labels to generate: one
                per image, or a shorter list cycled over the `n` images.
            batch_size: Decoding batch size.

        Returns:
            `(n, *image_shape)` float32 image means.
        """
        z = self._drawn_prior().sample(n, self.latent_dim, seed)  # numpy, as on the edge
        labels = data_lib.class_labels(n, class_ids, self.num_classes)
        return data_lib.batched(lambda zb, lb: self.decode(zb, lb), z, labels, batch_size)

    def reconstruct(self, x, labels=None, batch_size: int = 256) -> np.ndarray:
        """Decodes the posterior mean of each image: `(batch, *image_shape)` numpy."""
        x = data_lib.check_images(x, self.image_shape)
        return data_lib.batched(lambda xb, lb: self.call(data_lib.pack(xb, lb)), x, labels,
                                batch_size)

    # --------------------------------------------------------------- ELBO

    def elbo_terms(self, x, labels=None, target=None, eps=None, training=False,
                   samples: int | None = None):
        """Per-example terms of the ELBO, the one place the loss is written.

        Args:
            x: Encoder input images.
            labels: Integer labels for conditional models.
            target: Images scored by the likelihood (defaults to `x`; a clean
                image when `x` is corrupted, for denoising).
            eps: Reparameterization noise `(batch, latent_dim)`, or
                `(K, batch, latent_dim)` for K samples per example; drawn from
                the seeded `Sampling` layer when None.
            samples: z samples per example when `eps` is None (default: the
                model's `iwae_k`).

        Returns:
            Dict of `reconstruction_loss` `(batch,)` (negative log-likelihood
            in nats, summed over pixels), `kl_per_dim` `(batch, latent_dim)`
            (None for a prior without a closed-form KL), `kl_loss` `(batch,)`,
            `z`, and the posterior's `z_mean` and (clamped) `z_log_var`. With K > 1 samples (or a 3-D `eps`) also
            `log_likelihood` and `log_ratio`, each `(K, batch)`:
            `log p(x | z_k)` and `log p(z_k) - log q(z_k | x)`, whose sum is
            the importance log-weight; `reconstruction_loss` is then the mean
            over the K samples and `z` is `(K, batch, latent_dim)`.
        """
        q = self.posterior(x, labels, training=training)
        target = x if target is None else target
        kl_per_dim = self.prior.kl_per_dim(q)  # (batch, latent_dim), or None
        terms = {"kl_per_dim": kl_per_dim, "z_mean": q.mean, "z_log_var": q.log_var}
        samples = self.iwae_k if samples is None else objectives.check_iwae_k(samples)
        if eps is None:
            eps = self.sampling(q.mean if samples == 1 else ops.repeat(q.mean[None], samples, 0))
        z = q.sample(eps)  # (batch, latent_dim), or (K, batch, latent_dim)
        # Closed form where the prior has one, else log q(z) - log p(z) at the
        # sample (for K samples, minus the mean of their log-ratios, below).
        if kl_per_dim is not None:
            terms["kl_loss"] = ops.sum(kl_per_dim, axis=-1)
        if len(eps.shape) == 2:
            if kl_per_dim is None:
                terms["kl_loss"] = self.prior.kl(q, z)
            params = self.decode_params(z, labels, training=training)
            reconstruction = -self.likelihood.log_prob(target, params)  # (batch,)
            return {**terms, "reconstruction_loss": reconstruction, "z": z}
        # K samples per example: decode the (K * batch) codes in one pass,
        # sample-major (row k * batch + i is sample k of example i).
        k = ops.shape(eps)[0]  # static int, or a tensor when traced shape-generic
        flat_labels = None if labels is None else ops.tile(labels, (k,))
        params = self.decode_params(ops.reshape(z, (-1, self.latent_dim)), flat_labels,
                                    training=training)
        flat_target = ops.tile(target, (k,) + (1,) * (len(target.shape) - 1))
        log_likelihood = ops.reshape(self.likelihood.log_prob(flat_target, params), (k, -1))
        log_ratio = self.prior.log_prob(z) - q.log_prob(z)  # (K, batch), computed once
        if kl_per_dim is None:
            terms["kl_loss"] = -ops.mean(log_ratio, axis=0)
        return {**terms, "reconstruction_loss": -ops.mean(log_likelihood, axis=0), "z": z,
                "log_likelihood": log_likelihood, "log_ratio": log_ratio}

    def kl_weight(self):
        """The KL weight now: `beta` times the schedule at the optimizer's step."""
        if self.kl_schedule is None:
            return self.beta
        optimizer = getattr(self, "optimizer", None)
        step = 0 if optimizer is None else optimizer.iterations
        return self.beta * self.kl_schedule(step)

    def regularizer(self, terms):
        """Weighted KL per example, `(batch,)`: the hook for beta-style variants.

        `kl_weight() * KL`, with each dimension's batch-average KL floored at
        `free_bits` nats (see `objectives.free_bits_kl`).

        Args:
            terms: The whole dict of `elbo_terms` (`z`, `z_mean`, `z_log_var`,
                `kl_per_dim`, `kl_loss`, ...), so a variant can use any of
                them (beta-TCVAE needs z and the posterior's parameters).

        Example:

        >>> class HalfKL(keras_vae.VAE):
        ...     def regularizer(self, terms):
        ...         return 0.5 * terms["kl_loss"]
        """
        if terms["kl_per_dim"] is None:
            return self.kl_weight() * terms["kl_loss"]
        return self.kl_weight() * objectives.free_bits_kl(terms["kl_per_dim"], self.free_bits)

    def per_example_loss(self, terms):
        """The training objective per example, `(batch,)`.

        `reconstruction + regularizer(terms)`, or the negative IWAE bound
        when `terms` carry K > 1 importance samples.
        """
        if "log_ratio" in terms:
            return objectives.iwae_loss(terms["log_likelihood"], terms["log_ratio"],
                                        self.kl_weight())
        return terms["reconstruction_loss"] + self.regularizer(terms)

    def negative_elbo(self, x, labels=None, eps=None):
        """Per-example negative ELBO (beta = 1) in nats, `(batch,)`."""
        terms = self.elbo_terms(x, labels, eps=eps)
        return terms["reconstruction_loss"] + terms["kl_loss"]

    # --------------------------------------------------------- Keras steps

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def train_step(self, data):
        x, labels, target = data_lib.unpack_batch(data, self.num_classes)
        with tf.GradientTape() as tape:
            terms = self.elbo_terms(x, labels, target, training=True)
            per_example = self.per_example_loss(terms)
            # Summed locally over the *global* batch: the global mean once
            # gradients are summed across replicas.
            loss = self.optimizer.scale_loss(distribute.average_loss(per_example))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        return self._update_metrics(per_example, terms)

    def test_step(self, data):
        x, labels, target = data_lib.unpack_batch(data, self.num_classes)
        terms = self.elbo_terms(x, labels, target, training=False)
        return self._update_metrics(self.per_example_loss(terms), terms)

    def _update_metrics(self, per_example, terms):
        self.loss_tracker.update_state(per_example)
        self.reconstruction_tracker.update_state(terms["reconstruction_loss"])
        self.kl_tracker.update_state(terms["kl_loss"])
        return distribute.step_logs(self.metrics)

    def fit(self, x=None, y=None, *args, **kwargs):
        x, y = data_lib.guard_inputs(x, y, self.image_shape)
        x, y = data_lib.guard_labels(x, y, self.num_classes)
        val = kwargs.get("validation_data")
        if isinstance(val, tf.data.Dataset):
            kwargs["validation_data"] = data_lib.guard_labels(val, None, self.num_classes)[0]
        elif self.num_classes and isinstance(val, (tuple, list)) and len(val) >= 2:
            data_lib.guard_labels(val[0], val[1], self.num_classes)
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        x, y = data_lib.guard_inputs(x, y, self.image_shape)
        x, y = data_lib.guard_labels(x, y, self.num_classes)
        return super().evaluate(x, y, *args, **kwargs)

    # ------------------------------------------------------------- config

    def config_value(self, key):
        # `posterior` is a method here; the argument is kept by its name.
        return self.posterior_name if key == "posterior" else super().config_value(key)

    # ------------------------------------------------------------ helpers

    def _with_labels(self, inputs, labels):
        if not self.num_classes:
            return [inputs]
        if labels is None:
            raise ValueError(
                f"This conditional VAE ({self.num_classes} classes) needs labels: "
                "pass `labels=`, or (image, label) pairs to fit/evaluate."
            )
        if tf.executing_eagerly() and not isinstance(labels, keras.KerasTensor):
            data_lib.check_labels(labels, self.num_classes)  # graphs: `data.guard_labels`
        return [ops.convert_to_tensor(inputs), ops.cast(labels, "int32")]

    # ------------------------------------------------------------- export

    def export_graphs(self) -> dict:
        """The graphs this model exports, `{name: GraphSignature}`, each of explicit inputs.

        - `decoder`: `z` (and `label`) -> `x`, image means (pixel
          probabilities for a Bernoulli likelihood), not logits;
        - `encoder`: `image` (and `label`) -> the posterior's parameters;
        - `scorer`: `image`, `eps` (and `label`) -> `negative_elbo` per
          example, the noise an input (`eps = 0` scores the reconstruction at
          the posterior mean), for anomaly detection on a device.
        """
        labels = [("label", (), "int32")] if self.num_classes else []
        image = ("image", tuple(self.image_shape), "float32")
        value_range = self.likelihood.value_range
        x_meaning = ("x: image means E[x | z] (pixel probabilities in [0, 1] for a Bernoulli "
                     "likelihood), not logits, for latents z drawn from the prior"
                     if value_range == (0.0, 1.0) else
                     f"x: {type(self.likelihood).__name__} means E[x | z] in the scale of the "
                     "training data, for latents z drawn from the prior")

        def decoder(z, label=None):
            return {"x": self.decode(z, label)}  # (batch, *image_shape) means

        def encoder(image, label=None):
            return self.posterior(image, label).parameters()  # (batch, latent_dim) each

        def scorer(image, eps, label=None):
            return {"negative_elbo": self.negative_elbo(image, label, eps=eps)}  # (batch,)

        return {
            "decoder": GraphSignature([("z", (self.latent_dim,), "float32"), *labels], ("x",),
                                      decoder, x_meaning, value_range),
            "encoder": GraphSignature(
                [image, *labels], ("z_mean", "z_log_var"), encoder,
                "z_mean, z_log_var: the diagonal Gaussian posterior q(z | image); "
                "z_log_var is clamped to [-30, 20]"),
            "scorer": GraphSignature(
                [image, ("eps", (self.latent_dim,), "float32"), *labels], ("negative_elbo",),
                scorer,
                "negative_elbo: per-example -ELBO in nats (reconstruction summed over pixels "
                "+ KL) at z = z_mean + exp(z_log_var / 2) * eps; eps = 0 scores the "
                "reconstruction at z_mean. Higher means more anomalous."),
        }


# ---------------------------------------------------------------- family


def objective_config(arguments: dict) -> dict:
    """VAE constructor arguments from the train options: the composite flags folded in.

    `prior_components` becomes the prior's `prior_options`, and `kl_warmup`
    steps of the `kl_schedule` shape become a schedule object (none for 0).
    An unset `tc_beta` is dropped (a weight makes the command line build a
    `TCVAE`, which also needs the dataset's size).
    """
    config = dict(arguments)
    components = config.pop("prior_components", None)
    if components is not None:
        config["prior_options"] = {"components": components}
    warmup, shape = config.pop("kl_warmup"), config.pop("kl_schedule")
    key = "steps" if shape == "linear" else "period"
    config["kl_schedule"] = objectives.get(shape, **{key: warmup}) if warmup else None
    if config.get("tc_beta") is None:
        config.pop("tc_beta", None)
    return config


LATENT_OPTIONS = (
    Option("--arch", str, "conv", "the encoder/decoder architecture",
           choices=lambda: sorted(networks.ARCHITECTURES)),
    Option("--latent-dim", int, 16, "size of z", low=1, high=4096, what="a latent size"),
    Option("--arch-options", dict, {},
           'JSON options of the architecture builder, e.g. \'{"filters": [32, 64], '
           '"decoder_dense_units": 0}\''),
    Option("--likelihood", str, "bernoulli", "the likelihood p(x | z)",
           choices=likelihoods.names),
)
OBJECTIVE_OPTIONS = (
    Option("--beta", float, 1.0, "weight of the KL term", low=0.0, what="a non-negative number"),
    Option("--kl-warmup", int, 0, "KL warm-up length in optimizer steps (the cycle length for "
           "--kl-schedule cyclical); 0 for none", low=0, what="a non-negative integer",
           metavar="STEPS"),
    Option("--kl-schedule", str, "linear", "shape of the KL warm-up",
           choices=lambda: sorted(set(objectives.SCHEDULES) - {"constant"})),
    Option("--free-bits", float, 0.0, "floor on each latent dimension's KL (nats), Kingma et "
           "al. 2016", low=0.0, what="a non-negative number", metavar="NATS"),
)
PRIOR_OPTIONS = (
    Option("--prior", str, "standard_normal", "the prior p(z)",
           choices=lambda: sorted(priors.PRIORS)),
    Option("--prior-components", int, None, "components of a mixture or vamp prior "
           "(default 10)", low=1, high=4096, what="a number of components", metavar="K"),
    Option("--iwae-k", int, 1, "train on the IWAE bound with K importance samples (1: the "
           "ELBO)", low=1, high=10_000, what="a sample count", metavar="K"),
    # A weight here trains beta-TCVAE (`keras_vae.models.tcvae`), this family's regularizer.
    Option("--tc-beta", float, None, "train beta-TCVAE with this weight on the total "
           "correlation", low=0.0, what="a non-negative number", metavar="B"),
)

register(Family("vae", VAE, CONTINUOUS, "continuous latents",
                options=LATENT_OPTIONS + PRIOR_OPTIONS + OBJECTIVE_OPTIONS, conditional=True,
                configure=objective_config))
