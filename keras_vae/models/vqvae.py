"""The VQ-VAE (van den Oord et al., 2017): a grid of discrete codes, trained with `fit`.

An encoder maps an image to a grid of vectors `z_e` (`(h/4, w/4, code_dim)`);
each vector is replaced by its nearest codebook entry `q`, and the decoder
reconstructs the image from the quantized grid. Gradients pass the
quantization unchanged (straight-through, `z_q = z_e + sg(q - z_e)`). The
per-example objective, in nats, is

`-log p(x | z_q) + ||sg(z_e) - q||^2 + beta * ||z_e - sg(q)||^2`

(reconstruction summed over pixels; the codebook and commitment terms summed
over code dimensions and grid positions). With `ema=True` the codebook
term is replaced by exponential moving averages of the assigned encoder
outputs (the paper's appendix; Sonnet's `VectorQuantizerEMA`). Codes unused
for `restart_after` training steps are re-initialised from random encoder
outputs of the batch.

Sampling needs a prior over code grids: a PixelCNN trained afterwards
(`keras_vae.parts.code_prior.train_prior`); before that, `sample` draws uniform
codes.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from keras_vae import data as data_lib
from keras_vae import recipes
from keras_vae.models.built import BuiltModel, Configurable, as_model
from keras_vae.models.family import CODES, Family, Option, register
from keras_vae.models.signatures import GraphSignature
from keras_vae.parts import blocks, distribute, likelihoods

DOWNSAMPLING = 4  # two stride-2 convolutions
# What one draw from a code prior may cost, in grid positions the PixelCNN
# computes: it runs once per position on every grid, so n grids of P
# positions cost n * P * P. This budget is 256 grids of 7x7 codes (28x28
# images); larger grids get proportionally fewer (docs/scaling.md).
MAX_CODE_PRIOR_POSITIONS = 256 * 49 * 49
# Grids the code prior runs on at once: bounds its activations' memory.
CODE_PRIOR_BATCH = 256
# VQVAE constructor arguments that its `quantizer` holds.
QUANTIZER_KEYS = ("codebook_size", "code_dim", "commitment_cost", "ema", "decay",
                  "restart_after")


@keras.saving.register_keras_serializable(package="keras_vae")
class VectorQuantizer(Configurable, layers.Layer):
    """Nearest-neighbour quantization of vectors against a learned codebook.

    Args:
        codebook_size: Number of codes N.
        code_dim: Size D of each code vector.
        commitment_cost: beta, the weight of `||z_e - sg(q)||^2`.
        ema: Update the codebook by exponential moving averages (no gradient)
            instead of by the codebook loss.
        decay: The EMA decay gamma.
        epsilon: Laplace smoothing of the EMA cluster sizes.
        restart_after: Training steps a code may go unused before it is
            re-initialised from a random encoder output of the batch (0: never).
        seed: Seed of the codebook's initialization and of the restarts.

    Call returns a dict: `quantized` (straight-through, shape of the input),
    `indices` (input shape without the last axis, int32), `codebook_loss`
    and `commitment_loss` (`(batch,)`, already weighted: beta is in the
    commitment loss), and `counts` (`(N,)` float32, how many vectors chose
    each code).
    """

    CONFIG_KEYS = ("codebook_size", "code_dim", "commitment_cost", "ema", "decay", "epsilon",
                   "restart_after", "seed")

    def __init__(self, codebook_size: int = 64, code_dim: int = 16,
                 commitment_cost: float = 0.25, ema: bool = False, decay: float = 0.99,
                 epsilon: float = 1e-5, restart_after: int = 100, seed: int | None = None,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")  # distances in float32 under mixed precision
        super().__init__(**kwargs)
        self.codebook_size = int(codebook_size)
        self.code_dim = int(code_dim)
        self.commitment_cost = float(commitment_cost)
        self.ema = bool(ema)
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.restart_after = int(restart_after)
        self.seed = seed
        if self.codebook_size < 2 or self.code_dim < 1:
            raise ValueError(f"codebook_size must be >= 2 and code_dim >= 1, got "
                             f"{codebook_size} and {code_dim}")
        if not 0.0 < self.decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        if self.restart_after < 0:
            raise ValueError(f"restart_after must be >= 0, got {restart_after}")
        self.seed_generator = keras.random.SeedGenerator(seed, name="restart_seed")

    def build(self, input_shape=None):
        n, d = self.codebook_size, self.code_dim
        # Sonnet's initialization: uniform with variance 1 / D, the scale of
        # a fresh encoder's outputs (a +-1/N codebook starts far inside them).
        init = keras.initializers.VarianceScaling(1.0, "fan_out", "uniform", seed=self.seed)
        state = {"trainable": False, "aggregation": "only_first_replica"}
        self.codebook = self.add_weight(shape=(n, d), initializer=init, name="codebook",
                                        trainable=not self.ema)
        if self.ema:
            # Start the averages at the codebook with a count of one per code,
            # so the codebook (ema_sum / count) begins as its initialization.
            self.ema_count = self.add_weight(shape=(n,), initializer="ones", name="ema_count",
                                             **state)
            self.ema_sum = self.add_weight(shape=(n, d), initializer="zeros", name="ema_sum",
                                           **state)
            self.ema_sum.assign(self.codebook)
        self.unused_steps = self.add_weight(shape=(n,), initializer="zeros",
                                            name="unused_steps", **state)
        self.built = True

    # ------------------------------------------------------------ lookup

    def nearest(self, flat):
        """Index of the nearest code of each row of `flat` `(m, D)`: `(m,)` int32."""
        codebook = ops.convert_to_tensor(self.codebook)
        distances = (ops.sum(flat**2, axis=1, keepdims=True)
                     - 2.0 * ops.matmul(flat, ops.transpose(codebook))
                     + ops.sum(codebook**2, axis=1)[None, :])  # (m, N)
        # tf.argmin, not ops.argmin: Keras's version adds a bitcast for -0.0
        # that tf2onnx cannot convert; ONNX and TFLite both have ArgMin.
        return tf.argmin(distances, axis=1, output_type=tf.int32)

    def lookup(self, indices):
        """Code vectors of `indices` (any shape): `(*indices.shape, D)`."""
        return ops.take(ops.convert_to_tensor(self.codebook), ops.cast(indices, "int32"), axis=0)

    def call(self, z_e):
        z_e = ops.cast(z_e, "float32")
        grid = ops.shape(z_e)[:-1]
        flat = ops.reshape(z_e, (-1, self.code_dim))  # (batch * h * w, D)
        indices = self.nearest(flat)
        q = ops.reshape(self.lookup(indices), ops.shape(z_e))
        batch = ops.shape(z_e)[0]
        # Squared distances summed over code dimensions and grid positions.
        codebook_loss = ops.sum(ops.reshape((ops.stop_gradient(z_e) - q) ** 2, (batch, -1)), 1)
        commitment = ops.sum(ops.reshape((z_e - ops.stop_gradient(q)) ** 2, (batch, -1)), 1)
        quantized = z_e + ops.stop_gradient(q - z_e)  # straight-through
        counts = ops.sum(ops.one_hot(indices, self.codebook_size), axis=0)  # (N,)
        return {"quantized": quantized, "indices": ops.reshape(indices, grid),
                "codebook_loss": codebook_loss,
                "commitment_loss": self.commitment_cost * commitment, "counts": counts,
                "flat": flat, "flat_indices": indices}

    # ------------------------------------------------------------ updates

    def update_ema(self, flat, indices, counts=None):
        """One EMA step of the codebook on encoder outputs `flat` `(m, D)` and their codes.

        `counts` `(N,)`: the codes' counts summed over replicas, when the step
        has them already (default: summed here).

        `count = gamma * count + (1 - gamma) * n_i`, `sum = gamma * sum + (1 - gamma) * S_i`
        (`n_i` vectors chose code i, `S_i` is their sum; both summed over
        replicas), then code i is `sum_i / count_i` with the counts
        Laplace-smoothed: `(count_i + eps) / (total + N eps) * total`.
        """
        one_hot = ops.one_hot(indices, self.codebook_size)  # (m, N)
        if counts is None:
            counts = _all_sum(ops.sum(one_hot, axis=0))  # (N,)
        sums = _all_sum(ops.matmul(ops.transpose(one_hot), flat))  # (N, D)
        g = self.decay
        count = g * self.ema_count + (1.0 - g) * counts
        total = ops.sum(count)
        smoothed = (count + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        ema_sum = g * self.ema_sum + (1.0 - g) * sums
        self.ema_count.assign(count)
        self.ema_sum.assign(ema_sum)
        self.codebook.assign(ema_sum / smoothed[:, None])

    def restart_dead_codes(self, flat, counts):
        """Counts idle steps per code; re-initialises codes idle `restart_after` steps.

        `counts` `(N,)` are the step's code counts summed over replicas.

        A restarted code becomes a random row of `flat`, the encoder outputs
        of the whole step (gathered over replicas, in batch order, so every
        replica restarts it to the same row, the row one device would pick),
        and its idle count starts again at zero.

        Returns:
            How many codes were restarted (a float32 scalar).
        """
        used = counts > 0
        idle = ops.where(used, 0.0, self.unused_steps + 1.0)
        if self.restart_after <= 0:
            self.unused_steps.assign(idle)
            return ops.zeros((), "float32")
        dead = idle >= float(self.restart_after)  # (N,)
        flat = _all_gather(flat)
        rows = keras.random.randint((self.codebook_size,), 0, ops.shape(flat)[0],
                                    seed=self.seed_generator)
        fresh = ops.take(flat, rows, axis=0)  # (N, D)
        self.codebook.assign(ops.where(dead[:, None], fresh, self.codebook))
        if self.ema:
            self.ema_sum.assign(ops.where(dead[:, None], fresh, self.ema_sum))
            self.ema_count.assign(ops.where(dead, 1.0, self.ema_count))
        self.unused_steps.assign(ops.where(dead, 0.0, idle))
        return ops.sum(ops.cast(dead, "float32"))


def _all_sum(value):
    """`value` summed over replicas (itself on one device)."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context: already global
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def _all_gather(value):
    """`value` concatenated over replicas along its first axis (itself on one device)."""
    context = tf.distribute.get_replica_context()
    if context is None:
        return value
    return context.all_gather(value, axis=0)


