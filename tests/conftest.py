"""Shared fixtures: quiet TensorFlow, fixed seeds, tiny models, the shared MNIST digits."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST_8K = Path(os.environ.get("KERAS_VAE_MNIST_8K", ROOT.parent / "shared/data/mnist-8k"))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


DEVICE_BLOCKER = '''
import os
import sys

class _Block:
    """TensorFlow, Keras, tf2onnx and keras_vae unimportable, like on a phone or a server
    without them; `BLOCK_MODULES=PIL,orjson` blocks those top-level names too."""

    blocked = {"tensorflow", "keras", "tf2onnx", "tf_keras"} | {
        name for name in os.environ.get("BLOCK_MODULES", "").split(",") if name}

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in self.blocked or top.startswith("keras_vae"):
            raise ImportError(f"{name} is not installed on this machine (test blocker)")
        return None

sys.meta_path.insert(0, _Block())
'''


@pytest.fixture(scope="session")
def device_blocker(tmp_path_factory):
    """A folder whose `sitecustomize.py` blocks the training stack: put it on PYTHONPATH of
    a device-side process (samplers, server) to prove it runs without TensorFlow."""
    folder = tmp_path_factory.mktemp("blocker")
    (folder / "sitecustomize.py").write_text(DEVICE_BLOCKER)
    return folder


@pytest.fixture
def mnist8k_dir():
    """The shared 8,000 real MNIST digits; skipped where the folder is absent."""
    if not (MNIST_8K / "images-idx3-ubyte.gz").exists():
        pytest.skip(f"shared MNIST digits not found at {MNIST_8K}")
    return MNIST_8K


@pytest.fixture
def tiny_images():
    """64 random 8x8x1 images in [0, 1] with labels 0..3."""
    rng = np.random.default_rng(0)
    return rng.random((64, 8, 8, 1), dtype=np.float32), rng.integers(0, 4, 64)


@pytest.fixture
def make_vae():
    """Factory of small VAEs for 8x8x1 images."""
    import keras_vae

    def factory(arch="mlp", latent_dim=3, **kwargs):
        kwargs.setdefault("image_shape", (8, 8, 1))
        if arch == "mlp":
            kwargs.setdefault("arch_options", {"hidden_units": [16]})
        elif arch in ("conv", "resnet"):
            kwargs.setdefault("arch_options", {"filters": [4, 8], "dense_units": 16})
        model = keras_vae.VAE(latent_dim=latent_dim, arch=arch, seed=0, **kwargs)
        model.compile()
        return model

    return factory
