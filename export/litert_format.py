"""Export to LiteRT (`.tflite` flatbuffers) with builtin ops only, checked in `ai_edge_litert`."""

from __future__ import annotations

import logging

import keras
import numpy as np

from keras_vae import backend, files
from keras_vae.export import graphs, manifest, parity
from keras_vae.export.errors import ExportError

PRECISIONS = ("fp32", "fp16", "int8_dynamic", "int8_full")
SIGNATURE = "serving_default"
REPRESENTATIVE_SIZE = 128


def export_litert(model: keras.Model, path, *, graph: str = "decoder",
                  quantize: str | None = None, representative_z=None,
                  representative_images=None, seed: int = 0) -> dict:
    """Exports one graph of a VAE to a `.tflite` file and proves it in LiteRT.

    Converted with `TFLiteConverter.from_concrete_functions` and
    `TFLITE_BUILTINS` only: no `SELECT_TF_OPS` (Flex), which mobile runtimes
    without the Flex delegate refuse; a file containing a custom or Flex op is
    rejected. Inputs and outputs stay float32 at every precision. 3x3
    stride-2 transposed convolutions are traced in their sub-pixel form
    (`keras_vae.export.subpixel`), which XNNPACK runs with a dynamic batch
    (the manifest's `rewrites` counts them).

    Args:
        model: A `keras_vae.VAE` (mixed-precision models export in float32).
        path: `.tflite` file to write (atomically).
        graph: `decoder`, `encoder` or `scorer`.
        quantize: None (float32), `"fp16"` (float16 weights), `"int8_dynamic"`
            (int8 weights, dynamic-range activations) or `"int8_full"`
            (int8 weights and activations calibrated on a representative set).
        representative_z: `(n, latent_dim)` latents calibrating the decoder for
            `int8_full`, e.g. encoded training images; default: 128 draws
            from the prior with `seed`.
        representative_images: Images calibrating the encoder/scorer for
            `int8_full`; default: uniform noise images.
        seed: Seed of the parity inputs and the default representative set.

    Returns:
        The file's manifest entry, parity figures and op list included.

    Raises:
        ValueError: an unsupported `quantize` or unknown `graph`.
        ExportError: random ops, a Flex/custom op, a load or parity failure.

    Example:

    >>> export_litert(vae, "out/decoder.int8_full.tflite", quantize="int8_full",
    ...               representative_z=vae.encode(train_images)[0])
    """
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    precision = quantize or "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"LiteRT export supports quantize in {[None, *PRECISIONS[1:]]}, "
                         f"got {quantize!r}")
    traced = graphs.trace(model, graph, subpixel=True)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [traced.concrete], traced.module)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if precision == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if precision == "int8_full":
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.representative_dataset = _representative(
            traced, representative_z, representative_images, seed)
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)  # the converter logs its temporary SavedModel
    try:
        with backend.native_logs_filtered():
            flatbuffer = converter.convert()
    except Exception as e:
        raise ExportError(f"TFLite conversion of the {graph} with builtin ops only failed: "
                          f"{e}") from e
    finally:
        tf_logger.setLevel(level)
    ops = op_names(flatbuffer)
    foreign = [op for op in ops if op.startswith("CUSTOM:")]
    if foreign:
        raise ExportError(f"{path} would need custom/Flex ops {foreign}, which mobile "
                          "runtimes without the Flex delegate refuse")
    inputs, outputs = traced.io_specs()
    with files.staged(path) as tmp:
        tmp.write_bytes(flatbuffer)
        try:
            with backend.native_logs_filtered():
                runner = Interpreter(model_path=str(tmp)).get_signature_runner(SIGNATURE)
        except Exception as e:
            raise ExportError(f"LiteRT cannot load {path}: {e}") from e
        got = sorted(runner.get_input_details()), sorted(runner.get_output_details())
        want = sorted(i["name"] for i in inputs), sorted(o["name"] for o in outputs)
        if got != want:
            raise ExportError(f"{path} has inputs/outputs {got}, expected {want}")

        def run(feeds):
            return {k: np.array(v) for k, v in runner(**feeds).items()}

        with backend.native_logs_filtered():  # LiteRT notes its delegate at the first call
            figures = parity.check(traced, run, precision, str(path), traced.peak, seed)
    return manifest.file_entry(
        path, graph=graph, format="litert", precision=precision,
        converter=f"tensorflow {tf.__version__} TFLiteConverter (TFLITE_BUILTINS"
                  f"{' + TFLITE_BUILTINS_INT8' if precision == 'int8_full' else ''})",
        runtime=f"ai-edge-litert {_litert_version()}", signature=SIGNATURE,
        inputs=inputs, outputs=outputs, ops=ops, rewrites=traced.rewrites, parity=figures,
    )


def op_names(flatbuffer: bytes) -> list[str]:
    """Sorted operator names of a `.tflite` flatbuffer, read from its operator codes.

    Builtin ops by name (`CONV_2D`); a custom op as `CUSTOM:<code>` (a Flex op,
    i.e. a TensorFlow op run by the Flex delegate, has a code starting `Flex`).
    """
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    model = schema.Model.GetRootAsModel(flatbuffer, 0)
    ops = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            ops.add(f"CUSTOM:{custom.decode() if isinstance(custom, bytes) else custom}")
        else:
            ops.add(names.get(builtin, f"UNKNOWN_{builtin}"))
    return sorted(ops)


def _representative(traced, representative_z, representative_images, seed):
    """A calibration generator over the graph's inputs, one example at a time."""
    rng = np.random.default_rng(seed)
    model = traced.model
    if not {"z", "image"} & {name for name, _, _ in traced.inputs}:
        # Graphs of integer codes (a VQ-VAE's decoder and prior): their own valid inputs.
        def codes():
            for _ in range(REPRESENTATIVE_SIZE):
                feeds = traced.random_inputs(1, rng)
                yield [feeds[name] for name, _, _ in traced.inputs]

        return codes
    if traced.name == "decoder":
        data = (traced.prior_draws(REPRESENTATIVE_SIZE, np.random.default_rng(seed))
                if representative_z is None else np.asarray(representative_z, np.float32))
        key, shape = "z", (model.latent_dim,)
    else:
        data = (rng.random((REPRESENTATIVE_SIZE, *model.image_shape), dtype=np.float32)
                if representative_images is None
                else np.asarray(representative_images, np.float32))
        key, shape = "image", tuple(model.image_shape)
    if data.ndim != len(shape) + 1 or tuple(data.shape[1:]) != shape or not len(data):
        raise ValueError(f"The representative {key} data must be (n, {', '.join(map(str, shape))}), "
                         f"got {data.shape}")

    def generate():
        for row in data:
            feeds = traced.random_inputs(1, rng)
            feeds[key] = row[None]
            yield [feeds[name] for name, _, _ in traced.inputs]

    return generate


def _litert_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "unknown"
