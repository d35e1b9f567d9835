"""Disentanglement scores of latents against known generative factors: MIG and DCI.

Both take `latents` `(n, d)` (one row per image, e.g. posterior means) and
integer `factors` `(n, k)` (the ground truth, e.g. from `keras_vae.data.shapes`).

* MIG, the mutual information gap (Chen et al. 2018, "Isolating Sources of
  Disentanglement in VAEs"): for each factor, the gap between the two latent
  dimensions with the most mutual information about it, over the factor's
  entropy; averaged over factors. 1 when each factor lives in one dimension.
* DCI (Eastwood & Williams 2018, "A Framework for the Quantitative Evaluation
  of Disentangled Representations"): an importance matrix R (latent x factor)
  from one random forest per factor, then disentanglement (each latent
  dimension matters for one factor), completeness (each factor is held by
  one dimension) and informativeness (held-out R^2 of the forests).

DCI rather than the FactorVAE score: DCI needs only (latent, factor) pairs,
which any labelled set gives, while the FactorVAE score needs batches drawn
with one factor held fixed (access to the simulator) and a majority-vote
classifier whose score depends on the batch size and count chosen; DCI also
separates three properties the FactorVAE score folds into one number.
"""

from __future__ import annotations

import numpy as np

from keras_vae.uses import latent

_MIN_LEAF = 10  # smallest leaf of the DCI forests


def representation(model, images, batch_size: int = 256) -> np.ndarray:
    """The latents a disentanglement metric scores: the posterior mean of each image.

    Args:
        model: A `keras_vae.VAE` (unconditional).
        images: `(n, *image_shape)` images in [0, 1].
        batch_size: Encoding batch size.

    Returns:
        `(n, latent_dim)` float32 posterior means.

    Example:

    >>> latents = representation(vae, x)
    >>> mig(latents, factors)
    """
    return latent.encode_mean(model, images, batch_size=batch_size)


def disentanglement_metrics(model, images, factors, *, factor_names=None, n_bins: int = 20,
                            seed: int = 0, batch_size: int = 256) -> dict:
    """MIG and DCI of a model's posterior means, as a JSON-able dict.

    Args:
        model: A `keras_vae.VAE` (unconditional).
        images: `(n, *image_shape)` images in [0, 1].
        factors: `(n, k)` integer ground-truth factors of the images.
        factor_names: Names of the `k` factors (default `factor0`, ...).
        n_bins: MIG's bins per latent dimension.
        seed: Seed of DCI's split and forests.
        batch_size: Encoding batch size.

    Returns:
        `{"mig", "mig_per_factor": {name: gap}, "dci": {"disentanglement",
        "completeness", "informativeness", "importance"}, "n", "latent_dim",
        "n_bins", "factor_names"}`; factors that do not vary over the images
        are left out of `mig_per_factor`.

    Example:

    >>> x, factors, names = keras_vae.data.shapes.shapes(5000, seed=1)
    >>> disentanglement_metrics(vae, x, factors, factor_names=names)["mig"]
    """
    latents = representation(model, images, batch_size=batch_size)
    latents, factors = _check(latents, factors)
    names = ([f"factor{j}" for j in range(factors.shape[1])] if factor_names is None
             else [str(v) for v in factor_names])
    if len(names) != factors.shape[1]:
        raise ValueError(f"{len(names)} factor names for {factors.shape[1]} factors.")
    varying = [j for j in range(factors.shape[1]) if _entropy(factors[:, j]) > 0]
    gaps = mig_per_factor(latents, factors, n_bins)
    return {
        "mig": float(np.mean(gaps)),
        "mig_per_factor": {names[j]: float(g) for j, g in zip(varying, gaps)},
        "dci": dci(latents, factors, seed=seed),
        "n": len(latents),
        "latent_dim": int(latents.shape[1]),
        "n_bins": int(n_bins),
        "factor_names": names,
    }


def mig(latents, factors, n_bins: int = 20) -> float:
    """Mutual information gap (Chen et al. 2018).

    Each latent dimension is cut into `n_bins` equal-width bins over its range;
    `I(z_j; v_k)` is the discrete mutual information of bins and factor
    values (nats). For each factor, the gap between its largest and
    second-largest `I(z_j; v_k)` over `j`, divided by the factor's entropy
    `H(v_k)`, is averaged over the factors that vary.

    Args:
        latents: `(n, d)` latents, `d >= 2`.
        factors: `(n, k)` integer factor values (or `(n,)` for one factor).
        n_bins: Bins per latent dimension.

    Returns:
        MIG in [0, 1].

    Raises:
        ValueError: mismatched or degenerate inputs (fewer than 2 latent
            dimensions, no factor that varies).

    Example:

    >>> v = np.random.default_rng(0).integers(0, 5, (1000, 2))
    >>> round(mig(v.astype(float), v), 3)  # not 1: chance MI of the other dimension
    0.995
    """
    return float(np.mean(mig_per_factor(latents, factors, n_bins)))


