"""Mixed precision on CPU: bfloat16 (and float16 with loss scaling) train like float32."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import training


@pytest.fixture(autouse=True)
def _float32_after():
    yield
    keras.config.set_dtype_policy("float32")


def test_precision_policy_names():
    assert training.precision_policy(False) == "float32"
    expected = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    assert training.precision_policy(True) == expected
    assert training.precision_policy("auto") == expected
    assert training.precision_policy("float16") == "mixed_float16"
    assert training.precision_policy("bfloat16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="Unknown mixed precision 'int8'"):
        training.precision_policy("int8")


def _digits():
    return keras_vae.data.load("digits", "train[:256]", batch_size=64, binarize="static",
                               shuffle=False)


def _train(mixed, epochs=4):
    def make_model():
        return keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=4, arch="mlp",
                             arch_options={"hidden_units": [32]}, seed=0)

    return training.train(make_model, _digits(), epochs=epochs, learning_rate=3e-3,
                          mixed_precision=mixed, seed=0, verbose=0)


def test_bfloat16_trains_close_to_float32():
    ref = _train(False)
    mixed = _train("bfloat16")
    model = mixed.model
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert model.dtype_policy.name == "mixed_bfloat16"
    dense = model.encoder.get_layer("encoder_dense_0")
    assert dense.compute_dtype == "bfloat16" and dense.variable_dtype == "float32"
    assert all(v.dtype == "float32" for v in model.trainable_variables)

    # The ELBO terms are float32 even though the networks compute in bfloat16.
    x = next(iter(_digits()))[0]
    terms = model.elbo_terms(x)
    for key in ("reconstruction_loss", "kl_per_dim", "kl_loss", "z", "z_mean", "z_log_var"):
        assert terms[key].dtype == "float32", key

    ref_loss = np.array(ref.history.history["loss"])
    mixed_loss = np.array(mixed.history.history["loss"])
    assert np.all(np.isfinite(mixed_loss))
    assert mixed_loss[-1] < mixed_loss[0] - 5  # it learns
    # bfloat16 keeps 8 bits of mantissa: losses within 2% of float32's.
    np.testing.assert_allclose(mixed_loss, ref_loss, rtol=0.02)

    # The float32 negative ELBO of the two models on the same data agrees too.
    ref_nelbo = float(np.mean(ref.model.negative_elbo(x, eps=np.zeros((64, 4), "float32"))))
    mix_nelbo = float(np.mean(model.negative_elbo(x, eps=np.zeros((64, 4), "float32"))))
    assert mix_nelbo == pytest.approx(ref_nelbo, rel=0.03)


def test_float16_uses_dynamic_loss_scaling():
    result = _train("float16", epochs=2)  # float16 is emulated, slowly, on CPU
    model = result.model
    assert model.dtype_policy.name == "mixed_float16"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    # The scale multiplies the loss before the gradient and divides it out after.
    scale = float(model.optimizer.dynamic_scale)
    assert scale >= 2.0
    assert float(model.optimizer.scale_loss(keras.ops.convert_to_tensor(2.0))) == 2.0 * scale
    losses = np.array(result.history.history["loss"])
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 1
