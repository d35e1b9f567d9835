"""What a trained model is for.

- `latent`: encoding, interpolation, traversals and attribute vectors;
- `anomaly`: anomaly scores and thresholds;
- `corruption`: noise models for denoising and inpainting;
- `augmentation`: new training examples drawn around real ones;
- `pictures`: image grids written as PNG.
"""

from keras_vae.uses import pictures  # noqa: I001 (in dependency order)
from keras_vae.uses import anomaly, augmentation, corruption, latent

__all__ = ["anomaly", "augmentation", "corruption", "latent", "pictures"]
