"""VQ-VAE export: decoder/encoder/prior graphs in ONNX and LiteRT, manifest, edge sampling."""

import os
import subprocess
import sys

import numpy as np
import pytest

import keras_vae
import keras_vae.export
from keras_vae import recipes
from keras_vae.export import manifest as manifest_lib
from keras_vae.models.vqvae import VQVAE
from keras_vae.parts import code_prior


def _images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 8, 8, 1)) > 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny VQ-VAE with a trained prior, exported to ONNX and LiteRT."""
    x = _images()
    model = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0)
    model.compile()
    model.fit(x, batch_size=16, epochs=2, verbose=0)
    code_prior.train_prior(model, x, epochs=3, filters=8, blocks=1, verbose=0)
    out = tmp_path_factory.mktemp("vq") / "export"
    manifest = keras_vae.export.export(model, out, formats="onnx,litert",
                                       graphs="decoder,encoder,prior")
    return model, out, manifest


def test_vae_manifest_latents_are_unchanged():
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp")
    latents = manifest_lib.latents(vae)
    assert latents["latent_dim"] == 3 and latents["prior"]["type"] == "standard_normal"
    assert set(latents) == {"latent_dim", "prior"}


def test_vqvae_export_graphs_and_their_inputs():
    model = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0)
    graphs = model.export_graphs()
    assert set(graphs) == {"decoder", "encoder"}  # no prior until one is trained
    assert graphs["decoder"].inputs == [("indices", (2, 2), "int32")]
    assert graphs["decoder"].input_ranges == {"indices": (0, 8)}
    latents = model.manifest_latents()
    assert latents["prior"]["type"] == recipes.AUTOREGRESSIVE_CODES
    assert latents["prior"]["graph"] is None and latents["codes"]["grid_shape"] == [2, 2]


@pytest.mark.slow
def test_export_files_pass_parity_and_the_manifest_describes_codes(trained):
    model, out, manifest = trained
    files = {(e["graph"], e["format"]): e for e in manifest["files"]}
    assert set(files) == {(g, f) for g in ("decoder", "encoder", "prior")
                          for f in ("onnx", "litert")}
    for entry in files.values():
        assert entry["parity"]["max_abs_error"] <= entry["parity"]["tolerance"]
    assert files["encoder", "onnx"]["outputs"][0] == {"name": "indices", "shape": [None, 2, 2],
                                                      "dtype": "int32"}
    assert "ARG_MIN" in files["encoder", "litert"]["ops"]
    assert manifest["latent_dim"] is None
    assert manifest["codes"] == {"grid_shape": [2, 2], "codebook_size": 8, "code_dim": 4}
    assert manifest["prior"]["type"] == "autoregressive_codes"
    assert manifest["prior"]["graph"] == "prior"
    assert "codes 2x2 of 8" in (out / "README.md").read_text()


@pytest.mark.slow
def test_onnx_codes_equal_keras_codes_for_the_same_seed(trained):
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import onnxruntime as ort

    model, out, _ = trained
    session = ort.InferenceSession(str(out / "prior.onnx"), providers=["CPUExecutionProvider"])
    codes = recipes.autoregressive_codes(
        lambda c: session.run(["logits"], {"indices": c})[0], 6, (2, 2), 8, seed=4)
    np.testing.assert_array_equal(codes, model.sample_codes(6, seed=4))
    assert len(np.unique(codes)) > 1


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["sample_onnx.py", "sample_litert.py"])
def test_edge_sampler_gives_keras_samples(trained, sampler, tmp_path):
    model, out, _ = trained
    target = tmp_path / "s.npy"
    done = subprocess.run([sys.executable, str(out / sampler), str(out), "--n", "5", "--seed",
                           "7", "--out", str(target)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(target), model.sample(5, seed=7), atol=1e-5)
    bad = subprocess.run([sys.executable, str(out / sampler), str(out), "--interpolate", "0",
                          "1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "VQ-VAE" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_untrained_prior_exports_uniform_codes_the_edge_reproduces(tmp_path):
    model = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0)
    out = tmp_path / "export"
    manifest = keras_vae.export.export(model, out, formats="onnx", graphs="decoder")
    assert manifest["prior"]["graph"] is None
    done = subprocess.run([sys.executable, str(out / "sample_onnx.py"), str(out), "--n", "3",
                           "--seed", "2", "--out", str(tmp_path / "s.npy")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), model.sample(3, seed=2), atol=1e-5)


def test_int8_decoder_calibrates_on_code_indices(tmp_path):
    """Full-integer quantization calibrates a graph of integer codes on valid code grids
    (there is no z to draw), and the int8 decoder stays within its PSNR bound of Keras."""
    model = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0)
    manifest = keras_vae.export.export(model, tmp_path / "export", formats="litert",
                                       quantize="int8_full", graphs="decoder")
    entry = next(f for f in manifest["files"] if f["precision"] == "int8_full")
    assert entry["graph"] == "decoder" and entry["inputs"][0]["name"] == "indices"
    parity = entry["parity"]
    assert parity["max_abs_error"] < 0.05 and parity["psnr_db"] >= parity["psnr_bound_db"]
