"""Corruptions for denoising VAEs, the `(corrupted, clean)` pipeline, `denoise` and PSNR.

A denoising VAE encodes a corrupted image and is scored on the clean one:
`VAE.fit` treats a float `y` of the same rank as `x` as the target image, so
training is `fit` on `(corrupted, clean)` pairs.

Example:

>>> pairs = keras_vae.uses.corruption.denoising_pairs(train_images, "gaussian", seed=0)
>>> vae.fit(pairs, epochs=10)
>>> cleaned = keras_vae.uses.corruption.denoise(vae, noisy_images)
>>> keras_vae.uses.corruption.psnr(cleaned, clean_images)  # dB
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_vae import data as data_lib
from keras_vae.registry import Registry

AUTOTUNE = tf.data.AUTOTUNE


def _check_fraction(name, value, low=0.0, high=1.0):
    value = float(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


class Corruption:
    """Base class: `corruption(images, seed)` returns corrupted images in [0, 1].

    `images` is any float tensor of images in [0, 1] (one image or a batch);
    `seed` is a shape-`(2,)` int tensor for TensorFlow's stateless random ops,
    so a seed gives the same corruption in eager code and in `tf.data`.
    """

    def __call__(self, images, seed):
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_vae")
class GaussianNoise(Corruption):
    """Adds N(0, stddev^2) noise to every pixel, then clips to [0, 1].

    Args:
        stddev: Noise standard deviation, in pixel units.
    """

    def __init__(self, stddev: float = 0.3):
        if not float(stddev) > 0:
            raise ValueError(f"stddev must be positive, got {stddev}")
        self.stddev = float(stddev)

    def __call__(self, images, seed):
        images = tf.convert_to_tensor(images, tf.float32)
        noise = tf.random.stateless_normal(tf.shape(images), seed=seed, stddev=self.stddev)
        return tf.clip_by_value(images + noise, 0.0, 1.0)

    def get_config(self):
        return {"stddev": self.stddev}


@keras.saving.register_keras_serializable(package="keras_vae")
class SaltAndPepper(Corruption):
    """Sets a random fraction `amount` of pixels to 0 or 1 (each with probability 1/2).

    Args:
        amount: Fraction of pixels replaced.
    """

    def __init__(self, amount: float = 0.2):
        self.amount = _check_fraction("amount", amount)

    def __call__(self, images, seed):
        images = tf.convert_to_tensor(images, tf.float32)
        u = tf.random.stateless_uniform(tf.shape(images), seed=seed)
        # u < amount hits a pixel; within the hit range the lower half is pepper.
        salt = tf.cast(u < self.amount / 2, tf.float32)
        hit = u < self.amount
        return tf.where(hit, salt, images)

    def get_config(self):
        return {"amount": self.amount}


@keras.saving.register_keras_serializable(package="keras_vae")
class Masking(Corruption):
    """Blanks one random square patch per image (an occlusion), set to `value`.

    Args:
        size: Patch side as a fraction of the image's smaller side (at least one pixel).
        value: Fill value in [0, 1].
    """

    def __init__(self, size: float = 0.4, value: float = 0.0):
        self.size = _check_fraction("size", size)
        self.value = _check_fraction("value", value)

    def __call__(self, images, seed):
        images = tf.convert_to_tensor(images, tf.float32)
        if images.shape.rank is not None and images.shape.rank < 3:
            raise ValueError(
                f"Masking needs (height, width, channels) images, got shape {images.shape}"
            )
        shape = tf.shape(images)
        height, width = shape[-3], shape[-2]
        side = tf.maximum(1, tf.cast(
            tf.round(self.size * tf.cast(tf.minimum(height, width), tf.float32)), tf.int32))
        batch_shape = shape[:-3]
        corner_shape = tf.concat([batch_shape, [1, 1, 1]], axis=0)
        u = tf.random.stateless_uniform(tf.concat([[2], corner_shape], 0), seed=seed)
        # Top-left corners, uniform over the positions where the patch fits.
        top = tf.cast(u[0] * tf.cast(height - side + 1, tf.float32), tf.int32)
        left = tf.cast(u[1] * tf.cast(width - side + 1, tf.float32), tf.int32)
        rows = tf.reshape(tf.range(height), [height, 1, 1])  # (h, 1, 1)
        cols = tf.reshape(tf.range(width), [1, width, 1])  # (1, w, 1)
        inside = ((rows >= top) & (rows < top + side)
                  & (cols >= left) & (cols < left + side))  # (..., h, w, 1)
        return tf.where(inside, tf.constant(self.value, tf.float32), images)

    def get_config(self):
        return {"size": self.size, "value": self.value}


CORRUPTIONS = Registry("corruption", {
    "gaussian": GaussianNoise,
    "salt_and_pepper": SaltAndPepper,
    "masking": Masking,
})
register = CORRUPTIONS.register


def get(identifier) -> Corruption:
    """Returns a corruption from a name (default settings), a config dict or an instance.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    if isinstance(identifier, Corruption):
        return identifier
    if isinstance(identifier, dict):
        return keras.saving.deserialize_keras_object(identifier)
    return CORRUPTIONS.get(str(identifier).lower())()


