"""MIG and DCI against hand-computed cases and codes whose disentanglement is known."""

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from keras_vae.evaluation import disentanglement as dis

SIZES = (3, 6, 10, 8, 16)  # at most 20 values each, so MIG's 20 bins can separate them


def _mi_from_counts(counts):
    """Mutual information (nats) of a joint count table, written out from its definition."""
    p = np.asarray(counts, dtype=float) / np.sum(counts)
    pa, pb = p.sum(axis=1), p.sum(axis=0)
    return sum(p[i, j] * np.log(p[i, j] / (pa[i] * pb[j]))
               for i in range(p.shape[0]) for j in range(p.shape[1]) if p[i, j] > 0)


@pytest.fixture(scope="module")
def factors():
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, k, 2000) for k in SIZES], axis=1)


@pytest.fixture(scope="module")
def perfect(factors):
    """One code dimension per factor, tiny noise, shuffled order."""
    rng = np.random.default_rng(1)
    code = factors + 0.01 * rng.standard_normal(factors.shape)
    return code[:, rng.permutation(len(SIZES))]


def _rotated(code, seed=2):
    rng = np.random.default_rng(seed)
    z = (code - code.mean(0)) / code.std(0)
    q, _ = np.linalg.qr(rng.standard_normal((code.shape[1],) * 2))
    return z @ q


def test_mig_on_a_hand_computed_example():
    f0 = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    f1 = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    b1 = np.array([0, 1, 0, 1, 0, 1, 1, 1])  # informative about f1, a little about f0
    b2 = np.array([0, 0, 1, 1, 0, 0, 1, 1])  # independent of both
    rng = np.random.default_rng(0)
    codes = np.stack([f0, b1, b2], axis=1) + 0.1 * rng.uniform(-1, 1, (8, 3))
    factors = np.stack([f0, f1], axis=1)
    # Joint counts (rows: code bin 0/1, columns: factor value 0/1), read off the arrays.
    counts = {
        (0, 0): [[4, 0], [0, 4]], (0, 1): [[2, 2], [2, 2]],
        (1, 0): [[2, 1], [2, 3]], (1, 1): [[3, 0], [1, 4]],
        (2, 0): [[2, 2], [2, 2]], (2, 1): [[2, 2], [2, 2]],
    }
    table = np.array([[_mi_from_counts(counts[i, j]) for j in range(2)] for i in range(3)])
    # One entry by pencil: 3/8 log 2 + 1/8 log(2/5) + 1/2 log(8/5).
    assert table[1, 1] == pytest.approx(3 / 8 * np.log(2) + 1 / 8 * np.log(2 / 5)
                                        + 1 / 2 * np.log(8 / 5))
    binned = dis.discretize(codes, n_bins=2)
    np.testing.assert_array_equal(binned, np.stack([f0, b1, b2], axis=1))
    np.testing.assert_allclose(dis.mutual_information(binned, factors), table, atol=1e-12)
    h = np.log(2)  # both factors are fair coins
    expected = [(table[0, 0] - table[1, 0]) / h, (table[1, 1] - table[0, 1]) / h]
    np.testing.assert_allclose(dis.mig_per_factor(codes, factors, n_bins=2), expected)
    assert dis.mig(codes, factors, n_bins=2) == pytest.approx(np.mean(expected))


def test_mutual_information_agrees_with_sklearn(factors):
    binned = dis.discretize(_rotated(factors.astype(float)), n_bins=20)
    mine = dis.mutual_information(binned, factors)
    ref = [[mutual_info_score(binned[:, i], factors[:, j]) for j in range(factors.shape[1])]
           for i in range(binned.shape[1])]
    np.testing.assert_allclose(mine, ref, atol=1e-12)


def test_perfectly_factorised_code_scores_near_one(perfect, factors):
    assert dis.mig(perfect, factors) > 0.95
    scores = dis.dci(perfect, factors)
    assert scores["disentanglement"] > 0.95
    assert scores["completeness"] > 0.95
    assert scores["informativeness"] > 0.95
    importance = np.asarray(scores["importance"])
    assert importance.shape == (5, 5)
    # Each factor's importance sits on one dimension, each dimension serves one factor.
    assert sorted(importance.argmax(axis=0)) == list(range(5))


