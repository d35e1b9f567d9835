"""VAE-GAN (Larsen et al. 2016): a VAE whose reconstruction is measured in a discriminator's features.

The pixel-wise likelihood of a VAE rewards blurry means. A VAE-GAN adds a
discriminator `D` and replaces the reconstruction term by a Gaussian
log-likelihood in the feature space of one of `D`'s hidden layers,
`-log N(D_l(x) | D_l(x_tilde), I)`, while the decoder is also trained as a
GAN generator. With `x_tilde = Dec(z)`, `z ~ q(z | x)`, and `x_p = Dec(z_p)`,
`z_p ~ p(z)` (Larsen et al. 2016, Algorithm 1):

* encoder: `KL(q(z | x) || p(z)) + L_feature`;
* decoder: `gamma * L_feature + L_gan`, the non-saturating GAN term
  `-log D(x_tilde) - log D(x_p)`;
* discriminator: `-log D(x) - log(1 - D(x_tilde)) - log(1 - D(x_p))`
  (prior samples *and* reconstructions are both shown as fakes).

Each part is moved only by its own loss: the encoder and decoder by the
Keras `optimizer` (one `apply` over their variables, each with the gradient
of its own loss), the discriminator by a second optimizer, `d_optimizer`,
created in `compile` and saved with the model.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers, ops

from keras_vae import data as data_lib
from keras_vae.models.built import as_model
from keras_vae.models.family import CONTINUOUS, Family, Option, register
from keras_vae.models.vae import LATENT_OPTIONS, OBJECTIVE_OPTIONS, VAE, objective_config
from keras_vae.parts import distribute, priors
from keras_vae.parts.posterior import Sampling


def build_discriminator(image_shape, filters=(32, 64), units: int = 128,
                        kernel_size: int = 3, negative_slope: float = 0.2,
                        layer_norm: bool = True, name: str = "discriminator") -> keras.Model:
    """A small discriminator `image -> [features_0, ..., features_k, logit]`.

    For `(height, width, channels)` images: one strided `Conv2D(f)` with a
    leaky ReLU per entry of `filters` (each one's activations is a feature
    output), then `Dense(units)` with a leaky ReLU (the last feature output)
    and a linear `Dense(1)` logit. Other shapes are flattened and go through
    `Dense(f)` layers instead of convolutions. Every hidden block after the
    first is layer-normalized (over its last axis) before the activation, so
    its features are of order one: the unit-variance Gaussian of the
    feature-wise reconstruction loss then weighs against the KL as Larsen et
    al.'s batch-normalized discriminator does, without batch statistics that
    a generator step would update.

    Args:
        image_shape: Shape of one image.
        filters: Filters (or units, for non-image shapes) of each hidden block.
        units: Width of the dense layer before the logit.
        kernel_size: Convolution kernel size.
        negative_slope: Slope of the leaky ReLUs.
        layer_norm: Layer-normalize every hidden block but the first.
        name: Model name.

    Returns:
        A functional `keras.Model` whose outputs are the `len(filters) + 1`
        hidden activations followed by the `(batch, 1)` logit.
    """
    image_shape = tuple(int(d) for d in image_shape)
    filters = [int(f) for f in filters]
    if not filters or any(f < 1 for f in filters) or int(units) < 1:
        raise ValueError(f"Discriminator filters and units must be positive, got filters="
                         f"{filters}, units={units}")
    image = keras.Input(image_shape, name="image")
    h, features = image, []
    is_image = len(image_shape) == 3
    if not is_image:
        h = layers.Flatten(name="flatten_in")(h)
    for i, f in enumerate(filters):
        if is_image:
            h = layers.Conv2D(f, int(kernel_size), strides=2, padding="same", name=f"conv{i}")(h)
        else:
            h = layers.Dense(f, name=f"hidden{i}")(h)
        if layer_norm and i > 0:
            h = layers.LayerNormalization(name=f"norm{i}")(h)
        h = layers.LeakyReLU(negative_slope, name=f"act{i}")(h)
        features.append(h)
    h = layers.Dense(int(units), name="dense")(layers.Flatten(name="flatten")(h))
    if layer_norm:
        h = layers.LayerNormalization(name="dense_norm")(h)
    h = layers.LeakyReLU(negative_slope, name="dense_act")(h)
    features.append(h)
    logit = layers.Dense(1, name="logit")(h)
    return keras.Model(image, [*features, logit], name=name)


def feature_nll(real_features, fake_features):
    """`-log N(real | fake, I)` per example without its constant: half the squared distance.

    Args:
        real_features: `(batch, ...)` discriminator features of the data.
        fake_features: The same layer's features of the reconstructions.

    Returns:
        `(batch,)`, summed over every feature element.
    """
    diff = ops.reshape(ops.cast(real_features, "float32") - ops.cast(fake_features, "float32"),
                       (ops.shape(real_features)[0], -1))
    return 0.5 * ops.sum(ops.square(diff), axis=-1)


def gan_losses(real_logit, reconstruction_logit, prior_logit):
    """Per-example GAN losses from discriminator logits, each `(batch,)`.

    Returns:
        `(d_loss, g_loss)`: `d_loss = -log D(x) - log(1 - D(x_tilde)) -
        log(1 - D(x_p))` and the non-saturating generator loss `g_loss =
        -log D(x_tilde) - log D(x_p)`, with `D = sigmoid(logit)` computed
        from logits (`softplus`), never `log(sigmoid)`.
    """
    real, rec, prior = (ops.cast(ops.reshape(t, (-1,)), "float32")
                        for t in (real_logit, reconstruction_logit, prior_logit))
    d_loss = ops.softplus(-real) + ops.softplus(rec) + ops.softplus(prior)
    g_loss = ops.softplus(-rec) + ops.softplus(-prior)
    return d_loss, g_loss


@keras.saving.register_keras_serializable(package="keras_vae")
class VAEGAN(VAE):
    """VAE-GAN: a VAE with a discriminator-feature reconstruction loss and a GAN decoder.

    Every `VAE` argument applies (architecture, likelihood, beta, KL
    schedule, conditioning: the discriminator itself is unconditional and
    judges realism only). The `likelihood` gives the image means the
    discriminator sees and the pixel NLL reported as `reconstruction_loss`,
    so the model can be compared with a VAE; it is trained on only with
    `pixel_weight > 0`.

    Metrics: `loss` (the encoder's plus the decoder's loss), `reconstruction_loss`
    (pixel NLL, nats), `feature_loss`, `kl_loss`, `d_loss`, `g_loss`.

    Args:
        discriminator: A Keras model `image -> [features..., logit]`, or None
            to build `build_discriminator(image_shape, **disc_options)`.
        disc_options: Keyword arguments of `build_discriminator`
            (`filters`, `units`, `kernel_size`, `negative_slope`, `layer_norm`).
        gamma: Weight of the feature-wise reconstruction against the GAN term
            in the decoder's loss (Larsen et al.'s gamma).
        feature_layer: Index into the discriminator's feature outputs of the
            layer whose activations define the reconstruction loss (default
            -2: the last convolution of the built discriminator).
        disc_learning_rate: Learning rate of the default `d_optimizer`,
            `Adam(disc_learning_rate, beta_1=0.5)`.
        pixel_weight: Weight of the pixel-wise reconstruction NLL added to
            both the encoder's and the decoder's loss. The default 1 is a
            hybrid that keeps the encoder from ignoring the image while the
            discriminator's features are still uninformative; 0 is Larsen
            et al.'s pure objective, whose encoder stopped using its latents
            within 3-5 epochs on the shared MNIST digits here (KL 0.5-2 nats,
            blob-like samples; benchmarks/README.md).
        **kwargs: `VAE` arguments. The prior must be `standard_normal` (prior
            samples are drawn in the graph); `iwae_k` must be 1.

    Example:

    >>> gan = keras_vae.VAEGAN(image_shape=(28, 28, 1), latent_dim=16)
    >>> gan.compile(keras.optimizers.Adam(1e-3))     # d_optimizer: Adam(disc_learning_rate)
    >>> gan.fit(keras_vae.data.load("digits", batch_size=64), epochs=5)
    >>> images = gan.sample(16, seed=0)
    """

    CONFIG_KEYS = ("discriminator", "disc_options", "gamma", "feature_layer",
                   "disc_learning_rate", "pixel_weight")
    NESTED_CONFIG_KEYS = ("discriminator",)

    def __init__(self, encoder=None, decoder=None, *, discriminator=None,
                 disc_options: dict | None = None, gamma: float = 1.0, feature_layer: int = -2,
                 disc_learning_rate: float = 1e-4, pixel_weight: float = 1.0, **kwargs):
        if int(kwargs.get("iwae_k", 1)) != 1:
            raise ValueError(f"VAEGAN trains on the ELBO's KL with a feature-wise "
                             f"reconstruction; iwae_k must be 1, got {kwargs['iwae_k']}.")
        super().__init__(encoder, decoder, **kwargs)
        if not isinstance(self.prior, priors.StandardNormal):
            raise ValueError(f"VAEGAN draws its prior samples in the graph from N(0, I); prior "
                             f"must be 'standard_normal', got {type(self.prior).__name__}.")
        self.gamma = float(gamma)
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.disc_learning_rate = float(disc_learning_rate)
        self.pixel_weight = float(pixel_weight)
        if not self.pixel_weight >= 0:
            raise ValueError(f"pixel_weight must be >= 0, got {pixel_weight}")
        if not self.disc_learning_rate > 0:
            raise ValueError(f"disc_learning_rate must be > 0, got {disc_learning_rate}")
        self.disc_options = dict(disc_options or {})
        if discriminator is None:
            try:
                discriminator = build_discriminator(self.image_shape, **self.disc_options)
            except TypeError as e:
                raise ValueError(f"Bad disc_options {self.disc_options}: {e}") from e
        else:
            discriminator = as_model(discriminator)
        if tuple(int(d) for d in discriminator.inputs[0].shape[1:]) != self.image_shape:
            raise ValueError(f"The discriminator's input {discriminator.inputs[0].shape[1:]} "
                             f"does not match image_shape {self.image_shape}")
        n_features = len(discriminator.outputs) - 1
        if n_features < 1:
            raise ValueError("The discriminator must output [features..., logit]: at least one "
                             "feature layer before the logit.")
        if not -n_features <= int(feature_layer) < n_features:
            raise ValueError(f"feature_layer must index the discriminator's {n_features} "
                             f"feature outputs (from {-n_features} to {n_features - 1}), got "
                             f"{feature_layer}")
        self.feature_layer = int(feature_layer)
        self.discriminator = discriminator
        self.prior_sampling = Sampling(None if self.seed is None else int(self.seed) + 1,
                                       name="prior_sampling")
        self.feature_tracker = keras.metrics.Mean(name="feature_loss")
        self.d_tracker = keras.metrics.Mean(name="d_loss")
        self.g_tracker = keras.metrics.Mean(name="g_loss")
        self.d_optimizer = None
        self.built = True

    # --------------------------------------------------------- variables

    @property
    def discriminator_variables(self) -> list:
        """The discriminator's trainable variables (moved by `d_optimizer` only)."""
        return list(self.discriminator.trainable_variables)

    @property
    def decoder_variables(self) -> list:
        """The decoder's (and the likelihood's) trainable variables."""
        return [*self.decoder.trainable_variables, *self.likelihood.trainable_variables]

    @property
    def encoder_variables(self) -> list:
        """Every other trainable variable: the encoder's (and a prior's, if it has any)."""
        others = {id(v) for v in (*self.discriminator_variables, *self.decoder_variables)}
        return [v for v in self.trainable_variables if id(v) not in others]

    @property
    def generator_variables(self) -> list:
        """The variables of the Keras `optimizer`: encoder's, then decoder's."""
        return [*self.encoder_variables, *self.decoder_variables]

    # -------------------------------------------------------------- loss

    def discriminate(self, images, training=False):
        """`(features, logit)` of images: the `feature_layer` activations and `(batch,)` logits."""
        outputs = self.discriminator(images, training=training)
        return outputs[self.feature_layer], ops.reshape(ops.cast(outputs[-1], "float32"), (-1,))

    def gan_terms(self, x, labels=None, eps=None, z_prior=None, training=False) -> dict:
        """Per-example terms of every VAE-GAN loss, the one place they are written.

        Args:
            x: Images `(batch, *image_shape)`.
            labels: Integer labels of a conditional model.
            eps: Reparameterization noise `(batch, latent_dim)`; drawn when None.
            z_prior: Prior draws `(batch, latent_dim)` for the fakes `x_p`;
                drawn from N(0, I) when None.
            training: Passed to the networks.

        Returns:
            Dict of `(batch,)` tensors: `kl_loss`, `reconstruction_loss` (pixel
            NLL of `x` at the sampled z), `feature_loss`, `d_loss`, `g_loss`,
            `encoder_loss` (`regularizer + feature_loss`), `decoder_loss`
            (`gamma * feature_loss + g_loss`), each plus `pixel_weight *
            reconstruction_loss`, `loss` (their sum); plus `z`,
            `z_mean`, `z_log_var`, `kl_per_dim`.
        """
        q = self.posterior(x, labels, training=training)
        kl_per_dim = self.prior.kl_per_dim(q)  # (batch, latent_dim): closed form for N(0, I)
        eps = self.sampling(q.mean) if eps is None else ops.convert_to_tensor(eps, "float32")
        z = q.sample(eps)  # (batch, latent_dim)
        z_prior = (self.prior_sampling(q.mean) if z_prior is None
                   else ops.convert_to_tensor(z_prior, "float32"))
        terms = {"kl_per_dim": kl_per_dim, "kl_loss": ops.sum(kl_per_dim, axis=-1),
                 "z": z, "z_mean": q.mean, "z_log_var": q.log_var}
        params = self.decode_params(z, labels, training=training)
        terms["reconstruction_loss"] = -self.likelihood.log_prob(x, params)  # (batch,) nats
        x_tilde = self.likelihood.mean(params)  # what the discriminator sees
        x_prior = self.likelihood.mean(self.decode_params(z_prior, labels, training=training))
        # The three batches go through the discriminator as one.
        batch = ops.shape(x)[0]
        both = ops.concatenate([ops.cast(x, x_tilde.dtype), x_tilde, x_prior], axis=0)
        features, logits = self.discriminate(both, training=training)
        real_features, rec_features = features[:batch], features[batch:2 * batch]
        terms["feature_loss"] = feature_nll(real_features, rec_features)
        terms["d_loss"], terms["g_loss"] = gan_losses(
            logits[:batch], logits[batch:2 * batch], logits[2 * batch:])
        pixel = self.pixel_weight * terms["reconstruction_loss"]
        terms["encoder_loss"] = self.regularizer(terms) + terms["feature_loss"] + pixel
        terms["decoder_loss"] = self.gamma * terms["feature_loss"] + terms["g_loss"] + pixel
        terms["loss"] = terms["encoder_loss"] + terms["decoder_loss"]
        return terms

    # --------------------------------------------------------- the steps

    def discriminator_step(self, x, labels=None) -> dict:
        """One `d_optimizer` step on the GAN loss; moves only the discriminator. Returns the terms."""
        variables = self.discriminator_variables
        with tf.GradientTape() as tape:
            terms = self.gan_terms(x, labels, training=True)
            loss = self.d_optimizer.scale_loss(distribute.average_loss(terms["d_loss"]))
        self.d_optimizer.apply(tape.gradient(loss, variables), variables)
        return terms

    def generator_step(self, x, labels=None) -> dict:
        """One `optimizer` step: the encoder on its loss, the decoder on its own. Returns the terms.

        The discriminator is not moved.
        """
        encoder_vars, decoder_vars = self.encoder_variables, self.decoder_variables
        with tf.GradientTape(persistent=True) as tape:
            terms = self.gan_terms(x, labels, training=True)
            encoder_loss = self.optimizer.scale_loss(
                distribute.average_loss(terms["encoder_loss"]))
            decoder_loss = self.optimizer.scale_loss(
                distribute.average_loss(terms["decoder_loss"]))
        grads = [*tape.gradient(encoder_loss, encoder_vars),
                 *tape.gradient(decoder_loss, decoder_vars)]
        del tape
        self.optimizer.apply(grads, [*encoder_vars, *decoder_vars])
        return terms

    def train_step(self, data):
        x, labels, _ = data_lib.unpack_batch(data, self.num_classes)
        d_terms = self.discriminator_step(x, labels)
        terms = self.generator_step(x, labels)
        return self._update_gan_metrics(terms, d_loss=d_terms["d_loss"])

    def test_step(self, data):
        x, labels, _ = data_lib.unpack_batch(data, self.num_classes)
        return self._update_gan_metrics(self.gan_terms(x, labels, training=False))

    def _update_gan_metrics(self, terms, d_loss=None):
        self.loss_tracker.update_state(terms["loss"])
        self.reconstruction_tracker.update_state(terms["reconstruction_loss"])
        self.feature_tracker.update_state(terms["feature_loss"])
        self.kl_tracker.update_state(terms["kl_loss"])
        self.d_tracker.update_state(terms["d_loss"] if d_loss is None else d_loss)
        self.g_tracker.update_state(terms["g_loss"])
        return distribute.step_logs(self.metrics)

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.feature_tracker,
                self.kl_tracker, self.d_tracker, self.g_tracker]

    # ----------------------------------------------------------- compile

    def compile(self, optimizer=None, d_optimizer=None, **kwargs):
        """Compiles with two optimizers.

        Args:
            optimizer: Of the encoder and decoder (default `Adam(1e-3)`).
            d_optimizer: Of the discriminator (default
                `Adam(disc_learning_rate, beta_1=0.5)`).
            **kwargs: `keras.Model.compile` arguments.
        """
        super().compile(optimizer=optimizer, **kwargs)
        if d_optimizer is None:
            d_optimizer = keras.optimizers.Adam(self.disc_learning_rate, beta_1=0.5)
        d_optimizer = keras.optimizers.get(d_optimizer)
        if (self.dtype_policy.name == "mixed_float16"
                and not isinstance(d_optimizer, keras.optimizers.LossScaleOptimizer)):
            d_optimizer = keras.optimizers.LossScaleOptimizer(d_optimizer)
        self.d_optimizer = d_optimizer

    def get_compile_config(self):
        config = super().get_compile_config()
        if config is not None and self.d_optimizer is not None:
            config = {**config, "d_optimizer": keras.saving.serialize_keras_object(
                self.d_optimizer)}
        return config

    def compile_from_config(self, config):
        # Both optimizers restored and built, so `load_model` finds a place
        # for every saved slot.
        config = dict(config)
        d_optimizer = config.pop("d_optimizer", None)
        config = keras.saving.deserialize_keras_object(config)
        if d_optimizer is not None:
            d_optimizer = keras.saving.deserialize_keras_object(d_optimizer)
        self.compile(**config, d_optimizer=d_optimizer)
        self.build_optimizers()

    def build_optimizers(self):
        """Creates both optimizers' slots, each for the variables it moves, once."""
        if self.optimizer is not None and not self.optimizer.built:
            self.optimizer.build(self.generator_variables)
        if self.d_optimizer is not None and not self.d_optimizer.built:
            self.d_optimizer.build(self.discriminator_variables)

    # ------------------------------------------------------------ export

    def export_graphs(self) -> dict:
        """The decoder and encoder graphs of `VAE.export_graphs` (no scorer).

        The scorer's pixel-wise negative ELBO is not the objective a VAE-GAN
        is trained on, so it would be a misleading anomaly score; the decoder
        samples on the edge exactly as a VAE's does.
        """
        graphs = super().export_graphs()
        return {"decoder": graphs["decoder"], "encoder": graphs["encoder"]}


