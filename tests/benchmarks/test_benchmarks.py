"""The benchmark scripts run (so they cannot rot), and their estimators are right.

Each script runs in a subprocess on its `--tiny` setting (sklearn digits,
seconds of training) and must write a JSON file with its figures, finite and
positive. The numpy likelihood estimators of `bench_quality.py` are checked
against closed forms.
"""

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # subprocesses, several processes or benchmarks

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

HAS_TORCH = importlib.util.find_spec("torch") is not None


def _positive(row, *keys):
    for key in keys:
        value = row[key]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, (key, row)


def test_bench_training_tiny(run_bench):
    result, stdout = run_bench("bench_training", "--pipeline", "--systems", "ours-mlp",
                          "kerasio-conv", "torch-mlp")
    assert len(result["pipelines"]) == 2
    for row in result["pipelines"]:
        _positive(row, "images_per_s", "images_per_cpu_s")
    rows = {r["system"]: r for r in result["rows"]}
    assert "ours-mlp" in rows and "kerasio-conv" in rows
    for row in rows.values():
        _positive(row, "images_per_s", "warmup_epoch_s")
        assert row["rounds"][0]["images"] == 1500  # one epoch of digits[:1500]
    if HAS_TORCH:
        _positive(rows["ours-mlp"], "ratio")
        assert rows["ours-mlp"]["baseline"] == "torch-mlp"
    else:
        assert "torch-mlp" not in rows
        assert "skipping torch-mlp: torch is not installed" in stdout
    assert "| system |" in stdout


def test_bench_quality_tiny(run_bench):
    result, _ = run_bench("bench_quality")
    runs = result["runs"]
    assert {r["seed"] for r in runs} == {0, 1}
    for r in runs:
        _positive(r, "negative_elbo", "iwae_nll", "images", "train_s")
        # IWAE with K samples is a tighter bound than the ELBO, up to noise.
        assert r["iwae_nll"] < r["negative_elbo_same_subset"] + 2.0, r
    for row in result["rows"]:
        assert row["n_seeds"] == 2
        _positive(row, "negative_elbo_mean", "iwae_nll_mean", "epochs_mean")


def test_roofline_tiny(run_bench):
    result, _ = run_bench("roofline", "--systems", "ours-mlp", "kerasio-conv")
    _positive(result["peak"], "numpy_gflops", "tensorflow_gflops", "peak_gflops")
    rows = {r["system"]: r for r in result["rows"]}
    for row in rows.values():
        _positive(row, "mflops_train_example", "mflops_decoded_sample", "train_images_per_s",
                  "sample_images_per_s", "train_fraction_of_peak", "sample_fraction_of_peak")
    # 8x8 digits, mlp 64-400-400-20 and back: Dense FLOPs = 2 * sum(in * out).
    enc = 64 * 400 + 400 * 400 + 2 * 400 * 20
    dec = 20 * 400 + 400 * 400 + 400 * 64
    assert rows["ours-mlp"]["mflops_train_example"] == pytest.approx(3 * 2 * (enc + dec) / 1e6)
    assert rows["ours-mlp"]["mflops_decoded_sample"] == pytest.approx(2 * dec / 1e6)


def test_conv_flops_match_hand_count():
    import keras

    from benchmarks import flops, reference_kerasio

    decoder = reference_kerasio.build_decoder(16, (28, 28, 1))
    # Dense 16->3136; deconv 7x7x64 -> 14x14x64; 14x14x64 -> 28x28x32; 28x28x32 -> 28x28x1.
    macs = 16 * 3136 + 7 * 7 * 9 * 64 * 64 + 14 * 14 * 9 * 64 * 32 + 28 * 28 * 9 * 32 * 1
    assert flops.keras_flops(decoder) == 2 * macs
    encoder = keras.Sequential([keras.Input((28, 28, 1)),
                                keras.layers.Conv2D(8, 3, strides=2, padding="same")])
    assert flops.keras_flops(encoder) == 2 * 14 * 14 * 9 * 1 * 8


def test_iwae_equals_log_likelihood_when_decoder_ignores_z():
    from benchmarks.bench_quality import bernoulli_log_prob, iwae_nll, negative_elbo

    rng = np.random.default_rng(0)
    x = (rng.random((5, 12)) < 0.5).astype(np.float64)
    logits = rng.standard_normal(12)
    # q near the prior keeps the importance weights p(z) / q(z) light-tailed.
    mean, log_var = 0.3 * rng.standard_normal((5, 3)), 0.3 * rng.standard_normal((5, 3))

    def decode(z):  # p(x | z) does not depend on z, so log p(x) = log p(x | z)
        return np.tile(logits, (len(z), 1))

    exact = -bernoulli_log_prob(x, np.tile(logits, (5, 1)), "logits")
    np.testing.assert_allclose(iwae_nll(x, mean, log_var, decode, "logits", k=4000), exact,
                               atol=0.1)
    # ... and the ELBO is log p(x) - KL(q || p), the KL in closed form.
    kl = 0.5 * np.sum(mean**2 + np.exp(log_var) - 1 - log_var, axis=-1)
    np.testing.assert_allclose(negative_elbo(x, mean, log_var, decode, "logits"), exact + kl,
                               rtol=1e-12)