def mig_per_factor(latents, factors, n_bins: int = 20) -> np.ndarray:
    """The normalized gap of each varying factor (`mig` is their mean): `(k',)`."""
    latents, factors = _check(latents, factors)
    if latents.shape[1] < 2:
        raise ValueError(f"MIG needs at least 2 latent dimensions, got {latents.shape[1]}")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 2:
        raise ValueError(f"n_bins must be an integer >= 2, got {n_bins!r}")
    binned = discretize(latents, n_bins)
    mi = mutual_information(binned, factors)  # (d, k)
    entropy = np.array([_entropy(factors[:, j]) for j in range(factors.shape[1])])
    varying = entropy > 0
    if not varying.any():
        raise ValueError("No factor varies over these examples: MIG is undefined.")
    top = np.sort(mi[:, varying], axis=0)[::-1]  # (d, k') descending per factor
    return (top[0] - top[1]) / entropy[varying]


def discretize(latents, n_bins: int = 20) -> np.ndarray:
    """Equal-width bin index of every latent value, per dimension: `(n, d)` int.

    A constant dimension falls in one bin.
    """
    latents = np.asarray(latents, dtype=np.float64)
    lo, hi = latents.min(axis=0), latents.max(axis=0)
    width = np.where(hi > lo, (hi - lo) / n_bins, 1.0)
    return np.clip(((latents - lo) / width).astype(np.int64), 0, n_bins - 1)


def mutual_information(a, b) -> np.ndarray:
    """Discrete mutual information (nats) of every column of `a` with every column of `b`.

    Args:
        a: `(n, p)` integer labels.
        b: `(n, q)` integer labels.

    Returns:
        `(p, q)` float64, `I(a_i; b_j)` from the empirical joint counts.
    """
    a, b = np.asarray(a), np.asarray(b)
    out = np.empty((a.shape[1], b.shape[1]))
    for i in range(a.shape[1]):
        for j in range(b.shape[1]):
            out[i, j] = _mutual_information(a[:, i], b[:, j])
    return out


def dci(latents, factors, *, train_fraction: float = 0.8, n_estimators: int = 50,
        seed: int = 0) -> dict:
    """Disentanglement, completeness and informativeness (Eastwood & Williams 2018).

    One random forest regressor per factor predicts the factor's index from
    the latents on a training part; its impurity-based feature importances form
    a column of `R` `(d, k)`. Regression, as in the paper, suits the ordered
    factors (scale, orientation, position), and trees split a categorical
    index (shape) just as well. Every split considers every latent dimension:
    with sklearn's default random subset for classifiers (sqrt(d) of them),
    trees split on irrelevant dimensions whenever the relevant one is not
    offered, and perfect 5-factor latents scored 0.54.

    With `P_ij = R_ij / sum_j R_ij`, disentanglement is `sum_i rho_i (1 - H_k(P_i.))`
    with `rho_i` latent dimension `i`'s share of all importance and `H_k` the
    entropy in base `k`; completeness is the mean over factors of
    `1 - H_d(R_.j / sum_i R_ij)`; informativeness is the forests' mean
    coefficient of determination R^2 on the held-out part, clipped to [0, 1]
    (1: the latents predict every factor exactly).

    Args:
        latents: `(n, d)` latents.
        factors: `(n, k)` integer factor values (`k >= 2` for a meaningful
            disentanglement score).
        train_fraction: Share of examples (after a seeded shuffle) the forests
            are fitted on; the rest measures informativeness.
        n_estimators: Trees per forest.
        seed: Seed of the shuffle and of the forests.

    Returns:
        A dict with `disentanglement`, `completeness`, `informativeness`
        (floats in [0, 1]) and `importance` (`(d, k)` nested list).

    Raises:
        ValueError: mismatched inputs, or too few examples for the split.

    Example:

    >>> v = np.random.default_rng(0).integers(0, 5, (1000, 3))
    >>> scores = dci(v + 0.01 * np.random.default_rng(1).standard_normal(v.shape), v)
    >>> round(scores["disentanglement"], 2), round(scores["completeness"], 2)
    (1.0, 1.0)
    """
    importance, r2 = importance_matrix(latents, factors, train_fraction=train_fraction,
                                             n_estimators=n_estimators, seed=seed)
    return {
        "disentanglement": disentanglement(importance),
        "completeness": completeness(importance),
        "informativeness": float(np.mean(r2)),
        "importance": importance.tolist(),
    }


