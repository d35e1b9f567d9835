"""Old command and flag names kept one release: hidden, one line on stderr, then the new one."""

import json

import keras
import pytest

import keras_vae
from keras_vae import cli
from keras_vae.parts import priors


def tiny_model_file(tmp_path):
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                        arch_options={"hidden_units": [16]}, seed=0)
    vae.compile()
    return keras_vae.saving.save_model(vae, tmp_path / "model.keras")


def test_help_lists_only_the_new_names():
    parser = cli.build_parser()
    text = parser.format_help()
    assert "fit-sampler" in text and "train-code-prior" in text
    assert "fit-prior" not in text and "train-prior" not in text
    commands = parser._subparsers._group_actions[0].choices
    train = commands["train"].format_help()
    assert "--validation-fraction" in train and "--validation-split" not in train
    fit = commands["fit-sampler"].format_help()
    assert "--latents" in fit and "--codes" not in fit


@pytest.mark.parametrize("old, new, dest, want", [
    (["train", "--out", "r", "--validation-split", "0.25"],
     "--validation-fraction", "validation_fraction", 0.25),
    (["fit-sampler", "m.keras", "--out", "o.keras", "--codes", "sample"],
     "--latents", "latents", "sample"),
])
def test_old_flags_warn_and_store_the_new_setting(capsys, old, new, dest, want):
    args = cli.build_parser().parse_args(old)
    assert getattr(args, dest) == want
    assert f"{old[-2]} is deprecated; use {new}" in capsys.readouterr().err


def test_new_flags_store_the_same_setting(capsys):
    args = cli.build_parser().parse_args(["train", "--out", "r", "--validation-fraction", "0.25"])
    assert args.validation_fraction == 0.25
    args = cli.build_parser().parse_args(["fit-sampler", "m.keras", "--out", "o.keras"])
    assert args.latents == "mean"
    assert capsys.readouterr().err == ""


def test_fit_prior_runs_fit_sampler_after_one_line(tmp_path, capsys):
    path = tiny_model_file(tmp_path)
    out = tmp_path / "fitted.keras"
    assert cli.main(["fit-prior", str(path), "--split", "train[:100]", "--components", "2",
                     "--codes", "sample", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines()[0] == "keras-vae: fit-prior is deprecated; use fit-sampler"
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["latents"] == "sample" and summary["n_latents"] == 100
    assert isinstance(keras.saving.load_model(out).sampling_prior, priors.FittedMixture)


def test_train_prior_runs_train_code_prior_after_one_line(tmp_path, capsys):
    path = tiny_model_file(tmp_path)
    assert cli.main(["train-prior", str(path), "--out", str(tmp_path / "o.keras")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "keras-vae: train-prior is deprecated; use train-code-prior",
        f"keras-vae train-code-prior: error: train-code-prior needs discrete codes; {path} is a "
        "vae (continuous latents): use fit-sampler",
    ]
