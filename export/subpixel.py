"""Stride-2 transposed convolutions traced as sub-pixel convolutions (for LiteRT).

LiteRT's XNNPACK delegate takes a `TRANSPOSE_CONV` only when its output shape
is a constant, and a graph with a dynamic batch computes that shape at run
time, so the two upsampling layers of a conv decoder ran in LiteRT's slower
reference kernels (about 1 ms per sample against 0.2-0.3 ms in onnxruntime).
A 3x3, stride-2, `same` transposed convolution is also four 2x2 convolutions,
one per output phase (even/odd row, even/odd column), interleaved:

    pad one row on top and one column on the left -> CONV_2D 2x2 with
    4 x filters outputs -> DEPTH_TO_SPACE 2

which XNNPACK takes whatever the batch. It does 16/9 of the multiply-adds
(the phase kernels hold zeros) and still decodes about twice as fast in
LiteRT. onnxruntime runs its own ConvTranspose faster, so only the TFLite
export uses this form; the parity check against Keras proves each file.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

# Along one axis, with TensorFlow's `same` padding, output 2i takes y[i] * w[0] and
# y[i - 1] * w[2]; output 2i + 1 takes y[i] * w[1]. With y padded by one in front,
# position p of the 2x2 window reads y[i - 1 + p]: (phase, p) -> kernel tap.
_TAP = {(0, 1): 0, (0, 0): 2, (1, 1): 1}


def applies(layer) -> bool:
    """Whether `layer` is a transposed convolution this module rewrites."""
    return (isinstance(layer, keras.layers.Conv2DTranspose)
            and tuple(layer.kernel_size) == (3, 3) and tuple(layer.strides) == (2, 2)
            and layer.padding == "same" and tuple(layer.dilation_rate) == (1, 1)
            and layer.output_padding is None and layer.data_format == "channels_last")


def phase_kernel(kernel: np.ndarray) -> np.ndarray:
    """`(3, 3, out, in)` transposed-conv kernel -> `(2, 2, in, 4 * out)` conv kernel.

    Output channel `(2 * a + b) * out + c` holds phase (row a, column b) of
    channel c, the order `tf.nn.depth_to_space` reads.
    """
    _, _, out, inp = kernel.shape
    phases = np.zeros((2, 2, inp, 4 * out), kernel.dtype)
    for a in range(2):
        for b in range(2):
            channels = slice((2 * a + b) * out, (2 * a + b + 1) * out)
            for p in range(2):
                for q in range(2):
                    if (a, p) in _TAP and (b, q) in _TAP:
                        phases[p, q, :, channels] = kernel[_TAP[a, p], _TAP[b, q]].T
    return phases


def _subpixel_call(layer):
    kernel = tf.constant(phase_kernel(np.asarray(layer.kernel, np.float32)))
    bias = (tf.constant(np.tile(np.asarray(layer.bias, np.float32), 4)) if layer.use_bias
            else None)

    def call(inputs):
        # Bias and activation (element-wise) go before the interleave, so the converter
        # fuses them into the CONV_2D and int8 files quantize its post-activation range.
        h = tf.nn.conv2d(tf.pad(inputs, [[0, 0], [1, 0], [1, 0], [0, 0]]), kernel, 1, "VALID")
        if bias is not None:
            h = h + bias
        if layer.activation is not None:
            h = layer.activation(h)
        return tf.nn.depth_to_space(h, 2)

    return call


@contextlib.contextmanager
def transposed_convs_as_subpixel(layers):
    """Within the block, the eligible transposed convolutions among `layers` run as sub-pixel ones.

    The weights are read when the block is entered (trace inside it); the
    layers get their own `call` back on leaving it.

    Args:
        layers: Layers to consider (repeats are switched once), e.g. every
            layer of a model and its nested models.

    Yields:
        How many layers were switched.
    """
    switched = list({id(layer): layer for layer in layers if applies(layer)}.values())
    try:
        for layer in switched:
            layer.call = _subpixel_call(layer)
        yield len(switched)
    finally:
        for layer in switched:
            del layer.call
