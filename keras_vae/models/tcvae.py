"""beta-TCVAE (Chen et al., 2018): the KL split into index-code MI, total correlation and
dimension-wise KL, with a heavier weight on the total correlation.

For a sample `z_i ~ q(z | x_i)` the per-example KL estimate
`log q(z_i | x_i) - log p(z_i)` telescopes into

- index-code mutual information `log q(z_i | x_i) - log q(z_i)`,
- total correlation `log q(z_i) - sum_j log q(z_ij)`,
- dimension-wise KL `sum_j log q(z_ij) - log p(z_ij)`,

where the aggregate posterior `q(z)` and its marginals `q(z_j)` are estimated
on the minibatch by minibatch-weighted sampling (MWS):
`log q(z_i) ~ logsumexp_m log q(z_i | x_m) - log(N * M)` for a batch of M
out of a dataset of N examples (and the same per dimension for `q(z_ij)`).
MWS is biased: for posteriors much narrower than the spread of the codes its
`log q(z)` is low by about `log M`, so the logged MI is high by `log M` and
the TC and dimension-wise KL carry offsets that cancel in their sum; the
offsets do not depend on the parameters, so the gradients are those of the
paper. beta-TCVAE trains on `reconstruction + MI + tc_beta * TC + dimwise KL`
(alpha = gamma = 1), through `VAE.regularizer(terms)`: no step of its own.

Example:

>>> vae = keras_vae.TCVAE(image_shape=(64, 64, 1), latent_dim=10, tc_beta=6.0,
...                       dataset_size=len(train_images))
>>> vae.compile()
>>> vae.fit(train_images, epochs=30).history["total_correlation"]
"""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_vae.models.vae import VAE
from keras_vae.parts.posterior import gaussian_log_density


def tc_decomposition(z, z_mean, z_log_var, dataset_size: int, log_prior_per_dim) -> dict:
    """The MWS decomposition of the KL estimate of one minibatch, per example.

    Args:
        z: Posterior samples `(batch, latent_dim)`, `z_i ~ q(z | x_i)`.
        z_mean: Posterior means `(batch, latent_dim)`.
        z_log_var: Posterior log-variances `(batch, latent_dim)`.
        dataset_size: N, the number of training examples.
        log_prior_per_dim: `log p(z_ij)` of a factorized prior, `(batch, latent_dim)`.

    Returns:
        Dict of `(batch,)` float32 tensors `mutual_info`, `total_correlation`
        and `dimwise_kl`, whose sum is `log q(z_i | x_i) - log p(z_i)`.
    """
    z = ops.cast(z, "float32")
    mean = ops.cast(z_mean, "float32")
    log_var = ops.cast(z_log_var, "float32")
    # log q(z_ik | x_mk) for every pair (i, m) of the batch: (batch, batch, latent_dim).
    pairs = gaussian_log_density(z[:, None, :], mean[None, :, :], log_var[None])
    batch = ops.cast(ops.shape(z)[0], "float32")
    log_nm = ops.log(batch) + math.log(float(dataset_size))
    log_q_given_x = ops.sum(gaussian_log_density(z, mean, log_var), axis=-1)  # (batch,)
    log_q = ops.logsumexp(ops.sum(pairs, axis=-1), axis=1) - log_nm  # (batch,)
    log_q_marginals = ops.sum(ops.logsumexp(pairs, axis=1) - log_nm, axis=-1)  # (batch,)
    log_p = ops.sum(ops.cast(log_prior_per_dim, "float32"), axis=-1)  # (batch,)
    return {"mutual_info": log_q_given_x - log_q,
            "total_correlation": log_q - log_q_marginals,
            "dimwise_kl": log_q_marginals - log_p}


@keras.saving.register_keras_serializable(package="keras_vae")
class TCVAE(VAE):
    """beta-TCVAE: a VAE whose regularizer weights the total correlation by `tc_beta`.

    Per example the regularizer is
    `kl_weight() * (MI + tc_beta * TC + dimension-wise KL)`, estimated by
    minibatch-weighted sampling (see the module docstring), with `kl_weight()`
    the model's `beta` (default 1) times any KL warm-up. It logs the three
    terms as `mutual_info`, `total_correlation` and `dimwise_kl`.

    Args:
        tc_beta: Weight of the total correlation (1 gives the plain ELBO's
            KL in expectation; Chen et al. use 6 on dSprites).
        dataset_size: N, the number of training examples (the MWS estimate
            of the aggregate posterior needs it).
        **kwargs: `VAE` arguments. The prior must factorize over dimensions
            (`standard_normal`); `iwae_k` must be 1 and `free_bits` 0.

    Raises:
        ValueError: a missing or bad `dataset_size` or `tc_beta`, a prior that
            does not factorize, `iwae_k > 1` or `free_bits`.
    """

    CONFIG_KEYS = ("tc_beta", "dataset_size")

    def __init__(self, *args, tc_beta: float = 6.0, dataset_size: int | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if dataset_size is None or isinstance(dataset_size, bool) or \
                int(dataset_size) != dataset_size or dataset_size < 1:
            raise ValueError("TCVAE needs dataset_size, the number of training examples "
                             f"(an integer >= 1), for its MWS estimate; got {dataset_size!r}")
        if not math.isfinite(float(tc_beta)) or tc_beta < 0:
            raise ValueError(f"tc_beta must be a finite number >= 0, got {tc_beta!r}")
        if self.iwae_k > 1 or self.free_bits:
            raise ValueError("TCVAE regularizes the ELBO's KL term: use iwae_k=1 and "
                             "free_bits=0.")
        if self.prior.log_prob_per_dim(ops.zeros((1, self.latent_dim))) is None:
            raise ValueError(f"TCVAE's dimension-wise KL needs a prior that factorizes over "
                             f"dimensions (standard_normal), not {type(self.prior).__name__}.")
        self.tc_beta = float(tc_beta)
        self.dataset_size = int(dataset_size)
        self.mutual_info_tracker = keras.metrics.Mean(name="mutual_info")
        self.total_correlation_tracker = keras.metrics.Mean(name="total_correlation")
        self.dimwise_kl_tracker = keras.metrics.Mean(name="dimwise_kl")

    def decomposition(self, terms) -> dict:
        """`tc_decomposition` of the terms of `elbo_terms` (`z`, `z_mean`, `z_log_var`).

        Computed once per step (O(batch^2 * latent_dim)): kept in `terms` under
        `"tc_parts"` for the metrics that read it after the regularizer.
        """
        if "tc_parts" not in terms:
            terms["tc_parts"] = tc_decomposition(
                terms["z"], terms["z_mean"], terms["z_log_var"], self.dataset_size,
                self.prior.log_prob_per_dim(terms["z"]))
        return terms["tc_parts"]

    def regularizer(self, terms):
        parts = self.decomposition(terms)
        return self.kl_weight() * (parts["mutual_info"]
                                   + self.tc_beta * parts["total_correlation"]
                                   + parts["dimwise_kl"])

    @property
    def metrics(self):
        return [*super().metrics, self.mutual_info_tracker, self.total_correlation_tracker,
                self.dimwise_kl_tracker]

    def _update_metrics(self, per_example, terms):
        parts = self.decomposition(terms)  # the regularizer's, from `terms`
        self.mutual_info_tracker.update_state(parts["mutual_info"])
        self.total_correlation_tracker.update_state(parts["total_correlation"])
        self.dimwise_kl_tracker.update_state(parts["dimwise_kl"])
        return super()._update_metrics(per_example, terms)  # logs of all `self.metrics`
