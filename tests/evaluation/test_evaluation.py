"""Evaluation: the IWAE NLL against a closed form, its convergence in K, active units, the CLI."""

import json

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import cli, evaluation
from keras_vae.data import load_arrays

# ----------------------------------------------------- a linear-Gaussian model
# p(z) = N(0, I), p(x | z) = N(W z + b, s^2 I)  =>  p(x) = N(b, W W^T + s^2 I).
# W has orthogonal columns, so the true posterior is diagonal:
# q*(z | x) = N(S W^T (x - b) / s^2, S) with S = diag(1 / (1 + |w_j|^2 / s^2)).

D, LATENT, SCALE = 6, 2, 0.1


def _linear_gaussian(mean_shift=0.0, var_scale=1.0):
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    w = q[:, :LATENT] * np.array([0.15, 0.08])
    b = np.full(D, 0.5)
    post_var = 1.0 / (1.0 + (w**2).sum(0) / SCALE**2)
    gain = w * post_var / SCALE**2  # (D, latent): posterior mean = (x - b) @ gain
    const = keras.initializers.Constant
    image = keras.Input((D,), name="image")
    z_mean = keras.layers.Dense(LATENT, name="z_mean", kernel_initializer=const(gain),
                                bias_initializer=const(-b @ gain + mean_shift))(image)
    z_log_var = keras.layers.Dense(LATENT, name="z_log_var", kernel_initializer="zeros",
                                   bias_initializer=const(np.log(post_var * var_scale)))(image)
    encoder = keras.Model([image], [z_mean, z_log_var])
    z = keras.Input((LATENT,), name="z")
    decoder = keras.Model([z], keras.layers.Dense(D, kernel_initializer=const(w.T),
                                                  bias_initializer=const(b))(z))
    model = keras_vae.VAE(encoder, decoder, likelihood=keras_vae.Gaussian(scale=SCALE))

    x = b + rng.standard_normal((40, LATENT)) @ w.T + SCALE * rng.standard_normal((40, D))
    x = np.clip(x, 0.0, 1.0).astype("float32")  # any x works: log p(x) is exact everywhere
    cov = w @ w.T + SCALE**2 * np.eye(D)
    diff = x - b
    log_px = -0.5 * (np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
                     + np.linalg.slogdet(cov)[1] + D * np.log(2 * np.pi))
    return model, x, log_px


def test_iwae_is_exact_with_the_true_posterior():
    model, x, log_px = _linear_gaussian()
    # Every importance weight equals p(x): even K = 1 gives -log p(x) exactly.
    np.testing.assert_allclose(evaluation.iwae_nll(model, x, k=1), -log_px, atol=1e-3)
    np.testing.assert_allclose(evaluation.iwae_nll(model, x, k=50), -log_px, atol=1e-3)


def test_iwae_recovers_the_closed_form_from_a_poor_posterior():
    # Shifted mean, 3x the variance: the ELBO is loose by more than a nat.
    model, x, log_px = _linear_gaussian(mean_shift=0.5, var_scale=3.0)
    negative_elbo = evaluation.iwae_nll(model, x, k=1, seed=1)
    gap_elbo = float(np.mean(negative_elbo + log_px))
    assert gap_elbo > 1.0
    nll = evaluation.iwae_nll(model, x, k=1000)
    assert np.all(nll >= -log_px - 0.5)
    assert np.max(np.abs(nll + log_px)) < 0.5
    assert float(np.mean(nll + log_px)) < 0.1 * gap_elbo


# ------------------------------------------------------------ a trained model


@pytest.fixture(scope="module")
def trained():
    """A small VAE trained a few epochs on binarized 8x8 digits, and 120 test images."""
    keras.utils.set_random_seed(0)
    x, _ = load_arrays("digits")
    x = (np.random.default_rng(0).random(x.shape) < x).astype("float32")
    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=4, arch="mlp",
                          arch_options={"hidden_units": [64]}, seed=0)
    model.compile(keras.optimizers.Adam(3e-3))
    model.fit(x[:1500], batch_size=64, epochs=8, verbose=0)
    return model, x[1500:1620]


def test_iwae_below_negative_elbo_and_converging(trained):
    model, x = trained
    # The negative ELBO with many samples per example (the expectation, not one draw).
    negative_elbo = float(np.mean(keras_vae.uses.anomaly.negative_elbo_score(model, x, k=200, seed=5)))
    means = {k: float(np.mean(evaluation.iwae_nll(model, x, k=k, seed=3)))
             for k in (1, 10, 100, 1000, 5000)}
    assert means[1] == pytest.approx(negative_elbo, abs=0.5)  # K = 1 is the ELBO
    ks = sorted(means)
    for small, large in zip(ks, ks[1:]):
        assert means[large] <= means[small] + 0.02  # monotone up to Monte Carlo noise
    assert means[1000] < negative_elbo - 0.3
    # The steps shrink: from 100 to 1000 to 5000 samples the estimate has settled.
    assert abs(means[5000] - means[1000]) < 0.5 * (means[10] - means[100]) + 0.02
    assert abs(means[5000] - means[1000]) < 0.1


