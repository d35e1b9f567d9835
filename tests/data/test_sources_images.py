"""Image folders mean what they say: pixels scaled by the file's real bit depth, alpha composited.

The same digits saved as 8-bit grey, 16-bit grey, palette and grey+alpha
PNGs load to the same [0, 1] arrays and get the same negative ELBO from a
model; before, 16-bit pixels were clipped to 1.0 and grey+alpha lost its
alpha (every pixel 1.0).
"""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from sklearn.datasets import load_digits

import keras_vae
from keras_vae import data


@pytest.fixture(scope="module")
def digits_u8():
    """12 real 8x8 digits as uint8 0..255."""
    images = load_digits().images[:12]  # 0..16
    return np.round(images / 16.0 * 255.0).astype(np.uint8)


def _save_all(folder, digits, make):
    folder.mkdir()
    for i, d in enumerate(digits):
        make(d).save(folder / f"{i:02d}.png")
    return folder


def _palette(d):
    # Index k shows grey 255 - k: only the palette's colours give the digit back.
    im = Image.new("P", d.shape[::-1])
    im.putdata((255 - d).flatten().tolist())
    im.putpalette([c for k in range(256) for c in (255 - k,) * 3])
    return im


ENCODINGS = {
    "8-bit": lambda d: Image.fromarray(d, "L"),
    "16-bit": lambda d: Image.fromarray(d.astype(np.uint16) * 257),
    "palette": _palette,
    # White ink whose coverage is the alpha: on black it is the digit.
    "grey+alpha": lambda d: Image.fromarray(np.stack([np.full_like(d, 255), d], -1), "LA"),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, digits_u8):
    root = tmp_path_factory.mktemp("encodings")
    return {name: _save_all(root / name.replace("+", "_"), digits_u8, make)
            for name, make in ENCODINGS.items()}


def test_files_really_use_each_encoding(folders):
    modes = {name: Image.open(next(iter(sorted(f.iterdir())))).mode
             for name, f in folders.items()}
    assert modes["8-bit"] == "L" and modes["palette"] == "P" and modes["grey+alpha"] == "LA"
    assert modes["16-bit"] in ("I;16", "I")


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_every_encoding_loads_the_same_pixels(folders, digits_u8, name):
    x, y = data.load_arrays(str(folders[name]))
    assert y is None and x.dtype == np.float32 and x.shape == (12, 8, 8, 1)
    np.testing.assert_allclose(x[..., 0], digits_u8 / 255.0, atol=1e-7)


def test_every_encoding_gives_the_same_negative_elbo(folders):
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                        arch_options={"hidden_units": [16]}, seed=0)
    eps = tf.zeros((12, 2))
    scores = {name: vae.negative_elbo(tf.constant(data.load_arrays(str(f))[0]),
                                      eps=eps).numpy()
              for name, f in folders.items()}
    reference = scores["8-bit"]
    assert np.all(np.isfinite(reference)) and reference.std() > 0
    for name, value in scores.items():
        np.testing.assert_allclose(value, reference, atol=1e-5, err_msg=name)


def test_sixteen_bit_mid_grey_is_a_half(tmp_path):
    folder = tmp_path / "grey"
    folder.mkdir()
    Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(folder / "a.png")
    x, _ = data.load_arrays(str(folder))
    np.testing.assert_allclose(x, 32768 / 65535, atol=1e-7)  # not clipped to 1.0


def test_transparent_pixels_are_the_black_background(tmp_path):
    folder = tmp_path / "alpha"
    folder.mkdir()
    pixels = np.array([[[255, 0], [255, 255]], [[128, 128], [0, 255]]], np.uint8)  # (L, A)
    Image.fromarray(pixels, "LA").save(folder / "a.png")
    x, _ = data.load_arrays(str(folder))
    np.testing.assert_allclose(x[0, ..., 0], [[0.0, 1.0], [128 / 255 * 128 / 255, 0.0]],
                               atol=1e-6)


def test_colour_images_stay_colour_and_grey_ones_follow(tmp_path):
    folder = tmp_path / "colour"
    folder.mkdir()
    Image.fromarray(np.full((2, 2, 3), [255, 0, 51], np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((2, 2), 102, np.uint8)).save(folder / "b.png")
    x, _ = data.load_arrays(str(folder))
    assert x.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(x[0, 0, 0], [1.0, 0.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(x[1, 0, 0], [0.4, 0.4, 0.4], atol=1e-6)


def test_rgba_is_composited_on_black_too(tmp_path, digits_u8):
    white_ink = lambda d: Image.fromarray(np.stack([np.full_like(d, 255)] * 3 + [d], -1), "RGBA")  # noqa: E731
    x, _ = data.load_arrays(str(_save_all(tmp_path / "rgba", digits_u8[:3], white_ink)))
    assert x.shape == (3, 8, 8, 3)  # a colour mode: three channels
    np.testing.assert_allclose(x, np.repeat(digits_u8[:3, ..., None] / 255.0, 3, -1), atol=1e-7)
