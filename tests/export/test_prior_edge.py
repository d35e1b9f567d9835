"""Every prior reaches the edge: the manifest's table gives the same z and pixels everywhere."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import keras_vae
import keras_vae.export
from keras_vae import recipes
from keras_vae.export import manifest
from keras_vae.parts import priors


def tiny_vae(prior="standard_normal", **kwargs):
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                        arch_options={"hidden_units": [16]}, seed=0, prior=prior, **kwargs)
    vae.compile()
    rng = np.random.default_rng(0)
    for w in vae.prior.weights:  # away from the initial values: a trained-looking prior
        w.assign(rng.normal(size=w.shape).astype(np.float32))
    return vae


def with_fitted_sampler():
    vae = tiny_vae()
    x = np.random.default_rng(1).random((200, 8, 8, 1)).astype(np.float32)
    vae.sampling_prior = priors.fit_mixture(vae, x, components=3, seed=0)
    return vae


MODELS = {
    "mixture": lambda: tiny_vae("mixture", prior_options={"components": 4}),
    "vamp": lambda: tiny_vae("vamp", prior_options={"components": 4}),
    "fitted": with_fitted_sampler,
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_manifests_prior_gives_keras_z_bit_for_bit(kind):
    vae = MODELS[kind]()
    table = json.loads(json.dumps(manifest.build(vae, [])["prior"]))  # as a device reads it
    assert table["type"] == "mixture"
    z_edge = recipes.sample_prior(table, 50, 3, seed=9)
    drawn = vae.prior if vae.sampling_prior is None else vae.sampling_prior
    np.testing.assert_array_equal(z_edge, drawn.sample(50, 3, seed=9))
    # The recipe written out with numpy alone: one generator, component choices first.
    rng = np.random.default_rng(9)
    w = np.asarray(table["weights"], np.float64)
    k = np.searchsorted(np.cumsum(w) / np.sum(w), rng.random(50), side="right")
    eps = rng.standard_normal((50, 3), dtype=np.float32)
    by_hand = (np.asarray(table["means"], np.float32)[k]
               + np.exp(np.asarray(table["log_vars"], np.float32)[k] / 2) * eps)
    np.testing.assert_allclose(z_edge, by_hand, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vae.sample(50, seed=9), vae.decode(z_edge).numpy(), atol=1e-6)
    # Not N(0, I): the draws follow the mixture's components.
    assert not np.allclose(z_edge, keras_vae.prior_z(50, 3, seed=9))
    # The draws have the mixture's mean and variance.
    z_many = recipes.sample_prior(table, 20000, 3, seed=0)
    w = np.asarray(table["weights"])[:, None]
    mu, var = np.asarray(table["means"]), np.exp(np.asarray(table["log_vars"]))
    mean = np.sum(w * mu, axis=0)
    variance = np.sum(w * (var + mu**2), axis=0) - mean**2
    np.testing.assert_array_less(np.abs(z_many.mean(0) - mean), 5 * np.sqrt(variance / 20000))
    np.testing.assert_allclose(z_many.var(0), variance, rtol=0.1)


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_onnxruntime_and_litert_samplers_draw_what_keras_draws(kind, tmp_path):
    vae = MODELS[kind]()
    export_dir = tmp_path / "export"
    written = keras_vae.export.export(vae, export_dir, formats="onnx,litert",
                                      graphs=("decoder",))
    assert written["prior"]["type"] == "mixture"
    device = tmp_path / "device"
    shutil.copytree(export_dir, device)
    want = vae.sample(6, seed=4)
    for script in ("sample_onnx.py", "sample_litert.py"):
        out = subprocess.run([sys.executable, script, ".", "--n", "6", "--seed", "4",
                              "--out", "x.npy"], cwd=device, capture_output=True, text=True,
                             timeout=180, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
        assert out.returncode == 0, out.stderr
        np.testing.assert_allclose(np.load(device / "x.npy"), want, atol=1e-5,
                                   err_msg=script)


def test_parity_and_calibration_codes_come_from_the_models_prior():
    from keras_vae.export import graphs

    vae = MODELS["mixture"]()
    vae.prior.means.assign(vae.prior.means.numpy() + 6.0)  # far from N(0, I)'s codes
    traced = graphs.trace(vae, "decoder")
    z = traced.random_inputs(5, np.random.default_rng(3))["z"]
    np.testing.assert_array_equal(z, recipes.sample_prior(vae.prior_table(), 5, 3, seed=3))
    assert z.mean() > 3.0
    plain = graphs.trace(tiny_vae(), "decoder")  # N(0, I): the draws parity always used
    np.testing.assert_array_equal(plain.random_inputs(4, np.random.default_rng(1))["z"],
                                  np.random.default_rng(1).standard_normal((4, 3), np.float32))


@pytest.mark.slow
def test_int8_decoder_of_a_mixture_prior_model_is_calibrated_on_its_codes(tmp_path):
    vae = MODELS["mixture"]()
    vae.prior.means.assign(vae.prior.means.numpy() + 6.0)  # codes N(0, I) calibration misses
    keras_vae.export.export(vae, tmp_path / "export", formats="litert", quantize="int8_full",
                            graphs=("decoder",))
    out = subprocess.run([sys.executable, "sample_litert.py", ".", "--precision", "int8_full",
                          "--n", "64", "--seed", "4", "--out", "x.npy"], cwd=tmp_path / "export",
                         capture_output=True, text=True, timeout=180,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr
    error = np.load(tmp_path / "export" / "x.npy") - vae.sample(64, seed=4)
    psnr = 10 * np.log10(1.0 / np.mean(error**2))  # pixel probabilities: peak 1
    assert psnr > 35, psnr  # 54 dB here; calibrated on N(0, I) codes: 21 dB
