"""The VAE model: ELBO against a numpy reference, training, saving."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import data


def _softplus(v):
    return np.logaddexp(0.0, v)


def _dense(h, layer, relu):
    w, b = layer.get_weights()
    h = h @ w + b
    return np.maximum(h, 0.0) if relu else h


def test_elbo_matches_numpy_reference(make_vae):
    model = make_vae("mlp", latent_dim=3, image_shape=(4, 4, 1),
                     arch_options={"hidden_units": [5]})
    rng = np.random.default_rng(0)
    x = rng.random((6, 4, 4, 1)).astype(np.float32)
    eps = rng.standard_normal((6, 3)).astype(np.float32)
    terms = model.elbo_terms(x, eps=eps)

    enc, dec = model.encoder, model.decoder
    h = _dense(x.reshape(6, -1), enc.get_layer("encoder_dense_0"), relu=True)
    mu = _dense(h, enc.get_layer("z_mean"), relu=False)
    log_var = _dense(h, enc.get_layer("z_log_var"), relu=False)
    z = mu + np.exp(0.5 * log_var) * eps
    h = _dense(z, dec.get_layer("decoder_dense_0"), relu=True)
    logits = _dense(h, dec.get_layer("decoder_logits"), relu=False)
    rec = -np.sum(x.reshape(6, -1) * logits - _softplus(logits), axis=1)
    kl = 0.5 * np.sum(mu**2 + np.exp(log_var) - 1.0 - log_var, axis=1)

    np.testing.assert_allclose(terms["reconstruction_loss"].numpy(), rec, rtol=1e-5)
    np.testing.assert_allclose(terms["kl_loss"].numpy(), kl, rtol=1e-5)
    np.testing.assert_allclose(model.negative_elbo(x, eps=eps).numpy(), rec + kl, rtol=1e-5)
    # beta weights only the KL of the training objective
    model.beta = 0.25
    np.testing.assert_allclose(model.per_example_loss(terms).numpy(), rec + 0.25 * kl,
                               rtol=1e-5)


def test_loss_and_gradients_unchanged_when_batch_is_duplicated(make_vae, tiny_images):
    model = make_vae("conv")
    x = tiny_images[0][:8]
    eps = np.random.default_rng(1).standard_normal((8, 3)).astype(np.float32)

    def loss_and_grads(xb, eb):
        with tf.GradientTape() as tape:
            loss = tf.nn.compute_average_loss(
                model.per_example_loss(model.elbo_terms(xb, eps=eb)))
        return loss.numpy(), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]

    loss1, grads1 = loss_and_grads(x, eps)
    loss2, grads2 = loss_and_grads(np.concatenate([x, x]), np.concatenate([eps, eps]))
    np.testing.assert_allclose(loss1, loss2, rtol=1e-6)
    for g1, g2 in zip(grads1, grads2):
        np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-6)


def test_fit_on_digits_lowers_loss_and_validates(make_vae):
    train, val = data.load("digits", batch_size=64, validation_fraction=0.1,
                           binarize="dynamic")
    model = make_vae("mlp", latent_dim=4, arch_options={"hidden_units": [64]})
    history = model.fit(train, validation_data=val, epochs=4, verbose=0).history
    assert set(history) >= {"loss", "reconstruction_loss", "kl_loss", "val_loss",
                            "val_reconstruction_loss", "val_kl_loss"}
    assert history["loss"][-1] < 0.8 * history["loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    # the logged loss is the ELBO: reconstruction + KL (beta = 1)
    np.testing.assert_allclose(
        history["val_loss"][-1],
        history["val_reconstruction_loss"][-1] + history["val_kl_loss"][-1], rtol=1e-4)


def test_fit_on_numpy_arrays_rescales_uint8(make_vae, tiny_images):
    model = make_vae("mlp")
    x = (tiny_images[0] * 255).astype(np.uint8)
    history = model.fit(x, batch_size=16, epochs=1, verbose=0).history
    # a Bernoulli NLL of 64 pixels is positive; 0..255 "probabilities" would go negative
    assert history["loss"][0] > 0


@pytest.mark.parametrize("arch", ["mlp", "conv", "resnet"])
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3), (30, 26, 1)])
def test_architectures_fit_any_image_shape(arch, shape):
    options = {"mlp": {"hidden_units": [8]},
               "conv": {"filters": [4, 8], "dense_units": 8},
               "resnet": {"filters": [4, 8], "dense_units": 8}}[arch]
    model = keras_vae.VAE(image_shape=shape, latent_dim=5, arch=arch, arch_options=options)
    x = np.random.default_rng(0).random((2, *shape)).astype(np.float32)
    z_mean, z_log_var = model.encode(x)
    assert z_mean.shape == (2, 5) and z_log_var.shape == (2, 5)
    assert model(x).shape == (2, *shape)
    assert model.sample(3, seed=0).shape == (3, *shape)


def test_sample_is_reproducible_and_in_unit_range(make_vae):
    model = make_vae("mlp")
    a, b = model.sample(5, seed=7), model.sample(5, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    z = keras_vae.prior_z(5, model.latent_dim, seed=7)
    np.testing.assert_allclose(a, model.decode(z).numpy(), atol=1e-6)
    assert not np.allclose(a, model.sample(5, seed=8))


def test_bad_model_arguments_are_named():
    with pytest.raises(ValueError, match="valid names.*conv"):
        keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="transformer")
    with pytest.raises(ValueError, match="valid names.*bernoulli"):
        keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, likelihood="laplace")
    with pytest.raises(ValueError, match="latent_dim"):
        keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=0)
    with pytest.raises(ValueError, match="height, width, channels"):
        keras_vae.VAE(image_shape=(64,), latent_dim=2, arch="conv")
    with pytest.raises(ValueError, match=r"\['dense_unit'\].*'conv'.*decoder_dense_units"):
        keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="conv",
                      arch_options={"dense_unit": 8})


def test_conv_decoder_dense_layer_is_its_own_option():
    def dense_shapes(model):
        return [tuple(layer.kernel.shape) for layer in model.layers
                if isinstance(layer, keras.layers.Dense)]

    common = dict(image_shape=(8, 8, 1), latent_dim=3, arch="conv")
    # By default z maps straight to the decoder's grid: 8x8 images, two
    # stride-2 stages, a 2x2x8 grid of 32 values.
    direct = keras_vae.VAE(**common, arch_options={"filters": [4, 8], "dense_units": 6})
    assert dense_shapes(direct.decoder) == [(3, 32)]
    assert (6, 3) in dense_shapes(direct.encoder)  # the encoder keeps its dense layer
    assert direct.sample(2, seed=0).shape == (2, 8, 8, 1)
    wide = keras_vae.VAE(**common, arch_options={"filters": [4, 8], "dense_units": 6,
                                                  "decoder_dense_units": 5})
    assert dense_shapes(wide.decoder) == [(3, 5), (5, 32)]


def test_bad_training_data_gets_clear_errors(make_vae, tiny_images):
    model = make_vae("mlp")
    x = tiny_images[0]
    with pytest.raises(ValueError, match=r"\[0, 1\].*divide by 255"):
        model.fit(x * 255.0, epochs=1, verbose=0)
    nan = x.copy()
    nan[3, 2, 2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.fit(nan, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="do not fit a model"):
        model.fit(np.zeros((4, 9, 9, 1), np.float32), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="Empty"):
        model.fit(np.zeros((0, 8, 8, 1), np.float32), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="empty"):
        model.fit(tf.data.Dataset.from_tensor_slices(x).take(0).batch(4), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="expects batches of"):
        model.fit(tf.data.Dataset.from_tensor_slices(x[..., 0]).batch(4), epochs=1, verbose=0)
    bad = tf.data.Dataset.from_tensor_slices(x * 255.0).batch(16)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"keras_vae: pixel values"):
        model.fit(bad, epochs=1, verbose=0)


ROUND_TRIP = r"""
import sys, json, numpy as np, keras
import keras_vae  # registers the classes; nothing else is imported
model = keras.saving.load_model(sys.argv[1])  # safe_mode on
x = np.load(sys.argv[2])
np.save(sys.argv[3], keras.ops.convert_to_numpy(model(x)))
opt = model.optimizer
print(json.dumps({"iterations": int(opt.iterations.numpy()),
                  "slots": [float(np.sum(np.abs(v.numpy()))) for v in opt.variables],
                  "class": type(model).__name__}))