def test_bernoulli_log_prob_forms_agree():
    from benchmarks.bench_quality import bernoulli_log_prob

    rng = np.random.default_rng(1)
    x = (rng.random((4, 10)) < 0.5).astype(np.float64)
    logits = rng.standard_normal((4, 10)) * 3
    probs = 1 / (1 + np.exp(-logits))
    expected = np.sum(x * np.log(probs) + (1 - x) * np.log(1 - probs), axis=-1)
    np.testing.assert_allclose(bernoulli_log_prob(x, logits, "logits"), expected, rtol=1e-10)
    np.testing.assert_allclose(bernoulli_log_prob(x, probs, "probs", ("clip", 1e-12)), expected,
                               rtol=1e-8)
    np.testing.assert_allclose(bernoulli_log_prob(x, probs, "probs", ("log_floor", -100.0)),
                               expected, rtol=1e-8)
    # Saturated probabilities: Keras' clip gives log(1e-7) per wrong pixel, PyTorch's floor -100.
    one = np.ones((1, 1))
    assert bernoulli_log_prob(one * 0, one, "probs", ("clip", 1e-7))[0] == pytest.approx(
        np.log(1e-7), rel=1e-6)
    assert bernoulli_log_prob(one * 0, one, "probs", ("log_floor", -100.0))[0] == -100.0


def test_iwae_agrees_with_library_estimator(make_vae):
    """The benchmark's numpy IWAE (used for every system) matches keras_vae's own."""
    evaluation = pytest.importorskip("keras_vae.evaluation")
    if not hasattr(evaluation, "iwae_nll"):
        pytest.skip("keras_vae.evaluation.iwae_nll not available")
    from benchmarks.bench_quality import iwae_nll

    model = make_vae("mlp", latent_dim=3)
    x = (np.random.default_rng(0).random((6, 8, 8, 1)) < 0.4).astype(np.float32)
    mean, log_var = (np.asarray(t) for t in model.encode(x))

    def decode(z):
        return np.asarray(model.decode_params(z))

    ours = iwae_nll(x.reshape(6, -1), mean, log_var, decode, "logits", k=2000)
    library = evaluation.iwae_nll(model, x, k=2000)
    # Independent noise on each side: Monte Carlo error ~0.05 nats per example at K = 2000;
    # a wrong term (log q, log p(z), the log K) would be off by nats.
    np.testing.assert_allclose(ours, library, rtol=0, atol=0.15)
    assert abs(float(np.mean(ours - library))) < 0.06


def test_bench_priors_tiny(run_bench):
    result, stdout = run_bench("bench_priors")
    systems = {row["system"] for row in result["rows"]}
    assert systems == {"normal", "mixture", "vamp", "normal+gmm"}
    for row in result["rows"]:
        assert np.isfinite(row["nll"]) and np.isfinite(row["negative_elbo"])
        assert row["nll"] <= row["negative_elbo"] + 1.0  # the IWAE bound is the tighter one
        assert np.isfinite(row["frechet"]) and 0 <= row["precision"] <= 1
    gmm = next(r for r in result["rows"] if r["system"] == "normal+gmm")
    normal = next(r for r in result["rows"] if r["system"] == "normal")
    assert gmm["nll"] == normal["nll"]  # same model: only the sampler differs


def test_bench_vqvae_tiny(run_bench):
    result, stdout = run_bench("bench_vqvae")
    (row,) = result["rows"]
    _positive(row, "train_images_per_s_vqvae", "train_images_per_s_vae",
              "edge_sample_ms_batch1", "test_reconstruction_nll", "test_perplexity")
    assert row["test_negative_elbo"] == pytest.approx(
        row["test_reconstruction_nll"] + row["test_code_nll"])
    assert row["test_bits_per_grid"] == pytest.approx(row["test_code_nll"] / math.log(2))
    # exp(entropy) of the code frequencies: between 1 and the number of codes used (of 64).
    assert 1 - 1e-5 <= row["test_perplexity"] <= row["test_codebook_usage"] * 64 + 1e-3
    assert row["edge_equals_keras_max_abs"] < 1e-4  # onnxruntime's loop = vq.sample
    assert row["test_images"] == 297  # the held-out digits[1500:]
    assert "| seed |" in stdout
