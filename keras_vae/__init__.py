"""keras-vae: variational autoencoders for Keras 3, from `model.fit` to the edge.

`import keras_vae` registers every model part with Keras (so
`keras.saving.load_model` works in a fresh process) and exposes every module
the docs use. The layers, bottom up (imports only point down):

- leaves: `version`, `registry`, `signatures`, `export.edge_io` (numpy-only
  device code: checksums, atomic writes, prior draws, slerp, grids);
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

from keras_vae.version import __version__  # noqa: I001 (first: a leaf every module may read)
from keras_vae import (
    anomaly,
    augmentation,
    blocks,
    built,
    callbacks,
    code_prior,
    corruption,
    data,
    disentanglement,
    distribute,
    evaluation,
    export,
    files,
    latent,
    likelihoods,
    networks,
    objectives,
    pictures,
    posterior,
    priors,
    quality,
    registry,
    saving,
    sequences,
    signatures,
    tcvae,
    training,
    vaegan,
    vqvae,
)
from keras_vae.likelihoods import Bernoulli, Gaussian, GaussianPixel
from keras_vae.posterior import DiagonalGaussian, Sampling
from keras_vae.priors import FittedMixture, MixturePrior, StandardNormal, VampPrior, prior_z
from keras_vae.tcvae import TCVAE
from keras_vae.vae import VAE
from keras_vae.vaegan import VAEGAN
from keras_vae.vqvae import VQVAE, VectorQuantizer

__all__ = [
    "VAE", "TCVAE", "VAEGAN", "VQVAE", "Bernoulli", "DiagonalGaussian", "FittedMixture", "Gaussian",
    "GaussianPixel", "MixturePrior", "Sampling", "StandardNormal", "VampPrior",
    "VectorQuantizer", "__version__", "prior_z",
    "anomaly", "augmentation", "blocks", "built", "callbacks", "code_prior", "corruption", "data",
    "disentanglement", "distribute", "evaluation", "export", "files", "latent", "likelihoods",
    "networks", "objectives", "pictures", "posterior", "priors", "quality", "registry",
    "saving", "sequences", "signatures", "tcvae", "training", "vaegan", "vqvae",
]
