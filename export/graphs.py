"""Tracing a model's export graphs as float32 `tf.function`s of explicit inputs.

A model's family lists what it exports (`Family.graphs(model)`, the model's
`export_graphs()`, a dict of `keras_vae.models.signatures.GraphSignature`): a
VAE offers `decoder`, `encoder` and `scorer`; another family lists its own. This module traces each one with a
dynamic batch, refuses random ops (noise is an input or is drawn outside),
and hands the result to the format converters.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from keras_vae import recipes
from keras_vae.export.errors import ExportError
from keras_vae.export.subpixel import transposed_convs_as_subpixel
from keras_vae.models.family import family_of
from keras_vae.models.signatures import GraphSignature

BATCH = None  # every exported graph has a dynamic batch dimension


def signatures(model) -> dict:
    """The graphs `model`'s family exports: `{name: GraphSignature}`.

    Raises:
        TypeError: a model of no registered family (`keras_vae.models.FAMILIES`).
    """
    try:
        family = family_of(model)
    except ValueError as e:
        raise TypeError(f"Export needs a keras_vae model: {e}") from None
    return family.graphs(model)


def get(model, name: str) -> GraphSignature:
    """The signature of graph `name` of `model`.

    Raises:
        ValueError: a graph the model does not offer, listing the ones it does.
    """
    offered = signatures(model)
    if name not in offered:
        raise ValueError(f"Unknown graph {name!r} for this {type(model).__name__}; valid "
                         f"names: {sorted(offered)}")
    return offered[name]


# Op types that draw random numbers (stateful, stateless and the samplers).
RANDOM_OP_MARKERS = ("Random", "TruncatedNormal", "Multinomial", "Poisson")


@dataclasses.dataclass
class Graph:
    """One traced graph, ready for the converters.

    Attributes:
        name: The graph's name (`decoder`, `encoder`, `scorer`, ...).
        model: The float32 model traced (a copy for mixed-precision models).
        signature: Its `GraphSignature`.
        function: The `tf.function` with a dynamic-batch input signature.
        concrete: Its concrete function.
        module: A `tf.Module` tracking the variables (for SavedModel/TFLite).
        inputs: `[(name, shape without batch, dtype)]`.
        outputs: Output names.
        rewrites: Layers traced in another exact form (`{rewrite: count}`).
    """

    name: str
    model: keras.Model
    signature: GraphSignature
    function: tf.types.experimental.GenericFunction
    concrete: Callable
    module: tf.Module
    inputs: list
    outputs: tuple
    rewrites: dict = dataclasses.field(default_factory=dict)

    @property
    def input_signature(self) -> list:
        return [tf.TensorSpec((BATCH, *shape), dtype, name=name)
                for name, shape, dtype in self.inputs]

    def io_specs(self) -> tuple[list, list]:
        """JSON-able `(inputs, outputs)` lists of `{name, shape, dtype}` (batch: None)."""
        outs = self.concrete.structured_outputs
        inputs = [{"name": n, "shape": [None, *s], "dtype": d} for n, s, d in self.inputs]
        outputs = [{"name": n, "shape": outs[n].shape.as_list(), "dtype": outs[n].dtype.name}
                   for n in self.outputs]
        return inputs, outputs

    @property
    def peak(self) -> float | None:
        """PSNR peak: the outputs' value range where they have one, else None (largest |output|)."""
        low_high = self.signature.value_range
        return None if low_high is None else low_high[1] - low_high[0]

    def random_inputs(self, batch: int, rng: np.random.Generator) -> dict:
        """Inputs for parity checks: prior draws of z, N(0, 1) noise, U[0, 1) images, valid labels."""
        feeds = {}
        ranges = self.signature.input_ranges or {}
        for name, shape, _ in self.inputs:
            if name in ranges:  # integer codes
                low, high = ranges[name]
                feeds[name] = rng.integers(low, high, (batch, *shape)).astype(np.int32)
            elif name == "label":
                feeds[name] = rng.integers(0, self.model.num_classes, batch).astype(np.int32)
            elif name == "image":
                feeds[name] = rng.random((batch, *shape), dtype=np.float32)
            elif name == "z":
                feeds[name] = self.prior_draws(batch, rng)
            else:
                feeds[name] = rng.standard_normal((batch, *shape), dtype=np.float32)
        return feeds

    def prior_draws(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """`(n, latent_dim)` latents from the prior the model samples from, as the edge draws them.

        The manifest's table (the family's `manifest_latents`): a mixture
        prior's draws may lie far from N(0, I)'s, and the decoder is checked
        and calibrated where it will run. N(0, I) for latents without a table
        (the same draws as `rng.standard_normal`).
        """
        latents = family_of(self.model).manifest_latents(self.model)
        return recipes.sample_prior(latents.get("prior"), n, int(latents["latent_dim"]), rng)

    def keras_outputs(self, feeds: dict) -> dict:
        """The Keras (eager, float32) outputs for numpy `feeds`."""
        tensors = {k: tf.constant(v) for k, v in feeds.items()}
        return {k: np.asarray(v) for k, v in self.signature.fn(**tensors).items()}


def trace(model: keras.Model, name: str, *, subpixel: bool = False) -> Graph:
    """Traces graph `name` of `model` in float32 and refuses random ops.

    A model never called is built by one eager call first (a no-op for
    `keras_vae.VAE`, whose networks are built at construction).

    Args:
        model: A keras_vae model (it lists its graphs in `export_graphs()`).
        name: One of its graphs.
        subpixel: Trace 3x3 stride-2 transposed convolutions as sub-pixel
            convolutions (`keras_vae.export.subpixel`; for LiteRT's XNNPACK).

    Raises:
        TypeError: `model` lists no export graphs.
        ValueError: `name` is not one of them.
        ExportError: the traced graph contains a random op.
    """
    get(model, name)
    model = float32_model(model)
    spec = get(model, name)
    body = spec.fn
    graph = Graph(name, model, spec, None, None, tf.Module(), list(spec.inputs), spec.outputs)
    # Build lazily-built layers eagerly, so tracing creates no variables.
    graph.keras_outputs(graph.random_inputs(1, np.random.default_rng(0)))
    graph.function = tf.function(body, input_signature=graph.input_signature, autograph=False)
    if subpixel:
        with transposed_convs_as_subpixel(_walk(model)) as switched:
            graph.concrete = graph.function.get_concrete_function()
        graph.rewrites = {"transposed_convs_as_subpixel": switched}
    else:
        graph.concrete = graph.function.get_concrete_function()
    if set(graph.concrete.structured_outputs) != set(spec.outputs):
        raise ExportError(f"The {name} graph returns {sorted(graph.concrete.structured_outputs)}, "
                          f"expected {list(spec.outputs)}")
    found = random_ops(graph.concrete)
    if found:
        raise ExportError(
            f"The {name} graph contains random ops {sorted(found)}: exported graphs must be "
            "deterministic (mobile runtimes reject or mis-convert them). Draw noise outside "
            "the graph or pass it as an input; a layer that samples in inference mode "
            "cannot be exported."
        )
    # Track the variables the function captures (Keras variables wrap tf.Variables).
    graph.module.variables_ = [getattr(v, "value", v) for v in model.variables]
    graph.module.serve = graph.function
    return graph


def random_ops(concrete) -> set:
    """Op types of `concrete`'s graph (and nested functions) that draw random numbers."""
    types = {op.type for op in concrete.graph.get_operations()}
    for function in concrete.graph.as_graph_def().library.function:
        types.update(node.op for node in function.node_def)
    return {t for t in types if any(marker in t for marker in RANDOM_OP_MARKERS)}


# ------------------------------------------------------- mixed precision

_HALF = ("float16", "bfloat16")


def _walk(layer):
    yield layer
    for sub in getattr(layer, "layers", None) or []:
        yield from _walk(sub)


def dtype_policy_of(model: keras.Model) -> str:
    """The first non-float32 float policy among `model`'s layers, else `"float32"`."""
    for layer in _walk(model):
        policy = getattr(layer, "dtype_policy", None)
        if policy is not None and (
            policy.name.startswith("mixed_")
            or policy.compute_dtype in _HALF or policy.variable_dtype in _HALF
        ):
            return policy.name
    return "float32"


def _float32_config(config):
    """`config` with every half or mixed dtype (policy) replaced by float32."""
    if isinstance(config, dict):
        if config.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            name = config.get("config", {}).get("name", "")
            if name.startswith("mixed_") or name in _HALF:
                return {**config, "config": {**config["config"], "name": "float32"}}
        return {
            k: ("float32" if k == "dtype" and v in _HALF else _float32_config(v))
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [_float32_config(v) for v in config]
    return config


def float32_model(model: keras.Model) -> keras.Model:
    """`model` itself if it computes in float32, else a float32 copy with the same weights.

    A model trained under `mixed_float16` / `mixed_bfloat16` is rebuilt from
    its config with every dtype policy set to float32, and its (float32)
    weights are copied, so exports never contain half-precision activations.
    """
    policy = dtype_policy_of(model)
    if policy == "float32":
        return model
    config = _float32_config(model.get_config())
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        copy = type(model).from_config(config)
    finally:
        keras.config.set_dtype_policy(previous)
    weights = model.get_weights()
    if len(weights) != len(copy.get_weights()):
        raise ExportError(
            f"Cannot rebuild the {policy} model in float32: its config gives "
            f"{len(copy.get_weights())} weights, the model has {len(weights)}."
        )
    copy.set_weights([w.astype(np.float32) if w.dtype.kind == "f" else w for w in weights])
    if dtype_policy_of(copy) != "float32":
        raise ExportError(f"Rebuilding the {policy} model in float32 left {dtype_policy_of(copy)}")
    return copy
