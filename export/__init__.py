"""keras_vae.export: VAE graphs as SavedModel, ONNX and LiteRT files, and the code that runs them.

The top-level `export/` folder of the repository is this package (setup.py maps
it), in two layers:

- the exporters (`exporter`, `graphs`, `manifest`, `parity`, `*_format`,
  `subpixel`): TensorFlow-side, each file checked in its runtime against Keras
  before it is reported, and described in `manifest.json`;
- the device side (`reader`, `images`, `sampler`, `sample_onnx`,
  `sample_litert`, the server): numpy and one runtime only, importing nothing
  of keras_vae but the numpy-only leaf `keras_vae.recipes` (linked into this
  folder as `recipes.py`), copied into every export folder so the folder runs
  on its own.

The library never imports this package (only the `export` command does); the
recipes it shares with the device (the one SHA-256, atomic writer, prior
sampler and slerp) live in `keras_vae.recipes`. The exporters load on first
use (PEP 562).

Example:

>>> import keras_vae.export
>>> manifest = keras_vae.export.export(vae, "runs/demo/export",
...                                    formats=("savedmodel", "onnx", "litert"),
...                                    quantize=("fp16", "int8"))
"""

import importlib

# Public name -> module that defines it (loaded when first used).
_LAZY = {
    "ExportError": "errors",
    "FORMATS": "exporter", "FORMAT_ALIASES": "exporter", "QUANTIZATIONS": "exporter",
    "DEVICE_FILES": "exporter",
    "export": "exporter", "filename": "exporter", "get": "exporter",
    "export_litert": "litert_format",
    "table": "manifest",
    "export_onnx": "onnx_format",
    "export_saved_model": "saved_model_format",
}

# Old public names kept for callers outside the package: old -> current.
_ALIASES = {"export_tflite": "export_litert"}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _ALIASES:
        value = globals()[name] = __getattr__(_ALIASES[name])
        return value
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY, *_ALIASES})
