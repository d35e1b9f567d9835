"""`Configurable` and `BuiltModel`: each family's config declared once, saved and reloaded."""

import json
import zipfile

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import saving
from keras_vae.models.built import BuiltModel, Configurable
from keras_vae.models.vqvae import VectorQuantizer
from keras_vae.parts import objectives
from keras_vae.version import __version__

MLP = {"arch": "mlp", "arch_options": {"hidden_units": [16]}}


def _families():
    """`{name: factory}` of one small model per family (and TCVAE), each with every part set."""
    return {
        "vae": lambda: keras_vae.VAE(
            image_shape=(8, 8, 1), latent_dim=3, seed=1, beta=0.5,
            kl_schedule=objectives.get("linear", steps=7), prior="mixture",
            prior_options={"components": 2}, iwae_k=2, num_classes=3, **MLP),
        "tcvae": lambda: keras_vae.TCVAE(image_shape=(8, 8, 1), latent_dim=3, seed=2,
                                         tc_beta=4.0, dataset_size=100, **MLP),
        "vaegan": lambda: keras_vae.VAEGAN(
            image_shape=(8, 8, 1), latent_dim=3, seed=3, gamma=0.5, pixel_weight=0.25,
            disc_options={"filters": [4], "units": 8}, feature_layer=0, **MLP),
        "vqvae": lambda: keras_vae.VQVAE(
            image_shape=(8, 8, 1), codebook_size=5, code_dim=2, seed=4, ema=True, decay=0.9,
            restart_after=3, arch_options={"filters": [4, 4]}),
    }


def _plain(config):
    """A JSON copy of `config` without Keras's per-process object ids."""
    text = json.dumps(config, default=str)
    return json.loads(text, object_hook=lambda d: {k: v for k, v in d.items()
                                                   if k != "shared_object_id"})


def _outputs(model, x):
    if getattr(model, "num_classes", 0):
        return keras.ops.convert_to_numpy(model([x, np.array([0, 1, 2, 0])]))
    return keras.ops.convert_to_numpy(model(x))


@pytest.mark.parametrize("family", sorted(_families()))
def test_save_and_reload_give_the_same_config_and_outputs(family, tmp_path):
    model = _families()[family]()
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    path = saving.save_model(model, tmp_path / "model.keras")
    saved = json.loads(zipfile.ZipFile(path).read("config.json"))["config"]
    keys = [k for k in saved if k not in ("name", "trainable", "dtype")]
    assert keys == ["keras_vae", *type(model).config_keys()]  # each key once, in order
    assert saved["keras_vae"]["version"] == __version__
    loaded = saving.load_model(path)
    assert type(loaded) is type(model)
    assert _plain(loaded.get_config()) == _plain(model.get_config())
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(_outputs(loaded, x), _outputs(model, x))


def test_declared_keys_hold_the_constructor_arguments():
    vae = _families()["vae"]()
    config = vae.get_config()
    assert config["beta"] == 0.5 and config["iwae_k"] == 2 and config["num_classes"] == 3
    assert config["posterior"] == "diagonal_gaussian"  # `posterior` is a method
    assert config["kl_schedule"]["config"] == {"steps": 7, "start": 0.0}
    assert config["sampling_prior"] is None and config["prior"]["class_name"] == "MixturePrior"
    tc = _families()["tcvae"]().get_config()
    assert tc["tc_beta"] == 4.0 and tc["dataset_size"] == 100 and "beta" in tc
    vq = _families()["vqvae"]().get_config()
    assert vq["image_shape"] == [8, 8, 1] and vq["codebook_size"] == 5 and vq["ema"] is True
    assert vq["decay"] == 0.9 and vq["restart_after"] == 3 and vq["code_prior"] is None
    assert keras_vae.VAEGAN.config_keys()[-6:] == (
        "discriminator", "disc_options", "gamma", "feature_layer", "disc_learning_rate",
        "pixel_weight")
    assert "discriminator" in keras_vae.VAEGAN.nested_config_keys()
    assert "encoder" in keras_vae.VAEGAN.nested_config_keys()  # inherited


def test_vector_quantizer_round_trips():
    layer = VectorQuantizer(6, 3, 0.5, ema=True, decay=0.8, epsilon=1e-4, restart_after=2,
                            seed=7, name="q")
    config = layer.get_config()
    assert {k: config[k] for k in VectorQuantizer.config_keys()} == {
        "codebook_size": 6, "code_dim": 3, "commitment_cost": 0.5, "ema": True, "decay": 0.8,
        "epsilon": 1e-4, "restart_after": 2, "seed": 7}
    again = VectorQuantizer.from_config(config)
    assert again.get_config() == config


@keras.saving.register_keras_serializable(package="keras_vae_tests")
class Toy(BuiltModel):
    """A toy model declaring its arguments once: a tuple, a number and a nested layer."""

    CONFIG_KEYS = ("shape", "scale", "inner")
    NESTED_CONFIG_KEYS = ("inner",)

    def __init__(self, shape=(2,), scale=1.0, inner=None, **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(shape)
        self.scale = float(scale)
        self.inner = inner if inner is not None else keras.layers.Dense(1, name="inner")
        if not self.inner.built:  # a deserialized layer comes built
            self.inner.build((None, *self.shape))
        self.built = True

    def call(self, x):
        return self.scale * self.inner(x)


def test_a_new_class_needs_only_its_key_list(tmp_path):
    toy = Toy((3,), 2.0)
    config = toy.get_config()
    assert list(config)[0] == "keras_vae" and config["shape"] == [3] and config["scale"] == 2.0
    assert config["inner"]["class_name"] == "Dense"
    again = Toy.from_config(json.loads(json.dumps(config)))
    assert again.shape == (3,) and again.scale == 2.0 and isinstance(again.inner,
                                                                     keras.layers.Dense)
    assert Configurable.config_keys() == () and Toy.config_keys() == ("shape", "scale", "inner")


def test_from_config_checks_the_version_stamp():
    config = Toy().get_config()
    config["keras_vae"] = {"version": "999.0.0"}
    with pytest.raises(ValueError, match="999"):
        Toy.from_config(config)
