"""KL schedules, free bits and the IWAE training bound: closed forms, serialization, the CLI."""

import json

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import cli, evaluation
from keras_vae.data import load_arrays
from keras_vae.parts import objectives


def _digits_binary(n=None):
    x, y = load_arrays("digits")
    x = (np.random.default_rng(0).random(x.shape) < x).astype("float32")
    return (x, y) if n is None else (x[:n], y[:n])


# ------------------------------------------------------------------ schedules


@pytest.mark.parametrize("step", [0, 1, 3, 9, 10, 11, 250])
def test_linear_warmup_closed_form(step):
    assert float(objectives.LinearWarmup(10)(step)) == pytest.approx(min(1.0, step / 10))
    assert float(objectives.LinearWarmup(10, start=0.2)(step)) == pytest.approx(
        0.2 + 0.8 * min(1.0, step / 10))


@pytest.mark.parametrize("step", [0, 1, 2, 4, 5, 7, 8, 9, 12, 15, 16, 17, 30])
def test_cyclical_closed_form(step):
    # Period 8, rising over the first half: 0, .25, .5, .75, 1, 1, 1, 1, 0, ...
    expected = min(1.0, (step % 8) / 4)
    assert float(objectives.CyclicalSchedule(8)(step)) == pytest.approx(expected)
    assert float(objectives.CyclicalSchedule(8, ramp_fraction=0.25)(step)) == pytest.approx(
        min(1.0, (step % 8) / 2))
    # After two cycles the weight stays at 1.
    limited = float(objectives.CyclicalSchedule(8, cycles=2)(step))
    assert limited == pytest.approx(1.0 if step >= 16 else expected)


def test_constant_schedule_and_tensor_steps():
    assert float(objectives.ConstantSchedule(0.3)(1234)) == pytest.approx(0.3)
    step = keras.Variable(5, dtype="int64")
    assert float(objectives.LinearWarmup(20)(step)) == pytest.approx(0.25)


def test_registry_and_round_trip():
    for name, kwargs in [("linear", {"steps": 7, "start": 0.1}), ("cyclical", {"period": 9}),
                         ("constant", {"value": 0.5})]:
        schedule = objectives.get(name, **kwargs)
        assert isinstance(schedule, objectives.SCHEDULES[name])
        config = keras.saving.serialize_keras_object(schedule)
        json.dumps(config)  # JSON-able
        back = objectives.get(config)
        assert type(back) is type(schedule) and back.get_config() == schedule.get_config()
        for step in (0, 3, 8, 100):
            assert float(back(step)) == pytest.approx(float(schedule(step)))
    assert objectives.get(None) is None
    same = objectives.LinearWarmup(3)
    assert objectives.get(same) is same


def test_bad_schedules_and_objective_arguments(make_vae):
    with pytest.raises(ValueError, match=r"valid names: \['constant', 'cyclical', 'linear'\]"):
        objectives.get("cosine")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        objectives.LinearWarmup(0)
    with pytest.raises(ValueError, match="ramp_fraction"):
        objectives.CyclicalSchedule(10, ramp_fraction=0.0)
    with pytest.raises(ValueError, match="cycles"):
        objectives.CyclicalSchedule(10, cycles=0)
    with pytest.raises(ValueError, match="schedule object"):
        objectives.get(3.5)
    with pytest.raises(ValueError, match="free_bits"):
        make_vae(free_bits=-0.1)
    with pytest.raises(ValueError, match="free_bits"):
        make_vae(free_bits=float("nan"))
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
        make_vae(iwae_k=0)
    with pytest.raises(ValueError, match="K must be an integer >= 1"):
        make_vae(iwae_k=2.5)
    with pytest.raises(ValueError, match="one or the other"):
        make_vae(free_bits=0.5, iwae_k=4)


# ------------------------------------------------------- objective closed forms


