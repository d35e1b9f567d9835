"""keras-vae: variational autoencoders for Keras 3, from `model.fit` to the edge.

`import keras_vae` registers every model part with Keras (so
`keras.saving.load_model` works in a fresh process) and exposes the public
classes. Its folders are its layers, bottom up (imports only point down;
docs/architecture.md draws them):

- `recipes` (numpy only, shared with the device code: checksums, atomic writes,
  prior draws, code grids, slerp, grids, the label check), `version`, `registry`;
- `backend` (TensorFlow, imported quietly), `compat` (Keras-private names),
  `files`, `saving`;
- `data/`: sources, checks, the tf.data pipeline, batches;
- `parts/`: networks, likelihoods, posterior, priors, objectives, the code prior;
- `models/`: the families (`vae`, `tcvae`, `vaegan`, `vqvae`) and `FAMILIES`;
- `evaluation/`, `uses/`, `training/`: what is done with a model;
- `keras_vae.export` (the repository's top-level `export/` folder): the
  exporters and the device programs; import it by name (`import keras_vae.export`);
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
    from keras_vae import parts, models, evaluation, uses, training
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
    "data", "evaluation", "files", "models", "parts", "registry", "saving", "training",
    "uses",
]
