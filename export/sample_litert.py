#!/usr/bin/env python3
"""Decodes images from a keras-vae export with LiteRT, needing only numpy and ai-edge-litert.

Copy the export directory (it holds this file and the device modules it
imports) to the device, then:

    python sample_litert.py EXPORT_DIR --n 16 --seed 0 --out grid.png
    python sample_litert.py EXPORT_DIR --precision int8_full --out grid.png
    python sample_litert.py EXPORT_DIR --interpolate 0 1 --steps 8 --out path.png

The same `--seed` gives the same z as `prior_z` and `VAE.sample` in the library.
"""

import sys

if __package__:
    from keras_vae import recipes

    from . import reader, sampler
else:  # run as a script: the device modules sit beside this file
    try:
        import reader
        import recipes
        import sampler
    except ImportError as e:
        sys.exit(f"sample_litert.py: error: {e.name}.py must sit beside this script; copy the "
                 "whole export folder (or sampler.py, reader.py, images.py and recipes.py).")

PRECISIONS = ["fp32", "fp16", "int8_dynamic", "int8_full"]


def load(content: bytes, threads: int, name: str = "decoder.tflite", output: str = "x"):
    """Opens a checked TFLite file's bytes in LiteRT; returns `(inputs, run)` of `output`."""
    try:
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise reader.EdgeError("ai-edge-litert is not installed (pip install ai-edge-litert).") \
            from None
    try:
        interpreter = Interpreter(model_content=content, num_threads=threads or None)
        runner = interpreter.get_signature_runner("serving_default")
        details = runner.get_input_details()
    except Exception as e:  # LiteRT raises ValueError/RuntimeError from C++
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise reader.EdgeError(f"LiteRT cannot load {name}: {recipes.clip(message)}") from None
    inputs = {
        key: (tuple(None if d < 0 else int(d) for d in d_["shape_signature"]),
              np.dtype(d_["dtype"]).name)
        for key, d_ in details.items()
    }

    def decode(feeds):
        try:
            return runner(**feeds)[output]
        except Exception as e:
            raise reader.EdgeError(f"LiteRT failed to run {name}: {recipes.clip(e)}") from None

    return inputs, decode


def main(argv=None) -> int:
    return sampler.run_sampler(argv, "sample_litert.py", "LiteRT", "litert", PRECISIONS, load)


if __name__ == "__main__":
    sys.exit(main())
