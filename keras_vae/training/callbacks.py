"""Keras callbacks that show a VAE's progress while it trains."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_vae import data as data_lib
from keras_vae.uses import pictures


class ImageLogger(keras.callbacks.Callback):
    """Writes sample grids and reconstructions every `every` epochs, as PNG and to TensorBoard.

    At the end of epochs `every`, `2 * every`, ... (and of the last epoch)
    it decodes `n_samples` fixed prior codes (the same `seed` every time, so
    the pictures show the model changing, not the noise) and reconstructs
    `images`. Files are `samples_epoch_0005.png` and
    `reconstructions_epoch_0005.png` (inputs above outputs) in `directory`;
    with `log_dir` the same pictures go to TensorBoard as image summaries
    (`samples`, `reconstructions`) at step = epoch number.

    Args:
        directory: Folder for the PNG files (created), or None for none.
        every: Period in epochs.
        n_samples: Images in the sample grid.
        seed: Seed of the sample codes.
        images: Images to reconstruct (e.g. 16 validation images), or None.
        labels: Their labels, for a conditional model.
        class_ids: Classes of the samples of a conditional model (default:
            every class in turn).
        log_dir: TensorBoard log folder (e.g. the one given to
            `keras.callbacks.TensorBoard`), or None for no summaries.

    Example:

    >>> logger = ImageLogger("runs/pictures", every=5, images=x_val[:16],
    ...                      log_dir="runs/tensorboard")
    >>> vae.fit(train, epochs=50, callbacks=[logger])
    """

    def __init__(self, directory=None, every: int = 1, n_samples: int = 64, seed: int = 0,
                 images=None, labels=None, class_ids=None, log_dir=None):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        if directory is None and log_dir is None:
            raise ValueError("Give a directory for PNG files, a TensorBoard log_dir, or both.")
        self.directory = None if directory is None else Path(directory)
        self.every = int(every)
        self.n_samples = int(n_samples)
        self.seed = seed
        self.images = None if images is None else np.asarray(images)
        self.labels = labels
        self.class_ids = class_ids
        self.log_dir = None if log_dir is None else str(log_dir)
        self._writer = None
        self._epochs = None
        self.written: list[Path] = []

    def on_train_begin(self, logs=None):
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        if self.log_dir is not None and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        self._epochs = (self.params or {}).get("epochs")

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        if number % self.every and number != self._epochs:
            return
        self.log(number)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.flush()

    def log(self, step: int) -> dict:
        """Draws and writes the pictures now, tagged with `step`; returns the arrays."""
        model = self.model
        class_ids = self.class_ids
        if model.num_classes and class_ids is None:
            class_ids = range(model.num_classes)
        samples = model.sample(self.n_samples, seed=self.seed,
                               class_ids=None if class_ids is None else list(class_ids))
        out = {"samples": pictures.grid(samples)}
        if self.directory is not None:
            self.written.append(pictures.save_grid(
                samples, self.directory / f"samples_epoch_{step:04d}.png"))
        if self.images is not None:
            originals = _model_images(model, self.images)
            recon = model.reconstruct(originals, self.labels)
            rows = pictures.reconstruction_rows(originals, recon, ncols=8)
            out["reconstructions"] = pictures.grid(rows, ncols=8)
            if self.directory is not None:
                self.written.append(pictures.save_grid(
                    rows, self.directory / f"reconstructions_epoch_{step:04d}.png", ncols=8))
        if self._writer is not None:
            with self._writer.as_default(step=step):
                for name, picture in out.items():
                    write_image_summary(name, picture, step)
            self._writer.flush()
        return out


def _model_images(model, images) -> np.ndarray:
    """Images validated and shaped as the model takes them (float32 in [0, 1])."""
    return data_lib.check_images(images, model.image_shape)


def write_image_summary(tag: str, picture: np.ndarray, step: int):
    """Writes a uint8 `(h, w)` or `(h, w, c)` picture as a TensorBoard image summary.

    The record is the one `tf.summary.image` writes (plugin `images`, tensor
    `[width, height, png]`), built here because TensorFlow 2.21 no longer
    installs TensorBoard, which holds `tf.summary.image`'s implementation.
    Writes to the default summary writer (`writer.as_default()`).
    """
    from tensorflow.core.framework import summary_pb2

    picture = np.asarray(picture, dtype=np.uint8)
    if picture.ndim == 2:
        picture = picture[..., None]
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"))
    height, width = picture.shape[:2]
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)),
                       tf.io.encode_png(picture)])  # (3,) strings
    return tf.summary.write(tag, tensor, step=step, metadata=metadata)