def test_warmup_is_read_from_the_optimizer_inside_the_compiled_step(make_vae):
    """The logged loss is rec + beta * w(step) * KL, with step the optimizer's count."""
    x, _ = _digits_binary(64)
    model = make_vae(beta=2.0, kl_schedule=objectives.LinearWarmup(10))
    for steps_done in (2, 6, 13):
        todo = steps_done - int(model.optimizer.iterations)
        model.fit(x[:8 * todo], batch_size=8, epochs=1, verbose=0)  # `todo` steps
        assert int(model.optimizer.iterations) == steps_done
        # The same compiled test function each time: a Python-side weight would be stale.
        out = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
        w = min(1.0, steps_done / 10)
        assert out["loss"] == pytest.approx(
            out["reconstruction_loss"] + 2.0 * w * out["kl_loss"], rel=1e-5)
        assert float(model.kl_weight()) == pytest.approx(2.0 * w)


def test_free_bits_closed_form(make_vae):
    x, _ = _digits_binary(48)
    model = make_vae(latent_dim=4)
    eps = np.random.default_rng(1).standard_normal((48, 4)).astype("float32")
    terms = model.elbo_terms(x, eps=eps)
    kl = np.asarray(terms["kl_per_dim"], np.float64)  # (48, 4)
    rec = np.asarray(terms["reconstruction_loss"], np.float64)
    mean_kl = kl.mean(0)
    lam = float(np.median(mean_kl))  # some dimensions under the floor, some above
    assert (mean_kl < lam).any() and (mean_kl > lam).any()
    free = make_vae(latent_dim=4, free_bits=lam, beta=1.5)
    free.set_weights(model.get_weights())
    per_example = np.asarray(free.per_example_loss(free.elbo_terms(x, eps=eps)), np.float64)
    # Batch mean: rec + beta * sum_j max(lambda, mean_batch KL_j) (Kingma et al., 2016).
    expected = rec.mean() + 1.5 * np.maximum(lam, mean_kl).sum()
    assert per_example.mean() == pytest.approx(expected, rel=1e-5)
    # Per example: own KL on dimensions above the floor, the floor elsewhere.
    per_dim = np.where(mean_kl > lam, kl, lam)
    np.testing.assert_allclose(per_example, rec + 1.5 * per_dim.sum(1), rtol=1e-5)
    # Without free bits the objective is the plain beta-ELBO.
    plain = np.asarray(model.per_example_loss(terms))
    np.testing.assert_allclose(plain, rec + kl.sum(1), rtol=1e-5)


def test_free_bits_gradient_ignores_dimensions_under_the_floor(make_vae):
    import tensorflow as tf

    x, _ = _digits_binary(32)
    model = make_vae(latent_dim=3, free_bits=100.0)  # every dimension under the floor
    eps = np.zeros((32, 3), "float32")
    weights = model.encoder.get_layer("z_log_var").trainable_variables
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.per_example_loss(model.elbo_terms(x, eps=eps)))
    grads = tape.gradient(loss, weights)
    # With eps = 0 the reconstruction ignores the variance: only the KL could move it.
    for g in grads:
        assert g is None or float(tf.reduce_max(tf.abs(g))) == 0.0
    assert float(loss) == pytest.approx(
        float(np.mean(model.elbo_terms(x, eps=eps)["reconstruction_loss"])) + 300.0, rel=1e-5)


def test_iwae_objective_closed_form(make_vae):
    x, _ = _digits_binary(16)
    k = 5
    model = make_vae(latent_dim=3, iwae_k=k)
    eps = np.random.default_rng(2).standard_normal((k, 16, 3)).astype("float32")
    terms = model.elbo_terms(x, eps=eps)
    # Reference: each sample through the single-sample path, log-ratio in numpy.
    mean, log_var = (np.asarray(t, np.float64) for t in model.encode(x))
    log_lik, log_ratio = [], []
    for i in range(k):
        single = model.elbo_terms(x, eps=eps[i])
        log_lik.append(-np.asarray(single["reconstruction_loss"], np.float64))
        z = mean + np.exp(0.5 * log_var) * eps[i]
        log_pz = -0.5 * (z**2 + np.log(2 * np.pi)).sum(1)
        log_qz = -0.5 * ((z - mean) ** 2 / np.exp(log_var) + log_var + np.log(2 * np.pi)).sum(1)
        log_ratio.append(log_pz - log_qz)
    log_w = np.stack(log_lik) + np.stack(log_ratio)  # (K, batch)
    np.testing.assert_allclose(np.asarray(terms["log_likelihood"]), np.stack(log_lik), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(terms["log_ratio"]), np.stack(log_ratio),
                               rtol=1e-4, atol=1e-4)
    m = log_w.max(0)
    expected = -(m + np.log(np.mean(np.exp(log_w - m), axis=0)))
    loss = np.asarray(model.per_example_loss(terms))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # Jensen: the IWAE bound is tighter than the average single-sample ELBO.
    assert np.all(loss <= -log_w.mean(0) + 1e-4)
    # Honest terms: reconstruction is the mean over samples, KL analytic.
    np.testing.assert_allclose(np.asarray(terms["reconstruction_loss"]),
                               -np.stack(log_lik).mean(0), rtol=1e-5)
    # K = 1 is the negative ELBO.
    one = model.elbo_terms(x, eps=eps[:1])
    np.testing.assert_allclose(np.asarray(model.per_example_loss(one)),
                               -log_w[0], rtol=1e-5)


