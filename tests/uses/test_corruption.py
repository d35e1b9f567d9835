"""Corruptions, the (corrupted, clean) pipeline, PSNR, and a denoising VAE that raises PSNR."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import data
from keras_vae.uses import corruption

SEED = tf.constant([7, 0], tf.int64)


def test_registry_names_configs_and_errors():
    assert set(corruption.CORRUPTIONS) == {"gaussian", "salt_and_pepper", "masking"}
    assert isinstance(corruption.get("gaussian"), corruption.GaussianNoise)
    noise = corruption.SaltAndPepper(amount=0.3)
    assert corruption.get(noise) is noise
    restored = corruption.get(keras.saving.serialize_keras_object(noise))
    assert isinstance(restored, corruption.SaltAndPepper) and restored.amount == 0.3
    with pytest.raises(ValueError, match=r"Unknown corruption 'blur'; valid names: "
                                         r"\['gaussian', 'masking', 'salt_and_pepper'\]"):
        corruption.get("blur")
    with pytest.raises(ValueError, match="amount must be in"):
        corruption.SaltAndPepper(1.5)
    with pytest.raises(ValueError, match="stddev must be positive"):
        corruption.GaussianNoise(0.0)


def test_gaussian_noise_statistics_and_clipping():
    images = tf.fill((64, 8, 8, 1), 0.5)
    noisy = corruption.GaussianNoise(0.1)(images, SEED).numpy()
    diff = noisy - 0.5  # 5 sigma from the bounds: clipping is negligible
    assert abs(diff.mean()) < 0.01 and abs(diff.std() - 0.1) < 0.005
    clipped = corruption.GaussianNoise(2.0)(images, SEED).numpy()
    assert clipped.min() == 0.0 and clipped.max() == 1.0
    # same seed, same noise; another seed, other noise
    np.testing.assert_array_equal(corruption.GaussianNoise(0.1)(images, SEED).numpy(), noisy)
    assert not np.array_equal(corruption.GaussianNoise(0.1)(images, SEED + 1).numpy(), noisy)


def test_salt_and_pepper_replaces_the_given_fraction_with_zeros_and_ones():
    images = tf.fill((100, 8, 8, 1), 0.5)
    out = corruption.SaltAndPepper(0.2)(images, SEED).numpy()
    hit = out != 0.5
    assert abs(hit.mean() - 0.2) < 0.02  # 6400 pixels: 3.5 standard errors
    assert set(np.unique(out[hit])) == {0.0, 1.0}
    assert abs((out[hit] == 1.0).mean() - 0.5) < 0.06


def test_masking_blanks_one_square_patch_per_image():
    images = tf.ones((20, 10, 12, 3))
    out = corruption.Masking(size=0.3, value=0.0)(images, SEED).numpy()
    side = 3  # round(0.3 * min(10, 12))
    corners = set()
    for image in out:
        rows, cols = np.nonzero(image[..., 0] == 0.0)
        assert len(rows) == side * side
        assert rows.max() - rows.min() == side - 1 and cols.max() - cols.min() == side - 1
        np.testing.assert_array_equal(image[image != 0.0], 1.0)  # the rest untouched
        np.testing.assert_array_equal(image[rows, cols], 0.0)  # all channels masked
        corners.add((rows.min(), cols.min()))
    assert len(corners) > 5  # the patch moves between images
    single = corruption.Masking(size=0.3)(tf.ones((10, 12, 3)), SEED).numpy()
    assert (single == 0).sum() == side * side * 3


def test_denoising_pairs_yield_fresh_corruptions_of_clean_targets():
    x = np.random.default_rng(0).random((10, 8, 8, 1), dtype=np.float32)
    pairs = corruption.denoising_pairs(x, corruption.GaussianNoise(0.2), seed=1, batch_size=4,
                                       shuffle=False)
    epoch1 = [(c.numpy(), t.numpy()) for c, t in pairs]
    epoch2 = [(c.numpy(), t.numpy()) for c, t in pairs]
    assert [len(t) for _, t in epoch1] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([t for _, t in epoch1]), x)
    noisy1 = np.concatenate([c for c, _ in epoch1])
    noisy2 = np.concatenate([c for c, _ in epoch2])
    assert 0.0 <= noisy1.min() and noisy1.max() <= 1.0
    assert 0.1 < np.std(noisy1 - x) < 0.25
    assert not np.array_equal(noisy1, noisy2)  # a new draw every epoch

    # datasets of (image, label) batches: labels are dropped, images kept as targets
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(10))).batch(5)
    for noisy, clean in corruption.denoising_pairs(ds, "masking", seed=0).take(1):
        np.testing.assert_array_equal(clean.numpy(), x[:5])
        assert noisy.shape == (5, 8, 8, 1)


def test_psnr_closed_form_and_errors():
    ref = np.zeros((3, 4, 4, 1))
    images = ref + np.array([0.1, 0.2, 0.0])[:, None, None, None]
    per_image = corruption.psnr(images, ref, per_image=True)
    np.testing.assert_allclose(per_image[:2], [20.0, 10 * np.log10(1 / 0.04)])
    assert per_image[2] == np.inf
    # the set's PSNR uses the mean MSE over all pixels: (0.01 + 0.04 + 0) / 3
    np.testing.assert_allclose(corruption.psnr(images, ref), 10 * np.log10(3 / 0.05))
    np.testing.assert_allclose(corruption.psnr(images * 255, ref, max_value=255.0),
                               10 * np.log10(3 / 0.05))
    with pytest.raises(ValueError, match="same shape"):
        corruption.psnr(images, ref[:2])


def test_denoising_vae_raises_psnr_on_held_out_digits():
    keras.utils.set_random_seed(0)
    x, _ = data.load_arrays("digits")
    x = x[np.random.default_rng(0).permutation(len(x))]
    train, test = x[:1400], x[1400:]
    noise = corruption.GaussianNoise(0.5)
    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=8, arch="mlp",
                          arch_options={"hidden_units": [128]}, seed=0)
    model.compile(keras.optimizers.Adam(2e-3))
    history = model.fit(corruption.denoising_pairs(train, noise, seed=0, batch_size=32),
                        epochs=8, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]

    noisy = corruption.corrupt(test, noise, seed=123)
    denoised = corruption.denoise(model, noisy)
    noisy_psnr, denoised_psnr = corruption.psnr(noisy, test), corruption.psnr(denoised, test)
    print(f"digits, Gaussian noise 0.5: PSNR noisy {noisy_psnr:.2f} dB -> denoised "
          f"{denoised_psnr:.2f} dB")
    assert denoised_psnr > noisy_psnr + 2.0  # measured: 9.3 -> 12.0 dB
    np.testing.assert_allclose(denoised, model.reconstruct(noisy), atol=1e-6)
