"""Sequence VAEs: a recurrent (LSTM) encoder/decoder and a synthetic time-series set.

The `lstm` architecture (registered in `keras_vae.parts.networks.ARCHITECTURES`)
reads `(timesteps, features)` sequences, so the same `VAE` and ELBO train on
time series:

>>> x = keras_vae.parts.sequences.noisy_sines(512, timesteps=16, seed=0)  # (512, 16, 1)
>>> vae = keras_vae.VAE(image_shape=(16, 1), latent_dim=4, arch="lstm",
...                     likelihood=keras_vae.Gaussian(scale=0.05),
...                     kl_schedule=keras_vae.parts.objectives.LinearWarmup(200))
>>> vae.compile(keras.optimizers.Adam(5e-3))
>>> vae.fit(x, epochs=10, batch_size=16)

Values must lie in [0, 1] for `fit` on arrays (the data checks are shared
with images), which `noisy_sines` respects; scale other series into [0, 1]
(min-max) first. Recurrent VAEs collapse easily (Bowman et al., 2016): use a
Gaussian likelihood whose scale is near the noise level (with unit scale the
reconstruction term is too weak against the KL), KL warm-up, and the narrow
initial posterior this builder starts from.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from keras_vae.parts import blocks


def build_lstm(image_shape, latent_dim, num_classes=0, params_per_pixel=1, units=64,
               dense_units=0, unroll=False, initial_log_var=-4.0):
    """LSTM encoder and decoder for `(timesteps, features)` sequences.

    Encoder: a bidirectional LSTM reads the sequence; its two final hidden
    states (with the label embedding for conditional models) feed the
    Gaussian heads.
    Decoder: z (and label) -> Dense initial state, repeated at every step as
    input of an LSTM whose outputs a per-step Dense maps to the `features`
    distribution parameters.

    Args:
        image_shape: `(timesteps, features)`.
        latent_dim: Size of z.
        num_classes: Classes of a conditional model, 0 for none.
        params_per_pixel: Likelihood parameters per value (outputs per feature).
        units: LSTM units of encoder and decoder.
        dense_units: Optional Dense layer between LSTM state and heads.
        unroll: Unroll the LSTMs (faster on CPU for short sequences).
        initial_log_var: Initial bias of the encoder's log-variance head.

    Returns:
        `(encoder, decoder)` functional models with the `networks` signature.

    Raises:
        ValueError: when `image_shape` is not `(timesteps, features)`.
    """
    if len(image_shape) != 2:
        raise ValueError(
            f"The lstm architecture needs (timesteps, features) sequences, got "
            f"image_shape={tuple(image_shape)}"
        )
    timesteps, features = image_shape
    enc_in, dec_in = blocks.inputs(image_shape, latent_dim, num_classes)
    # Bidirectional, as MusicVAE's encoder: a forward LSTM's last state alone
    # remembers the end of the sequence best and trains far more slowly.
    h = layers.Bidirectional(layers.LSTM(units, unroll=unroll), name="encoder_lstm")(
        enc_in[0])  # (batch, 2 * units)
    h = blocks.condition(h, blocks.label_of(enc_in), num_classes, "encoder")
    if dense_units:
        h = layers.Dense(dense_units, activation="relu", name="encoder_dense")(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    # Start from a narrow posterior (std e^-2 by default): from a unit
    # variance the sampling noise hides z from the decoder, which
    # learns to ignore z before the encoder's means have grown (posterior
    # collapse; docs/variants.md has the figures).
    z_log_var = layers.Dense(latent_dim, name="z_log_var",
                             bias_initializer=keras.initializers.Constant(
                                 initial_log_var))(h)
    encoder = keras.Model(enc_in, [z_mean, z_log_var], name="encoder")

    h = blocks.condition(dec_in[0], blocks.label_of(dec_in), num_classes, "decoder")
    if dense_units:
        h = layers.Dense(dense_units, activation="relu", name="decoder_dense")(h)
    state_h = layers.Dense(units, activation="tanh", name="decoder_state_h")(h)
    state_c = layers.Dense(units, name="decoder_state_c")(h)
    steps = layers.RepeatVector(timesteps, name="decoder_repeat")(h)  # (batch, T, ·)
    h = layers.LSTM(units, return_sequences=True, unroll=unroll, name="decoder_lstm")(
        steps, initial_state=[state_h, state_c])  # (batch, T, units)
    params = layers.Dense(features * params_per_pixel, name="logits")(h)  # (batch, T, F * p)
    decoder = keras.Model(dec_in, params, name="decoder")
    return encoder, decoder


def noisy_sines(n: int, timesteps: int = 32, features: int = 1, noise: float = 0.05,
                seed: int | None = 0, return_params: bool = False):
    """Synthetic time series: sines of random phase and frequency, plus noise, in [0, 1].

    `x[t, f] = 0.5 + 0.35 * sin(2 pi freq_f t / timesteps + phase_f) + noise * e`,
    clipped to [0, 1], with `freq ~ U(1, 3)` cycles per sequence,
    `phase ~ U(0, 2 pi)` and `e ~ N(0, 1)`.

    Args:
        n: Number of sequences.
        timesteps: Length of each sequence.
        features: Channels (independent sines).
        noise: Standard deviation of the additive noise.
        seed: Seed of numpy's Generator.
        return_params: Also return `(freq, phase)`, each `(n, features)`.

    Returns:
        `(n, timesteps, features)` float32 (and the parameters).
    """
    if n < 1 or timesteps < 2 or features < 1:
        raise ValueError(
            f"Need n >= 1, timesteps >= 2, features >= 1; got {n}, {timesteps}, {features}"
        )
    rng = np.random.default_rng(seed)
    freq = rng.uniform(1.0, 3.0, (n, 1, features))
    phase = rng.uniform(0.0, 2.0 * np.pi, (n, 1, features))
    t = np.arange(timesteps, dtype=np.float64)[None, :, None]  # (1, T, 1)
    x = 0.5 + 0.35 * np.sin(2.0 * np.pi * freq * t / timesteps + phase)
    x = np.clip(x + noise * rng.standard_normal(x.shape), 0.0, 1.0).astype(np.float32)
    if return_params:
        return x, (freq[:, 0], phase[:, 0])
    return x
