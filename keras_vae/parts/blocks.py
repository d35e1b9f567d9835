"""Building blocks every architecture shares: inputs, label conditioning, Gaussian heads.

Public so that architectures in other modules (`sequences`, a user's own)
use them without reaching into `networks`.
"""

from __future__ import annotations

import keras
from keras import layers


def inputs(image_shape, latent_dim, num_classes):
    """`(encoder inputs, decoder inputs)`: image or z, plus an int32 label if conditional."""
    image = keras.Input(shape=tuple(image_shape), name="image")
    z = keras.Input(shape=(latent_dim,), name="z")
    if num_classes:
        enc_label = keras.Input(shape=(), dtype="int32", name="label")
        dec_label = keras.Input(shape=(), dtype="int32", name="label")
        return [image, enc_label], [z, dec_label]
    return [image], [z]


def condition(h, label_input, num_classes, name):
    """Concatenates a learned label embedding to flat features `h`."""
    if label_input is None:
        return h
    emb = layers.Embedding(num_classes, 16, name=f"{name}_label_embedding")(label_input)
    return layers.Concatenate(name=f"{name}_with_label")([h, emb])


def heads(h, latent_dim):
    """The Gaussian posterior's `[z_mean, z_log_var]` heads on features `h`."""
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    return [z_mean, z_log_var]


def label_of(inputs):
    """The label input of a conditional model's inputs, else None."""
    return inputs[1] if len(inputs) > 1 else None


def output_shape(image_shape, params_per_pixel: int = 1) -> tuple:
    """The decoder's output shape: the last axis holds `channels * params_per_pixel`."""
    image_shape = tuple(int(d) for d in image_shape)
    return (*image_shape[:-1], image_shape[-1] * int(params_per_pixel))
