"""Encoder and decoder architectures, built as functional Keras models.

Every builder has the signature
`build(image_shape, latent_dim, num_classes=0, params_per_pixel=1, **options)
-> (encoder, decoder)`:

- encoder: `image` (and `label`, int, when `num_classes > 0`) ->
  `[z_mean, z_log_var]`, each `(batch, latent_dim)`; the log-variance is raw
  (the VAE clamps it).
- decoder: `z` (and `label`) -> distribution parameters (logits for Bernoulli)
  of shape `(batch, *image_shape[:-1], channels * params_per_pixel)`: the
  likelihood says how many parameters each value has (`output_shape`).

`register` adds an architecture; the command line's `--arch` lists them.

Labels enter through an `Embedding` (a gather), which every export runtime
supports.
"""

from __future__ import annotations

import inspect
import math

import keras
from keras import layers

from keras_vae.parts.blocks import condition, heads, inputs, label_of, output_shape
from keras_vae.parts.sequences import build_lstm
from keras_vae.registry import Registry


def build_mlp(image_shape, latent_dim, num_classes=0, params_per_pixel=1,
              hidden_units=(400, 400), activation="relu"):
    """Fully connected encoder/decoder (784-400-400-20 with the defaults on MNIST)."""
    enc_in, dec_in = inputs(image_shape, latent_dim, num_classes)
    h = layers.Flatten()(enc_in[0])
    h = condition(h, label_of(enc_in), num_classes, "encoder")
    for i, units in enumerate(hidden_units):
        h = layers.Dense(units, activation=activation, name=f"encoder_dense_{i}")(h)
    encoder = keras.Model(enc_in, heads(h, latent_dim), name="encoder")

    h = condition(dec_in[0], label_of(dec_in), num_classes, "decoder")
    for i, units in enumerate(reversed(hidden_units)):
        h = layers.Dense(units, activation=activation, name=f"decoder_dense_{i}")(h)
    out_shape = output_shape(image_shape, params_per_pixel)
    h = layers.Dense(math.prod(out_shape), name="decoder_logits")(h)
    logits = layers.Reshape(out_shape, name="logits")(h)
    decoder = keras.Model(dec_in, logits, name="decoder")
    return encoder, decoder


def _decoder_trunk(z_like, image_shape, channels, dense_units, activation, n_up):
    """Dense -> (h, w, c) grid that `n_up` stride-2 upsamplings bring to size."""
    height, width = image_shape[0], image_shape[1]
    h0, w0 = math.ceil(height / 2**n_up), math.ceil(width / 2**n_up)
    h = z_like
    if dense_units:
        h = layers.Dense(dense_units, activation=activation, name="decoder_dense")(h)
    h = layers.Dense(h0 * w0 * channels, activation=activation, name="decoder_grid")(h)
    return layers.Reshape((h0, w0, channels))(h)


def _crop_to(h, image_shape):
    """Crops the decoder's (ceil-rounded) grid back to the image size."""
    extra_h = h.shape[1] - image_shape[0]
    extra_w = h.shape[2] - image_shape[1]
    if extra_h or extra_w:
        h = layers.Cropping2D(((0, extra_h), (0, extra_w)), name="crop")(h)
    return h


def _check_conv_shape(image_shape):
    if len(image_shape) != 3:
        raise ValueError(
            f"Convolutional architectures need (height, width, channels) images, "
            f"got image_shape={tuple(image_shape)}"
        )


def build_conv(image_shape, latent_dim, num_classes=0, params_per_pixel=1, filters=(32, 64),
               dense_units=512, activation="relu", decoder_dense_units=0):
    """Strided conv encoder and transposed-conv decoder (the keras.io shape).

    Unlike keras.io, the encoder has a wide dense layer (512, not 16) between
    the convolutions and the latent heads: a 16-unit bottleneck before the
    Gaussian heads is what limits that example's likelihood.

    The decoder maps `z` straight to its grid, as keras.io does
    (`decoder_dense_units=0`). A dense layer there (`decoder_dense_units=512`)
    buys 0.3 nats of test ELBO on MNIST and costs twice the batch-1 decoding
    time on a CPU: its 512x3136 weights are 6.4 MB of float32 read per sample
    (benchmarks/README.md). Saved models keep the decoder they were built with.
    """
    _check_conv_shape(image_shape)
    enc_in, dec_in = inputs(image_shape, latent_dim, num_classes)
    h = enc_in[0]
    for i, f in enumerate(filters):
        h = layers.Conv2D(f, 3, strides=2, padding="same", activation=activation,
                          name=f"encoder_conv_{i}")(h)
    h = layers.Flatten()(h)
    h = condition(h, label_of(enc_in), num_classes, "encoder")
    if dense_units:
        h = layers.Dense(dense_units, activation=activation, name="encoder_dense")(h)
    encoder = keras.Model(enc_in, heads(h, latent_dim), name="encoder")

    h = condition(dec_in[0], label_of(dec_in), num_classes, "decoder")
    h = _decoder_trunk(h, image_shape, filters[-1], decoder_dense_units, activation,
                       len(filters))
    for i, f in enumerate(reversed(filters)):
        h = layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation=activation,
                                   name=f"decoder_deconv_{i}")(h)
    h = _crop_to(h, image_shape)
    logits = layers.Conv2D(image_shape[-1] * params_per_pixel, 3, padding="same",
                           name="logits")(h)
    decoder = keras.Model(dec_in, logits, name="decoder")
    return encoder, decoder


