"""beta-TCVAE: the MWS decomposition against numpy, its sum, its metrics and its config."""

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae.models.tcvae import TCVAE, tc_decomposition
from keras_vae.parts.priors import StandardNormal

LOG_2PI = np.log(2 * np.pi)


def np_log_normal(z, mean, log_var):
    return -0.5 * ((z - mean) ** 2 / np.exp(log_var) + log_var + LOG_2PI)


def np_mws(z, mean, log_var, n):
    """Chen et al.'s minibatch-weighted sampling, written out with loops in float64."""
    z, mean, log_var = (np.asarray(a, np.float64) for a in (z, mean, log_var))
    m, d = z.shape
    mi, tc, dw = [], [], []
    for i in range(m):
        per_dim = np.array([np_log_normal(z[i], mean[j], log_var[j]) for j in range(m)])  # (m, d)
        log_q_x = np_log_normal(z[i], mean[i], log_var[i]).sum()
        log_q = np.log(np.sum(np.exp(per_dim.sum(1)))) - np.log(n * m)
        log_marg = sum(np.log(np.sum(np.exp(per_dim[:, k]))) - np.log(n * m) for k in range(d))
        log_p = np_log_normal(z[i], 0.0, 0.0).sum()
        mi.append(log_q_x - log_q)
        tc.append(log_q - log_marg)
        dw.append(log_marg - log_p)
    return np.array(mi), np.array(tc), np.array(dw)


def fixed_tensors(m=6, d=3, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(m, d)).astype(np.float32)
    log_var = rng.uniform(-2, 0.5, size=(m, d)).astype(np.float32)
    z = (mean + np.exp(0.5 * log_var) * rng.normal(size=(m, d))).astype(np.float32)
    return z, mean, log_var


def test_mws_decomposition_against_a_numpy_reference():
    z, mean, log_var = fixed_tensors()
    got = tc_decomposition(z, mean, log_var, 1000, StandardNormal().log_prob_per_dim(z))
    mi, tc, dw = np_mws(z, mean, log_var, 1000)
    np.testing.assert_allclose(got["mutual_info"], mi, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got["total_correlation"], tc, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(got["dimwise_kl"], dw, rtol=1e-5, atol=1e-4)
    # The three terms telescope into the sample's KL estimate log q(z|x) - log p(z).
    kl = np.sum(np_log_normal(np.float64(z), mean, log_var) - np_log_normal(np.float64(z), 0, 0),
                axis=1)
    np.testing.assert_allclose(mi + tc + dw, kl, atol=1e-4)


def test_total_correlation_grows_with_the_dependence_between_dimensions():
    # Sharp posteriors at codes from a 2-D Gaussian of correlation rho: TC(rho) - TC(0)
    # estimates -log(1 - rho^2) / 2 = 0.83 nats for rho = 0.9 (MWS's constant
    # offset, log(batch) per extra dimension, cancels in the difference).
    rng = np.random.default_rng(0)
    m = 512
    tc = {}
    for rho in (0.0, 0.9):
        mean = rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=m).astype(np.float32)
        log_var = np.full((m, 2), 2 * np.log(0.05), np.float32)
        z = mean + 0.05 * rng.standard_normal((m, 2)).astype(np.float32)
        parts = tc_decomposition(z, mean, log_var, m, StandardNormal().log_prob_per_dim(z))
        tc[rho] = float(np.mean(parts["total_correlation"]))
    assert 0.4 < tc[0.9] - tc[0.0] < 1.2
    assert tc[0.0] == pytest.approx(np.log(m), abs=1.0)


def make_tcvae(tc_beta=4.0, **kwargs):
    kwargs.setdefault("arch_options", {"hidden_units": [16]})
    model = TCVAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp", seed=0, tc_beta=tc_beta,
                  dataset_size=kwargs.pop("dataset_size", 64), **kwargs)
    model.compile()
    return model


def test_regularizer_is_the_weighted_decomposition_and_tc_beta_1_is_the_kl(tiny_images):
    x = tiny_images[0][:16]
    eps = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    model = make_tcvae(tc_beta=5.0)
    terms = model.elbo_terms(x, eps=eps)
    mean, log_var = (np.float64(t) for t in model.encode(x))
    mi, tc, dw = np_mws(mean + np.exp(0.5 * log_var) * eps, mean, log_var, 64)
    np.testing.assert_allclose(model.regularizer(terms), mi + 5.0 * tc + dw, rtol=1e-4, atol=1e-3)
    # tc_beta = 1: the regularizer is the Monte Carlo KL at the sample, whose mean over
    # many noise draws is the closed-form KL the plain VAE trains on.
    model.tc_beta = 1.0
    draws = np.random.default_rng(1).standard_normal((400, 16, 3)).astype(np.float32)
    regs = np.stack([model.regularizer(model.elbo_terms(x, eps=e)).numpy() for e in draws[:40]])
    q = keras_vae.DiagonalGaussian(mean, log_var)
    z = mean + np.exp(0.5 * log_var) * draws[:40]
    mc_kl = np.stack([q.log_prob(zk).numpy() - StandardNormal().log_prob(zk).numpy()
                      for zk in z])
    np.testing.assert_allclose(regs, mc_kl, rtol=1e-4, atol=1e-3)
    closed = terms["kl_loss"].numpy()  # (16,)
    z_all = mean + np.exp(0.5 * log_var) * draws
    kl_all = np.sum(np_log_normal(z_all, mean, log_var) - np_log_normal(z_all, 0, 0), -1)
    stderr = kl_all.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(kl_all.mean(0) - closed) < 4 * stderr + 1e-3)


def test_tcvae_logs_the_decomposition_and_its_loss_adds_up(tiny_images):
    model = make_tcvae(tc_beta=3.0)
    x = tiny_images[0]
    history = model.fit(x, epochs=1, batch_size=32, verbose=0).history
    for key in ("mutual_info", "total_correlation", "dimwise_kl", "loss"):
        assert np.isfinite(history[key][0])
    logs = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)  # one batch
    want = (logs["reconstruction_loss"] + logs["mutual_info"] + 3.0 * logs["total_correlation"]
            + logs["dimwise_kl"])
    assert logs["loss"] == pytest.approx(want, rel=1e-5, abs=1e-3)


def test_tcvae_is_saved_with_its_config(tmp_path, tiny_images):
    model = make_tcvae(tc_beta=2.5, dataset_size=7000)
    path = keras_vae.saving.save_model(model, tmp_path / "t.keras")
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, TCVAE)
    assert loaded.tc_beta == 2.5 and loaded.dataset_size == 7000
    x = tiny_images[0][:8]
    eps = np.zeros((8, 3), np.float32)
    np.testing.assert_allclose(loaded.regularizer(loaded.elbo_terms(x, eps=eps)),
                               model.regularizer(model.elbo_terms(x, eps=eps)), atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"dataset_size": None}, "needs dataset_size"),
    ({"dataset_size": 0}, "needs dataset_size"),
    ({"tc_beta": -1.0}, "tc_beta must be"),
    ({"iwae_k": 5}, "iwae_k=1"),
    ({"prior": "mixture"}, "factorizes over dimensions"),
])
def test_tcvae_rejects_what_its_estimate_cannot_handle(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_tcvae(**kwargs)
