"""Export to a TensorFlow SavedModel directory with a `serving_default` signature."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_vae import files
from keras_vae.export import graphs, manifest, parity
from keras_vae.export.errors import ExportError

SIGNATURE = "serving_default"


def export_saved_model(model: keras.Model, path, *, graph: str = "decoder",
                       quantize: str | None = None, representative_z=None,
                       representative_images=None, seed: int = 0) -> dict:
    """Exports one graph of a VAE as a SavedModel and proves it equals Keras.

    The signature `serving_default` takes the graph's named inputs (`z`, and
    `label` for conditional models, for the decoder) with a dynamic batch and
    returns a dict of its named outputs (`x` for the decoder).

    Args:
        model: A `keras_vae.VAE` (mixed-precision models export in float32).
        path: Directory to create (replaced atomically if it exists).
        graph: `decoder`, `encoder` or `scorer`.
        quantize: Must be None: SavedModels are float32 only.
        representative_z: Unused (the formats share one signature).
        representative_images: Unused.
        seed: Seed of the parity inputs.

    Returns:
        The file's manifest entry, parity figures included.

    Raises:
        ValueError: `quantize` is not None, or an unknown `graph`.
        ExportError: random ops, a load failure or a parity failure.

    Example:

    >>> export_saved_model(vae, "out/decoder_savedmodel", graph="decoder")
    """
    if quantize not in (None, "fp32"):
        raise ValueError(f"SavedModel exports are float32 only; got quantize={quantize!r} "
                         "(quantize with the tflite or onnx formats)")
    traced = graphs.trace(model, graph)
    with files.staged(path) as tmp:
        tf.saved_model.save(traced.module, str(tmp), signatures={SIGNATURE: traced.concrete})
        try:
            serve = tf.saved_model.load(str(tmp)).signatures[SIGNATURE]
        except Exception as e:
            raise ExportError(f"tf.saved_model.load cannot load {path}: {e}") from e

        def run(feeds):
            outputs = serve(**{k: tf.constant(v) for k, v in feeds.items()})
            return {k: np.asarray(v) for k, v in outputs.items()}

        figures = parity.check(traced, run, "fp32", str(path), traced.peak, seed)
    inputs, outputs = traced.io_specs()
    return manifest.file_entry(
        path, graph=graph, format="savedmodel", precision="fp32",
        converter=f"tensorflow {tf.__version__}", runtime=f"tensorflow {tf.__version__}",
        signature=SIGNATURE, inputs=inputs, outputs=outputs, parity=figures,
    )