def _res_block(h, filters, activation, name):
    """Pre-activation residual block: x + conv(act(conv(act(x))))."""
    y = layers.Activation(activation)(h)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv_a")(y)
    y = layers.Activation(activation)(y)
    y = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv_b")(y)
    return layers.Add(name=f"{name}_add")([h, y])


def build_resnet(image_shape, latent_dim, num_classes=0, params_per_pixel=1, filters=(32, 64),
                 blocks_per_stage=1, dense_units=512, activation="swish"):
    """Deeper residual conv encoder/decoder: a stride-2 conv then residual blocks per stage."""
    _check_conv_shape(image_shape)
    enc_in, dec_in = inputs(image_shape, latent_dim, num_classes)
    h = enc_in[0]
    for i, f in enumerate(filters):
        h = layers.Conv2D(f, 3, strides=2, padding="same", name=f"encoder_down_{i}")(h)
        for j in range(blocks_per_stage):
            h = _res_block(h, f, activation, f"encoder_res_{i}_{j}")
    h = layers.Activation(activation)(h)
    h = layers.Flatten()(h)
    h = condition(h, label_of(enc_in), num_classes, "encoder")
    h = layers.Dense(dense_units, activation=activation, name="encoder_dense")(h)
    encoder = keras.Model(enc_in, heads(h, latent_dim), name="encoder")

    h = condition(dec_in[0], label_of(dec_in), num_classes, "decoder")
    h = _decoder_trunk(h, image_shape, filters[-1], dense_units, activation, len(filters))
    for i, f in enumerate(reversed(filters)):
        for j in range(blocks_per_stage):
            h = _res_block(h, h.shape[-1], activation, f"decoder_res_{i}_{j}")
        h = layers.Conv2DTranspose(f, 3, strides=2, padding="same", name=f"decoder_up_{i}")(h)
    h = layers.Activation(activation)(h)
    h = _crop_to(h, image_shape)
    logits = layers.Conv2D(image_shape[-1] * params_per_pixel, 3, padding="same",
                           name="logits")(h)
    decoder = keras.Model(dec_in, logits, name="decoder")
    return encoder, decoder


ARCHITECTURES = Registry("architecture", {"mlp": build_mlp, "conv": build_conv,
                                         "resnet": build_resnet, "lstm": build_lstm})
register = ARCHITECTURES.register
_SHARED = ("image_shape", "latent_dim", "num_classes", "params_per_pixel")


def get(name: str):
    """Returns the builder registered under `name`.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    return ARCHITECTURES.get(name)


def build(name: str, image_shape, latent_dim: int, num_classes: int = 0,
          params_per_pixel: int = 1, **options):
    """Builds `(encoder, decoder)` for the architecture `name`.

    Args:
        name: A name from `ARCHITECTURES`.
        image_shape: The data's shape without the batch axis.
        latent_dim: Size of z.
        num_classes: Classes of a conditional model, 0 for none.
        params_per_pixel: Decoder outputs per value, from the likelihood
            (`likelihood.params_per_pixel`): the last axis gets
            `channels * params_per_pixel` outputs.
        **options: The builder's own keyword arguments.
    """
    image_shape = tuple(int(d) for d in image_shape)
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
    builder = get(name)
    valid = [p for p in inspect.signature(builder).parameters if p not in _SHARED]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for the {name!r} architecture; "
                         f"valid: {valid}")
    return builder(image_shape, int(latent_dim), int(num_classes),
                   params_per_pixel=int(params_per_pixel), **options)
