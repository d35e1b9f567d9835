"""Commands and train flags that do not fit the model's family: one-line errors, exit 2."""

import pytest

import keras_vae
from keras_vae import cli, saving
from keras_vae.models.vqvae import VQVAE


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """An untrained VQ-VAE and VAE, saved: their family is all these commands read."""
    folder = tmp_path_factory.mktemp("families")
    vq, vae = folder / "vq.keras", folder / "vae.keras"
    saving.save_model(VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0), vq)
    saving.save_model(keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp"), vae)
    return {"vqvae": str(vq), "vae": str(vae)}


def _refused(argv, capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, message", [
    (["fit-sampler", "{vqvae}", "--out", "{tmp}/out.keras"],
     "keras-vae fit-sampler: error: fit-sampler needs continuous latents; {vqvae} is a vqvae "
     "(discrete codes): use train-code-prior"),
    (["train-code-prior", "{vae}", "--out", "{tmp}/out.keras"],
     "keras-vae train-code-prior: error: train-code-prior needs discrete codes; {vae} is a "
     "vae (continuous latents): use fit-sampler"),
    (["score", "{vqvae}"],
     "keras-vae score: error: score needs continuous latents; {vqvae} is a vqvae "
     "(discrete codes)"),
    (["evaluate", "{vqvae}", "--iwae-k", "5"],
     "keras-vae evaluate: error: evaluate --iwae-k needs continuous latents; {vqvae} is a "
     "vqvae (discrete codes)"),
    (["evaluate", "{vqvae}", "--disentanglement"],
     "keras-vae evaluate: error: evaluate --disentanglement needs continuous latents; {vqvae} "
     "is a vqvae (discrete codes)"),
    (["export", "{vqvae}", "--formats", "onnx", "--calibrate", "digits", "--out",
      "{tmp}/export"],
     "keras-vae export: error: export --calibrate needs continuous latents; {vqvae} is a "
     "vqvae (discrete codes)"),
])
def test_a_command_of_the_other_latent_kind_is_refused_naming_the_family(
        argv, message, model_files, tmp_path, capsys):
    fill = {**model_files, "tmp": tmp_path}
    err = _refused([a.format(**fill) for a in argv], capsys)
    assert err == message.format(**fill)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("flags, message", [
    (["--model", "vqvae", "--prior", "vamp"],
     "--prior does not apply to --model vqvae (discrete codes); its options: --arch-options, "
     "--code-dim, --codebook-size, --commitment-cost, --ema, --likelihood"),
    (["--model", "vqvae", "--beta", "2"],
     "--beta does not apply to --model vqvae (discrete codes); its options: --arch-options, "
     "--code-dim, --codebook-size, --commitment-cost, --ema, --likelihood"),
    (["--model", "vqvae", "--conditional"],
     "--conditional does not apply to --model vqvae (discrete codes): it is unconditional"),
    (["--model", "vaegan", "--iwae-k", "4", "--prior", "mixture"],
     "--prior, --iwae-k do not apply to --model vaegan (a VAE with a discriminator); its "
     "options: --arch, --arch-options, --beta, --disc-learning-rate, --disc-options, "
     "--feature-layer, --free-bits, --gamma, --kl-schedule, --kl-warmup, --latent-dim, "
     "--likelihood, --pixel-weight"),
    (["--codebook-size", "8"],
     "--codebook-size does not apply to --model vae (continuous latents); its options: "
     "--arch, --arch-options, --beta, --free-bits, --iwae-k, --kl-schedule, --kl-warmup, "
     "--latent-dim, --likelihood, --prior, --prior-components, --tc-beta"),
])
def test_train_flags_of_another_family_are_refused_at_parse_time(flags, message, tmp_path,
                                                                 capsys):
    err = _refused(["train", *flags, "--out", str(tmp_path / "run")], capsys)
    assert err == f"keras-vae train: error: {message}"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, config", [
    ([], {"arch": "conv", "latent_dim": 16, "arch_options": {}, "likelihood": "bernoulli",
          "prior": "standard_normal", "iwae_k": 1, "beta": 1.0, "free_bits": 0.0,
          "kl_schedule": None}),
    (["--model", "vqvae", "--codebook-size", "8", "--ema"],
     {"codebook_size": 8, "code_dim": 16, "commitment_cost": 0.25, "ema": True,
      "arch_options": {}, "likelihood": "bernoulli"}),
    (["--model", "vaegan", "--gamma", "0.5", "--latent-dim", "4"],
     {"arch": "conv", "latent_dim": 4, "arch_options": {}, "likelihood": "bernoulli",
      "beta": 1.0, "free_bits": 0.0, "kl_schedule": None, "gamma": 0.5, "feature_layer": -2,
      "disc_learning_rate": 1e-4, "pixel_weight": 1.0, "disc_options": {}}),
    (["--prior", "mixture", "--prior-components", "3", "--tc-beta", "2"],
     {"arch": "conv", "latent_dim": 16, "arch_options": {}, "likelihood": "bernoulli",
      "prior": "mixture", "prior_options": {"components": 3}, "iwae_k": 1, "tc_beta": 2.0,
      "beta": 1.0, "free_bits": 0.0, "kl_schedule": None}),
])
def test_train_flags_become_the_family_s_constructor_arguments(flags, config):
    args = cli.build_parser().parse_args(["train", *flags, "--out", "run"])
    assert cli._model_config(args) == config


def test_kl_warmup_becomes_a_schedule_of_its_shape():
    args = cli.build_parser().parse_args(["train", "--kl-warmup", "7", "--kl-schedule",
                                          "cyclical", "--out", "run"])
    schedule = cli._model_config(args)["kl_schedule"]
    assert type(schedule).__name__ == "CyclicalSchedule" and schedule.period == 7
