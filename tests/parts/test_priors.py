"""Learned priors (mixture, VampPrior) and the fitted sampling prior, against numpy."""

import keras
import numpy as np
import pytest
from scipy.special import logsumexp

import keras_vae
from keras_vae import recipes
from keras_vae.parts import priors

LOG_2PI = np.log(2 * np.pi)


def np_mixture_log_prob(z, weights, means, log_vars):
    """log sum_k w_k N(z; mu_k, diag exp(lv_k)) in float64."""
    z, means, log_vars = (np.asarray(a, np.float64) for a in (z, means, log_vars))
    comp = np.sum(-0.5 * ((z[..., None, :] - means) ** 2 / np.exp(log_vars) + log_vars
                          + LOG_2PI), axis=-1)
    return logsumexp(comp + np.log(np.asarray(weights, np.float64)), axis=-1)


def randomize(prior, seed=0):
    """Moves every weight of a prior away from its initial value."""
    rng = np.random.default_rng(seed)
    for w in prior.weights:
        w.assign(rng.normal(size=w.shape).astype(np.float32))


def test_mixture_log_prob_and_manifest_against_numpy(make_vae):
    vae = make_vae("mlp", latent_dim=3, prior="mixture", prior_options={"components": 4})
    prior = vae.prior
    assert prior.components == 4 and prior.means.shape == (4, 3)
    randomize(prior)
    logits = prior.logits.numpy().astype(np.float64)
    weights = np.exp(logits) / np.exp(logits).sum()
    table = prior.manifest(3)
    np.testing.assert_allclose(table["weights"], weights, rtol=1e-12)
    np.testing.assert_array_equal(table["means"], prior.means.numpy())
    np.testing.assert_array_equal(table["log_vars"], prior.log_vars.numpy())
    z = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)  # any leading axes
    want = np_mixture_log_prob(z, weights, table["means"], table["log_vars"])
    np.testing.assert_allclose(prior.log_prob(z), want, rtol=1e-5, atol=1e-5)
    # The default K, and the table reaches VAE.sample through the shared recipe.
    assert make_vae("mlp", prior="mixture").prior.components == 10
    z = recipes.sample_prior(table, 6, 3, seed=4)
    np.testing.assert_allclose(vae.sample(6, seed=4), vae.decode(z).numpy(), atol=1e-6)


