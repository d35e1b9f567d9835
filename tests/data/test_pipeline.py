"""Data sources and pipelines: TFDS (mocked), IDX, npz, image folders, digits."""

import gzip
import struct

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_vae import data


def _write_idx(path, array, magic):
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 6, 5), dtype=np.uint8)
    labels = rng.integers(0, 10, 10, dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images, 2051)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, 2049)
    return tmp_path, images, labels


def test_idx_directory_round_trip(idx_dir):
    path, images, labels = idx_dir
    x, y = data.load_arrays(str(path))
    np.testing.assert_allclose(x[..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)
    x, y = data.load_arrays(str(path), "train[3:7]")
    np.testing.assert_array_equal(y, labels[3:7])
    x, _ = data.load_arrays(str(path), "train[:50%]")
    assert len(x) == 5


def test_truncated_idx_file_fails_loudly(idx_dir):
    path, images, _ = idx_dir
    f = path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    with gzip.open(f, "wb") as g:
        g.write(raw[:-7])
    with pytest.raises(ValueError, match="truncated"):
        data.load_arrays(str(path))
    f.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="Cannot read IDX"):
        data.load_arrays(str(path))


def test_shared_mnist_digits(mnist8k_dir):
    x, y = data.load_arrays(str(mnist8k_dir))
    assert x.shape == (8000, 28, 28, 1) and x.dtype == np.float32
    # figures from the data set's README
    np.testing.assert_array_equal(np.bincount(y),
                                  [773, 905, 834, 803, 788, 723, 756, 813, 787, 818])
    raw = gzip.decompress((mnist8k_dir / "images-idx3-ubyte.gz").read_bytes())
    np.testing.assert_array_equal(np.round(x.ravel() * 255), np.frombuffer(raw, np.uint8, -1, 16))
    assert abs(x.mean() * 255 - 33.8) < 1.0  # README: "pixel mean 33.8" (33.17 measured)
    train = data.load(str(mnist8k_dir), "train[:7000]", batch_size=500, shuffle=False)
    held_out = data.load(str(mnist8k_dir), "train[7000:]", batch_size=500, shuffle=False)
    assert sum(int(b[0].shape[0]) for b in train) == 7000
    assert sum(int(b[0].shape[0]) for b in held_out) == 1000


def test_tfds_source_with_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load("mnist", "train", batch_size=5, shuffle=False)
        batches = list(ds)
    assert [int(b[0].shape[0]) for b in batches] == [5, 5, 2]
    x, y = batches[0]
    assert x.shape[1:] == (28, 28, 1) and x.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert y.dtype == tf.int64


def test_tfds_offline_error_says_how_to_give_local_data(tmp_path):
    with pytest.raises(RuntimeError, match="IDX directory.*digits"):
        data.load("mnist", data_dir=str(tmp_path), download=False)


def test_unknown_source_lists_options():
    with pytest.raises(ValueError, match="not a TFDS name.*digits"):
        data.load("no_such_dataset_xyz")


def test_npz_and_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=images, y=np.arange(6))
    x, y = data.load_arrays(str(tmp_path / "d.npz"))
    np.testing.assert_allclose(x[..., 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, np.arange(6))

    folder = tmp_path / "imgs"
    for label in ("cat", "dog"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(images[i + 3 * (label == "dog")]).save(folder / label / f"{i}.png")
    x, y = data.load_arrays(str(folder))
    assert x.shape == (6, 4, 4, 1)
    np.testing.assert_array_equal(y, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(x[4, ..., 0], images[4] / 255.0, rtol=1e-6)
    (folder / "dog" / "3.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="3.png"):
        data.load_arrays(str(folder))


def test_digits_binarization_modes():
    static_a = next(iter(data.load("digits", batch_size=200, shuffle=False, binarize="static")))
    static_b = next(iter(data.load("digits", batch_size=200, shuffle=False, binarize="static")))
    np.testing.assert_array_equal(static_a[0], static_b[0])
    assert set(np.unique(static_a[0].numpy())) <= {0.0, 1.0}

    dyn = data.load("digits", batch_size=1797, shuffle=False, binarize="dynamic")
    epoch1, epoch2 = next(iter(dyn))[0].numpy(), next(iter(dyn))[0].numpy()
    assert set(np.unique(epoch1)) <= {0.0, 1.0}
    assert (epoch1 != epoch2).mean() > 0.01  # fresh draws each epoch
    # and an unbiased sample of the grey levels
    grey, _ = data.load_arrays("digits")
    assert abs(epoch1.mean() - grey.mean()) < 0.01


def test_pipelines_run_without_the_autotune_thread():
    """Deleting an iterator waits for tf.data's autotune thread (see `data.prefetched`)."""
    import keras_vae
    from keras_vae.uses import augmentation, corruption

    train, val = data.load("digits", batch_size=100, validation_fraction=0.1)
    pairs = corruption.denoising_pairs(data.load_arrays("digits")[0][:50], batch_size=10)
    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                          arch_options={"hidden_units": [8]})
    generated = augmentation.generated_dataset(model, 20, batch_size=10)
    for ds in (train, val, pairs, generated):
        assert ds.options().autotune.enabled is False
    assert data.load("digits", batch_size=100, binarize="static").options().autotune.enabled \
        is False
    assert len(list(train)) == 17  # still a complete epoch: 1617 images in batches of 100


def test_validation_split_is_disjoint_and_unshuffled():
    train, val = data.load("digits", batch_size=100, validation_fraction=0.1)
    n_train = sum(int(b[0].shape[0]) for b in train)
    val_labels = np.concatenate([b[1].numpy() for b in val])
    assert n_train + len(val_labels) == 1797 and len(val_labels) == 180
    _, y = data.load_arrays("digits")
    np.testing.assert_array_equal(val_labels, y[-180:])


@pytest.mark.parametrize("kwargs, message", [
    ({"binarize": "sometimes"}, "binarize"),
    ({"batch_size": 0}, "batch_size"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"split": "test"}, "one split"),
    ({"split": "train[1797:]"}, "empty"),
])
def test_bad_load_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.load("digits", **kwargs)


def test_check_images():
    np.testing.assert_allclose(data.check_images(np.full((1, 2, 2), 255, np.uint8)), 1.0)
    with pytest.raises(ValueError, match="divide by 255"):
        data.check_images(np.full((1, 2, 2), 200.0))
    with pytest.raises(ValueError, match="NaN/Inf"):
        data.check_images(np.array([[np.inf]]))
    with pytest.raises(ValueError, match="numeric"):
        data.check_images(np.array([["a"]]))
