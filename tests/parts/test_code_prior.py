"""The PixelCNN code prior: causality, the shared sampling loop, training, bits per grid."""

import numpy as np
import pytest
import tensorflow as tf

from keras_vae import recipes
from keras_vae.models.vqvae import VQVAE
from keras_vae.parts import code_prior


def test_mask_types():
    layer = code_prior.MaskedConv2D("A", filters=1, kernel_size=3)
    layer.build((None, 4, 4, 1))
    np.testing.assert_array_equal(layer.mask[..., 0, 0], [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    layer = code_prior.MaskedConv2D("B", filters=1, kernel_size=3)
    layer.build((None, 4, 4, 1))
    np.testing.assert_array_equal(layer.mask[..., 0, 0], [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="mask_type"):
        code_prior.MaskedConv2D("C", filters=1, kernel_size=3)


def test_changing_a_code_never_changes_the_logits_at_or_before_it():
    h, w, n = 4, 5, 6
    prior = code_prior.build((h, w), n, filters=8, blocks=2)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, n, (1, h, w)).astype(np.int32)
    base = prior(codes).numpy()
    later_changed = 0
    for p in range(h * w):
        i, j = divmod(p, w)
        changed = codes.copy()
        changed[0, i, j] = (codes[0, i, j] + 1) % n
        out = prior(changed).numpy()
        diff = np.abs(out - base).max(-1)[0].reshape(-1)  # (h * w,) raster order
        np.testing.assert_array_equal(diff[:p + 1], 0.0)
        later_changed += int(np.any(diff[p + 1:] > 0))
    assert later_changed >= h * w - 2  # the network does look at earlier codes


def test_autoregressive_codes_follow_the_logits_in_raster_order():
    h, w, n = 2, 3, 5
    calls = []

    def run_logits(codes):
        calls.append(codes.copy())
        logits = np.full((*codes.shape, n), -50.0, np.float32)
        # Each position's favourite code is the previous position's code + 1.
        flat = codes.reshape(len(codes), -1)
        for p in range(h * w):
            prev = flat[:, p - 1] if p else np.zeros(len(codes), np.int32)
            logits.reshape(len(codes), -1, n)[np.arange(len(codes)), p, (prev + 1) % n] = 50.0
        return logits

    codes = recipes.autoregressive_codes(run_logits, 3, (h, w), n, seed=0)
    assert codes.dtype == np.int32 and codes.shape == (3, h, w)
    np.testing.assert_array_equal(codes[0].reshape(-1), [1, 2, 3, 4, 0, 1])
    assert len(calls) == h * w


def test_autoregressive_draws_have_the_softmax_frequencies():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    logits = np.log(p).astype(np.float32)
    codes = recipes.autoregressive_codes(
        lambda c: np.broadcast_to(logits, (*c.shape, 4)), 20000, (1, 1), 4, seed=3)
    freq = np.bincount(codes.reshape(-1), minlength=4) / codes.size
    np.testing.assert_allclose(freq, p, atol=0.015)
    # The recipe: one u per image from default_rng(seed), inverse CDF in float64.
    u = np.random.default_rng(3).random(20000)
    np.testing.assert_array_equal(codes.reshape(-1), np.searchsorted(np.cumsum(p), u, "right"))


def test_bad_logits_are_a_clear_error():
    with pytest.raises(ValueError, match="expected finite"):
        recipes.autoregressive_codes(lambda c: np.zeros((1, 2, 2, 3)), 2, (2, 2), 3, seed=0)


def test_train_prior_beats_uniform_codes_and_attaches_a_frozen_prior():
    rng = np.random.default_rng(0)
    x = (rng.random((64, 8, 8, 1)) > 0.5).astype(np.float32)
    model = VQVAE(image_shape=(8, 8, 1), codebook_size=8, code_dim=4, seed=0)
    model.compile()
    model.fit(x, batch_size=16, epochs=1, verbose=0)
    trainable = len(model.trainable_variables)
    # Before training, the model's codes are uniform: log2(8) bits per position.
    assert code_prior.bits_per_grid(model, x) == pytest.approx(4 * 3.0)
    history = code_prior.train_prior(model, x, epochs=15, batch_size=16, filters=16, blocks=1,
                                     learning_rate=3e-3, verbose=0)
    assert model.code_prior is not None and len(model.trainable_variables) == trainable
    uniform_bits = 4 * np.log2(8)  # 2x2 grid of 8 codes
    bits = code_prior.bits_per_grid(model, x)
    assert bits < uniform_bits
    assert history.history["loss"][-1] < history.history["loss"][0]
    nll = code_prior.code_nll(model, x[:3])  # against a numpy log-softmax
    codes = model.encode_indices(x[:3])
    logits = model.code_prior(codes).numpy().astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, codes[..., None], -1).sum((1, 2, 3))
    np.testing.assert_allclose(nll, want, rtol=1e-4, atol=1e-5)
    assert bits == pytest.approx(float(np.mean(code_prior.code_nll(model, x))) / np.log(2))
    # The likelihood figure scores the codes vq_terms found: the same as encode_indices'.
    figure = code_prior.likelihood(model, x, batch_size=16)
    assert figure["code_nll"] == pytest.approx(float(np.mean(code_prior.code_nll(model, x))),
                                               rel=1e-6)
    recon = model.vq_terms(tf.constant(x))["reconstruction_loss"].numpy()
    assert figure["negative_elbo"] == pytest.approx(float(recon.mean()) + figure["code_nll"],
                                                    rel=1e-5)
    assert model.sample_codes(2, seed=0).shape == (2, 2, 2)
    with pytest.raises(ValueError, match="code prior maps"):
        model.set_code_prior(code_prior.build((3, 3), 8, filters=4, blocks=1))
    assert isinstance(model.code_prior(tf.zeros((1, 2, 2), tf.int32)), tf.Tensor)