def test_vamp_prior_is_the_mixture_of_the_encoders_posteriors(make_vae):
    vae = make_vae("mlp", latent_dim=3, prior="vamp", prior_options={"components": 5})
    prior = vae.prior
    u = prior.pseudo_inputs().numpy()
    assert u.shape == (5, 8, 8, 1) and u.min() > 0 and u.max() < 1  # sigmoid-squashed
    images = np.random.default_rng(0).random((5, 8, 8, 1)).astype(np.float32) * 0.9 + 0.05
    prior.set_pseudo_inputs(images)
    np.testing.assert_allclose(prior.pseudo_inputs(), images, atol=1e-5)
    mean, log_var = (t.numpy() for t in vae.encode(images))
    table = prior.manifest(3)
    np.testing.assert_allclose(table["weights"], np.full(5, 0.2))
    np.testing.assert_allclose(table["means"], mean, atol=1e-5)
    np.testing.assert_allclose(table["log_vars"], log_var, atol=1e-5)
    z = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    want = np_mixture_log_prob(z, np.full(5, 0.2), mean, log_var)
    np.testing.assert_allclose(prior.log_prob(z), want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unconditional"):
        make_vae("mlp", prior="vamp", num_classes=3)


@pytest.mark.parametrize("name", ["mixture", "vamp"])
def test_kl_is_monte_carlo_and_iwae_uses_the_priors_log_prob(make_vae, tiny_images, name):
    vae = make_vae("mlp", latent_dim=3, prior=name, prior_options={"components": 3})
    randomize(vae.prior, seed=2)
    x = tiny_images[0][:8]
    eps = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    terms = vae.elbo_terms(x, eps=eps)
    assert terms["kl_per_dim"] is None
    mean, log_var = (np.float64(t) for t in vae.encode(x))
    z = mean + np.exp(0.5 * log_var) * eps
    log_q = np.sum(-0.5 * ((z - mean) ** 2 / np.exp(log_var) + log_var + LOG_2PI), axis=1)
    table = vae.prior.manifest(3)
    log_p = np_mixture_log_prob(z, table["weights"], table["means"], table["log_vars"])
    np.testing.assert_allclose(terms["kl_loss"], log_q - log_p, rtol=1e-4, atol=1e-4)
    eps3 = np.random.default_rng(1).standard_normal((4, 8, 3)).astype(np.float32)
    terms = vae.elbo_terms(x, eps=eps3)
    z3 = mean + np.exp(0.5 * log_var) * eps3
    log_q3 = np.sum(-0.5 * ((z3 - mean) ** 2 / np.exp(log_var) + log_var + LOG_2PI), axis=-1)
    log_p3 = np_mixture_log_prob(z3, table["weights"], table["means"], table["log_vars"])
    np.testing.assert_allclose(terms["log_ratio"], log_p3 - log_q3, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["mixture", "vamp"])
def test_learned_priors_train_and_are_saved_with_the_model(make_vae, tiny_images, tmp_path,
                                                           name):
    vae = make_vae("mlp", latent_dim=3, prior=name, prior_options={"components": 3})
    before = [w.numpy().copy() for w in vae.prior.weights]
    assert all(w.trainable for w in vae.prior.weights)
    vae.fit(tiny_images[0], epochs=1, batch_size=32, verbose=0)
    after = [w.numpy() for w in vae.prior.weights]
    assert all(np.abs(a - b).max() > 0 for a, b in zip(after, before))  # the prior learns
    randomize(vae.prior, seed=3)
    path = keras_vae.saving.save_model(vae, tmp_path / "m.keras")
    loaded = keras.saving.load_model(path)
    assert type(loaded.prior) is type(vae.prior) and loaded.prior.components == 3
    for got, want in zip(loaded.prior.weights, vae.prior.weights):
        np.testing.assert_array_equal(got.numpy(), want.numpy())
    np.testing.assert_allclose(loaded.prior.manifest(3)["means"], vae.prior.manifest(3)["means"],
                               atol=1e-6)
    np.testing.assert_allclose(loaded.sample(4, seed=1), vae.sample(4, seed=1), atol=1e-6)


def test_prior_options_errors_are_clear(make_vae):
    with pytest.raises(ValueError, match="does not take options"):
        make_vae("mlp", prior="normal", prior_options={"components": 3})
    with pytest.raises(ValueError, match="components >= 1"):
        make_vae("mlp", prior="mixture", prior_options={"components": 0})
    with pytest.raises(ValueError, match="valid names"):
        make_vae("mlp", prior="gmm")
    with pytest.raises(ValueError, match="given by name"):
        priors.get(priors.StandardNormal(), components=2)


def two_cluster_images(n=300, share=0.3, seed=0):
    """Images near-constant 0.1 (a `share` of them) or 0.9, a little noise."""
    rng = np.random.default_rng(seed)
    level = np.where(rng.random(n) < share, 0.1, 0.9).astype(np.float32)
    x = level[:, None, None, None] + rng.normal(0, 0.01, (n, 8, 8, 1)).astype(np.float32)
    return np.clip(x, 0, 1), level


def test_fit_mixture_recovers_the_aggregate_posteriors_clusters(make_vae):
    vae = make_vae("mlp", latent_dim=3)
    x, level = two_cluster_images()
    codes = priors.aggregate_latents(vae, x)
    np.testing.assert_allclose(codes, vae.encode(x)[0].numpy(), atol=1e-6)
    fitted = priors.fit_mixture(vae, x, components=2, seed=0)
    table = fitted.manifest(3)
    low = int(np.argmin(np.linalg.norm(np.asarray(table["means"])
                                       - codes[level == 0.1].mean(0), axis=1)))
    assert table["weights"][low] == pytest.approx(np.mean(level == 0.1), abs=0.01)
    np.testing.assert_allclose(table["means"][low], codes[level == 0.1].mean(0), atol=1e-3)
    np.testing.assert_allclose(table["means"][1 - low], codes[level == 0.9].mean(0), atol=1e-3)
    # A fitted mixture explains its codes far better than N(0, I) does.
    assert float(np.mean(fitted.log_prob(codes))) > float(
        np.mean(priors.StandardNormal().log_prob(codes))) + 5
    with pytest.raises(ValueError, match="cannot fit"):
        priors.fit_mixture(vae, x[:3], components=5)
    with pytest.raises(ValueError, match="'mean' or 'sample'"):
        priors.aggregate_latents(vae, x, latents="median")
    # Sampled codes scatter around the means by the posterior's spread.
    sampled = priors.aggregate_latents(vae, x, latents="sample", seed=1)
    std = np.exp(0.5 * vae.encode(x)[1].numpy())
    assert np.std((sampled - codes) / std) == pytest.approx(1.0, abs=0.05)


def test_sampling_prior_changes_samples_and_manifest_not_the_objective(make_vae, tiny_images,
                                                                      tmp_path):
    vae = make_vae("mlp", latent_dim=3)
    x = tiny_images[0][:16]
    eps = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    loss_before = vae.negative_elbo(x, eps=eps).numpy()
    table = {"type": "mixture", "weights": [0.25, 0.75], "means": [[3.0, 0, 0], [0, -3.0, 1]],
             "log_vars": [[-2.0, -2, -2], [-1.0, 0, -3]]}
    vae.sampling_prior = priors.FittedMixture(table["weights"], table["means"],
                                              table["log_vars"])
    np.testing.assert_array_equal(vae.negative_elbo(x, eps=eps).numpy(), loss_before)
    assert vae.prior_table()["type"] == "mixture"
    z = recipes.sample_prior(table, 5, 3, seed=7)
    np.testing.assert_allclose(vae.sample(5, seed=7), vae.decode(z).numpy(), atol=1e-6)
    loaded = keras.saving.load_model(keras_vae.saving.save_model(vae, tmp_path / "m.keras"))
    assert isinstance(loaded.sampling_prior, priors.FittedMixture)
    assert isinstance(loaded.prior, priors.StandardNormal)
    np.testing.assert_allclose(loaded.sample(5, seed=7), vae.sample(5, seed=7), atol=1e-6)
    np.testing.assert_allclose(loaded.prior_table()["means"], table["means"])
    with pytest.raises(ValueError, match="over 3 latent dimensions"):
        make_vae("mlp", latent_dim=4).sampling_prior = loaded.sampling_prior
    with pytest.raises(ValueError, match="non-negative weights"):
        priors.FittedMixture([0.5, -0.5], table["means"], table["log_vars"])
    vae.sampling_prior = None
    np.testing.assert_allclose(vae.sample(3, seed=1),
                               vae.decode(keras_vae.prior_z(3, 3, seed=1)).numpy(), atol=1e-6)


def test_vamp_pseudo_inputs_started_at_binary_data_keep_learning(make_vae):
    """Regression: pseudo-inputs set from binarized digits were frozen.

    Through a sigmoid, a 0/1 pixel sits at a logit of about +-7 where the
    gradient is ~1e-3: the pseudo-inputs never left the training digits they
    started at, the encoder learned wide posteriors at exactly those inputs,
    and extrapolated them to log-variances of ~15 on some held-out MNIST digits
    (held-out negative ELBO 191 to 2063 nats). Through the hardtanh a pixel in
    the range is its parameter: the Jacobian is the identity.
    """
    vae = make_vae("mlp", latent_dim=3, prior="vamp", prior_options={"components": 4})
    prior = vae.prior
    rng = np.random.default_rng(0)
    binary = (rng.random((4, 8, 8, 1)) < 0.3).astype(np.float32)
    prior.set_pseudo_inputs(binary)
    np.testing.assert_allclose(prior.pseudo_inputs().numpy(), binary, atol=1.5e-3)
    w = rng.normal(size=binary.shape).astype(np.float32)
    import tensorflow as tf

    with tf.GradientTape() as tape:
        y = keras.ops.sum(prior.pseudo_inputs() * w)
    np.testing.assert_allclose(tape.gradient(y, prior.pseudo_params).numpy(), w, rtol=1e-6)
    # Trained on binary images, the pseudo-inputs move by the optimizer's steps
    # (Adam, lr 1e-3: ~1e-3 per step), not by 1e-3 of them.
    x = (rng.random((64, 8, 8, 1)) < 0.3).astype(np.float32)
    vae.fit(x, epochs=2, batch_size=16, verbose=0)
    moved = np.abs(prior.pseudo_inputs().numpy() - binary)
    assert moved.max() > 4e-3 and np.mean(moved > 1e-4) > 0.2
    u = prior.pseudo_inputs().numpy()
    assert u.min() >= 0.0 and u.max() <= 1.0  # kept in the data's range


def test_vamp_squash_is_saved_and_old_configs_load_as_sigmoid(make_vae, tmp_path):
    vae = make_vae("mlp", latent_dim=3, prior="vamp", prior_options={"components": 3})
    assert vae.prior.squash == "hardtanh" and vae.prior.get_config()["squash"] == "hardtanh"
    loaded = keras.saving.load_model(keras_vae.saving.save_model(vae, tmp_path / "m.keras"))
    assert loaded.prior.squash == "hardtanh"
    np.testing.assert_array_equal(loaded.prior.pseudo_inputs().numpy(),
                                  vae.prior.pseudo_inputs().numpy())
    config = {k: v for k, v in vae.prior.get_config().items() if k != "squash"}
    assert priors.VampPrior.from_config(config).squash == "sigmoid"
    old = make_vae("mlp", latent_dim=3, prior="vamp",
                   prior_options={"components": 3, "squash": "sigmoid"})
    old.prior.pseudo_params.assign(np.zeros((3, 8, 8, 1), np.float32))
    np.testing.assert_allclose(old.prior.pseudo_inputs().numpy(), 0.5)  # sigmoid(0)
    with pytest.raises(ValueError, match="squash must be one of"):
        priors.VampPrior(squash="tanh")


def test_monte_carlo_kl_with_k_samples_is_the_mean_over_samples(make_vae):
    """With K samples and no closed form, kl_loss is -mean_k log_ratio (computed once), which
    equals the mean of the prior's one-sample estimate at each of the K codes."""
    vae = make_vae("mlp", latent_dim=3, prior="vamp", prior_options={"components": 4},
                   iwae_k=4)
    x = np.random.default_rng(0).random((5, 8, 8, 1), dtype=np.float32)
    terms = vae.elbo_terms(x)
    q = vae.posterior(x)
    per_sample = [np.asarray(vae.prior.kl(q, terms["z"][k])) for k in range(4)]
    np.testing.assert_allclose(terms["kl_loss"], np.mean(per_sample, axis=0), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(terms["kl_loss"], -np.mean(terms["log_ratio"], axis=0),
                               rtol=1e-6, atol=1e-6)