def corrupt(images, corruption="gaussian", seed: int = 0) -> np.ndarray:
    """Corrupts an image array once, reproducibly from `seed`.

    Returns:
        float32 numpy array of the same shape, values in [0, 1].
    """

    images = data_lib.check_images(images)
    out = get(corruption)(images, tf.constant([seed, 0], tf.int64))
    return out.numpy()


def denoising_pairs(data, corruption="gaussian", seed: int = 0, batch_size: int = 64,
                    shuffle: bool = True) -> tf.data.Dataset:
    """A dataset of `(corrupted, clean)` image pairs, fresh corruption every epoch.

    Args:
        data: Images in [0, 1] (an array), or a `tf.data.Dataset` of images or
            `(image, label)` pairs, batched or not (labels are dropped).
        corruption: Name, config or `Corruption` instance.
        seed: Seed of the corruption stream (and of shuffling an array).
        batch_size: Batch size when `data` is an array.
        shuffle: Shuffle an array each epoch.

    Returns:
        A `tf.data.Dataset` of `(corrupted, clean)`; `VAE.fit` on it trains a
        denoising VAE (the clean image is the likelihood's target).

    Raises:
        ValueError: an unknown corruption, images outside [0, 1].
    """
    corruption = get(corruption)
    if isinstance(data, tf.data.Dataset):
        ds = data
    else:
        images = data_lib.check_images(data)
        ds = tf.data.Dataset.from_tensor_slices(images)
        if shuffle:
            ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch_size)

    def clean_only(*element):
        image = element[0]
        if isinstance(image, (tuple, list)):  # ([x, labels], ...)
            image = image[0]
        return tf.cast(image, tf.float32)

    ds = ds.map(clean_only, num_parallel_calls=AUTOTUNE)
    # One (2,) stateless seed per element, different on every pass over the data.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def to_pair(clean, pair):
        return corruption(clean, pair), clean

    return data_lib.prefetched(tf.data.Dataset.zip((ds, seeds)).map(to_pair,
                                                                 num_parallel_calls=AUTOTUNE))


def denoise(model, x, labels=None, batch_size: int = 256) -> np.ndarray:
    """Reconstructs corrupted images `x` through a (denoising) VAE.

    The posterior mean of the corrupted input is decoded to the image mean;
    a VAE trained on `denoising_pairs` maps it to a clean image.

    Returns:
        `(batch, *image_shape)` float32 numpy.
    """
    return model.reconstruct(x, labels, batch_size=batch_size)


def psnr(images, reference, max_value: float = 1.0, per_image: bool = False):
    """Peak signal-to-noise ratio `10 log10(max_value^2 / MSE)` in dB.

    Args:
        images: `(batch, ...)` images to score.
        reference: Clean images of the same shape.
        max_value: The pixel range (1 for images in [0, 1]).
        per_image: Return one value per image instead of one for the set.

    Returns:
        The PSNR of the whole set (its MSE is the mean over every pixel of
        every image), a float; or `(batch,)` per-image values. Equal images
        score `inf` (a set-level figure stays finite unless every image is
        exact, which is why it is the default: an occlusion that happens to
        hit a blank area leaves that one image exact).

    Raises:
        ValueError: shapes that differ, or no batch axis.
    """
    a = np.asarray(images, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs images of the same shape, got {a.shape} and {b.shape}.")
    if a.ndim < 2 or len(a) == 0:
        raise ValueError(f"PSNR needs a batch of images (batch, ...), got shape {a.shape}.")
    mse = np.mean(np.square(a - b).reshape(len(a), -1), axis=1)  # (batch,)
    if not per_image:
        mse = np.mean(mse)
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(max_value**2 / mse)
    return values if per_image else float(values)
