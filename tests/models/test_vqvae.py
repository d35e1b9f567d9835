"""VQ-VAE: straight-through gradients, the two losses, EMA and restarts, steps, saving."""

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae  # noqa: F401 (registers the parts)
from keras_vae import saving
from keras_vae.models.vqvae import VQVAE, VectorQuantizer, perplexity


def _quantizer(n=5, d=3, **kwargs):
    q = VectorQuantizer(n, d, seed=0, **kwargs)
    q.build()
    return q


def _nearest_numpy(flat, codebook):
    d2 = ((flat[:, None, :] - codebook[None]) ** 2).sum(-1)  # (m, N)
    return d2.argmin(1)


def _binary_images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((n, 8, 8, 1)) > 0.5).astype(np.float32)


def _template_images(n=64, seed=0):
    """Four fixed binary patterns with 5% of pixels flipped: structure a VQ-VAE can learn."""
    rng = np.random.default_rng(seed)
    templates = rng.random((4, 8, 8, 1)) > 0.5
    x = templates[rng.integers(0, 4, n)] ^ (rng.random((n, 8, 8, 1)) < 0.05)
    return x.astype(np.float32)


def test_straight_through_gives_the_encoder_the_decoders_input_gradient():
    model = VQVAE(image_shape=(8, 8, 1), codebook_size=6, code_dim=3, seed=0)
    x = tf.constant(_binary_images(4))
    with tf.GradientTape(persistent=True) as tape:
        z_e = model.encoder(x)
        tape.watch(z_e)
        terms = model.quantizer(z_e)
        z_q = terms["quantized"]
        params = model.decoder(z_q)
        loss = tf.reduce_sum(-model.likelihood.log_prob(x, params))
    g_e, g_q = tape.gradient(loss, z_e), tape.gradient(loss, z_q)
    assert float(tf.reduce_max(tf.abs(g_q))) > 0
    np.testing.assert_array_equal(g_e.numpy(), g_q.numpy())
    # The forward value is the codebook vector, not z_e.
    codebook = model.quantizer.codebook.numpy()
    idx = terms["indices"].numpy()
    np.testing.assert_allclose(z_q.numpy(), codebook[idx], atol=1e-6)


def test_codebook_and_commitment_losses_match_numpy():
    q = _quantizer(5, 3, commitment_cost=0.4)
    rng = np.random.default_rng(1)
    codebook = rng.standard_normal((5, 3)).astype(np.float32)
    q.codebook.assign(codebook)
    z_e = rng.standard_normal((2, 3, 2, 3)).astype(np.float32)
    out = q(tf.constant(z_e))
    flat = z_e.reshape(-1, 3)
    idx = _nearest_numpy(flat, codebook)
    np.testing.assert_array_equal(out["indices"].numpy(), idx.reshape(2, 3, 2))
    sq = ((z_e - codebook[idx].reshape(z_e.shape)) ** 2).reshape(2, -1).sum(1)
    np.testing.assert_allclose(out["codebook_loss"].numpy(), sq, rtol=1e-5)
    np.testing.assert_allclose(out["commitment_loss"].numpy(), 0.4 * sq, rtol=1e-5)
    np.testing.assert_array_equal(out["counts"].numpy(), np.bincount(idx, minlength=5))


def test_losses_send_gradients_to_the_right_side():
    """Codebook loss moves only the codebook; commitment only the encoder output."""
    q = _quantizer(4, 2)
    z_e = tf.Variable(np.random.default_rng(2).standard_normal((1, 2, 2, 2)), dtype=tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        out = q(z_e)
        cb, cm = tf.reduce_sum(out["codebook_loss"]), tf.reduce_sum(out["commitment_loss"])
    assert tape.gradient(cb, z_e) is None or not np.any(tape.gradient(cb, z_e).numpy())
    assert np.any(tf.convert_to_tensor(tape.gradient(cb, q.codebook.value)).numpy())
    assert tape.gradient(cm, q.codebook.value) is None
    assert np.any(tape.gradient(cm, z_e).numpy())


def test_ema_update_matches_a_hand_computed_step():
    n, d, decay, eps = 3, 2, 0.9, 1e-5
    q = _quantizer(n, d, ema=True, decay=decay)
    codebook = np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], np.float32)
    q.codebook.assign(codebook)
    q.ema_sum.assign(codebook)  # counts start at one: the codebook is sum / count
    flat = np.array([[0.1, 0.0], [0.9, 1.2], [1.1, 0.8], [0.2, -0.2]], np.float32)
    idx = _nearest_numpy(flat, codebook)  # [0, 1, 1, 0]; code 2 unused
    q.update_ema(tf.constant(flat), tf.constant(idx.astype(np.int32)))
    counts = np.array([2.0, 2.0, 0.0])
    sums = np.array([flat[[0, 3]].sum(0), flat[[1, 2]].sum(0), [0.0, 0.0]])
    count = decay * 1.0 + (1 - decay) * counts
    ema_sum = decay * codebook + (1 - decay) * sums
    total = count.sum()
    smoothed = (count + eps) / (total + n * eps) * total
    np.testing.assert_allclose(q.ema_count.numpy(), count, rtol=1e-6)
    np.testing.assert_allclose(q.ema_sum.numpy(), ema_sum, rtol=1e-6)
    np.testing.assert_allclose(q.codebook.numpy(), ema_sum / smoothed[:, None], rtol=1e-5)
    assert not q.codebook.trainable


