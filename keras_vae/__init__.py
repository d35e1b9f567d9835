"""keras-vae: variational autoencoders for Keras 3, from `model.fit` to the edge.

`import keras_vae` registers every model part with Keras (so
`keras.saving.load_model` works in a fresh process) and exposes every module
the docs use. The layers, bottom up (imports only point down):

- leaves: `version`, `registry`, `signatures`, `recipes` (numpy only, shared
  with the device code: checksums, atomic writes, prior draws, slerp, grids);
- `files`, `data` (sources, checks, pipeline, batches), `blocks`,
  `likelihoods`, `posterior`, `priors`, `objectives`, `distribute`;
- `networks`, `sequences`, `saving`, then the models: `vae`, its variant
  `tcvae` (beta-TCVAE), `vaegan` (VAE-GAN), and `vqvae` (with its learned prior over code grids,
  `code_prior`);
- uses of a model: `evaluation`, `quality` (sample quality), `disentanglement`,
  `anomaly`, `latent`, `corruption`,
  `augmentation`, `pictures`, `callbacks`, `training` (`training.run` is
  everything `keras-vae train` does);
- `export`: the exporters (loaded on first use) and the device bundle;
- on top, the entry points `cli` and `demo`.
"""

import sys as _sys

from keras_vae.version import __version__  # noqa: I001 (first: a leaf every module may read)


def _device_command() -> bool:
    """True in `keras-vae serve`: the server is device-side code and needs no TensorFlow."""
    from pathlib import Path

    return Path(_sys.argv[0]).name.startswith("keras-vae") and _sys.argv[1:2] == ["serve"]


if not _device_command():
    from keras_vae import backend as _backend

    _backend.quiet_import()
    from keras_vae import data, files, registry, saving  # noqa: I001 (in dependency order)
    from keras_vae import parts, models, evaluation, uses, training, export
    from keras_vae.models import VAE, TCVAE, VAEGAN, VQVAE
    from keras_vae.models.vqvae import VectorQuantizer
    from keras_vae.parts.likelihoods import Bernoulli, Gaussian, GaussianPixel
    from keras_vae.parts.posterior import DiagonalGaussian, Sampling
    from keras_vae.parts.priors import (
        FittedMixture,
        MixturePrior,
        StandardNormal,
        VampPrior,
        prior_z,
    )

__all__ = [
    "VAE", "TCVAE", "VAEGAN", "VQVAE", "Bernoulli", "DiagonalGaussian", "FittedMixture", "Gaussian",
    "GaussianPixel", "MixturePrior", "Sampling", "StandardNormal", "VampPrior",
    "VectorQuantizer", "__version__", "prior_z",
    "data", "evaluation", "export", "files", "models", "parts", "registry", "saving", "training",
    "uses",
]
