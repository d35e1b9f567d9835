"""Conditional VAE: fit on (image, label), class-conditional samples, label errors, the CLI."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import cli
from keras_vae.data import load_arrays


@pytest.fixture(scope="module")
def digits():
    x, y = load_arrays("digits")
    return x, y


@pytest.fixture(scope="module")
def cvae(digits):
    """A conditional VAE trained on the 8x8 digits, a few epochs."""
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=4, arch="mlp",
                          arch_options={"hidden_units": [64]}, num_classes=10, seed=0)
    model.compile(keras.optimizers.Adam(3e-3))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(2000, seed=0).batch(64)
    model.fit(ds, epochs=10, verbose=0)
    return model


def test_samples_are_of_the_requested_class(cvae, digits):
    x, y = digits
    class_means = np.stack([x[y == c].reshape(-1, 64).mean(0) for c in range(10)])
    ids = np.repeat(np.arange(10), 20)
    samples = cvae.sample(200, seed=1, class_ids=ids).reshape(200, 64)
    nearest = np.argmin(((samples[:, None] - class_means[None]) ** 2).sum(-1), axis=1)
    accuracy = float(np.mean(nearest == ids))
    assert accuracy > 0.8  # chance is 0.1
    # The same code decoded under two labels gives two different digits.
    two = cvae.sample(2, seed=3, class_ids=[4, 7])
    z = keras_vae.prior_z(2, 4, seed=3)
    np.testing.assert_allclose(two, cvae.decode(z, np.array([4, 7])), atol=1e-6)
    assert np.abs(two[0] - two[1]).mean() > 0.05


def test_class_ids_are_cycled(cvae):
    out = cvae.sample(5, seed=0, class_ids=[4, 7])
    z = keras_vae.prior_z(5, 4, seed=0)
    np.testing.assert_allclose(out, cvae.decode(z, np.array([4, 7, 4, 7, 4])), atol=1e-6)


def test_conditional_likelihood_prefers_the_true_label(cvae, digits):
    x, y = digits
    x, y = x[:200], y[:200]
    right = keras_vae.evaluation.iwae_nll(cvae, x, k=20, labels=y)
    wrong = keras_vae.evaluation.iwae_nll(cvae, x, k=20, labels=(y + 5) % 10)
    assert np.mean(right < wrong) > 0.9


def test_fit_on_arrays_and_evaluate(make_vae, digits):
    x, y = digits
    model = make_vae(num_classes=10)
    history = model.fit(x[:256], y[:256], batch_size=64, epochs=2, verbose=0).history
    assert np.isfinite(history["loss"]).all()
    out = model.evaluate(x[:128], y[:128], batch_size=64, verbose=0, return_dict=True)
    assert out["loss"] == pytest.approx(out["reconstruction_loss"] + out["kl_loss"], rel=1e-5)
    assert model.reconstruct(x[:4], y[:4]).shape == (4, 8, 8, 1)


def test_label_errors(make_vae, digits):
    x, y = digits
    x, y = x[:64], y[:64]
    model = make_vae(num_classes=10)
    with pytest.raises(ValueError, match="needs labels"):
        model.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"in \[0, 10\).*got \[10\]"):
        model.fit(x, np.where(y == 3, 10, y), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="-1 means the data has no labels"):
        model.fit(x, np.full(64, -1), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="integers"):
        model.fit(x, y + 0.5, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="one label per image"):
        model.fit(x, y[:10], epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"got \[10\]"):
        model.fit(x, y, validation_data=(x, np.full(64, 10)), epochs=1, verbose=0)
    # A dataset without labels, or with unlabeled (-1) / out-of-range labels.
    with pytest.raises(ValueError, match=r"needs \(image, label\) batches"):
        model.fit(tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=1, verbose=0)
    for bad in (np.full(64, -1), np.where(y == 3, 12, y)):
        ds = tf.data.Dataset.from_tensor_slices((x, bad)).batch(16)
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be in \[0, 10\)"):
            model.fit(ds, epochs=1, verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"labels must be in \[0, 10\)"):
        model.evaluate(tf.data.Dataset.from_tensor_slices((x, y + 5)).batch(16), verbose=0)
    # Direct calls.
    with pytest.raises(ValueError, match="needs labels"):
        model.encode(x)
    with pytest.raises(ValueError, match=r"got \[10, 11\]"):
        model.encode(x[:3], np.array([10, 11, 2]))
    with pytest.raises(ValueError, match="needs labels"):
        keras_vae.evaluation.iwae_nll(model, x, k=2)


def test_class_id_errors(make_vae):
    model = make_vae(num_classes=3)
    with pytest.raises(ValueError, match=r"class_ids must be in \[0, 3\); got \[3, 7\]"):
        model.sample(4, class_ids=[0, 3, 7])
    with pytest.raises(ValueError, match=r"class_ids must be in \[0, 3\); got \[-1\]"):
        model.sample(4, class_ids=[-1])
    with pytest.raises(ValueError, match="needs class_ids"):
        model.sample(4)
    with pytest.raises(ValueError, match="class_ids must be"):
        model.sample(4, class_ids=[])
    with pytest.raises(ValueError, match="unconditional"):
        make_vae().sample(4, class_ids=[1])
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        make_vae(num_classes=-2)


def test_round_trip_keeps_classes_and_label_inputs(cvae, tmp_path):
    path = keras_vae.saving.save_model(cvae, tmp_path / "c.keras")
    loaded = keras_vae.saving.load_model(path)
    assert loaded.num_classes == 10
    assert [t.name for t in loaded.decoder.inputs] == ["z", "label"]
    assert [t.name for t in loaded.encoder.inputs] == ["image", "label"]
    np.testing.assert_allclose(loaded.sample(6, seed=2, class_ids=[1, 5]),
                               cvae.sample(6, seed=2, class_ids=[1, 5]), atol=1e-6)


@pytest.mark.slow
def test_cli_train_conditional(tmp_path):
    out = tmp_path / "run"
    rc = cli.main(["train", "--dataset", "digits", "--split", "train[:256]", "--arch", "mlp",
                   "--latent-dim", "2", "--epochs", "1", "--verbose", "0", "--conditional",
                   "--out", str(out)])
    assert rc == 0
    model = keras_vae.saving.load_model(out / "model.keras")
    assert model.num_classes == 10  # max label + 1 of the digits
    assert (out / "samples.png").exists()
    assert cli.main(["sample", str(out / "model.keras"), "--class-ids", "2", "9",
                     "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert cli.main(["sample", str(out / "model.keras"), "--class-ids", "10",
                     "--out", str(tmp_path / "bad.png")]) == 2


def test_cli_conditional_needs_labels(tmp_path, capsys):
    np.savez(tmp_path / "unlabeled.npz", x=np.random.default_rng(0).random((40, 8, 8)))
    rc = cli.main(["train", "--dataset", str(tmp_path / "unlabeled.npz"), "--arch", "mlp",
                   "--latent-dim", "2", "--epochs", "1", "--verbose", "0", "--conditional",
                   "--out", str(tmp_path / "run")])
    assert rc == 2
    assert "needs labelled data" in capsys.readouterr().err