# ---------------------------------------------------------------- family

GAN_OPTIONS = (
    Option("--gamma", float, 1.0, "weight of the feature-wise reconstruction against the GAN "
           "term in the decoder's loss", low=0.0, what="a non-negative number"),
    Option("--feature-layer", int, -2, "the discriminator feature output of the reconstruction "
           "loss", low=-64, high=63, what="a layer index"),
    Option("--disc-learning-rate", float, 1e-4, "Adam learning rate of the discriminator",
           low=0.0, low_open=True, what="a positive number"),
    Option("--pixel-weight", float, 1.0, "weight of the pixel-wise NLL added to the encoder's "
           "and decoder's losses (0: Larsen et al.'s pure objective)", low=0.0,
           what="a non-negative number"),
    Option("--disc-options", dict, {}, 'JSON options of the discriminator, e.g. \'{"filters": '
           '[32, 64], "units": 128}\''),
)

# The VAE's options but the prior's and the IWAE bound's: a VAE-GAN draws its
# fakes from N(0, I) and trains on the KL.
register(Family("vaegan", VAEGAN, CONTINUOUS, "a VAE with a discriminator",
                options=LATENT_OPTIONS + OBJECTIVE_OPTIONS + GAN_OPTIONS, conditional=True,
                configure=objective_config))
