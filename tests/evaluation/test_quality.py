"""Sample-quality metrics: the Frechet formula, precision/recall, and the feature network on
real digits (held-out real images score near zero; blurred and mode-dropped sets worse)."""

import json
import time
import warnings

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import cdist

import keras_vae
from keras_vae.evaluation import quality


def _spd(d, seed):
    a = np.random.default_rng(seed).standard_normal((d, 2 * d))
    return a @ a.T / (2 * d) + 0.1 * np.eye(d)


def _sqrt_psd(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _frechet_reference(mu1, s1, mu2, s2):
    """tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2) by symmetric eigendecompositions only."""
    r1 = _sqrt_psd(s1)
    cross = _sqrt_psd(r1 @ s2 @ r1)
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross)


# ------------------------------------------------------------- Frechet distance


def test_frechet_matches_an_eigendecomposition_reference():
    rng = np.random.default_rng(0)
    for d, seed in ((1, 1), (5, 2), (32, 3)):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _spd(d, seed), _spd(d, seed + 100)
        ours = quality.frechet_distance(mu1, s1, mu2, s2)
        assert ours == pytest.approx(_frechet_reference(mu1, s1, mu2, s2), rel=1e-9, abs=1e-9)
        # Symmetric in its two Gaussians.
        assert quality.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(ours, rel=1e-9)


def test_frechet_closed_forms():
    s = _spd(6, 0)
    mu = np.arange(6.0)
    assert quality.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)
    shift = np.array([3.0, -4.0, 0, 0, 0, 0])
    assert quality.frechet_distance(mu, s, mu + shift, s) == pytest.approx(25.0, rel=1e-9)
    a, b = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    expected = np.sum((np.sqrt(a) - np.sqrt(b)) ** 2) + 2.0**2
    value = quality.frechet_distance(np.zeros(4), np.diag(a), [2.0, 0, 0, 0], np.diag(b))
    assert value == pytest.approx(expected, rel=1e-12)  # = 1 + 1 + 0 + 0.25 + 4


def test_frechet_survives_singular_covariances():
    # Dead ReLU units give constant features: rank-deficient covariances.
    rng = np.random.default_rng(0)
    f1, f2 = rng.standard_normal((40, 8)), rng.standard_normal((40, 8)) + 0.5
    f1[:, 5:] = 0.0
    f2[:, 5:] = 0.0
    ours = quality.frechet_distance(*quality.feature_stats(f1), *quality.feature_stats(f2))
    active = quality.frechet_distance(*quality.feature_stats(f1[:, :5]),
                                      *quality.feature_stats(f2[:, :5]))
    assert np.isfinite(ours) and ours == pytest.approx(active, rel=1e-6)
    # Fewer samples than dimensions: singular, still finite and matching the reference.
    g1, g2 = rng.standard_normal((6, 20)), rng.standard_normal((6, 20))
    s1, s2 = np.cov(g1, rowvar=False), np.cov(g2, rowvar=False)
    value = quality.frechet_distance(g1.mean(0), s1, g2.mean(0), s2)
    assert value == pytest.approx(_frechet_reference(g1.mean(0), s1, g2.mean(0), s2), rel=1e-4)


def test_feature_stats_and_shape_errors():
    f = np.random.default_rng(0).standard_normal((50, 3))
    mu, sigma = quality.feature_stats(f)
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(sigma, np.cov(f.T))
    with pytest.raises(ValueError, match="one f"):
        quality.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="n >= 2"):
        quality.feature_stats(np.zeros((1, 4)))


# ------------------------------------------------------------- precision / recall


def test_precision_recall_closed_cases():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 4))
    assert quality.precision_recall(a, a) == (1.0, 1.0)
    far = rng.standard_normal((300, 4)) + 100.0
    assert quality.precision_recall(a, far) == (0.0, 0.0)
    # Half overlap: the fakes are real cluster A (exactly) and a cluster C far from both.
    b = rng.standard_normal((150, 4)) + np.array([50.0, 0, 0, 0])
    c = rng.standard_normal((150, 4)) - np.array([50.0, 0, 0, 0])
    real, fake = np.vstack([a[:150], b]), np.vstack([a[:150], c])
    assert quality.precision_recall(real, fake, k=3) == (0.5, 0.5)


