"""Anomaly detection: scores against numpy, thresholds, ROC AUC, a held-out digit, the CLI."""

import json

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import keras_vae
from keras_vae import cli, evaluation
from keras_vae.data import load_arrays
from keras_vae.uses import anomaly


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    normal = rng.integers(0, 20, 300).astype(float)  # many ties
    anomalous = rng.integers(5, 30, 120).astype(float)
    labels = np.r_[np.zeros(300), np.ones(120)]
    assert anomaly.roc_auc(normal, anomalous) == pytest.approx(
        roc_auc_score(labels, np.r_[normal, anomalous]), abs=1e-12)
    assert anomaly.roc_auc([1, 2], [3, 4]) == 1.0
    assert anomaly.roc_auc([3, 4], [1, 2]) == 0.0
    assert anomaly.roc_auc([1, 1], [1, 1]) == 0.5
    with pytest.raises(ValueError, match="0 anomalous"):
        anomaly.roc_auc([1.0], [])
    with pytest.raises(ValueError, match="NaN"):
        anomaly.roc_auc([1.0, np.nan], [2.0])


def test_threshold_is_the_validation_quantile():
    scores = np.random.default_rng(1).normal(100, 10, 500)
    for q in (0.5, 0.95, 0.99, 1.0):
        t = anomaly.calibrate_threshold(scores, q)
        assert t == pytest.approx(np.percentile(scores, 100 * q))
    t = anomaly.calibrate_threshold(scores, 0.95)
    assert np.mean(scores > t) == pytest.approx(0.05, abs=0.003)
    summary = anomaly.summarize(scores, t)
    assert summary["n_flagged"] == int(np.sum(scores > t)) and summary["n_examples"] == 500
    with pytest.raises(ValueError, match="empty set"):
        anomaly.calibrate_threshold([], 0.99)
    with pytest.raises(ValueError, match="empty set"):
        anomaly.calibrate_threshold(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        anomaly.calibrate_threshold([1.0, np.inf])
    for bad in (0.0, 1.01, 99):
        with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\]"):
            anomaly.calibrate_threshold(scores, bad)


def test_scores_against_references(make_vae, tiny_images):
    x, _ = tiny_images
    model = make_vae(latent_dim=3)
    # Reconstruction error: squared distance to the posterior-mean reconstruction.
    recon = model.reconstruct(x)
    np.testing.assert_allclose(anomaly.score(model, x, "reconstruction_error", batch_size=10),
                               ((x - recon) ** 2).reshape(64, -1).sum(1), rtol=1e-5)
    # Negative ELBO with k samples: the mean of the k single-sample values.
    k, seed = 4, 3
    negative_elbo = anomaly.score(model, x, "negative_elbo", k=k, seed=seed, batch_size=64)
    eps = np.random.default_rng([seed, 0]).standard_normal((k, 64, 3), dtype=np.float32)
    singles = [np.asarray(model.negative_elbo(x, eps=eps[i])) for i in range(k)]
    np.testing.assert_allclose(negative_elbo, np.mean(singles, 0), rtol=1e-5)
    # IWAE NLL is evaluation.iwae_nll, and below the negative ELBO on average.
    iwae = anomaly.score(model, x, "iwae_nll", k=50, seed=0)
    np.testing.assert_allclose(iwae, evaluation.iwae_nll(model, x, k=50, seed=0))
    assert iwae.mean() < anomaly.score(model, x, "negative_elbo", k=50).mean()
    with pytest.raises(ValueError, match="valid names"):
        anomaly.score(model, x, "likelihood_ratio")
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
        anomaly.score(model, x, "negative_elbo", k=0)


@pytest.mark.slow
def test_held_out_digit_is_detected():
    """Train on the digits 1-9, score the unseen 0s against held-out normal digits."""
    result = anomaly.held_out_class_example(
        "digits", anomaly_classes=[0], epochs=12, methods=("negative_elbo", "reconstruction_error"))
    assert result["n_test_anomalous"] == 178
    assert result["auc"]["negative_elbo"] > 0.85, result["auc"]
    assert result["auc"]["reconstruction_error"] > 0.8, result["auc"]
    # The 95th-percentile threshold flags most 0s and few normal digits.
    assert result["detection_rate"]["negative_elbo"] > 0.5
    for method in ("negative_elbo", "reconstruction_error"):
        assert result["false_alarm_rate"][method] < 0.15
        assert result["detection_rate"][method] > result["false_alarm_rate"][method] + 0.1
    with pytest.raises(ValueError, match="among the labels"):
        anomaly.held_out_class_example("digits", anomaly_classes=[12], epochs=1)
    with pytest.raises(ValueError, match="nothing is left"):
        anomaly.held_out_class_example("digits", anomaly_classes=range(10), epochs=1)


@pytest.mark.slow
def test_cli_score_with_threshold(make_vae, tmp_path, capsys):
    x, _ = load_arrays("digits")
    keras.utils.set_random_seed(0)
    model = make_vae(latent_dim=3)
    model.fit(x[:256], batch_size=64, epochs=1, verbose=0)
    path = keras_vae.saving.save_model(model, tmp_path / "m.keras")
    args = ["score", str(path), "--dataset", "digits", "--split", "train[:200]",
            "--binarize", "none", "--threshold-from", "digits",
            "--threshold-split", "train[1000:1300]", "--quantile", "0.9",
            "--out", str(tmp_path / "s.npy")]
    assert cli.main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    scores = np.load(tmp_path / "s.npy")
    assert out["method"] == "negative_elbo" and out["n_examples"] == 200 == len(scores)
    reference = anomaly.score(model, x[:200], "negative_elbo", batch_size=64)
    np.testing.assert_allclose(scores, reference, rtol=1e-5)
    threshold = np.percentile(anomaly.score(model, x[1000:1300], "negative_elbo", batch_size=64), 90)
    assert out["threshold"] == pytest.approx(threshold, rel=1e-5)
    assert out["n_flagged"] == int(np.sum(reference > threshold))
    bad = ["score", str(path), "--dataset", "digits", "--threshold-from", "digits",
           "--threshold-split", "train[5:5]"]
    assert cli.main(bad) == 2
    assert "empty" in capsys.readouterr().err
