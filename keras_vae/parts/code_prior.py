"""A learned prior over a VQ-VAE's code grid: a small gated PixelCNN, trained with `fit`.

The network reads a grid of code indices and gives, at each position, the
logits of the code there given the codes before it in raster order
(van den Oord et al., 2016, "Conditional Image Generation with PixelCNN
Decoders"; keras.io "PixelCNN" and "vq_vae"). Causality comes from masked
convolutions: the first (type `A`) sees only positions strictly before the
centre, the following ones (type `B`) also the centre, whose features by then
hold only earlier codes. Each residual block is gated,
`tanh(a) * sigmoid(b)`. One stack of masks has the PixelCNN's blind spot
(some earlier positions up and to the right are not seen); on the 7x7 grids
of MNIST codes it costs little.

Sampling is `keras_vae.recipes.autoregressive_codes`, the same numpy
loop on the edge; training is the second stage after the VQ-VAE:
`train_prior(vqvae, images)` encodes the images to index grids and fits the
prior on them with a cross-entropy in nats per code.

Example:

>>> history = keras_vae.parts.code_prior.train_prior(vqvae, train_images, epochs=20)
>>> bits = keras_vae.parts.code_prior.bits_per_grid(vqvae, test_images)
>>> images = vqvae.sample(16, seed=0)  # codes from the prior, then the decoder
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops


@keras.saving.register_keras_serializable(package="keras_vae")
class MaskedConv2D(layers.Conv2D):
    """A 2-D convolution that sees only earlier positions (raster order).

    Args:
        mask_type: `"A"` (strictly earlier positions: the first layer) or
            `"B"` (earlier positions and the centre: every later layer).
        **kwargs: `keras.layers.Conv2D` arguments (odd kernel, `same` padding).
    """

    def __init__(self, mask_type: str = "B", **kwargs):
        if mask_type not in ("A", "B"):
            raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
        kwargs.setdefault("padding", "same")
        super().__init__(**kwargs)
        self.mask_type = mask_type

    def build(self, input_shape):
        super().build(input_shape)
        kh, kw, cin, cout = self.kernel.shape
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"MaskedConv2D needs an odd kernel, got {(kh, kw)}")
        mask = np.ones((kh, kw, cin, cout), np.float32)
        mask[kh // 2, kw // 2 + (self.mask_type == "B"):] = 0.0  # the centre row: after
        mask[kh // 2 + 1:] = 0.0  # every row below
        self.mask = mask

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, kernel * self.mask)

    def get_config(self):
        return {**super().get_config(), "mask_type": self.mask_type}


@keras.saving.register_keras_serializable(package="keras_vae")
class GatedActivation(layers.Layer):
    """`tanh(a) * sigmoid(b)` of the two halves `a, b` of the last axis."""

    def call(self, inputs):
        a, b = ops.split(inputs, 2, axis=-1)
        return ops.tanh(a) * ops.sigmoid(b)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)


def build(grid_shape, codebook_size: int, filters: int = 64, blocks: int = 4,
          first_kernel: int = 7, kernel: int = 3) -> keras.Model:
    """A gated PixelCNN `indices (batch, h, w) int32 -> logits (batch, h, w, codebook_size)`.

    Args:
        grid_shape: `(height, width)` of the code grid.
        codebook_size: Number of codes.
        filters: Channels of the residual stream.
        blocks: Gated residual blocks (masked type B).
        first_kernel: Kernel of the first (type A) masked convolution.
        kernel: Kernel of the blocks' masked convolutions.
    """
    height, width = (int(d) for d in grid_shape)
    indices = keras.Input((height, width), dtype="int32", name="indices")
    h = layers.Embedding(int(codebook_size), filters, name="code_embedding")(indices)
    h = MaskedConv2D("A", filters=filters, kernel_size=first_kernel, name="masked_a")(h)
    for b in range(blocks):
        g = layers.ReLU(name=f"block{b}_relu")(h)
        g = MaskedConv2D("B", filters=2 * filters, kernel_size=kernel, name=f"block{b}_masked_b")(g)
        g = GatedActivation(name=f"block{b}_gate")(g)
        g = layers.Conv2D(filters, 1, name=f"block{b}_1x1")(g)  # position-wise: stays causal
        h = layers.Add(name=f"block{b}_add")([h, g])
    h = layers.ReLU(name="head_relu")(h)
    h = layers.Conv2D(filters, 1, activation="relu", name="head")(h)
    logits = layers.Conv2D(int(codebook_size), 1, name="logits")(h)
    return keras.Model(indices, logits, name="code_prior")


def train_prior(vqvae, data, *, epochs: int = 20, batch_size: int = 64,
                learning_rate: float = 1e-3, validation_data=None, filters: int = 64,
                blocks: int = 4, seed: int = 0, verbose="auto") -> keras.callbacks.History:
    """Second stage: fits a PixelCNN on the VQ-VAE's code grids and attaches it to the model.

    Args:
        vqvae: A trained `keras_vae.VQVAE`; it gets the prior (`vqvae.code_prior`,
            frozen so the VQ-VAE's own optimizer never sees it).
        data: Images `(n, *image_shape)` in [0, 1], or a dataset of
            `(image, label)` batches.
        epochs, batch_size, learning_rate: Of the prior's `fit` (Adam).
        validation_data: Held-out images (or dataset) for `val_loss`.
        filters, blocks: The PixelCNN's size (see `build`).
        seed: Seed of the weights' initialization and shuffling.
        verbose: Keras verbosity.

    Returns:
        The prior's `History` (`loss`: nats per code).
    """
    keras.utils.set_random_seed(int(seed))
    codes = vqvae.encode_indices(_images(data))  # (n, h, w) int32
    prior = build(codes.shape[1:], vqvae.codebook_size, filters=filters, blocks=blocks)
    prior.compile(keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    val = None
    if validation_data is not None:
        held = vqvae.encode_indices(_images(validation_data))
        val = (held, held)
    history = prior.fit(codes, codes, batch_size=batch_size, epochs=epochs,
                        validation_data=val, verbose=verbose)
    vqvae.set_code_prior(prior)
    return history


def code_nll(vqvae, images, batch_size: int = 256) -> np.ndarray:
    """Negative log-likelihood of each image's code grid under the prior, nats, `(n,)`.

    Before a prior is trained the model samples uniform codes, and this is
    their NLL, `h * w * ln(codebook_size)` for every image.
    """
    return grid_nll(vqvae, vqvae.encode_indices(_images(images)), batch_size)


def grid_nll(vqvae, codes, batch_size: int = 256) -> np.ndarray:
    """Negative log-likelihood of code grids `(n, h, w)` under the prior, nats, `(n,)`."""
    codes = np.asarray(codes)
    if vqvae.code_prior is None:
        return np.full(len(codes), codes[0].size * np.log(vqvae.codebook_size))
    out = []
    for start in range(0, len(codes), batch_size):
        c = codes[start:start + batch_size]
        logits = ops.cast(vqvae.code_prior(c, training=False), "float32")
        ce = keras.losses.sparse_categorical_crossentropy(c, logits, from_logits=True)
        out.append(ops.convert_to_numpy(ops.sum(ce, axis=(1, 2))))
    return np.concatenate(out)


def bits_per_grid(vqvae, images) -> float:
    """Mean bits per code grid under the prior: `code_nll / ln 2`, averaged over images."""
    return float(np.mean(code_nll(vqvae, images)) / np.log(2.0))


def likelihood(vqvae, images, batch_size: int = 256) -> dict:
    """The VQ-VAE's likelihood figure on `images`, nats per image (means over images).

    With the one-hot posterior at each image's nearest codes `c(x)` (entropy
    0), the negative ELBO is `-log p(x | c(x)) - log p(c(x))`: the
    reconstruction NLL (summed over pixels) plus the prior's code NLL. It is
    an upper bound on `-log p(x)` of the model
    `p(x) = sum_c p(x | c) p(c)`, on the same footing as a VAE's negative ELBO
    (score binarized images for a Bernoulli likelihood).

    Returns:
        `{"reconstruction_nll", "code_nll", "negative_elbo", "bits_per_grid",
        "images"}`.
    """
    x = _images(images)
    recon, grids = [], []
    for start in range(0, len(x), batch_size):
        terms = vqvae.vq_terms(ops.convert_to_tensor(x[start:start + batch_size]))
        recon.append(ops.convert_to_numpy(terms["reconstruction_loss"]))
        grids.append(ops.convert_to_numpy(terms["indices"]))  # the nearest codes, c(x)
    recon = float(np.mean(np.concatenate(recon)))
    codes = float(np.mean(grid_nll(vqvae, np.concatenate(grids), batch_size)))
    return {"reconstruction_nll": recon, "code_nll": codes, "negative_elbo": recon + codes,
            "bits_per_grid": codes / float(np.log(2.0)), "images": int(len(x))}


def _images(data) -> np.ndarray:
    if hasattr(data, "element_spec"):  # a tf.data pipeline of (image, label) batches
        return np.concatenate([np.asarray(b[0] if isinstance(b, tuple) else b) for b in data])
    return np.asarray(data, np.float32)