def importance_matrix(latents, factors, *, train_fraction: float = 0.8, n_estimators: int = 50,
                      seed: int = 0):
    """Random-forest importances of each latent dimension for each factor.

    Returns:
        `(importance, r2)`: `(d, k)` float64 (each column sums to 1, or to 0
        for a constant factor) and `(k,)` held-out R^2 clipped to [0, 1].
    """
    from sklearn.ensemble import RandomForestRegressor

    latents, factors = _check(latents, factors)
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must lie in (0, 1), got {train_fraction}")
    n = len(latents)
    n_train = int(round(n * train_fraction))
    if n_train < 2 or n - n_train < 1:
        raise ValueError(f"{n} examples are too few to fit and test the DCI forests.")
    order = np.random.default_rng(seed).permutation(n)
    train, test = order[:n_train], order[n_train:]
    importance = np.zeros((latents.shape[1], factors.shape[1]))
    r2 = np.zeros(factors.shape[1])
    for j in range(factors.shape[1]):
        y = factors[:, j].astype(np.float64)
        if len(np.unique(y[train])) < 2:  # nothing to learn: no importance
            r2[j] = float(np.all(y[test] == y[train][0]))
            continue
        # max_features=1.0: every split sees every dimension (see `dci`); leaves of
        # 10 keep the trees from splitting noise once the factor is resolved.
        forest = RandomForestRegressor(n_estimators=n_estimators, max_features=1.0,
                                       min_samples_leaf=_MIN_LEAF, random_state=seed, n_jobs=1)
        forest.fit(latents[train], y[train])
        importance[:, j] = forest.feature_importances_
        r2[j] = max(0.0, forest.score(latents[test], y[test]))
    return importance, r2


def disentanglement(importance) -> float:
    """Importance-weighted mean of `1 - H_k(P_i.)` over latent dimensions (rows)."""
    importance = np.abs(np.asarray(importance, dtype=np.float64))
    d, k = importance.shape
    if k < 2:
        raise ValueError("Disentanglement needs at least 2 factors.")
    row_sums = importance.sum(axis=1)
    total = row_sums.sum()
    if total == 0:
        return 0.0
    per_code = 1.0 - _rows_entropy(importance, base=k)  # (d,)
    return float(np.sum(row_sums / total * per_code))


def completeness(importance) -> float:
    """Mean over varying factors (columns) of `1 - H_d(R_.j / sum_i R_ij)`."""
    importance = np.abs(np.asarray(importance, dtype=np.float64))
    d, k = importance.shape
    if d < 2:
        raise ValueError("Completeness needs at least 2 latent dimensions.")
    used = importance.sum(axis=0) > 0
    if not used.any():
        return 0.0
    return float(np.mean(1.0 - _rows_entropy(importance[:, used].T, base=d)))


# ------------------------------------------------------------------ helpers


def _check(latents, factors):
    latents = np.asarray(latents, dtype=np.float64)
    factors = np.asarray(factors)
    if factors.ndim == 1:
        factors = factors[:, None]
    if latents.ndim != 2 or factors.ndim != 2:
        raise ValueError(f"latents must be (n, d) and factors (n, k); got {latents.shape} and "
                         f"{factors.shape}")
    if len(latents) != len(factors):
        raise ValueError(f"latents have {len(latents)} rows and factors {len(factors)}; one per "
                         "example in both.")
    if len(latents) < 2:
        raise ValueError("At least 2 examples are needed.")
    if not np.isfinite(latents).all():
        raise ValueError("latents contain NaN or Inf.")
    if not np.issubdtype(factors.dtype, np.integer):
        if not np.array_equal(factors, np.round(factors)):
            raise ValueError("factors must be integer values (discrete factor indices).")
        factors = factors.astype(np.int64)
    return latents, factors


def _entropy(labels) -> float:
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def _mutual_information(x, y) -> float:
    # I(x; y) = sum p(x, y) log(p(x, y) / (p(x) p(y))) from the joint count table.
    _, xi = np.unique(x, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    joint = np.zeros((xi.max() + 1, yi.max() + 1))
    np.add.at(joint, (xi, yi), 1.0)
    pxy = joint / joint.sum()
    px, py = pxy.sum(axis=1, keepdims=True), pxy.sum(axis=0, keepdims=True)
    nz = pxy > 0
    return float(np.sum(pxy[nz] * np.log(pxy[nz] / (px @ py)[nz])))


def _rows_entropy(matrix, base: int) -> np.ndarray:
    """Entropy (in `base`) of each row normalized to a distribution; 0 for a zero row."""
    sums = matrix.sum(axis=1, keepdims=True)
    p = np.divide(matrix, sums, out=np.zeros_like(matrix), where=sums > 0)
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    return -np.sum(p * logs, axis=1) / np.log(base)
