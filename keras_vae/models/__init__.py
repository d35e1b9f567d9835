"""The model families: each a Keras model trained with `fit`, saved, evaluated and exported.

- `vae`: `VAE`, the ELBO written once (its variants override `regularizer`);
- `tcvae`: `TCVAE` (beta-TCVAE), a regularizer;
- `vaegan`: `VAEGAN`, a VAE with a discriminator and its own `train_step`;
- `vqvae`: `VQVAE`, discrete codes and a learned code prior;
- `built`, `signatures`: what every family shares (a built functional view,
  the graphs it exports).
"""

from keras_vae.models import built, signatures  # noqa: I001 (in dependency order)
from keras_vae.models import vae, tcvae, vaegan, vqvae
from keras_vae.models.tcvae import TCVAE
from keras_vae.models.vae import VAE
from keras_vae.models.vaegan import VAEGAN
from keras_vae.models.vqvae import VQVAE

__all__ = ["TCVAE", "VAE", "VAEGAN", "VQVAE", "built", "signatures", "tcvae", "vae", "vaegan",
           "vqvae"]
