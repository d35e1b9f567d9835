"""Fixtures of the training tests: a small trained VAE saved by keras_vae."""

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import saving


@pytest.fixture(scope="session")
def saved_vae(tmp_path_factory):
    """`(vae, path)`: a small VAE trained one epoch and saved; the template that hostile
    model files start from (tests that change its weights put them back)."""
    keras.utils.set_random_seed(0)
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                        arch_options={"hidden_units": [8]}, seed=0)
    vae.compile()
    x = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    vae.fit(x, batch_size=8, epochs=1, verbose=0)
    return vae, saving.save_model(vae, tmp_path_factory.mktemp("good") / "model.keras")