def test_a_random_rotation_scores_low(perfect, factors):
    rotated = _rotated(perfect)
    assert dis.mig(rotated, factors) < 0.3
    scores = dis.dci(rotated, factors)
    assert scores["disentanglement"] < 0.5
    assert scores["completeness"] < 0.5
    # The rotation loses no information: only the axes are wrong.
    assert scores["informativeness"] > 0.8


def test_a_code_missing_a_factor_scores_lower(perfect, factors):
    # Drop the dimension that holds factor 2 and put noise in its place.
    holder = np.argmax([abs(np.corrcoef(perfect[:, i], factors[:, 2])[0, 1]) for i in range(5)])
    missing = perfect.copy()
    missing[:, holder] = np.random.default_rng(3).standard_normal(len(perfect))
    full_mig, missing_mig = dis.mig(perfect, factors), dis.mig(missing, factors)
    assert missing_mig < full_mig - 0.15  # that factor's gap is ~0: MIG falls by ~1/5
    per_factor = dis.mig_per_factor(missing, factors)
    assert per_factor[2] < 0.02 and np.delete(per_factor, 2).min() > 0.95
    full, less = dis.dci(perfect, factors), dis.dci(missing, factors)
    assert less["completeness"] < full["completeness"] - 0.1
    assert less["informativeness"] < full["informativeness"] - 0.1


def test_dci_scores_of_hand_importance_matrices():
    assert dis.disentanglement(np.eye(3)) == pytest.approx(1.0)
    assert dis.completeness(np.eye(3)) == pytest.approx(1.0)
    assert dis.disentanglement(np.ones((3, 3))) == pytest.approx(0.0)
    assert dis.completeness(np.ones((3, 3))) == pytest.approx(0.0)
    r = np.array([[1.0, 0.0], [1.0, 1.0]])
    # Rows: code 0 serves one factor (1 - H = 1), code 1 two equally (0); weights 1/3, 2/3.
    assert dis.disentanglement(r) == pytest.approx(1 / 3)
    # Columns: factor 0 is split over two codes (0), factor 1 sits in one (1).
    assert dis.completeness(r) == pytest.approx(1 / 2)
    # A dimension no factor uses does not dilute disentanglement.
    assert dis.disentanglement(np.vstack([np.eye(2), [0.0, 0.0]])) == pytest.approx(1.0)


def test_representation_is_the_posterior_mean(make_vae, tiny_images):
    model = make_vae(latent_dim=3)
    x, _ = tiny_images
    codes = dis.representation(model, x, batch_size=16)
    z_mean, _ = model.encode(x)
    assert codes.shape == (64, 3)
    np.testing.assert_allclose(codes, np.asarray(z_mean), rtol=1e-5, atol=1e-6)


def test_disentanglement_metrics_of_a_model(make_vae, tiny_images):
    import json

    model = make_vae(latent_dim=3)
    x, _ = tiny_images
    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, 4, 64), rng.integers(0, 3, 64), np.zeros(64, int)], 1)
    out = dis.disentanglement_metrics(model, x, factors, factor_names=["a", "b", "still"])
    codes = dis.representation(model, x)
    assert out["mig"] == pytest.approx(dis.mig(codes, factors))
    assert list(out["mig_per_factor"]) == ["a", "b"]  # a constant factor has no gap
    assert out["dci"]["disentanglement"] == pytest.approx(dis.dci(codes, factors)["disentanglement"])
    assert out["n"] == 64 and out["latent_dim"] == 3
    json.dumps(out)  # goes into evaluate's JSON as is
    with pytest.raises(ValueError, match="2 factor names for 3"):
        dis.disentanglement_metrics(model, x, factors, factor_names=["a", "b"])


def test_bad_inputs_are_named():
    codes, factors = np.zeros((10, 3)), np.zeros((9, 2), dtype=int)
    with pytest.raises(ValueError, match="one per example"):
        dis.mig(codes, factors)
    with pytest.raises(ValueError, match="at least 2 latent dimensions"):
        dis.mig(np.zeros((10, 1)), np.zeros((10, 2), dtype=int))
    with pytest.raises(ValueError, match="No factor varies"):
        dis.mig(np.random.default_rng(0).random((10, 3)), np.zeros((10, 2), dtype=int))
    with pytest.raises(ValueError, match="integer"):
        dis.dci(np.zeros((10, 3)), np.full((10, 2), 0.5))
    with pytest.raises(ValueError, match="NaN"):
        dis.mig(np.full((10, 3), np.nan), np.zeros((10, 2), dtype=int))
