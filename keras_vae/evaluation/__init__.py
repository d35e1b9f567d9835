"""Honest evaluation of a trained model.

- `likelihood`: the held-out negative ELBO, the importance-weighted NLL, bits per
  dimension, KL per dimension and active units (`evaluate`);
- `quality`: sample quality (Frechet distance, precision, recall) in the features
  of a classifier trained on the reference data;
- `disentanglement`: MIG, FactorVAE and DCI scores on data with known factors.
"""

from keras_vae.evaluation import likelihood  # noqa: I001 (in dependency order)
from keras_vae.evaluation import disentanglement, quality
from keras_vae.evaluation.likelihood import (
    DECODE_BUDGET,
    evaluate,
    evaluate_elbo,
    iwae_nll,
    latent_statistics,
)

__all__ = ["DECODE_BUDGET", "disentanglement", "evaluate", "evaluate_elbo", "iwae_nll",
           "latent_statistics", "likelihood", "quality"]