def test_iwae_training_fits_and_logs_honest_terms(make_vae):
    x, _ = _digits_binary(256)
    model = make_vae(latent_dim=3, iwae_k=8)
    history = model.fit(x, batch_size=64, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    out = model.evaluate(x, batch_size=256, verbose=0, return_dict=True)
    # loss is the IWAE bound, below the (8-sample) ELBO estimate logged beside it.
    assert out["loss"] < out["reconstruction_loss"] + out["kl_loss"]


def test_objectives_saved_with_the_model(make_vae, tmp_path):
    x, _ = _digits_binary(64)
    model = make_vae(kl_schedule=objectives.CyclicalSchedule(6, ramp_fraction=0.5, cycles=3),
                     free_bits=0.25, beta=0.5)
    model.fit(x, batch_size=32, epochs=1, verbose=0)  # 2 steps
    path = keras_vae.saving.save_model(model, tmp_path / "m.keras")
    loaded = keras_vae.saving.load_model(path)
    assert isinstance(loaded.kl_schedule, objectives.CyclicalSchedule)
    assert loaded.kl_schedule.get_config() == {"period": 6, "ramp_fraction": 0.5, "cycles": 3}
    assert loaded.free_bits == 0.25 and loaded.beta == 0.5 and loaded.iwae_k == 1
    assert int(loaded.optimizer.iterations) == 2
    assert float(loaded.kl_weight()) == pytest.approx(0.5 * 2 / 3)
    iwae = make_vae(iwae_k=3)
    loaded = keras_vae.saving.load_model(keras_vae.saving.save_model(iwae, tmp_path / "i.keras"))
    assert loaded.iwae_k == 3 and loaded.kl_schedule is None


def test_free_bits_keep_units_from_collapsing(make_vae):
    """beta = 4 collapses every unit in a few epochs; a 0.5-nat floor keeps them all."""
    x, _ = _digits_binary()
    stats = {}
    for free_bits in (0.0, 0.5):
        keras.utils.set_random_seed(0)
        model = make_vae(latent_dim=6, beta=4.0, free_bits=free_bits,
                         arch_options={"hidden_units": [64]})
        model.compile(keras.optimizers.Adam(3e-3))
        model.fit(x, batch_size=64, epochs=6, verbose=0)
        stats[free_bits] = evaluation.latent_statistics(model, x)
    assert stats[0.0]["active_units"] <= 1
    assert stats[0.5]["active_units"] == 6
    assert min(stats[0.5]["kl_per_dim"]) > 0.3


@pytest.mark.slow
def test_cli_train_objective_flags(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli.main(["train", "--dataset", "digits", "--split", "train[:256]", "--arch", "mlp",
                   "--latent-dim", "3", "--epochs", "1", "--batch-size", "64", "--verbose", "0",
                   "--kl-warmup", "40", "--kl-schedule", "cyclical", "--free-bits", "0.2",
                   "--validation-fraction", "0", "--out", str(out)])
    assert rc == 0
    model = keras_vae.saving.load_model(out / "model.keras")
    assert model.kl_schedule.get_config()["period"] == 40
    assert model.free_bits == pytest.approx(0.2)
    rc = cli.main(["train", "--dataset", "digits", "--split", "train[:128]", "--arch", "mlp",
                   "--latent-dim", "3", "--epochs", "1", "--verbose", "0", "--iwae-k", "0",
                   "--out", str(tmp_path / "bad")])
    assert rc == 2 and "argument --iwae-k: must be in [1, " in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
