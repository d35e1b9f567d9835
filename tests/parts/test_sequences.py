"""The LSTM sequence VAE and the synthetic sine data it is tested on."""

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.parts import networks, objectives, sequences


def test_noisy_sines_closed_form_range_and_seed():
    x, (freq, phase) = sequences.noisy_sines(6, timesteps=20, features=2, noise=0.0, seed=3,
                                             return_params=True)
    assert x.shape == (6, 20, 2) and x.dtype == np.float32
    t = np.arange(20)[None, :, None]
    expected = 0.5 + 0.35 * np.sin(2 * np.pi * freq[:, None] * t / 20 + phase[:, None])
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert ((1 <= freq) & (freq <= 3)).all()
    noisy = sequences.noisy_sines(200, noise=0.05, seed=0)
    assert 0.0 <= noisy.min() and noisy.max() <= 1.0
    np.testing.assert_array_equal(noisy, sequences.noisy_sines(200, noise=0.05, seed=0))
    with pytest.raises(ValueError, match="timesteps >= 2"):
        sequences.noisy_sines(4, timesteps=1)


def test_lstm_is_a_registered_architecture_with_the_builder_signature():
    assert networks.get("lstm") is sequences.build_lstm
    encoder, decoder = networks.build("lstm", (12, 3), 4, num_classes=5, units=8)
    x = np.zeros((2, 12, 3), np.float32)
    labels = np.array([0, 4])
    z_mean, z_log_var = encoder([x, labels])
    assert z_mean.shape == (2, 4) and z_log_var.shape == (2, 4)
    assert decoder([np.zeros((2, 4), np.float32), labels]).shape == (2, 12, 3)
    with pytest.raises(ValueError, match=r"\(timesteps, features\).*\(8, 8, 1\)"):
        networks.build("lstm", (8, 8, 1), 4)


def test_sequence_vae_saves_and_loads(tmp_path):
    model = keras_vae.VAE(image_shape=(10, 2), latent_dim=3, arch="lstm",
                          arch_options={"units": 8}, likelihood=keras_vae.Gaussian(0.1))
    x = sequences.noisy_sines(4, timesteps=10, features=2, seed=0)
    path = tmp_path / "seq.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_allclose(restored.reconstruct(x), model.reconstruct(x), atol=1e-6)
    assert restored.image_shape == (10, 2)


@pytest.mark.slow
def test_sequence_vae_training_lowers_the_loss_and_beats_the_mean_baseline():
    keras.utils.set_random_seed(0)
    timesteps = 16
    x = sequences.noisy_sines(512, timesteps=timesteps, seed=0)
    x_test = sequences.noisy_sines(128, timesteps=timesteps, seed=1)
    model = keras_vae.VAE(
        image_shape=(timesteps, 1), latent_dim=4, arch="lstm",
        arch_options={"units": 32},
        likelihood=keras_vae.Gaussian(scale=0.05),  # the data's noise level
        kl_schedule=objectives.LinearWarmup(200), seed=0)
    model.compile(keras.optimizers.Adam(5e-3))
    before = model.evaluate(x_test, batch_size=128, verbose=0, return_dict=True)["loss"]
    history = model.fit(x, batch_size=16, epochs=10, verbose=0)
    after = model.evaluate(x_test, batch_size=128, verbose=0, return_dict=True)["loss"]
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert after < 0.5 * before

    mse = np.mean((model.reconstruct(x_test) - x_test) ** 2)
    baseline = np.mean((x.mean(axis=0) - x_test) ** 2)  # the mean training sequence
    print(f"sequence VAE test MSE {mse:.4f}, mean-sequence baseline {baseline:.4f}")
    assert mse < 0.5 * baseline
    # the code carries information: KL well above zero (no posterior collapse)
    kl = float(np.mean(model.elbo_terms(x_test)["kl_loss"]))
    assert kl > 2.0