def test_blocked_distances_match_a_direct_computation(monkeypatch):
    rng = np.random.default_rng(1)
    real, fake = rng.standard_normal((230, 6)), rng.standard_normal((170, 6)) * 0.7 + 0.5
    # Direct: full distance matrices, k-th neighbour excluding the point itself.
    k = 4
    r_real = np.sort(cdist(real, real), axis=1)[:, k]
    r_fake = np.sort(cdist(fake, fake), axis=1)[:, k]
    precision = np.mean((cdist(fake, real) <= r_real[None, :]).any(axis=1))
    recall = np.mean((cdist(real, fake) <= r_fake[None, :]).any(axis=1))
    assert 0.1 < precision < 0.95 and 0.1 < recall < 0.95  # a case that can tell them apart
    monkeypatch.setattr(quality, "_BLOCK_BYTES", 8 * 230 * 7)  # blocks of ~7 rows
    np.testing.assert_allclose(quality.kth_neighbour_sq_radii(real, k), r_real**2, rtol=1e-9)
    assert quality.precision_recall(real, fake, k=k) == pytest.approx((precision, recall))


def test_precision_recall_errors():
    a = np.zeros((5, 2))
    with pytest.raises(ValueError, match="more than 5"):
        quality.precision_recall(a, a, k=5)
    with pytest.raises(ValueError, match="widths differ"):
        quality.precision_recall(a, np.zeros((5, 3)))


# ------------------------------------------------------------- features on real digits


@pytest.fixture(scope="module")
def digits():
    """sklearn's 1,797 digits split 1,000 / 797 with a seeded shuffle."""
    x, y = keras_vae.data.load_arrays("digits")
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:1000]], y[order[:1000]], x[order[1000:]], y[order[1000:]]


@pytest.fixture(scope="module")
def digits_net(digits, tmp_path_factory):
    cache = tmp_path_factory.mktemp("features")
    x, y, _, _ = digits
    return quality.feature_extractor(x, y, cache_dir=cache), cache


def test_feature_network_is_cached_and_says_what_it_is(digits, digits_net, monkeypatch):
    net, cache = digits_net
    x, y, xt, _ = digits
    desc = net.description
    assert "not Inception FID" in desc["note"]
    assert desc["train_examples"] == 900 and desc["test_examples"] == 100
    assert desc["test_accuracy"] > 0.9
    assert desc["feature_dim"] == 32 + 64 + 128 and len(desc["key"]) == 64
    assert (cache / f"{desc['key']}.keras").is_file()
    # The second call loads the file: no training.
    monkeypatch.setattr(quality, "_train", lambda *a: pytest.fail("retrained a cached net"))
    start = time.perf_counter()
    again = quality.feature_extractor(x, y, cache_dir=cache)
    assert time.perf_counter() - start < 5
    np.testing.assert_array_equal(again.features(xt[:50]), net.features(xt[:50]))
    assert again.description == desc
    feats = net.features(xt)
    assert feats.shape == (797, 224) and feats.dtype == np.float64
    # Each block has unit total variance on the training images.
    train = net.features(x[np.random.default_rng(0).permutation(1000)[100:]])
    for lo, hi in ((0, 32), (32, 96), (96, 224)):
        assert np.var(train[:, lo:hi], axis=0).sum() == pytest.approx(1.0, rel=1e-3)


def test_feature_network_is_deterministic(digits, tmp_path):
    x, y, _, _ = digits
    a = quality.feature_extractor(x[:120], y[:120], cache_dir=tmp_path / "a", epochs=1)
    b = quality.feature_extractor(x[:120], y[:120], cache_dir=tmp_path / "b", epochs=1)
    np.testing.assert_allclose(a.features(x[:20]), b.features(x[:20]), rtol=1e-5, atol=1e-6)
    assert a.description["key"] == b.description["key"]