def test_dead_codes_restart_from_encoder_outputs_after_idle_steps():
    q = _quantizer(4, 2, restart_after=2)
    codebook = np.array([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0], [-50.0, 50.0]], np.float32)
    q.codebook.assign(codebook)
    flat = tf.constant([[0.1, 0.1], [0.9, 1.0], [1.0, 0.9]], tf.float32)
    counts = tf.constant([1.0, 2.0, 0.0, 0.0])
    assert float(q.restart_dead_codes(flat, counts)) == 0  # idle one step
    np.testing.assert_array_equal(q.codebook.numpy(), codebook)
    np.testing.assert_array_equal(q.unused_steps.numpy(), [0, 0, 1, 1])
    assert float(q.restart_dead_codes(flat, counts)) == 2  # idle two steps: restarted
    new = q.codebook.numpy()
    np.testing.assert_array_equal(new[:2], codebook[:2])
    for row in new[2:]:
        assert any(np.array_equal(row, f) for f in flat.numpy())
    np.testing.assert_array_equal(q.unused_steps.numpy(), [0, 0, 0, 0])


def test_perplexity_is_the_number_of_equally_used_codes():
    assert float(perplexity(tf.constant([3.0, 3.0, 3.0, 3.0]))) == pytest.approx(4.0, rel=1e-5)
    assert float(perplexity(tf.constant([7.0, 0.0, 0.0]))) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("ema", [False, True])
def test_fit_lowers_the_loss_and_logs_the_vq_metrics(ema):
    x = _template_images(64)
    model = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, ema=ema,
                  restart_after=5, seed=0)
    model.compile(keras.optimizers.Adam(3e-3))
    history = model.fit(x, batch_size=16, epochs=6, verbose=0).history
    assert set(history) == {"loss", "reconstruction_loss", "vq_loss", "perplexity",
                            "codebook_usage"}
    # The reconstruction improves (the VQ terms can grow early on while the
    # encoder's outputs and the codebook settle on a common scale).
    assert history["reconstruction_loss"][-1] < history["reconstruction_loss"][0] - 1.0
    assert 1.0 <= history["perplexity"][-1] <= 8.0
    assert 0.0 < history["codebook_usage"][-1] <= 1.0
    logs = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    terms = model.vq_terms(tf.constant(x))
    want = float(np.mean(terms["reconstruction_loss"] + terms["vq_loss"]))
    assert logs["loss"] == pytest.approx(want, rel=1e-4)


def test_indices_round_trip_and_shapes():
    model = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0)
    x = _binary_images(5)
    idx = model.encode_indices(x)
    assert idx.shape == (5, 2, 2) and idx.dtype == np.int32
    np.testing.assert_allclose(model.decode_indices(idx), model.reconstruct(x), atol=1e-6)
    images = model.sample(3, seed=1)
    assert images.shape == (3, 8, 8, 1) and np.all((images >= 0) & (images <= 1))
    np.testing.assert_array_equal(model.sample_codes(3, seed=1), model.sample_codes(3, seed=1))
    with pytest.raises(ValueError, match="divisible by 4"):
        VQVAE(image_shape=(10, 8, 1))
    with pytest.raises(ValueError, match="Codes must be in"):
        model.decode_indices(np.full((1, 2, 2), 8))


