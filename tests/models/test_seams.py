"""The seams parts plug into: prior, posterior, regularizer(terms), likelihood parameters,
model-owned export graphs, distribution helpers."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import recipes
from keras_vae.parts import priors

MIXTURE = {"type": "mixture", "weights": [0.2, 0.8],
           "means": [[-3.0, 0.0, 1.0], [4.0, 2.0, -1.0]],
           "log_vars": [[0.0, -2.0, 0.5], [-1.0, 0.0, -4.0]]}


@keras.saving.register_keras_serializable(package="keras_vae_tests")
class FixedMixture(priors.Prior):
    """A test prior: a fixed two-component mixture, no closed-form KL."""

    def log_prob(self, z):
        z = tf.cast(z, tf.float32)
        w = tf.constant(MIXTURE["weights"], tf.float32)
        mu = tf.constant(MIXTURE["means"], tf.float32)
        lv = tf.constant(MIXTURE["log_vars"], tf.float32)
        zk = z[..., None, :]  # (..., 1, d)
        comp = tf.reduce_sum(-0.5 * ((zk - mu) ** 2 * tf.exp(-lv) + lv + np.log(2 * np.pi)), -1)
        return tf.reduce_logsumexp(comp + tf.math.log(w), axis=-1)

    def manifest(self, latent_dim):
        return dict(MIXTURE)


def test_standard_normal_draws_are_numpys_default_rng_call_exactly():
    z = priors.get("standard_normal").sample(7, 5, seed=11)
    want = np.random.default_rng(11).standard_normal((7, 5), dtype=np.float32)
    np.testing.assert_array_equal(z, want)
    np.testing.assert_array_equal(keras_vae.prior_z(7, 5, seed=11), want)


def test_mixture_draws_follow_the_documented_numpy_recipe_and_the_weights():
    z = recipes.sample_prior(MIXTURE, 20000, 3, seed=5)
    rng = np.random.default_rng(5)
    u = rng.random(20000)
    k = (u >= 0.2).astype(int)  # cdf [0.2, 1.0], side="right"
    eps = rng.standard_normal((20000, 3), dtype=np.float32)
    mu, lv = np.float32(MIXTURE["means"]), np.float32(MIXTURE["log_vars"])
    np.testing.assert_array_equal(z, (mu[k] + np.exp(0.5 * lv[k]) * eps).astype(np.float32))
    share = np.mean(np.linalg.norm(z - mu[1], axis=1) < np.linalg.norm(z - mu[0], axis=1))
    assert share == pytest.approx(0.8, abs=0.02)
    with pytest.raises(ValueError, match="mixture prior"):
        recipes.sample_prior({**MIXTURE, "weights": [1.0]}, 2, 3, seed=0)
    with pytest.raises(ValueError, match="Unknown prior 'vamp'"):
        recipes.sample_prior({"type": "vamp"}, 2, 3, seed=0)


def test_vae_samples_and_scores_with_the_prior_it_is_given(make_vae, tiny_images):
    x, _ = tiny_images
    vae = make_vae("mlp", latent_dim=3, prior=FixedMixture())
    z = recipes.sample_prior(MIXTURE, 6, 3, seed=2)
    np.testing.assert_allclose(vae.sample(6, seed=2), vae.decode(z).numpy(), atol=1e-6)
    eps = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    terms = vae.elbo_terms(x[:8], eps=eps)
    assert terms["kl_per_dim"] is None
    # Monte Carlo KL at the sample: log q(z) - log p(z), computed here with numpy.
    mean, log_var = (np.asarray(t, np.float64) for t in vae.encode(x[:8]))
    zs = mean + np.exp(0.5 * log_var) * eps
    log_q = np.sum(-0.5 * ((zs - mean) ** 2 / np.exp(log_var) + log_var + np.log(2 * np.pi)), 1)
    mu, lv = np.float64(MIXTURE["means"]), np.float64(MIXTURE["log_vars"])
    comp = np.sum(-0.5 * ((zs[:, None] - mu) ** 2 / np.exp(lv) + lv + np.log(2 * np.pi)), -1)
    log_p = np.log(np.sum(np.float64(MIXTURE["weights"]) * np.exp(comp), axis=1))
    np.testing.assert_allclose(terms["kl_loss"], log_q - log_p, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="free_bits"):
        make_vae("mlp", prior=FixedMixture(), free_bits=0.1)


def test_the_prior_is_saved_with_the_model(make_vae, tmp_path):
    vae = make_vae("mlp", latent_dim=3, prior=FixedMixture())
    path = keras_vae.saving.save_model(vae, tmp_path / "m.keras")
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.prior, FixedMixture)
    np.testing.assert_allclose(loaded.sample(4, seed=1), vae.sample(4, seed=1), atol=1e-6)


def test_regularizer_receives_the_whole_terms_dict(make_vae, tiny_images):
    seen = []

    class Recording(keras_vae.VAE):
        def regularizer(self, terms):
            seen.append(sorted(k for k, v in terms.items() if v is not None))
            return 0.0 * terms["kl_loss"] + tf.reduce_sum(terms["z"] * 0.0, axis=-1)

    vae = Recording(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                    arch_options={"hidden_units": [16]}, seed=0)
    vae.compile()
    x, _ = tiny_images
    logs = vae.fit(x, epochs=1, batch_size=32, verbose=0).history
    assert {"z", "z_mean", "z_log_var", "kl_per_dim", "kl_loss",
            "reconstruction_loss"} <= set(seen[0])
    # With a zero regularizer the loss is the reconstruction term alone.
    assert logs["loss"][0] == pytest.approx(logs["reconstruction_loss"][0], rel=1e-6)


@pytest.mark.parametrize("arch,shape", [("mlp", (8, 8, 1)), ("conv", (8, 8, 2)),
                                        ("lstm", (6, 3))])
def test_architectures_build_the_outputs_the_likelihood_asks_for(make_vae, arch, shape):
    options = {"lstm": {"units": 8}}.get(arch)
    vae = make_vae(arch, image_shape=shape, likelihood="gaussian_pixel",
                   **({"arch_options": options} if options else {}))
    assert vae.decoder.outputs[0].shape[1:] == (*shape[:-1], 2 * shape[-1])
    z = np.zeros((2, 3), np.float32)
    assert vae.decode(z).shape == (2, *shape)  # the mean: the first half of the parameters


def test_gaussian_pixel_log_prob_against_the_closed_form():
    rng = np.random.default_rng(0)
    x = rng.random((4, 5, 5, 2)).astype(np.float32)
    params = rng.normal(size=(4, 5, 5, 4)).astype(np.float32)
    got = keras_vae.parts.likelihoods.get("gaussian_pixel").log_prob(x, params).numpy()
    mu, log_s = params[..., :2].astype(np.float64), np.clip(params[..., 2:], -5, 2)
    want = np.sum(-0.5 * ((x - mu) / np.exp(log_s)) ** 2 - log_s - 0.5 * np.log(2 * np.pi),
                  axis=(1, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_distribution_helpers_outside_a_strategy():
    per_example = tf.constant([1.0, 2.0, 6.0])
    assert float(keras_vae.parts.distribute.average_loss(per_example)) == pytest.approx(3.0)
    assert int(keras_vae.parts.distribute.global_batch_size(per_example)) == 3
    metric = keras.metrics.Mean(name="loss")
    metric.update_state(per_example)
    assert float(keras_vae.parts.distribute.step_logs([metric])["loss"]) == pytest.approx(3.0)


def test_the_model_lists_its_export_graphs(make_vae):
    vae = make_vae("mlp", num_classes=4)
    graphs = vae.export_graphs()
    assert sorted(graphs) == ["decoder", "encoder", "scorer"]
    assert [i[0] for i in graphs["scorer"].inputs] == ["image", "eps", "label"]
    z = np.zeros((2, 3), np.float32)
    out = graphs["decoder"].fn(z=tf.constant(z), label=tf.constant([0, 3]))
    np.testing.assert_allclose(out["x"], vae.decode(z, np.array([0, 3])), atol=1e-7)
    assert graphs["decoder"].value_range == (0.0, 1.0)
    assert make_vae("mlp", likelihood="gaussian").export_graphs()["decoder"].value_range is None


def test_training_run_writes_the_run_directory_from_python(tmp_path):
    config = keras_vae.training.RunConfig(
        tmp_path / "run", dataset="digits", split="train[:256]", batch_size=64, epochs=1,
        model_config={"arch": "mlp", "latent_dim": 2, "arch_options": {"hidden_units": [16]}},
        verbose=0)
    result = keras_vae.training.run(config, record={"note": "from a notebook"})
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["history.json", "model.keras", "reconstructions.png", "samples.png"]
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["args"] == {"note": "from a notebook"} and len(history["history"]["loss"]) == 1
    assert keras_vae.training.RunConfig.from_dict(history["config"]) == config
    assert result.model.latent_dim == 2 and result.out == tmp_path / "run"
    with pytest.raises(FileExistsError):
        keras_vae.training.run(keras_vae.training.RunConfig(tmp_path / "run", dataset="digits",
                                                            epochs=1))