def perplexity(counts):
    """`exp(entropy)` of the code frequencies `counts` `(N,)`: N when all are used equally."""
    p = counts / ops.maximum(ops.sum(counts), 1.0)
    return ops.exp(-ops.sum(p * ops.log(p + 1e-10)))


def build_networks(image_shape, code_dim: int, params_per_pixel: int = 1,
                   filters=(32, 64)) -> tuple[keras.Model, keras.Model]:
    """`(encoder, decoder)`: image -> `(h/4, w/4, code_dim)` grid -> distribution parameters.

    Two stride-2 3x3 convolutions and a 1x1 projection down; two stride-2
    3x3 transposed convolutions and a 3x3 convolution to
    `channels * params_per_pixel` outputs up (keras.io's "vq_vae" sizes).

    Raises:
        ValueError: height or width not divisible by 4, or not an image shape.
    """
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or image_shape[0] % DOWNSAMPLING or image_shape[1] % DOWNSAMPLING:
        raise ValueError(f"A VQ-VAE needs (height, width, channels) images with height and "
                         f"width divisible by {DOWNSAMPLING}; got {image_shape}")
    f1, f2 = (int(f) for f in filters)
    image = keras.Input(image_shape, name="image")
    h = layers.Conv2D(f1, 3, strides=2, padding="same", activation="relu", name="enc_conv1")(image)
    h = layers.Conv2D(f2, 3, strides=2, padding="same", activation="relu", name="enc_conv2")(h)
    z_e = layers.Conv2D(code_dim, 1, name="z_e")(h)
    encoder = keras.Model(image, z_e, name="encoder")
    grid = (image_shape[0] // DOWNSAMPLING, image_shape[1] // DOWNSAMPLING)
    codes = keras.Input((*grid, code_dim), name="codes")
    h = layers.Conv2DTranspose(f2, 3, strides=2, padding="same", activation="relu",
                               name="dec_deconv1")(codes)
    h = layers.Conv2DTranspose(f1, 3, strides=2, padding="same", activation="relu",
                               name="dec_deconv2")(h)
    out_channels = blocks.output_shape(image_shape, params_per_pixel)[-1]
    params = layers.Conv2D(out_channels, 3, padding="same", name="params")(h)
    decoder = keras.Model(codes, params, name="decoder")
    return encoder, decoder


@keras.saving.register_keras_serializable(package="keras_vae")
class VQVAE(BuiltModel):
    """Vector-quantized autoencoder trained with `fit`; a PixelCNN prior samples it.

    Args:
        image_shape: `(height, width, channels)`, height and width divisible by 4.
        codebook_size: Number of codes N.
        code_dim: Size D of each code vector.
        arch_options: `{"filters": (f1, f2)}` for `build_networks`.
        commitment_cost: beta of the commitment loss.
        ema: Update the codebook by EMA instead of the codebook loss.
        decay: The EMA decay.
        restart_after: Idle training steps before a code is re-initialised (0: never).
        likelihood: Name, config or layer from `keras_vae.parts.likelihoods`.
        seed: Seed of the codebook and the restarts.
        encoder, decoder: Keras models to use instead of `build_networks`'s
            (`image -> (h', w', D)` and `(h', w', D) -> parameters`).
        code_prior: A trained prior network (`keras_vae.parts.code_prior.build`),
            or None; usually attached by `code_prior.train_prior`.

    Example:

    >>> vq = keras_vae.VQVAE(image_shape=(28, 28, 1), codebook_size=64, code_dim=16)
    >>> vq.compile(keras.optimizers.Adam(1e-3))
    >>> vq.fit(keras_vae.data.load("digits", batch_size=64), epochs=5)
    >>> keras_vae.parts.code_prior.train_prior(vq, images, epochs=20)
    >>> vq.sample(16, seed=0).shape
    """

    CONFIG_KEYS = ("image_shape", "codebook_size", "code_dim", "arch_options",
                   "commitment_cost", "ema", "decay", "restart_after", "likelihood", "seed",
                   "encoder", "decoder", "code_prior")
    NESTED_CONFIG_KEYS = ("likelihood", "encoder", "decoder", "code_prior")

    def __init__(self, image_shape=None, codebook_size: int = 64, code_dim: int = 16, *,
                 arch_options: dict | None = None, commitment_cost: float = 0.25,
                 ema: bool = False, decay: float = 0.99, restart_after: int = 100,
                 likelihood="bernoulli", seed: int | None = None, encoder=None, decoder=None,
                 code_prior=None, **kwargs):
        super().__init__(**kwargs)
        self.arch_options = dict(arch_options or {})
        self.num_classes = 0  # unconditional (the pictures and CLI read this)
        self.seed = seed
        likelihood = likelihoods.get(likelihood)
        if (encoder is None) != (decoder is None):
            raise ValueError("Pass both encoder and decoder, or neither.")
        if encoder is None:
            if image_shape is None:
                raise ValueError("Give image_shape to build the VQ-VAE's networks.")
            encoder, decoder = build_networks(image_shape, code_dim,
                                              likelihood.params_per_pixel, **self.arch_options)
        else:
            encoder, decoder = as_model(encoder), as_model(decoder)
        self.encoder = encoder
        self.decoder = decoder
        self.image_shape = tuple(int(d) for d in encoder.inputs[0].shape[1:])
        self.grid_shape = tuple(int(d) for d in encoder.outputs[0].shape[1:-1])
        if int(encoder.outputs[0].shape[-1]) != int(code_dim):
            raise ValueError(f"The encoder gives {encoder.outputs[0].shape[-1]}-dimensional "
                             f"vectors, code_dim is {code_dim}")
        self.quantizer = VectorQuantizer(codebook_size, code_dim, commitment_cost, ema=ema,
                                         decay=decay, restart_after=restart_after, seed=seed,
                                         name="quantizer")
        self.quantizer.build()
        self.likelihood = likelihood
        self.code_prior = None
        if code_prior is not None:
            self.set_code_prior(as_model(code_prior))
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.vq_tracker = keras.metrics.Mean(name="vq_loss")
        self.perplexity_tracker = keras.metrics.Mean(name="perplexity")
        self.usage_tracker = keras.metrics.Mean(name="codebook_usage")
        # Every variable exists now: marked built so saving keeps the optimizer.
        self.built = True

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def code_dim(self) -> int:
        return self.quantizer.code_dim

    def set_code_prior(self, prior: keras.Model) -> None:
        """Attaches a trained prior network `indices -> logits`, frozen.

        Raises:
            ValueError: its input or output does not match the code grid.
        """
        want_in = (None, *self.grid_shape)
        want_out = (None, *self.grid_shape, self.codebook_size)
        got_in, got_out = tuple(prior.inputs[0].shape), tuple(prior.outputs[0].shape)
        if got_in != want_in or got_out != want_out:
            raise ValueError(f"The code prior maps {got_in} -> {got_out}; this VQ-VAE needs "
                             f"{want_in} -> {want_out}")
        prior.trainable = False  # second stage: never moved by the VQ-VAE's optimizer
        self.code_prior = prior

    # ------------------------------------------------------------------ API

    def vq_terms(self, x, target=None, training=False) -> dict:
        """Per-example terms of the objective, the one place the loss is written.

        Returns:
            The quantizer's dict (`quantized`, `indices`, `codebook_loss`,
            `commitment_loss`, `counts`, ...) plus `z_e`,
            `reconstruction_loss` (`(batch,)`, nats summed over pixels) and
            `vq_loss` (`(batch,)`: commitment, plus the codebook loss unless
            the codebook is an EMA).
        """
        target = x if target is None else target
        z_e = self.encoder(x, training=training)
        terms = self.quantizer(z_e)
        params = ops.cast(self.decoder(terms["quantized"], training=training), "float32")
        terms["z_e"] = z_e
        terms["reconstruction_loss"] = -self.likelihood.log_prob(target, params)
        terms["vq_loss"] = terms["commitment_loss"] + (
            0.0 if self.quantizer.ema else terms["codebook_loss"])
        return terms

    def encode_indices(self, x, batch_size: int = 256) -> np.ndarray:
        """Code grids of images `x`: `(n, h/4, w/4)` int32 numpy."""
        x = data_lib.check_images(x, self.image_shape)
        return data_lib.batched(lambda xb, _: self._indices(xb), x, None, batch_size)

    def decode_indices(self, indices, batch_size: int = 256) -> np.ndarray:
        """Image means of code grids `indices` `(n, h', w')`: `(n, *image_shape)` numpy."""
        indices = np.asarray(indices)
        if indices.shape[1:] != self.grid_shape or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"Expected integer code grids (n, {self.grid_shape[0]}, "
                             f"{self.grid_shape[1]}), got {indices.dtype}{indices.shape}")
        if indices.size and (indices.min() < 0 or indices.max() >= self.codebook_size):
            raise ValueError(f"Codes must be in [0, {self.codebook_size})")
        return data_lib.batched(lambda ib, _: self._decode(ib), indices.astype(np.int32), None,
                                batch_size)

    def call(self, x, training=False):
        """Reconstruction means of images `x` through the quantized grid."""
        return self.likelihood.mean(ops.cast(
            self.decoder(self.quantizer(self.encoder(x, training=training))["quantized"],
                         training=training), "float32"))

    def reconstruct(self, x, labels=None, batch_size: int = 256) -> np.ndarray:
        """Decodes each image's nearest codes: `(n, *image_shape)` numpy."""
        if labels is not None:
            raise ValueError("A VQ-VAE is unconditional; labels are not used.")
        x = data_lib.check_images(x, self.image_shape)
        return data_lib.batched(lambda xb, _: self.call(xb), x, None, batch_size)

    def max_samples(self) -> int:
        """The most images one `sample` call draws: `MAX_CODE_PRIOR_POSITIONS` over its grid's cost.

        Without a code prior (uniform codes) drawing costs nothing, and the
        limit is the command line's (`recipes.MAX_IMAGES`).
        """
        if self.code_prior is None:
            return recipes.MAX_IMAGES
        positions = self.grid_shape[0] * self.grid_shape[1]
        return max(1, min(recipes.MAX_IMAGES, MAX_CODE_PRIOR_POSITIONS // positions**2))

    def sample_codes(self, n: int, seed: int | None = None) -> np.ndarray:
        """`(n, h', w')` int32 code grids: from the prior if trained, else uniform.

        The numpy loop `recipes.autoregressive_codes`, the same one the edge
        samplers run, so a seed gives the same codes everywhere. The prior
        runs on `CODE_PRIOR_BATCH` grids at a time.

        Raises:
            ValueError: `n` over `max_samples()`, before any work.
        """
        limit = self.max_samples()
        if int(n) > limit:
            h, w = self.grid_shape
            raise ValueError(
                f"A VQ-VAE with a code prior on {h}x{w} code grids draws at most {limit} "
                f"images at a time (its PixelCNN runs once per code position, {h * w} times "
                f"per grid), got {n}; draw them in several calls with different seeds.")
        if self.code_prior is None:
            def run_logits(codes):  # no prior yet: every code equally likely
                return np.zeros((*codes.shape, self.codebook_size), np.float32)
        else:
            def run_logits(codes):  # (n, h', w') -> (n, h', w', codebook_size)
                return np.concatenate([
                    ops.convert_to_numpy(self.code_prior(codes[i:i + CODE_PRIOR_BATCH],
                                                         training=False))
                    for i in range(0, len(codes), CODE_PRIOR_BATCH)])
        return recipes.autoregressive_codes(run_logits, n, self.grid_shape,
                                            self.codebook_size, seed)

    def sample(self, n: int, seed: int | None = None, class_ids=None,
               batch_size: int = 256) -> np.ndarray:
        """Draws `n` images: codes from the prior (uniform codes before it is trained), decoded.

        Returns:
            `(n, *image_shape)` float32 image means.
        """
        if class_ids is not None:
            raise ValueError("A VQ-VAE is unconditional; class_ids are not used.")
        return self.decode_indices(self.sample_codes(n, seed), batch_size)

    def _indices(self, x):
        z_e = ops.cast(self.encoder(x, training=False), "float32")
        flat = ops.reshape(z_e, (-1, self.code_dim))
        return ops.reshape(self.quantizer.nearest(flat), ops.shape(z_e)[:-1])

    def _decode(self, indices):
        params = self.decoder(self.quantizer.lookup(indices), training=False)
        return self.likelihood.mean(ops.cast(params, "float32"))

    # --------------------------------------------------------- Keras steps

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.vq_tracker,
                self.perplexity_tracker, self.usage_tracker]

    def train_step(self, data):
        x, _, target = data_lib.unpack_batch(data, 0)
        with tf.GradientTape() as tape:
            terms = self.vq_terms(x, target, training=True)
            per_example = terms["reconstruction_loss"] + terms["vq_loss"]
            loss = self.optimizer.scale_loss(distribute.average_loss(per_example))
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply(grads, self.trainable_variables)
        counts = _all_sum(terms["counts"])  # over replicas, once per step
        if self.quantizer.ema:
            self.quantizer.update_ema(terms["flat"], terms["flat_indices"], counts)
        self.quantizer.restart_dead_codes(terms["flat"], counts)
        return self._update_metrics(per_example, terms, counts)

    def test_step(self, data):
        x, _, target = data_lib.unpack_batch(data, 0)
        terms = self.vq_terms(x, target, training=False)
        return self._update_metrics(terms["reconstruction_loss"] + terms["vq_loss"], terms,
                                    _all_sum(terms["counts"]))

    def _update_metrics(self, per_example, terms, counts):
        self.loss_tracker.update_state(per_example)
        self.reconstruction_tracker.update_state(terms["reconstruction_loss"])
        self.vq_tracker.update_state(terms["vq_loss"])
        self.perplexity_tracker.update_state(perplexity(counts))
        self.usage_tracker.update_state(ops.mean(ops.cast(counts > 0, "float32")))
        return distribute.step_logs(self.metrics)

    def fit(self, x=None, y=None, *args, **kwargs):
        x, y = data_lib.guard_inputs(x, y, self.image_shape)
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # a dataset shuffles itself
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        x, y = data_lib.guard_inputs(x, y, self.image_shape)
        return super().evaluate(x, y, *args, **kwargs)

    # ------------------------------------------------------------- config

    def config_value(self, key):
        if key in QUANTIZER_KEYS:  # held by the quantizer
            return getattr(self.quantizer, key)
        if key == "code_prior":  # frozen here: its own training set-up is not saved
            return _without_compile(self.code_prior)
        return super().config_value(key)

    # ------------------------------------------------------------- export

    def manifest_latents(self) -> dict:
        """The manifest's description of the codes and their prior (for the edge samplers)."""
        return {
            "latent_dim": None,
            "codes": {"grid_shape": list(self.grid_shape), "codebook_size": self.codebook_size,
                      "code_dim": self.code_dim},
            "prior": {
                "type": recipes.AUTOREGRESSIVE_CODES,
                "graph": None if self.code_prior is None else "prior",
                "grid_shape": list(self.grid_shape),
                "codebook_size": self.codebook_size,
                "meaning": "codes for a seed: keras_vae.recipes.autoregressive_codes("
                           "run_logits, n, grid_shape, codebook_size, seed) with run_logits the "
                           "prior graph (uniform codes when graph is null), then the decoder "
                           "graph; the same draws as the model's sample()",
            },
        }

    def export_graphs(self) -> dict:
        """The graphs this model exports, `{name: GraphSignature}`.

        - `decoder`: `indices` `(h', w')` int32 -> `x`, image means;
        - `encoder`: `image` -> `indices`, the nearest code at each position
          (int32, an ArgMin in the graph);
        - `prior` (once trained): `indices` -> `logits` `(h', w', N)`, the
          PixelCNN's logits of each position's code given the earlier ones.
        """
        codes = ("indices", self.grid_shape, "int32")
        ranges = {"indices": (0, self.codebook_size)}
        value_range = self.likelihood.value_range
        graphs = {
            "decoder": GraphSignature(
                [codes], ("x",), lambda indices: {"x": self._decode(indices)},
                "x: image means E[x | codes] (pixel probabilities in [0, 1] for a Bernoulli "
                "likelihood) of a grid of code indices", value_range, ranges),
            "encoder": GraphSignature(
                [("image", self.image_shape, "float32")], ("indices",),
                lambda image: {"indices": self._indices(image)},
                "indices: the nearest codebook entry at each grid position (int32)"),
        }
        if self.code_prior is not None:
            graphs["prior"] = GraphSignature(
                [codes], ("logits",),
                lambda indices: {"logits": ops.cast(self.code_prior(indices), "float32")},
                "logits: the code prior's logits at each position given the codes before it "
                "in raster order (causal)", None, ranges)
        return graphs


def _without_compile(model):
    """The serialized `model` without its own training set-up (the prior is frozen here)."""
    if model is None:
        return None
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    return config


# ---------------------------------------------------------------- family

CODE_OPTIONS = (
    Option("--codebook-size", int, 64, "number of codes", low=2, high=1 << 16,
           what="a codebook size"),
    Option("--code-dim", int, 16, "size of each code", low=1, high=4096, what="a code size"),
    Option("--commitment-cost", float, 0.25, "beta, the weight of the commitment loss",
           low=0.0, what="a non-negative number"),
    Option("--ema", bool, False, "EMA codebook updates"),
    Option("--arch-options", dict, {}, 'JSON options of the networks, e.g. \'{"filters": '
           '[32, 64]}\''),
    Option("--likelihood", str, "bernoulli", "the likelihood p(x | codes)",
           choices=likelihoods.names),
)

register(Family("vqvae", VQVAE, CODES, "discrete codes", options=CODE_OPTIONS))
