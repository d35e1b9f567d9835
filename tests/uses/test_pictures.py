"""Pictures (PNG files of the expected size and content) and the image-logging callback."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_vae.training import callbacks
from keras_vae.uses import latent, pictures


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size, np.asarray(im)


def test_interpolation_strip_png_has_one_column_per_step(tmp_path):
    strip = np.linspace(0, 1, 6)[:, None, None, None] * np.ones((6, 8, 8, 1))
    size, pixels = _png(pictures.save_interpolation(strip, tmp_path / "strip.png"))
    # 6 tiles of 8 pixels with 1-pixel gaps, upscaled x8 for 8x8 images
    assert size == ((6 * 9 - 1) * 8, 8 * 8)
    # tile i is uniformly grey level i/5
    for i in range(6):
        tile = pixels[:64, i * 72:i * 72 + 64]
        assert np.all(tile == round(255 * i / 5))
    two_rows = np.stack([strip, strip[::-1]])
    size, _ = _png(pictures.save_interpolation(two_rows, tmp_path / "rows.png"))
    assert size == ((6 * 9 - 1) * 8, (2 * 9 - 1) * 8)
    with pytest.raises(ValueError, match="Interpolation strips must be"):
        pictures.save_interpolation(np.zeros((8, 8)), tmp_path / "bad.png")


def test_manifold_and_traversal_pngs(tmp_path):
    images = np.random.default_rng(0).random((16, 28, 28, 1))
    size, _ = _png(pictures.save_manifold(images, tmp_path / "manifold.png"))
    assert size == ((4 * 29 - 1) * 2,) * 2  # 28x28 images are upscaled x2 (64 // 28)
    with pytest.raises(ValueError, match="n \\* n images; got 10"):
        pictures.save_manifold(images[:10], tmp_path / "bad.png")
    size, _ = _png(pictures.save_traversal(np.zeros((3, 5, 8, 8, 1)), tmp_path / "trav.png"))
    assert size == ((5 * 9 - 1) * 8, (3 * 9 - 1) * 8)


def test_latent_scatter_png_has_the_requested_size_and_colours(tmp_path):
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(-2, 0.3, (50, 2)), rng.normal(2, 0.3, (50, 2))])
    labels = np.repeat([0, 1], 50)
    path = pictures.save_latent_scatter(z, labels, tmp_path / "scatter.png", size=3, dpi=50,
                                        title="codes")
    size, pixels = _png(path)
    assert size == (150, 150)
    rgb = pixels[..., :3].astype(int)
    # tab10's first two colours (blue 1f77b4, orange ff7f0e) are both drawn
    blue = np.abs(rgb - [0x1F, 0x77, 0xB4]).sum(-1) < 60
    orange = np.abs(rgb - [0xFF, 0x7F, 0x0E]).sum(-1) < 60
    assert blue.sum() > 20 and orange.sum() > 20
    with pytest.raises(ValueError, match=r"\(n, 2\) latents"):
        pictures.save_latent_scatter(np.zeros((5, 3)), np.zeros(5), tmp_path / "bad.png")
    with pytest.raises(ValueError, match="4 labels for 5 latents"):
        pictures.save_latent_scatter(np.zeros((5, 2)), np.zeros(4), tmp_path / "bad.png")
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary file


def test_reconstruction_rows_put_each_row_of_inputs_above_its_outputs():
    originals = np.arange(10)[:, None, None, None] * np.ones((10, 2, 2, 1))
    recon = originals + 100
    rows = pictures.reconstruction_rows(originals, recon, ncols=4)
    firsts = rows[:, 0, 0, 0].tolist()
    assert firsts == [0, 1, 2, 3, 100, 101, 102, 103, 4, 5, 6, 7, 104, 105, 106, 107,
                      8, 9, 108, 109]
    with pytest.raises(ValueError, match="do not match"):
        pictures.reconstruction_rows(originals, recon[:, :1], ncols=4)


def test_pictures_of_a_model_with_two_latent_dims(make_vae, tiny_images, tmp_path):
    model = make_vae("mlp", latent_dim=2)
    grid = latent.manifold_grid(model, n=5)
    size, _ = _png(pictures.save_manifold(grid, tmp_path / "m.png"))
    assert size == ((5 * 9 - 1) * 8,) * 2
    z, labels = latent.latent_scatter_data(model, *tiny_images)
    size, _ = _png(pictures.save_latent_scatter(z, labels, tmp_path / "s.png", size=2, dpi=40))
    assert size == (80, 80)


def _summary_images(log_dir):
    """(tag, step, (h, w, c)) of every image summary in a TensorBoard log folder."""
    found = []
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "images":
                    tensor = tf.make_ndarray(value.tensor)  # [width, height, png...]
                    shape = tf.io.decode_png(tensor[2]).shape
                    found.append((value.tag, event.step, tuple(shape)))
    return found


def test_image_logger_writes_pngs_every_n_epochs_and_tensorboard_images(make_vae, tiny_images,
                                                                         tmp_path):
    model = make_vae("mlp", latent_dim=2)
    x = tiny_images[0]
    logger = callbacks.ImageLogger(tmp_path / "pictures", every=2, n_samples=9, seed=1,
                                   images=x[:16], log_dir=tmp_path / "tb")
    model.fit(x, epochs=5, batch_size=32, verbose=0, callbacks=[logger])
    names = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    assert names == [f"{kind}_epoch_{e:04d}.png" for kind in ("reconstructions", "samples")
                     for e in (2, 4, 5)]  # every 2 epochs and the last
    size, pixels = _png(tmp_path / "pictures/samples_epoch_0005.png")
    assert size == ((3 * 9 - 1) * 8,) * 2
    # the grid shows the model's samples for the logger's seed
    expected = pictures.grid(model.sample(9, seed=1))
    np.testing.assert_array_equal(pixels[::8, ::8], expected)  # upscaled x8
    size, _ = _png(tmp_path / "pictures/reconstructions_epoch_0002.png")
    assert size == ((8 * 9 - 1) * 8, (4 * 9 - 1) * 8)  # 2 rows of inputs + 2 of outputs

    summaries = _summary_images(tmp_path / "tb")
    assert sorted((tag, step) for tag, step, _ in summaries) == [
        ("reconstructions", 2), ("reconstructions", 4), ("reconstructions", 5),
        ("samples", 2), ("samples", 4), ("samples", 5)]
    assert ("samples", 5, (3 * 9 - 1, 3 * 9 - 1, 1)) in summaries


def test_image_logger_for_a_conditional_model_and_bad_settings(make_vae, tiny_images,
                                                               tmp_path):
    model = make_vae("mlp", latent_dim=2, num_classes=4)
    x, y = tiny_images
    logger = callbacks.ImageLogger(tmp_path, every=1, n_samples=4, images=x[:8], labels=y[:8])
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[logger])
    assert len(logger.written) == 2 and all(p.exists() for p in logger.written)
    with pytest.raises(ValueError, match="every must be >= 1"):
        callbacks.ImageLogger(tmp_path, every=0)
    with pytest.raises(ValueError, match="directory for PNG files, a TensorBoard log_dir"):
        callbacks.ImageLogger()
    assert isinstance(logger, keras.callbacks.Callback)
