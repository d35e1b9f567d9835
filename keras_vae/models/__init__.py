"""The model families: each a Keras model trained with `fit`, saved, evaluated and exported.

- `family`: `Family` (what a family is: latent kind, graphs, manifest entry,
  train options), the registry `FAMILIES` and `family_of(model)`;
- `vae`: `VAE`, the ELBO written once (its variants override `regularizer`);
- `tcvae`: `TCVAE` (beta-TCVAE), a regularizer: the VAE family;
- `vaegan`: `VAEGAN`, a VAE with a discriminator and its own `train_step`;
- `vqvae`: `VQVAE`, discrete codes and a learned code prior;
- `built`, `signatures`: what every family shares (a built functional view,
  the graphs it exports).

Each family module ends with its one registration line, and every module of
this folder is imported with the package, so a new family is its module plus
that line.
"""

import importlib
import pkgutil

from keras_vae.models import built, family, signatures, tcvae, vae, vaegan, vqvae
from keras_vae.models.family import CODES, CONTINUOUS, FAMILIES, Family, Option, family_of
from keras_vae.models.tcvae import TCVAE
from keras_vae.models.vae import VAE
from keras_vae.models.vaegan import VAEGAN
from keras_vae.models.vqvae import VQVAE

# The families nobody imports by name register here (their module's last line).
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["CODES", "CONTINUOUS", "FAMILIES", "TCVAE", "VAE", "VAEGAN", "VQVAE", "Family",
           "Option", "built", "family", "family_of", "signatures", "tcvae", "vae", "vaegan",
           "vqvae"]