def test_a_corrupt_or_stale_cache_file_is_retrained(digits, tmp_path):
    x, y, _, _ = digits
    (tmp_path / "mine.keras").write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="retraining"):
        net = quality.feature_extractor(x[:100], y[:100], cache_dir=tmp_path, key="mine",
                                        epochs=1)
    assert net.description["key"] == "mine"
    # Same name, other labels: the stored digest does not match, so it is replaced.
    other_labels = (y[:100] + 1) % 10
    with pytest.warns(UserWarning, match="other data"):
        other = quality.feature_extractor(x[:100], other_labels, cache_dir=tmp_path,
                                          key="mine", epochs=1)
    assert other.description["data_sha256"] != net.description["data_sha256"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = quality.feature_extractor(x[:100], other_labels, cache_dir=tmp_path,
                                          key="mine", epochs=1)
    assert again.description == other.description
    assert [p.name for p in tmp_path.iterdir()] == ["mine.keras"]  # no temporary left


def test_feature_network_with_one_head_per_factor(tmp_path):
    from keras_vae.data import shapes

    x, factors, _ = shapes.shapes(300, seed=0, size=32)
    net = quality.feature_extractor(x, factors, cache_dir=tmp_path, epochs=1)
    assert net.classes == [3, 6, 40, 32, 32]
    assert len(net.description["test_accuracy"]) == 5
    assert net.features(x[:7]).shape == (7, 224)
    with pytest.raises(ValueError, match="do not fit"):
        net.features(np.zeros((2, 64, 64, 1), np.float32))


def test_feature_network_input_errors(digits, tmp_path):
    x, y, _, _ = digits
    with pytest.raises(ValueError, match="needs labels"):
        quality.feature_extractor(x, None, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="labels must be"):
        quality.feature_extractor(x, y[:10], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="plain file name"):
        quality.feature_extractor(x, y, cache_dir=tmp_path, key="../x")


def _scores(net, reference, candidates, n, seed=1):
    """Metrics of each candidate set, all subsampled to `n` images against `n` references."""
    rng = np.random.default_rng(seed)
    ref = reference[rng.permutation(len(reference))[:n]]
    return {name: quality.image_metrics(ref, imgs[rng.permutation(len(imgs))[:n]], net)
            for name, imgs in candidates.items()}


def _check_orderings(s):
    held, drop, blur = s["held-out"], s["mode-dropped"], s["blurred"]
    # Real held-out images against real training images: near zero, far below the others.
    assert held["fid"] < min(drop["fid"], blur["fid"]) / 3
    assert held["precision"] > 0.85 and held["recall"] > 0.85
    # Dropping half the classes costs recall, not precision (the samples are still real).
    assert drop["recall"] < held["recall"] - 0.2
    assert held["recall"] - drop["recall"] > held["precision"] - drop["precision"] + 0.2
    # Blurred digits leave the real manifold: precision falls.
    assert blur["precision"] < held["precision"] - 0.08


def test_held_out_digits_score_near_zero_blurred_and_mode_dropped_worse(digits, digits_net):
    net, _ = digits_net
    x, _, xt, yt = digits
    candidates = {"held-out": xt, "mode-dropped": xt[yt < 5],
                  "blurred": gaussian_filter(xt, sigma=(0, 1, 1, 0))}
    s = _scores(net, x, candidates, n=int((yt < 5).sum()))
    _check_orderings(s)
    assert s["held-out"]["n_real"] == s["held-out"]["n_generated"] == 408


def test_sample_metrics_of_a_model(make_vae, digits, digits_net):
    net, _ = digits_net
    _, _, xt, _ = digits
    model = make_vae(latent_dim=2)
    out = quality.sample_metrics(model, xt, extractor=net, n=300, seed=5)
    assert set(out) == {"fid", "precision", "recall", "k", "n_real", "n_generated", "features",
                        "seed"}
    assert out["n_real"] == 797 and out["n_generated"] == 300 and out["seed"] == 5
    assert "not Inception" in out["features"]["note"]
    json.dumps(out)  # goes into evaluate's JSON as is
    # The same seed draws the same images, so the same numbers.
    assert quality.sample_metrics(model, xt, extractor=net, n=300, seed=5)["fid"] == out["fid"]
    # An untrained decoder's grey blobs are far from real digits.
    real = quality.image_metrics(digits[0], xt, net)
    assert out["fid"] > 5 * real["fid"]


@pytest.mark.slow
def test_mnist_held_out_vs_blurred_vs_mode_dropped(mnist8k_dir, tmp_path):
    x_all, y_all = keras_vae.data.load_arrays(str(mnist8k_dir))
    # A seeded shuffle: the folder's first 5,000 and last 3,000 digits come from different
    # NIST sets (it is MNIST's test set), so a contiguous split is not one distribution.
    order = np.random.default_rng(0).permutation(len(x_all))
    x, y = x_all[order[:7000]], y_all[order[:7000]]
    xt, yt = x_all[order[7000:]], y_all[order[7000:]]
    net = quality.feature_extractor(x, y, cache_dir=tmp_path)
    assert net.description["test_accuracy"] > 0.95
    candidates = {"held-out": xt, "mode-dropped": xt[yt < 5],
                  "blurred": gaussian_filter(xt, sigma=(0, 1, 1, 0))}
    _check_orderings(_scores(net, x, candidates, n=int((yt < 5).sum())))


@pytest.mark.slow
def test_frechet_distance_falls_as_a_vae_trains(digits, digits_net):
    net, _ = digits_net
    x, _, xt, _ = digits
    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=8, arch="mlp", seed=0)
    model.compile()
    model.fit(x, epochs=1, batch_size=64, verbose=0)
    early = quality.sample_metrics(model, xt, extractor=net, seed=0)
    model.fit(x, epochs=20, initial_epoch=1, batch_size=64, verbose=0)
    late = quality.sample_metrics(model, xt, extractor=net, seed=0)
    assert late["fid"] < 0.6 * early["fid"]
    # Still far from real digits (blurry samples): real test vs real training images.
    assert late["fid"] > 5 * quality.image_metrics(x, xt, net)["fid"]