def test_iwae_chunking_changes_nothing(trained):
    model, x = trained
    whole = evaluation.iwae_nll(model, x[:30], k=300, chunk=300, seed=7)
    pieces = evaluation.iwae_nll(model, x[:30], k=300, chunk=7, seed=7)
    np.testing.assert_allclose(pieces, whole, atol=1e-4)
    other_seed = evaluation.iwae_nll(model, x[:30], k=300, chunk=7, seed=8)
    assert not np.allclose(other_seed, whole, atol=1e-4)


def test_iwae_on_a_dataset_matches_arrays(trained):
    import tensorflow as tf

    model, x = trained
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x), np.int64))).batch(100)
    np.testing.assert_allclose(evaluation.iwae_nll(model, ds, k=50, seed=2),
                               evaluation.iwae_nll(model, x, k=50, seed=2), atol=1e-4)


def test_evaluate_reports_nll_bits_and_latent_statistics(trained):
    import tensorflow as tf

    model, x = trained
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(len(x), np.int64))).batch(64)
    out = evaluation.evaluate(model, ds, iwae_k=200, seed=0)
    json.dumps(out)
    assert out["n_examples"] == len(x) and out["iwae_k"] == 200
    assert out["nll"] < out["negative_elbo"]
    assert out["bits_per_dim_nll"] == pytest.approx(out["nll"] / (64 * np.log(2)))
    # Latent statistics against numpy on the encoder's outputs.
    mean, log_var = (np.asarray(t, np.float64) for t in model.encode(x))
    kl = 0.5 * (mean**2 + np.exp(log_var) - 1 - log_var).mean(0)
    np.testing.assert_allclose(out["kl_per_dim"], kl, rtol=1e-5, atol=1e-7)
    assert out["active_units"] == int(np.sum(mean.var(0) > 0.01))
    assert sum(out["kl_per_dim"]) == pytest.approx(out["kl_loss"], rel=1e-4)
    assert "nll" not in evaluation.evaluate(model, ds)


def test_active_units_untrained_trained_and_collapsed(make_vae):
    x, _ = load_arrays("digits")
    x = (np.random.default_rng(0).random(x.shape) < x).astype("float32")
    counts = {}
    for beta in (1.0, 4.0):
        keras.utils.set_random_seed(0)
        model = make_vae(latent_dim=6, beta=beta, arch_options={"hidden_units": [64]})
        kernel = model.encoder.get_layer("z_mean").kernel
        kernel.assign(kernel * 0.01)  # an encoder whose means barely move yet
        counts["untrained"] = evaluation.latent_statistics(model, x)["active_units"]
        model.compile(keras.optimizers.Adam(3e-3))
        model.fit(x, batch_size=64, epochs=6, verbose=0)
        counts[beta] = evaluation.latent_statistics(model, x)
    assert counts["untrained"] == 0
    assert counts[1.0]["active_units"] == 6  # the ELBO uses every unit here
    assert counts[4.0]["active_units"] <= 1  # beta = 4: posterior collapse
    assert max(counts[4.0]["kl_per_dim"]) < min(counts[1.0]["kl_per_dim"])


def test_bad_inputs(trained):
    import tensorflow as tf

    model, x = trained
    for k in (0, -3, 2.5, None):
        with pytest.raises(ValueError, match="IWAE needs K >= 1"):
            evaluation.iwae_nll(model, x, k=k)
    with pytest.raises(ValueError, match="IWAE needs K >= 1"):
        evaluation.evaluate(model, tf.data.Dataset.from_tensor_slices(x).batch(8), iwae_k=0)
    with pytest.raises(ValueError, match="chunk"):
        evaluation.iwae_nll(model, x, k=5, chunk=0)
    with pytest.raises(ValueError, match="Empty image array"):
        evaluation.iwae_nll(model, x[:0], k=5)
    with pytest.raises(ValueError, match="do not fit a model"):
        evaluation.iwae_nll(model, np.zeros((3, 7, 7, 1), "float32"), k=5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        evaluation.latent_statistics(model, x * 255)


def test_cli_evaluate_iwae(trained, tmp_path, capsys):
    model, x = trained
    path = keras_vae.saving.save_model(model, tmp_path / "m.keras")
    assert cli.main(["evaluate", str(path), "--dataset", "digits", "--split", "train[:100]",
                     "--iwae-k", "64"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"negative_elbo", "nll", "bits_per_dim_nll", "active_units", "kl_per_dim"} <= set(out)
    assert out["nll"] < out["negative_elbo"] and len(out["kl_per_dim"]) == 4
    assert cli.main(["evaluate", str(path), "--iwae-k", "0"]) == 2  # usage error, no work
    assert "argument --iwae-k: must be in [1, " in capsys.readouterr().err
