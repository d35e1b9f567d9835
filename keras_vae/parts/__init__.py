"""The pieces a model is built from; no module here imports a model.

- `blocks`, `networks`, `sequences`: encoder and decoder networks
  (`networks.ARCHITECTURES`);
- `likelihoods` (`LIKELIHOODS`), `posterior` (`POSTERIORS`), `priors` (`PRIORS`):
  the distributions of the ELBO; `code_prior`: the PixelCNN prior over VQ code grids;
- `objectives`: KL schedules, free bits and the ELBO terms;
- `distribute`: loss averaging and step logs that work on one device and under
  `tf.distribute`.
"""

from keras_vae.parts import (  # noqa: I001 (in dependency order)
    blocks,
    likelihoods,
    posterior,
    distribute,
    objectives,
    priors,
    sequences,
    networks,
    code_prior,
)

__all__ = ["blocks", "code_prior", "distribute", "likelihoods", "networks", "objectives",
           "posterior", "priors", "sequences"]
