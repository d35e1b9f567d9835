"""VAE-GAN: which step moves which weights, the losses against numpy, saving, fit, export."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
import keras_vae.export
from keras_vae import saving, training
from keras_vae.models.vaegan import VAEGAN, build_discriminator


def _images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 8, 8, 1)) > 0.5).astype(np.float32)


def _model(**kwargs):
    kwargs.setdefault("arch", "conv")
    kwargs.setdefault("arch_options", {"filters": [4, 8], "dense_units": 16})
    kwargs.setdefault("disc_options", {"filters": [4, 8], "units": 16})
    return VAEGAN(image_shape=(8, 8, 1), latent_dim=3, seed=0, **kwargs)


def _values(variables):
    return [np.array(v) for v in variables]


def _changed(before, variables):
    return [not np.array_equal(b, np.asarray(v)) for b, v in zip(before, variables)]


def _softplus(t):
    return np.logaddexp(0.0, t)


def _seed_states(model):
    return [np.array(s.seed_generator.state) for s in (model.sampling, model.prior_sampling)]


def _set_seed_states(model, states):
    for layer, state in zip((model.sampling, model.prior_sampling), states):
        layer.seed_generator.state.assign(state)


def test_variables_split_into_three_disjoint_groups():
    model = _model()
    groups = [model.encoder_variables, model.decoder_variables, model.discriminator_variables]
    ids = [{id(v) for v in g} for g in groups]
    assert all(ids) and not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set.union(*ids) == {id(v) for v in model.trainable_variables}
    assert {id(v) for v in model.encoder.trainable_variables} == ids[0]


def test_discriminator_step_leaves_encoder_and_decoder_unchanged():
    model = _model()
    model.compile()
    x = _images(16)
    generator = _values(model.generator_variables)
    disc = _values(model.discriminator_variables)
    model.discriminator_step(x)
    assert not any(_changed(generator, model.generator_variables))
    assert all(_changed(disc, model.discriminator_variables))
    assert int(model.d_optimizer.iterations) == 1 and int(model.optimizer.iterations) == 0


def test_generator_step_leaves_the_discriminator_unchanged():
    model = _model()
    model.compile()
    x = _images(16)
    encoder, decoder = _values(model.encoder_variables), _values(model.decoder_variables)
    disc = _values(model.discriminator_variables)
    model.generator_step(x)
    assert not any(_changed(disc, model.discriminator_variables))
    assert all(_changed(encoder, model.encoder_variables))
    assert all(_changed(decoder, model.decoder_variables))
    assert int(model.optimizer.iterations) == 1 and int(model.d_optimizer.iterations) == 0


def test_encoder_and_decoder_each_follow_their_own_loss():
    """With SGD, the step is -lr * grad(encoder_loss) on the encoder, -lr * grad(decoder_loss)
    on the decoder (gamma * feature - GAN), and -lr * grad(d_loss) on the discriminator."""
    lr = 0.1
    model = _model(gamma=0.3, beta=0.7, pixel_weight=0.5)
    model.compile(keras.optimizers.SGD(lr), d_optimizer=keras.optimizers.SGD(lr))
    x = _images(16)
    for step, loss_of in ((model.generator_step, {"encoder": "encoder_loss",
                                                   "decoder": "decoder_loss"}),
                          (model.discriminator_step, {"discriminator": "d_loss"})):
        states = _seed_states(model)
        groups = {name: getattr(model, f"{name}_variables") for name in loss_of}
        with tf.GradientTape(persistent=True) as tape:
            terms = model.gan_terms(x, training=True)  # the noise the step will draw
            means = {name: tf.reduce_mean(terms[loss]) for name, loss in loss_of.items()}
        want = {name: tape.gradient(means[name], groups[name]) for name in loss_of}
        del tape
        _set_seed_states(model, states)
        before = {name: _values(v) for name, v in groups.items()}
        step(x)
        for name, variables in groups.items():
            for b, v, g in zip(before[name], variables, want[name]):
                np.testing.assert_allclose(b - np.asarray(v), lr * np.asarray(g),
                                           rtol=1e-4, atol=1e-6, err_msg=name)


def test_losses_match_a_numpy_reference():
    gamma, beta, pixel = 0.25, 0.5, 0.3
    model = _model(gamma=gamma, beta=beta, feature_layer=0, pixel_weight=pixel)
    rng = np.random.default_rng(3)
    x = _images(5, seed=1)
    eps = rng.standard_normal((5, 3)).astype(np.float32)
    z_prior = rng.standard_normal((5, 3)).astype(np.float32)
    terms = {k: np.asarray(v) for k, v in model.gan_terms(x, eps=eps, z_prior=z_prior).items()
             if v is not None}

    mean, log_var = (np.asarray(t) for t in model.encode(x))
    z = mean + np.exp(log_var / 2) * eps
    logits = np.asarray(model.decoder([z]))  # Bernoulli logits
    logits_prior = np.asarray(model.decoder([z_prior]))
    pixel_nll = (_softplus(logits) - x * logits).reshape(5, -1).sum(1)
    kl = 0.5 * (np.exp(log_var) + mean**2 - 1 - log_var).sum(1)

    def disc(images):
        *features, logit = (np.asarray(t) for t in model.discriminator(images))
        return features[0], logit[:, 0]

    f_real, l_real = disc(x)
    f_rec, l_rec = disc(1 / (1 + np.exp(-logits)))
    _, l_prior = disc(1 / (1 + np.exp(-logits_prior)))
    feature = 0.5 * ((f_real - f_rec) ** 2).reshape(5, -1).sum(1)
    d_loss = _softplus(-l_real) + _softplus(l_rec) + _softplus(l_prior)
    g_loss = _softplus(-l_rec) + _softplus(-l_prior)
    want = {"reconstruction_loss": pixel_nll, "kl_loss": kl, "feature_loss": feature,
            "d_loss": d_loss, "g_loss": g_loss,
            "encoder_loss": beta * kl + feature + pixel * pixel_nll,
            "decoder_loss": gamma * feature + g_loss + pixel * pixel_nll,
            "loss": beta * kl + (1 + gamma) * feature + g_loss + 2 * pixel * pixel_nll, "z": z}
    for name, value in want.items():
        np.testing.assert_allclose(terms[name], value, rtol=2e-5, atol=2e-5, err_msg=name)
    assert terms["feature_loss"].min() > 0 and terms["g_loss"].shape == (5,)


def test_bad_settings_fail_with_a_clear_error():
    with pytest.raises(ValueError, match="feature_layer"):
        _model(feature_layer=3)
    with pytest.raises(ValueError, match="standard_normal"):
        _model(prior="mixture", prior_options={"components": 2})
    with pytest.raises(ValueError, match="iwae_k"):
        _model(iwae_k=2)
    with pytest.raises(ValueError, match="disc_options"):
        _model(disc_options={"filterz": [4]})
    with pytest.raises(ValueError, match="gamma"):
        _model(gamma=-1)
    with pytest.raises(ValueError, match="pixel_weight"):
        _model(pixel_weight=-1)
    assert training.MODELS.get("vaegan") is VAEGAN


def test_discriminator_outputs_features_then_a_logit():
    disc = build_discriminator((8, 8, 1), filters=(4, 8), units=16)
    *features, logit = disc(np.zeros((2, 8, 8, 1), "float32"))
    assert [tuple(f.shape) for f in features] == [(2, 4, 4, 4), (2, 2, 2, 8), (2, 16)]
    assert tuple(logit.shape) == (2, 1)
    flat = build_discriminator((12,), filters=(6,), units=5)
    assert [tuple(t.shape) for t in flat(np.zeros((3, 12), "float32"))] == [(3, 6), (3, 5),
                                                                              (3, 1)]


def test_fit_logs_every_metric_and_moves_both_optimizers():
    model = _model()
    model.compile()
    x = _images(32)
    history = model.fit(x, batch_size=16, epochs=2, validation_data=(_images(16, seed=2),),
                        verbose=0).history
    names = ["loss", "reconstruction_loss", "feature_loss", "kl_loss", "d_loss", "g_loss"]
    assert set(history) == set(names) | {f"val_{n}" for n in names}
    assert all(np.all(np.isfinite(history[n])) for n in history)
    # the pixel NLL of binary 8x8 images is below 64 log 2 nats once the decoder learns
    assert history["reconstruction_loss"][-1] < 64 * np.log(2) + 5
    assert int(model.optimizer.iterations) == int(model.d_optimizer.iterations) == 4
    images = model.sample(3, seed=0)
    assert images.shape == (3, 8, 8, 1) and np.all((images >= 0) & (images <= 1))
    np.testing.assert_array_equal(images, model.sample(3, seed=0))


def test_save_and_load_keep_both_optimizers(tmp_path):
    model = _model()
    model.compile(d_optimizer=keras.optimizers.RMSprop(3e-4))
    x = _images(32)
    model.fit(x, batch_size=16, epochs=1, verbose=0)
    loaded = saving.load_model(saving.save_model(model, tmp_path / "gan.keras"))
    assert isinstance(loaded, VAEGAN) and isinstance(loaded.d_optimizer, keras.optimizers.RMSprop)
    assert loaded.d_optimizer.learning_rate.numpy() == pytest.approx(3e-4)
    for mine, theirs in ((model.optimizer, loaded.optimizer),
                         (model.d_optimizer, loaded.d_optimizer)):
        assert int(theirs.iterations) == int(mine.iterations) == 2
        assert len(theirs.variables) == len(mine.variables) > 2
        for a, b in zip(theirs.variables, mine.variables):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert loaded.gamma == model.gamma and loaded.feature_layer == model.feature_layer


@pytest.mark.slow
def test_load_in_a_fresh_process_keeps_optimizers_and_samples(tmp_path):
    model = _model()
    model.compile()
    model.fit(_images(32), batch_size=16, epochs=1, verbose=0)
    path = saving.save_model(model, tmp_path / "gan.keras")
    want = model.sample(4, seed=5)
    dump = tmp_path / "state.npz"
    script = textwrap.dedent(f"""
        import json, numpy as np, keras
        import keras_vae
        m = keras.saving.load_model({str(path)!r})
        np.save({str(tmp_path / "s.npy")!r}, m.sample(4, seed=5))
        np.savez({str(dump)!r}, *[np.asarray(v) for v in m.optimizer.variables],
                 *[np.asarray(v) for v in m.d_optimizer.variables])
        print(json.dumps({{"cls": type(m).__name__, "iters": int(m.optimizer.iterations),
                          "d_iters": int(m.d_optimizer.iterations)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"cls": "VAEGAN", "iters": 2, "d_iters": 2}
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), want, atol=1e-6)
    saved = np.load(dump)
    mine = [*model.optimizer.variables, *model.d_optimizer.variables]
    assert len(saved.files) == len(mine)
    for i, v in enumerate(mine):
        np.testing.assert_array_equal(saved[f"arr_{i}"], np.asarray(v))


@pytest.mark.slow
def test_cli_trains_a_vaegan_and_the_onnx_sampler_gives_its_samples(tmp_path):
    from keras_vae import cli

    run = tmp_path / "run"
    assert cli.main(["train", "--model", "vaegan", "--dataset", "digits", "--epochs", "1",
                     "--latent-dim", "4", "--arch-options",
                     '{"filters": [4, 8], "dense_units": 16}', "--disc-options",
                     '{"filters": [4, 8], "units": 16}', "--gamma", "0.1", "--pixel-weight", "0.5",
                     "--out", str(run),
                     "--verbose", "0"]) == 0
    history = json.loads((run / "history.json").read_text())["history"]
    assert {"d_loss", "g_loss", "feature_loss", "val_reconstruction_loss"} <= set(history)
    model = saving.load_model(run / "model.keras")
    assert isinstance(model, VAEGAN) and (model.gamma, model.pixel_weight) == (0.1, 0.5)
    out = tmp_path / "export"
    manifest = keras_vae.export.export(model, out, formats="onnx",
                                       graphs=tuple(model.export_graphs()))
    assert {f["graph"] for f in manifest["files"]} == {"decoder", "encoder"}
    target = tmp_path / "s.npy"
    done = subprocess.run([sys.executable, str(out / "sample_onnx.py"), str(out), "--n", "5",
                           "--seed", "7", "--out", str(target)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(target), model.sample(5, seed=7), atol=1e-5)
    assert cli.main(["train", "--model", "vaegan", "--prior", "mixture", "--dataset", "digits",
                     "--out", str(tmp_path / "bad")]) == 2


MIRRORED_SCRIPT = textwrap.dedent('''
    import json
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from keras import ops
    import keras_vae
    from keras_vae import training

    class DataNoise(keras.layers.Layer):
        """Noise as a fixed function of each example: the same on whatever replica."""
        def __init__(self, shift, **kwargs):
            super().__init__(**kwargs)
            self.shift = shift
        def call(self, z_mean):
            return ops.stop_gradient(ops.sin(7.0 * z_mean + self.shift))

    x = (np.random.default_rng(0).random((18, 8, 8, 1)) > 0.5).astype("float32")

    def run(strategy):
        def make_model():
            m = keras_vae.VAEGAN(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                                 arch_options={"hidden_units": [16]}, seed=0,
                                 disc_options={"filters": [4, 8], "units": 16})
            m.sampling, m.prior_sampling = DataNoise(0.3), DataNoise(1.1)
            m.compile(keras.optimizers.SGD(0.05), d_optimizer=keras.optimizers.SGD(0.05))
            return m
        ds = tf.data.Dataset.from_tensor_slices(x).batch(18)
        model, history, _ = training.train(make_model, ds, epochs=1, strategy=strategy,
                                           seed=0, verbose=0)
        return model, history.history

    m1, h1 = run(tf.distribute.MirroredStrategy(["/cpu:0"]))
    m2, h2 = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
    keras.utils.set_random_seed(0)  # what train(seed=0) does before make_model
    m0 = keras_vae.VAEGAN(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                          arch_options={"hidden_units": [16]}, seed=0,
                          disc_options={"filters": [4, 8], "units": 16})
    def error(a, b):
        return max(float(np.abs(np.asarray(u) - np.asarray(v)).max()) for u, v in zip(a, b))
    print("RESULT" + json.dumps({
        "replicas": m2.distribute_strategy.num_replicas_in_sync,
        "weight_error": error(m1.trainable_variables, m2.trainable_variables),
        "moved": error(m1.trainable_variables, m0.trainable_variables),
        "losses_1": {k: float(v[0]) for k, v in h1.items()},
        "losses_2": {k: float(v[0]) for k, v in h2.items()}}))
''')


@pytest.mark.slow
def test_two_replicas_take_the_step_of_one(tmp_path):
    path = tmp_path / "script.py"
    path.write_text(MIRRORED_SCRIPT)
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    assert out["replicas"] == 2
    assert out["moved"] > 1e-3, "the step must change the weights"
    assert out["weight_error"] < 1e-5, out
    for name, value in out["losses_1"].items():
        assert out["losses_2"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
