"""Likelihoods and the posterior against closed forms and numpy references."""

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from keras_vae.parts import likelihoods
from keras_vae.parts.posterior import DiagonalGaussian, standard_normal_log_prob


def _softplus(v):
    return np.logaddexp(0.0, v)


def test_bernoulli_matches_numpy_reference():
    rng = np.random.default_rng(1)
    x = rng.random((3, 4, 4, 1)).astype(np.float32)
    logits = rng.normal(0, 3, (3, 4, 4, 1)).astype(np.float32)
    got = likelihoods.Bernoulli().log_prob(x, logits).numpy()
    want = np.sum(x * logits - _softplus(logits), axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_bernoulli_finite_loss_and_gradients_at_extreme_logits():
    x = tf.constant([[0.0, 1.0, 0.0, 1.0]])
    logits = tf.Variable([[1e4, -1e4, -1e4, 1e4]])
    with tf.GradientTape() as tape:
        lp = likelihoods.Bernoulli().log_prob(x, logits)
    grad = tape.gradient(lp, logits)
    assert np.isfinite(lp.numpy()).all() and np.isfinite(grad.numpy()).all()
    # Two confidently wrong pixels cost 1e4 nats each; two right ones cost ~0.
    np.testing.assert_allclose(lp.numpy(), [-2e4], rtol=1e-6)
    # d/dl [x l - softplus(l)] = x - sigmoid(l)
    np.testing.assert_allclose(grad.numpy(), [[-1.0, 1.0, 0.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_gaussian_matches_scipy(scale):
    rng = np.random.default_rng(2)
    x = rng.random((2, 3, 3, 1)).astype(np.float32)
    mu = rng.random((2, 3, 3, 1)).astype(np.float32)
    got = likelihoods.Gaussian(scale).log_prob(x, mu).numpy()
    want = stats.norm.logpdf(x, mu, scale).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_gaussian_learned_scale_is_a_trainable_weight():
    g = likelihoods.get("gaussian_learned")
    assert [w.name for w in g.trainable_weights] == ["log_scale"]
    x = np.zeros((1, 2), np.float32)
    np.testing.assert_allclose(g.log_prob(x, x).numpy(), stats.norm.logpdf([0, 0]).sum(),
                               rtol=1e-6)


def test_likelihood_registry_errors_list_valid_names():
    with pytest.raises(ValueError, match="bernoulli.*gaussian"):
        likelihoods.get("poisson")
    with pytest.raises(ValueError, match="positive"):
        likelihoods.Gaussian(-1.0)


def test_kl_closed_form_matches_monte_carlo():
    mean = np.array([[0.5, -1.0, 2.0]], np.float32)
    log_var = np.array([[0.0, -1.0, 0.7]], np.float32)
    q = DiagonalGaussian(mean, log_var)
    eps = np.random.default_rng(3).standard_normal((200_000, 3)).astype(np.float32)
    z = q.sample(eps)
    mc = np.mean(q.log_prob(z).numpy() - standard_normal_log_prob(z).numpy())
    closed = float(np.sum(q.kl().numpy()))
    assert abs(mc - closed) < 0.02 * closed
    # and against the textbook formula
    want = 0.5 * np.sum(mean**2 + np.exp(log_var) - 1 - log_var)
    np.testing.assert_allclose(closed, want, rtol=1e-6)


def test_extreme_log_variance_gives_finite_kl_and_samples():
    q = DiagonalGaussian(np.zeros((1, 2), np.float32), np.array([[1e3, -1e3]], np.float32))
    kl = q.kl().numpy()
    assert np.isfinite(kl).all()
    assert np.isfinite(q.sample(np.ones((1, 2), np.float32)).numpy()).all()
