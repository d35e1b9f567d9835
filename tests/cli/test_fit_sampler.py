"""`keras-vae train --prior/--prior-components/--tc-beta` and `keras-vae fit-sampler`."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import cli
from keras_vae.parts import priors

TINY = ["--dataset", "digits", "--split", "train[:256]", "--arch", "mlp", "--latent-dim", 3,
        "--arch-options", '{"hidden_units": [16]}', "--epochs", 1, "--batch-size", 64,
        "--verbose", 0]


def keras_vae_cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "keras_vae.cli", *map(str, args)],
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"keras-vae {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


FRESH_PROCESS_CHECK = """
import json, sys
import keras, numpy as np
import keras_vae  # registers the priors; nothing else is imported
model = keras.saving.load_model(sys.argv[1])
sampler = model.sampling_prior
print(json.dumps({
    "prior": type(model.prior).__name__,
    "components": getattr(model.prior, "components", None),
    "sampling_prior": None if sampler is None else type(sampler).__name__,
    "table": model.prior_table(),
    "sample": model.sample(3, seed=5).tolist(),
    "model_class": type(model).__name__,
}))
"""


def fresh_load(path):
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS_CHECK, str(path)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def tiny_model_file(tmp_path, **kwargs):
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                        arch_options={"hidden_units": [16]}, seed=0, **kwargs)
    vae.compile()
    return vae, keras_vae.saving.save_model(vae, tmp_path / "model.keras")


def test_fit_sampler_writes_a_model_with_a_fitted_sampling_prior(tmp_path, capsys):
    vae, path = tiny_model_file(tmp_path)
    out = tmp_path / "fitted.keras"
    code = cli.main(["fit-sampler", str(path), "--dataset", "digits", "--split", "train[:300]",
                     "--components", "4", "--out", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["components"] == 4 and summary["n_latents"] == 300
    # The fitted mixture explains the training latents better than N(0, I).
    assert summary["mean_log_density_fitted"] > summary["mean_log_density_prior"]
    fitted = keras.saving.load_model(out)
    assert isinstance(fitted.prior, priors.StandardNormal)
    assert isinstance(fitted.sampling_prior, priors.FittedMixture)
    table = fitted.prior_table()
    assert table["type"] == "mixture" and len(table["weights"]) == 4
    # The same latents the library fits: posterior means of the statically binarized split.
    ds = keras_vae.data.load("digits", "train[:300]", batch_size=64, binarize="static",
                             shuffle=False, seed=0)
    want = priors.fit_mixture(vae, ds, components=4, seed=0).manifest(3)
    np.testing.assert_allclose(table["means"], want["means"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(table["weights"], want["weights"], rtol=1e-5, atol=1e-7)
    # Only the sampler changed: the weights and the objective are the original's.
    for a, b in zip(fitted.weights, vae.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    z = keras_vae.recipes.sample_prior(table, 4, 3, seed=2)
    np.testing.assert_allclose(fitted.sample(4, seed=2), vae.decode(z).numpy(), atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--components", "0"], "argument --components: must be in [1, 1024], got 0"),
    (["--components", "500", "--split", "train[:100]"], "cannot fit 500"),
    (["--dataset", "no_such_data"], "not a TFDS name"),
])
def test_fit_sampler_bad_arguments_exit_2(tmp_path, capsys, args, message):
    _, path = tiny_model_file(tmp_path)
    out = tmp_path / "fitted.keras"
    base = ["fit-sampler", str(path), "--dataset", "digits", "--split", "train[:200]",
            "--out", str(out)]
    assert cli.main(base + args) == 2  # usage errors too: main returns, exits nothing
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_fit_sampler_refuses_to_overwrite(tmp_path, capsys):
    _, path = tiny_model_file(tmp_path)
    before = path.read_bytes()
    assert cli.main(["fit-sampler", str(path), "--split", "train[:100]", "--components", "2",
                     "--out", str(path)]) == 2
    assert "--overwrite" in capsys.readouterr().err and path.read_bytes() == before


def test_prior_components_needs_a_mixture_prior(tmp_path, capsys):
    assert cli.main(["train", *map(str, TINY), "--prior-components", "3",
                     "--out", str(tmp_path / "r")]) == 2
    assert "does not take options ['components']" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_train_with_a_learned_prior_then_fit_sampler_reload_in_fresh_processes(tmp_path, prior):
    run = tmp_path / "run"
    keras_vae_cli("train", *TINY, "--prior", prior, "--prior-components", 3, "--out", run)
    here = keras.saving.load_model(run / "model.keras")
    got = fresh_load(run / "model.keras")
    assert got["prior"] == {"mixture": "MixturePrior", "vamp": "VampPrior"}[prior]
    assert got["components"] == 3 and got["sampling_prior"] is None
    assert len(got["table"]["weights"]) == 3
    np.testing.assert_allclose(got["table"]["means"], here.prior_table()["means"], atol=1e-6)
    np.testing.assert_allclose(got["sample"], here.sample(3, seed=5), atol=1e-6)
    out = tmp_path / "fitted.keras"
    keras_vae_cli("fit-sampler", run / "model.keras", "--dataset", "digits", "--split",
                  "train[:256]", "--components", 2, "--out", out)
    got = fresh_load(out)
    assert got["prior"] == here.prior.__class__.__name__  # training prior kept
    assert got["sampling_prior"] == "FittedMixture" and len(got["table"]["weights"]) == 2


@pytest.mark.slow
def test_train_tc_beta_selects_tcvae_and_logs_the_decomposition(tmp_path):
    run = tmp_path / "run"
    keras_vae_cli("train", *TINY, "--tc-beta", 4, "--out", run)
    history = json.loads((run / "history.json").read_text())["history"]
    for key in ("mutual_info", "total_correlation", "dimwise_kl", "val_total_correlation"):
        assert np.isfinite(history[key][0]), key
    got = fresh_load(run / "model.keras")
    assert got["model_class"] == "TCVAE"
    model = keras.saving.load_model(run / "model.keras")
    # 256 digits, 10% held out for validation: the MWS dataset size.
    assert model.tc_beta == 4.0 and model.dataset_size == 230
