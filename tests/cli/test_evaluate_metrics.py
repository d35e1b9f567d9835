"""`keras-vae evaluate --sample-metrics / --disentanglement`: the metrics reach the JSON."""

import json

import pytest

import keras_vae
from keras_vae import cli

pytestmark = pytest.mark.slow  # trains a feature classifier and renders the shapes dataset


def _evaluate(capsys, *args) -> dict:
    assert cli.main(["evaluate", *map(str, args)]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sample_metrics_and_disentanglement_in_the_json(tmp_path, capsys):
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=4, arch="mlp",
                        arch_options={"hidden_units": [32]}, seed=0)
    vae.compile()
    x, _ = keras_vae.data.load_arrays("digits")
    vae.fit(x, epochs=2, batch_size=64, verbose=0)
    keras_vae.saving.save_model(vae, tmp_path / "digits.keras")
    out = _evaluate(capsys, tmp_path / "digits.keras", "--dataset", "digits", "--split",
                    "train[1500:]", "--reference-split", "train[:1500]", "--sample-metrics",
                    "--sample-n", 300, "--feature-cache", tmp_path / "cache")
    metrics = out["sample_metrics"]
    assert metrics["fid"] > 0 and 0 <= metrics["precision"] <= 1 and 0 <= metrics["recall"] <= 1
    assert metrics["n_generated"] == 300 and "not Inception" in json.dumps(metrics["features"])
    assert list((tmp_path / "cache").glob("*.keras"))  # trained once, cached
    assert (out["fid"], out["precision"], out["recall"]) == (
        metrics["fid"], metrics["precision"], metrics["recall"])

    shapes = keras_vae.VAE(image_shape=(64, 64, 1), latent_dim=5, arch="mlp",
                           arch_options={"hidden_units": [32]}, seed=0)
    keras_vae.saving.save_model(shapes, tmp_path / "shapes.keras")
    out = _evaluate(capsys, tmp_path / "shapes.keras", "--dataset", "shapes", "--split",
                    "train[:400]", "--disentanglement")
    result = out["disentanglement"]
    assert 0 <= result["mig"] <= 1 and result["n"] == 400
    assert set(result["mig_per_factor"]) <= {"shape", "scale", "orientation", "posX", "posY"}
    # The digits have no factors: a clear error, exit 2.
    assert cli.main(["evaluate", str(tmp_path / "digits.keras"), "--dataset", "digits",
                     "--disentanglement"]) == 2
    assert "no ground-truth factors" in capsys.readouterr().err
