"""FLOPs per example of a model's forward pass, counted from its layer shapes.

Multiply-adds x 2: Dense `2*in*out`, Conv2D `2*H_out*W_out*k*k*C_in*C_out`,
Conv2DTranspose `2*H_in*W_in*k*k*C_in*C_out`; element-wise work (activations,
the loss, Adam) is left out. A training step is counted as 3x the forward pass
of encoder plus decoder (forward, and the backward pass's two matmuls per layer).

A leaf: `systems.py` (each system's `flops_forward`), `roofline.py` and
`bench_sampling.py` import it, and it imports nothing of the benchmarks.

>>> from benchmarks import flops
>>> flops.keras_flops(model.decoder)   # per decoded sample
"""

from __future__ import annotations


def keras_flops(model) -> int:
    """Forward FLOPs per example of a functional Keras model, from its layer shapes."""
    from keras import layers

    total = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, layers.Dense):
            total += 2 * int(layer.kernel.shape[0]) * int(layer.kernel.shape[1])
        elif isinstance(layer, layers.Conv2DTranspose):
            k_h, k_w, c_out, c_in = (int(d) for d in layer.kernel.shape)
            _, h_in, w_in, _ = layer.input.shape
            total += 2 * int(h_in) * int(w_in) * k_h * k_w * c_in * c_out
        elif isinstance(layer, layers.Conv2D):
            k_h, k_w, c_in, c_out = (int(d) for d in layer.kernel.shape)
            _, h_out, w_out, _ = layer.output.shape
            total += 2 * int(h_out) * int(w_out) * k_h * k_w * c_in * c_out
    return total


def _leaf_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _leaf_layers(layer)
        else:
            yield layer


def torch_flops(modules) -> int:
    """Forward FLOPs per example of the `nn.Linear` layers in `modules`."""
    return sum(2 * m.in_features * m.out_features for m in modules
               if hasattr(m, "in_features"))


def training_flops(forward: dict) -> int:
    """FLOPs per training example: 3x the forward pass of encoder and decoder."""
    return 3 * (forward["encoder"] + forward["decoder"])
