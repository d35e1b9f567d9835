"""Export to ONNX (opset 17) with tf2onnx, checked in onnxruntime."""

from __future__ import annotations

import logging
import os

import keras

from keras_vae import files
from keras_vae.export import graphs, manifest, parity
from keras_vae.export.errors import ExportError

OPSET = 17
PRECISIONS = ("fp32", "int8_dynamic")
# What int8_dynamic quantizes: the dense layers. It pays where a wide one dominates
# the bytes read per sample; where the only dense layer is narrow (the default conv
# decoder), the quantize/dequantize steps cost more than they save
# (benchmarks/README.md, sampling).
QUANTIZED_OPS = ["MatMul"]
# Output channels below which a stride-1 convolution is exported as a ConvTranspose
# (onnxruntime pads convolution outputs to 16 channels with AVX-512).
NARROW_CHANNELS = 16


def export_onnx(model: keras.Model, path, *, graph: str = "decoder",
                quantize: str | None = None, representative_z=None,
                representative_images=None, seed: int = 0) -> dict:
    """Exports one graph of a VAE to ONNX and proves it equals Keras in onnxruntime.

    The graph is traced as a `tf.function` and converted with
    `tf2onnx.convert.from_function` (tf2onnx's `from_keras` does not support
    Keras 3). Inputs and outputs keep their names (`z` -> `x` for the decoder);
    the batch dimension is the symbolic `batch`.

    Args:
        model: A `keras_vae.VAE` (mixed-precision models export in float32).
        path: `.onnx` file to write (atomically).
        graph: `decoder`, `encoder` or `scorer`.
        quantize: None (float32) or `"int8_dynamic"` (onnxruntime dynamic
            quantization of the matrix multiplications: int8 weights,
            activations quantized on the fly; convolutions stay float32,
            since onnxruntime's `ConvInteger` is slower than its float
            convolutions on CPU and costs more accuracy).
        representative_z: Unused (dynamic quantization needs no calibration).
        representative_images: Unused.
        seed: Seed of the parity inputs.

    Returns:
        The file's manifest entry, parity figures included.

    Raises:
        ValueError: an unsupported `quantize` or unknown `graph`.
        ExportError: random ops, `onnx.checker` failure, a load or parity failure.

    Example:

    >>> export_onnx(vae, "out/decoder.onnx")
    """
    import onnx
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    precision = quantize or "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"ONNX export supports quantize in {[None, *PRECISIONS[1:]]}, "
                         f"got {quantize!r}")
    traced = graphs.trace(model, graph)
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    proto, _ = tf2onnx.convert.from_function(
        traced.function, input_signature=traced.input_signature, opset=OPSET)
    _name_batch_dimension(proto)
    transposed = transpose_narrow_convs(proto)
    with files.staged(path) as tmp:
        onnx.save(proto, str(tmp))
        if precision == "int8_dynamic":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            fp32 = tmp.with_name(tmp.name + ".fp32")
            os.replace(tmp, fp32)
            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # quiet its advice to pre-process the model
            try:
                quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=QUANTIZED_OPS)
            finally:
                root.setLevel(level)
                fp32.unlink()
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            raise ExportError(f"onnx.checker rejects {path}: {e}") from e
        try:
            session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ExportError(f"onnxruntime cannot load {path}: {e}") from e
        inputs, outputs = traced.io_specs()
        _check_names(session, inputs, outputs, path)
        names = [o["name"] for o in outputs]

        def run(feeds):
            return dict(zip(names, session.run(names, feeds)))

        figures = parity.check(traced, run, precision, str(path), traced.peak, seed)
    return manifest.file_entry(
        path, graph=graph, format="onnx", precision=precision, opset=OPSET,
        converter=f"tf2onnx {tf2onnx.__version__} (tensorflow {tf.__version__})",
        runtime=f"onnxruntime {ort.__version__}", inputs=inputs, outputs=outputs,
        rewrites={"narrow_convs_transposed": transposed},
        parity=figures,
    )


def transpose_narrow_convs(proto) -> int:
    """Rewrites each stride-1 convolution with few output channels as a ConvTranspose.

    onnxruntime's CPU convolutions pad the output channels to their SIMD block
    (16 floats with AVX-512) and reorder the tensors around them, so the usual
    last layer of an image decoder, 3x3 from C channels to 1 (grayscale) or 3
    (RGB), does 16 times its work (~100 us of a ~250 us batch-1 decode; 64 us
    after a 1x1 + one-hot factoring). A stride-1 convolution is the transposed
    convolution of the same input with the kernel flipped in space and its
    channel axes swapped (pads become k - 1 - pad), and onnxruntime's
    ConvTranspose computes it as one matrix product with no padding of the
    channels: ~15 us. The sums are the same in
    another order (checked against Keras like every export). Only ungrouped
    2-D stride-1 convolutions with fewer than `NARROW_CHANNELS` outputs, no
    dilation, explicit pads below the kernel size, and weights that are
    constants used once are rewritten.

    Returns:
        How many convolutions were rewritten.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = proto.graph
    weights = {init.name: init for init in graph.initializer}
    uses: dict = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    rewritten = 0
    for node in list(graph.node):
        if node.op_type != "Conv" or node.input[1] not in weights or uses[node.input[1]] != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        w = numpy_helper.to_array(weights[node.input[1]])
        if (w.ndim != 4 or w.shape[0] >= NARROW_CHANNELS or attrs.get("group", 1) != 1
                or any(s != 1 for s in attrs.get("strides", [1, 1]))
                or any(d != 1 for d in attrs.get("dilations", [1, 1]))
                or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET")):
            continue
        _, _, kh, kw = w.shape
        pads = list(attrs.get("pads", [0, 0, 0, 0]))
        kernel = [kh, kw, kh, kw]
        if any(p < 0 or p >= k for p, k in zip(pads, kernel)):
            continue
        name = f"{node.name or node.output[0]}/transposed"
        flipped = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
        graph.initializer.remove(weights[node.input[1]])
        graph.initializer.append(numpy_helper.from_array(flipped, f"{name}/w"))
        transposed = helper.make_node(
            "ConvTranspose", [node.input[0], f"{name}/w", *node.input[2:]], list(node.output),
            name=name, kernel_shape=[kh, kw],
            pads=[k - 1 - p for p, k in zip(pads, kernel)])
        position = list(graph.node).index(node)
        graph.node.remove(node)
        graph.node.insert(position, transposed)
        rewritten += 1
    return rewritten


def _name_batch_dimension(proto) -> None:
    """Names the dynamic first dimension of every graph input and output `batch`."""
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


_ORT_DTYPES = {"tensor(float)": "float32", "tensor(int32)": "int32"}


def _check_names(session, inputs, outputs, path) -> None:
    got = {i.name: _ORT_DTYPES.get(i.type, i.type) for i in session.get_inputs()}
    want = {i["name"]: i["dtype"] for i in inputs}
    got_out = {o.name: _ORT_DTYPES.get(o.type, o.type) for o in session.get_outputs()}
    want_out = {o["name"]: o["dtype"] for o in outputs}
    if got != want or got_out != want_out:
        raise ExportError(f"{path} has inputs {got} and outputs {got_out}; expected "
                          f"{want} and {want_out}")
