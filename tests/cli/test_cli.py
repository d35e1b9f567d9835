"""The keras-vae command line, end to end in subprocesses."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # subprocesses, several processes or benchmarks

def keras_vae(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "keras_vae.cli", *map(str, args)],
                            capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"keras-vae {args} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    keras_vae("train", "--dataset", "digits", "--arch", "mlp", "--latent-dim", 4,
              "--arch-options", '{"hidden_units": [32, 16]}',
              "--epochs", 2, "--batch-size", 128, "--out", out, "--verbose", 0)
    return out


def test_train_writes_model_history_and_pictures(trained_run):
    assert {p.name for p in trained_run.iterdir()} >= {
        "model.keras", "history.json", "samples.png", "reconstructions.png"}
    history = json.loads((trained_run / "history.json").read_text())["history"]
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    assert "val_loss" in history
    config = json.loads(zipfile.ZipFile(trained_run / "model.keras").read("config.json"))
    assert config["config"]["arch_options"] == {"hidden_units": [32, 16]}
    samples = np.asarray(Image.open(trained_run / "samples.png"))
    assert samples.ndim == 2 and samples.std() > 0  # a grid of 8x8 digits, upscaled


def test_evaluate_prints_json_in_nats(trained_run):
    out = keras_vae("evaluate", trained_run / "model.keras", "--dataset", "digits",
                    "--split", "train[:300]")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["n_examples"] == 300
    assert report["negative_elbo"] == pytest.approx(
        report["reconstruction_loss"] + report["kl_loss"], rel=1e-6)
    # 64 binary pixels: between a perfect model (0) and coin flips (64 ln 2 = 44.4 nats)
    assert 0 < report["negative_elbo"] < 64 * np.log(2)


def test_sample_writes_png(trained_run, tmp_path):
    keras_vae("sample", trained_run / "model.keras", "--n", 6, "--seed", 3,
              "--out", tmp_path / "s.png")
    image = np.asarray(Image.open(tmp_path / "s.png"))
    assert image.shape == (2 * (8 * 8 + 8) - 8, 3 * (8 * 8 + 8) - 8)


def test_existing_out_is_refused_and_kept(trained_run):
    before = (trained_run / "model.keras").read_bytes()
    result = keras_vae("train", "--dataset", "digits", "--epochs", 1, "--out", trained_run,
                       check=False)
    assert result.returncode == 2
    assert "--overwrite" in result.stderr and "Traceback" not in result.stderr
    assert (trained_run / "model.keras").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "no_such_data", "--out", "{tmp}/r"], "not a TFDS name"),
    (["train", "--dataset", "digits", "--likelihood", "poisson", "--out", "{tmp}/r"],
     "invalid choice: 'poisson' (choose from 'bernoulli'"),  # the registry's names
    (["evaluate", "{tmp}/missing.keras"], "No model file"),
    (["train", "--dataset", "digits", "--arch-options", "{{dense: 8}}", "--out", "{tmp}/r"],
     "not valid JSON"),
    (["train", "--dataset", "digits", "--arch-options", "[8]", "--out", "{tmp}/r"],
     "expected a JSON object"),
    (["train", "--dataset", "digits", "--arch", "mlp", "--arch-options",
      '{{"hidden": [8]}}', "--epochs", 1, "--out", "{tmp}/r"], "valid: ['hidden_units'"),
])
def test_bad_arguments_exit_cleanly(args, message, tmp_path):
    result = keras_vae(*[str(a).format(tmp=tmp_path) for a in args], check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()