"""


@pytest.mark.slow
def test_keras_round_trip_in_fresh_process(make_vae, tiny_images, tmp_path):
    model = make_vae("conv", beta=0.5)
    x = tiny_images[0]
    model.fit(x, batch_size=16, epochs=2, verbose=0)
    path = keras_vae.saving.save_model(model, tmp_path / "model.keras")
    np.save(tmp_path / "x.npy", x[:5])
    out = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, str(path), str(tmp_path / "x.npy"),
         str(tmp_path / "y.npy")], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["class"] == "VAE"
    assert report["iterations"] == int(model.optimizer.iterations.numpy()) == 8
    want_slots = [float(np.sum(np.abs(v.numpy()))) for v in model.optimizer.variables]
    np.testing.assert_allclose(report["slots"], want_slots, rtol=1e-6)
    assert sum(want_slots[2:]) > 0  # Adam moments were trained, not fresh zeros
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), model(x[:5]).numpy())
    # config survives: beta, arch, likelihood
    loaded = keras_vae.saving.load_model(path)
    assert loaded.beta == 0.5 and loaded.arch == "conv" and loaded.latent_dim == 3


def test_training_resumes_where_it_stopped(make_vae, tiny_images, tmp_path):
    x = tiny_images[0]
    model = make_vae("mlp")
    model.fit(x, batch_size=16, epochs=1, verbose=0, shuffle=False)
    path = keras_vae.saving.save_model(model, tmp_path / "m.keras")
    loaded = keras_vae.saving.load_model(path)
    # Same state and same noise stream: one more epoch gives the same weights.
    model.fit(x, batch_size=16, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert int(loaded.optimizer.iterations.numpy()) == 8
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_run_directory_is_never_half_written(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.keras").write_text("old")
    with pytest.raises(FileExistsError, match="--overwrite"):
        with keras_vae.files.run_directory(out):
            pass
    with pytest.raises(RuntimeError):
        with keras_vae.files.run_directory(out, overwrite=True) as tmp:
            (tmp / "model.keras").write_text("new, half written")
            raise RuntimeError("killed")
    assert (out / "model.keras").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with keras_vae.files.run_directory(out, overwrite=True) as tmp:
        (tmp / "model.keras").write_text("new")
    assert (out / "model.keras").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_batches_unpack_into_inputs_labels_and_clean_targets(make_vae, tiny_images):
    x, labels = tiny_images
    clean = np.clip(x + 0.1, 0, 1).astype(np.float32)
    cvae = make_vae("mlp", num_classes=4)
    for batch, want_labels, want_target in [
        (x, None, None),
        ((x, labels), labels, None),
        ((x, clean), None, clean),
        (([x, labels],), labels, None),
        (([x, labels], clean), labels, clean),  # conditional denoising
    ]:
        got_x, got_labels, got_target = keras_vae.data.unpack_batch(
            tf.nest.map_structure(tf.constant, batch), cvae.num_classes)
        np.testing.assert_array_equal(got_x, x)
        for got, want in ((got_labels, want_labels), (got_target, want_target)):
            assert (got is None) == (want is None)
            if want is not None:
                np.testing.assert_array_equal(got, want)
    # the likelihood scores the clean target, not the corrupted input
    eps = np.zeros((64, 3), np.float32)
    terms = cvae.elbo_terms(x, labels, target=clean, eps=eps)
    plain = cvae.elbo_terms(x, labels, eps=eps)
    assert not np.allclose(terms["reconstruction_loss"], plain["reconstruction_loss"])
    np.testing.assert_allclose(terms["kl_loss"], plain["kl_loss"])
    ds = tf.data.Dataset.from_tensor_slices(((x, labels), clean)).batch(16)
    history = cvae.fit(ds, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
