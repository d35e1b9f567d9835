"""`RunConfig`: the settings of a run, JSON-able and checked in one place."""

import json
from pathlib import Path

import pytest

import keras_vae
from keras_vae.parts import objectives
from keras_vae.training import RunConfig
from keras_vae.training.config import model_name


def test_defaults_round_trip_through_json(tmp_path):
    config = RunConfig(tmp_path / "run", model_config={"arch": "mlp", "latent_dim": 2})
    assert config.out == str(tmp_path / "run") and config.model == "vae"
    settings = json.loads(json.dumps(config.to_dict()))
    assert settings["validation_fraction"] == 0.1 and settings["model_config"]["latent_dim"] == 2
    assert RunConfig.from_dict(settings) == config
    assert config.model_class() is keras_vae.VAE


def test_model_is_a_family_name_or_a_registered_class():
    assert RunConfig("o", model="vqvae").model_class() is keras_vae.VQVAE
    config = RunConfig("o", model=keras_vae.TCVAE, model_config={"tc_beta": 6.0,
                                                                 "dataset_size": 10})
    assert config.model == "keras_vae>TCVAE" and config.model_class() is keras_vae.TCVAE
    assert model_name(keras_vae.VAEGAN) == "vaegan"
    with pytest.raises(ValueError, match=r"Unknown model 'gan'; valid: \['vae', 'vaegan', "
                                         r"'vqvae'\]"):
        RunConfig("o", model="gan")


def test_keras_objects_in_model_config_are_stored_serialized():
    schedule = objectives.get("cyclical", period=40)
    config = RunConfig("o", model_config={"kl_schedule": schedule, "arch_options": {
        "hidden_units": (16, 8)}})
    stored = config.model_config
    json.dumps(stored)  # JSON-able as it is
    assert stored["arch_options"] == {"hidden_units": [16, 8]}
    rebuilt = objectives.get(stored["kl_schedule"])
    assert type(rebuilt) is type(schedule) and rebuilt.get_config() == schedule.get_config()
    with pytest.raises(ValueError, match="must be JSON-able"):
        RunConfig("o", model_config={"callback": object()})
    with pytest.raises(ValueError, match="must be a dict"):
        RunConfig("o", model_config=[("latent_dim", 2)])


@pytest.mark.parametrize("settings, message", [
    ({"out": ""}, "out must be a folder path"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"epochs": 2.5}, "epochs must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"seed": True}, "seed must be an integer"),
    ({"validation_fraction": 1.0}, r"validation_fraction must be in \[0, 1\)"),
    ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
    ({"learning_rate": float("nan")}, "learning_rate must be a finite number > 0"),
    ({"binarize": "always"}, "Unknown binarize 'always'"),
    ({"strategy": "tpu"}, r"Unknown strategy 'tpu'; valid names: \['default', "),
    ({"mixed_precision": "float8"}, "Unknown mixed precision 'float8'"),
    ({"verbose": 3}, "verbose must be one of"),
    ({"checkpoint": "best.h5"}, "checkpoint must be a .keras file"),
])
def test_bad_settings_are_refused_at_construction(settings, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**{"out": "o", **settings})


def test_from_dict_refuses_unknown_settings():
    with pytest.raises(ValueError, match=r"Unknown run settings \['validation_split'\]"):
        RunConfig.from_dict({"out": "o", "validation_split": 0.1})


def test_run_takes_a_config():
    with pytest.raises(TypeError, match=r"run takes a RunConfig, got PosixPath"):
        keras_vae.training.run(Path("o"))
    with pytest.raises(TypeError, match="dataset"):  # the keywords live in RunConfig
        keras_vae.training.run(Path("o"), dataset="digits")


def test_precision_names_are_shared_with_train():
    for name in ("float16", "bfloat16", "mixed_float16"):
        RunConfig("o", mixed_precision=name)
        assert keras_vae.training.precision_policy(name).startswith("mixed_")
    assert keras_vae.training.precision_policy(False) == "float32"
