#!/usr/bin/env python3
"""Decodes images from a keras-vae export with onnxruntime, needing only numpy and onnxruntime.

Copy the export directory (it holds this file and the device modules it
imports) to the device, then:

    python sample_onnx.py EXPORT_DIR --n 16 --seed 0 --out grid.png
    python sample_onnx.py EXPORT_DIR --interpolate 0 1 --steps 8 --out path.png
    python sample_onnx.py EXPORT_DIR --n 4 --out images.npy  # raw float32 images

The same `--seed` gives the same z as `prior_z` and `VAE.sample` in the library.
"""

import os
import sys

# No telemetry queue under ~/.cache: opt out before onnxruntime is ever imported.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

if __package__:
    from keras_vae import recipes

    from . import reader, sampler
else:  # run as a script: the device modules sit beside this file
    try:
        import reader
        import recipes
        import sampler
    except ImportError as e:
        sys.exit(f"sample_onnx.py: error: {e.name}.py must sit beside this script; copy the "
                 "whole export folder (or sampler.py, reader.py, images.py and recipes.py).")

PRECISIONS = ["fp32", "int8_dynamic"]
_DTYPES = {"tensor(float)": "float32", "tensor(int32)": "int32", "tensor(int64)": "int64",
           "tensor(float16)": "float16", "tensor(double)": "float64"}


def load(content: bytes, threads: int, name: str = "decoder.onnx", output: str = "x"):
    """Opens a checked ONNX file's bytes in onnxruntime; returns `(inputs, run)` of `output`.

    A model that keeps tensors in external data files is refused: the runtime
    would read them from outside what the manifest's checksum covers.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise reader.EdgeError("onnxruntime is not installed (pip install onnxruntime).") from None
    try:
        external = reader.onnx_uses_external_data(content)
    except reader.EdgeError as e:
        raise reader.EdgeError(f"onnxruntime cannot load {name}: {e}") from None
    if external:
        raise reader.EdgeError(
            f"{name} keeps tensors in external data files, which the manifest's checksum does "
            "not cover; refusing it (export without external data).")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise reader.EdgeError(f"onnxruntime cannot load {name}: {recipes.clip(message)}") from None
    inputs = {
        i.name: (tuple(d if isinstance(d, int) else None for d in i.shape),
                 _DTYPES.get(i.type, i.type))
        for i in session.get_inputs()
    }

    def decode(feeds):
        try:
            return session.run([output], feeds)[0]
        except Exception as e:
            raise reader.EdgeError(f"onnxruntime failed to run {name}: {recipes.clip(e)}") from None

    return inputs, decode


def main(argv=None) -> int:
    return sampler.run_sampler(argv, "sample_onnx.py", "onnxruntime", "onnx", PRECISIONS, load)


if __name__ == "__main__":
    sys.exit(main())