def test_save_and_load_keep_weights_optimizer_and_outputs(tmp_path):
    x = _binary_images(32)
    model = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, ema=True, seed=0)
    model.compile()
    model.fit(x, batch_size=16, epochs=1, verbose=0)
    path = saving.save_model(model, tmp_path / "vq.keras")
    loaded = saving.load_model(path)
    assert isinstance(loaded, VQVAE) and loaded.quantizer.ema
    np.testing.assert_array_equal(loaded.encode_indices(x), model.encode_indices(x))
    np.testing.assert_allclose(loaded.reconstruct(x), model.reconstruct(x), atol=1e-6)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_load_in_a_fresh_process_gives_the_same_samples(tmp_path):
    from keras_vae.parts import code_prior

    x = _binary_images(32)
    model = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0)
    model.compile()
    model.fit(x, batch_size=16, epochs=1, verbose=0)
    code_prior.train_prior(model, x, epochs=2, filters=8, blocks=1, verbose=0)
    path = saving.save_model(model, tmp_path / "vq.keras")
    want = model.sample(4, seed=5)
    script = textwrap.dedent(f"""
        import json, numpy as np, keras
        import keras_vae
        m = keras.saving.load_model({str(path)!r})
        np.save({str(tmp_path / "s.npy")!r}, m.sample(4, seed=5))
        print(json.dumps({{"cls": type(m).__name__, "iters": int(m.optimizer.iterations),
                          "prior": m.code_prior is not None,
                          "trainable": len(m.trainable_variables)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info == {"cls": "VQVAE", "iters": 2, "prior": True,
                    "trainable": len(model.trainable_variables)}
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), want, atol=1e-6)


@pytest.mark.slow
def test_cli_trains_a_vqvae_then_its_prior_then_exports_it(tmp_path, capsys):
    from keras_vae import cli

    run = tmp_path / "run"
    assert cli.main(["train", "--model", "vqvae", "--codebook-size", "8", "--code-dim", "4",
                     "--dataset", "digits", "--epochs", "1", "--out", str(run),
                     "--verbose", "0"]) == 0
    assert {p.name for p in run.iterdir()} >= {"model.keras", "samples.png",
                                               "reconstructions.png", "history.json"}
    history = json.loads((run / "history.json").read_text())["history"]
    assert {"perplexity", "codebook_usage", "val_reconstruction_loss"} <= set(history)
    capsys.readouterr()
    assert cli.main(["train-code-prior", str(run / "model.keras"), "--dataset", "digits",
                     "--split", "train[:90%]", "--test-split", "train[90%:]", "--epochs", "1",
                     "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    assert f"Wrote {run / 'model_prior.keras'}" in out
    figure = json.loads(out.splitlines()[0])
    assert figure["negative_elbo"] == pytest.approx(
        figure["reconstruction_nll"] + figure["code_nll"])
    assert 0 < figure["bits_per_grid"] < 4 * np.log2(8)
    model = saving.load_model(run / "model_prior.keras")
    assert model.code_prior is not None
    assert cli.main(["evaluate", str(run / "model_prior.keras"), "--dataset", "digits",
                     "--split", "train[90%:]"]) == 0
    evaluated = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert evaluated["negative_elbo"] == pytest.approx(figure["negative_elbo"], rel=1e-4)
    assert cli.main(["train-code-prior", str(run / "history.json"), "--dataset", "digits"]) == 2
    assert cli.main(["export", str(run / "model_prior.keras"), "--formats", "onnx",
                     "--out", str(tmp_path / "export")]) == 0
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert sorted(e["graph"] for e in manifest["files"]) == ["decoder", "encoder", "prior"]


MIRRORED_SCRIPT = textwrap.dedent('''
    import json
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    import keras_vae
    from keras_vae import training

    x = (np.random.default_rng(0).random((18, 8, 8, 1)) > 0.5).astype("float32")

    def run(strategy, ema):
        def make_model():
            m = keras_vae.VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0,
                                ema=ema, restart_after=1)
            m.compile(keras.optimizers.SGD(0.05))
            return m
        ds = tf.data.Dataset.from_tensor_slices(x).batch(18)
        model, history, _ = training.train(make_model, ds, epochs=2, strategy=strategy,
                                           seed=0, verbose=0)
        return model, history.history

    def error(a, b):
        return max(float(np.abs(np.asarray(u) - np.asarray(v)).max()) for u, v in zip(a, b))

    ema = sys.argv[1] == "ema"  # one setting per process: strategies share collective keys
    m1, h1 = run(tf.distribute.MirroredStrategy(["/cpu:0"]), ema)
    m2, h2 = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), ema)
    print("RESULT" + json.dumps({
        "replicas": m2.distribute_strategy.num_replicas_in_sync,
        "codebook_error": error([m1.quantizer.codebook], [m2.quantizer.codebook]),
        "idle_error": error([m1.quantizer.unused_steps], [m2.quantizer.unused_steps]),
        "weight_error": error(m1.trainable_variables, m2.trainable_variables),
        "first_usage": float(h1["codebook_usage"][0]),
        "losses_1": {k: float(v[-1]) for k, v in h1.items()},
        "losses_2": {k: float(v[-1]) for k, v in h2.items()}}))
''')


@pytest.mark.slow
@pytest.mark.parametrize("codebook", ["ema", "gradient"])
def test_two_replicas_take_the_step_of_one(tmp_path, codebook):
    """Counts, EMA sums and dead-code bookkeeping are summed over replicas: a mirrored
    two-replica step equals the one-device step (codebook, idle counts, metrics)."""
    path = tmp_path / "script.py"
    path.write_text(MIRRORED_SCRIPT)
    proc = subprocess.run([sys.executable, str(path), codebook], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    out = json.loads(line[len("RESULT"):])
    assert out["replicas"] == 2
    assert out["first_usage"] < 1  # idle codes in the first step: restarted (restart_after=1)
    assert out["codebook_error"] < 1e-5 and out["idle_error"] == 0, out
    assert out["weight_error"] < 1e-5, out
    for name, value in out["losses_1"].items():
        assert out["losses_2"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
