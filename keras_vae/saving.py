"""Saving and loading models: atomic `.keras` files, validated before Keras reads them."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
import warnings
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np

from keras_vae import files
from keras_vae.recipes import clip
from keras_vae.version import __version__


def save_model(model: keras.Model, path) -> Path:
    """Saves `model` to a `.keras` file atomically (temporary name, then rename).

    An interrupted save leaves the previous file intact, never a truncated one.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"Model files end in .keras, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        # Loading builds the optimizer's slots: save them too, so it matches.
        with model.distribute_strategy.scope():
            optimizer.build(model.trainable_variables)
    with files.staged(path) as tmp:
        model.save(tmp)
    return path


# Zip members a `.keras` file of keras_vae holds (never `assets/`, never npz
# weights), and the config modules it may name.
_MEMBERS = re.compile(r"^(config\.json|metadata\.json|model\.weights\.h5)$")
_MODULES = re.compile(
    r"^(keras|builtins|keras_vae(\..+)?|keras(\.src)?\.(layers|initializers|regularizers|"
    r"constraints|activations|optimizers|losses|metrics|models|dtype_policies|quantizers|"
    r"random|ops)(\..+)?)$"
)
# What reading a `.keras` file may cost, checked from the zip's directory
# before anything is inflated (Keras stores members uncompressed: ratio 1).
MAX_CONFIG_BYTES = 1 << 20  # config.json (a resnet VAE's: 33 kB)
MAX_METADATA_BYTES = 1 << 16  # metadata.json (64 bytes)
MAX_WEIGHTS_BYTES = 4 << 30  # model.weights.h5
MAX_RATIO = 10  # uncompressed / compressed, for members over 1 MiB
_MAX_DEFLATE_RATIO = 1032  # the most deflate can inflate: a member claiming more lies
# Weights the config may declare beyond those stored in the file (slack for
# layers the estimate over-counts); a config asking for more is refused
# before Keras builds (allocates) it.
MAX_UNSTORED_WEIGHTS = 1 << 20


def check_version(saved: str | None, current: str | None = None) -> None:
    """Checks the keras_vae version a model was saved with against this one.

    Args:
        saved: The version stored in the model's config (None if absent).
        current: This keras_vae's version (default `keras_vae.__version__`).

    Raises:
        ValueError: a different major version (or, before 1.0, a different
            minor version): its config or weights may mean something else.
            Other differences, and a missing version, only warn.
    """
    if current is None:
        current = __version__
    if saved is None:
        warnings.warn("keras_vae: this model records no keras_vae version; loading it as "
                      f"keras_vae {current}.", stacklevel=2)
        return

    def release(version):
        parts = re.findall(r"\d+", str(version))[:2]
        return tuple(int(p) for p in parts) + (0,) * (2 - len(parts))

    (s_major, s_minor), (c_major, c_minor) = release(saved), release(current)
    if s_major != c_major or (c_major == 0 and s_minor != c_minor):
        raise ValueError(
            f"This model was saved by keras_vae {saved}, and this is keras_vae {current}: "
            "an incompatible release. Load it with the keras_vae version that saved it "
            "(and export it), or retrain."
        )
    if str(saved) != str(current):
        warnings.warn(f"keras_vae: model saved by keras_vae {saved}, loaded by {current}.",
                      stacklevel=2)


def _walk(node):
    """Yields every dict in a nested config."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def inspect_archive(path) -> dict:
    """Validates a `.keras` archive without deserializing anything; returns its config.

    Checks, in order, each bounded before anything is inflated or built:

    - the zip holds only `config.json`, `metadata.json` and
      `model.weights.h5` (no `assets/`, which keras_vae models never write
      and Keras would extract to the temp folder; no `../` or absolute
      names), each within its size cap (`MAX_CONFIG_BYTES`,
      `MAX_METADATA_BYTES`, `MAX_WEIGHTS_BYTES`) and, over 1 MiB, a
      compression ratio of at most `MAX_RATIO`;
    - the config names no Lambda layer, no Python lambda and no module
      outside Keras's modelling modules and keras_vae; its top-level object
      is a keras_vae model of a compatible version (`check_version`);
    - the weights file stores every array in full (contiguous, unfiltered,
      no links, external or virtual storage), so reading it costs what the
      file holds, and the layers the config declares need no more weights
      than it stores (plus `MAX_UNSTORED_WEIGHTS`).

    Messages quote at most ~200 characters of anything read from the file.

    Raises:
        ValueError: naming the first problem found.
    """
    return _inspect(path)[0]


def _inspect(path) -> tuple[dict, int]:
    """`inspect_archive`: the config and the number of weight values the file stores."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_members(path, infos)
            names = {info.filename: info for info in infos}
            if "config.json" not in names:
                raise ValueError(f"{path} has no config.json: not a .keras model file.")
            raw = zf.read(names["config.json"])
            weights = names.get("model.weights.h5")
            stored = 0
            if weights:  # read in place: the file is not copied into memory
                with zf.open(weights) as f:
                    stored = _stored_weights(path, f)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as e:
        raise ValueError(
            f"{path} is not a readable .keras file (a zip archive): {clip(e)}. It may be "
            "truncated or corrupt, or not a model file at all."
        ) from None
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path}: config.json is not valid JSON ({clip(e)}).") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: config.json is not a Keras object config.")
    for node in _walk(config):
        class_name, module = node.get("class_name"), node.get("module")
        if class_name in ("Lambda", "__lambda__"):
            raise ValueError(
                f"{path} contains a {class_name} (arbitrary Python code); keras_vae models never "
                "do, and it is not loaded."
            )
        if class_name is not None and module is not None and (
                not isinstance(module, str) or not _MODULES.match(module)):
            raise ValueError(
                f"{path} refers to {clip(module)}.{clip(class_name)}: a module outside Keras's "
                "layers and keras_vae, refused (loading it could run arbitrary code)."
            )
        registered = node.get("registered_name")
        if isinstance(module, str) and module.startswith("keras_vae") and not (
                isinstance(registered, str) and registered.startswith("keras_vae>")):
            raise ValueError(f"{path} names {clip(module)}.{clip(class_name)} without its "
                             "registered name.")
    registered = config.get("registered_name")
    if not (isinstance(registered, str) and registered.startswith("keras_vae>")):
        raise ValueError(
            f"{path} holds a {clip(repr(config.get('class_name')))} "
            f"({clip(config.get('module'))}), not a keras_vae model."
        )
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}
    stamp = inner.get("keras_vae")
    version = stamp.get("version") if isinstance(stamp, dict) else None
    check_version(None if version is None else clip(version, 40))
    declared = _declared_weights(config)
    if declared > stored + MAX_UNSTORED_WEIGHTS:
        raise ValueError(
            f"{path}: its config declares layers of about {declared:.3g} weights, but the file "
            f"stores {stored:.3g}; refusing to build it (a few-kB config must not allocate "
            "GBs)."
        )
    return config, stored


def _check_members(path: Path, infos) -> None:
    """Refuses unexpected, unsafe, oversized or over-compressed zip members."""
    limits = {"config.json": MAX_CONFIG_BYTES, "metadata.json": MAX_METADATA_BYTES,
              "model.weights.h5": MAX_WEIGHTS_BYTES}
    seen = set()  # three names, each once: at most three members
    real = path.stat().st_size
    for info in infos:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if (name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]
                or not _MEMBERS.match(name) or name in seen):
            raise ValueError(
                f"{path} holds an unexpected or unsafe member {clip(repr(name))} (a .keras "
                "file of keras_vae holds config.json, metadata.json and model.weights.h5, "
                "never assets/); refusing to load it."
            )
        seen.add(name)
        if info.file_size > limits[name]:
            raise ValueError(f"{path}: {name} inflates to {info.file_size} bytes, over the "
                             f"{limits[name]} a keras_vae model file may hold; refusing.")
        if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * info.compress_size:
            raise ValueError(
                f"{path}: {name} inflates {info.file_size / max(info.compress_size, 1):.0f}-"
                f"fold (Keras stores members uncompressed; at most {MAX_RATIO}-fold is "
                "accepted); refusing a decompression bomb.")
        ratio = 1 if info.compress_type == zipfile.ZIP_STORED else _MAX_DEFLATE_RATIO
        if info.compress_size > real or info.file_size > ratio * max(info.compress_size, 1) \
                or (ratio == 1 and info.file_size != info.compress_size):
            raise ValueError(
                f"{path}: {name} declares {info.file_size} bytes in {info.compress_size}, which "
                f"this {real}-byte file cannot hold (its zip directory lies); refusing.")


def _stored_weights(path: Path, raw) -> int:
    """Number of values stored in a weights file, each array checked to be stored in full.

    Keras writes every variable as a contiguous, unfiltered HDF5 dataset. A
    chunked or compressed dataset, one with unallocated storage (read as its
    fill value), external or virtual storage, or a link could make a small
    file read as gigabytes, or read another file: refused.

    Raises:
        ValueError: naming the first such dataset or link.
    """
    import h5py

    problems, total = [], 0

    def visit(name, link):
        if not isinstance(link, h5py.HardLink):
            problems.append(f"{name} is a {type(link).__name__}")

    def check(name, obj):
        nonlocal total
        if not isinstance(obj, h5py.Dataset):
            return
        plist = obj.id.get_create_plist()
        nbytes = obj.size * obj.dtype.itemsize
        if obj.dtype.kind not in "fiub" or obj.dtype.itemsize > 16:
            problems.append(f"{name} has dtype {obj.dtype}")
        elif (obj.chunks is not None or plist.get_nfilters() or plist.get_external_count()
              or obj.is_virtual or obj.id.get_storage_size() != nbytes):
            problems.append(f"{name} is not stored in full (chunked, filtered, external or "
                            "unallocated)")
        total += obj.size

    try:
        with h5py.File(io.BytesIO(raw) if isinstance(raw, bytes) else raw, "r") as f:
            f.visititems_links(visit)
            if not problems:
                f.visititems(check)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"{path}: model.weights.h5 is not a readable HDF5 file "
                         f"({clip(e)}).") from None
    if problems:
        raise ValueError(f"{path}: model.weights.h5: {clip(problems[0])}; keras_vae writes "
                         "every weight as a plain array, refusing to read it.")
    return total


def _int(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def _declared_weights(config) -> int:
    """An estimate (from above) of the weights the config's layers allocate when built.

    From each layer's own config and its `build_config` input shape: Dense,
    convolutions, Embedding, recurrent and normalization layers, the layers
    whose size a config sets. Other layers count 0.
    """
    total = 0
    for node in _walk(config):
        cls, cfg = node.get("class_name"), node.get("config")
        if not isinstance(cls, str) or not isinstance(cfg, dict):
            continue
        shape = (node.get("build_config") or {}).get("input_shape") if isinstance(
            node.get("build_config"), dict) else None
        shape = shape if isinstance(shape, list) and shape else [1]
        channels = shape[1] if cfg.get("data_format") == "channels_first" and len(shape) > 1 \
            else shape[-1]
        channels = _int(channels)
        units, filters = _int(cfg.get("units")), _int(cfg.get("filters"))
        if cls in ("Dense", "EinsumDense"):
            total += channels * units + units
        elif cls.startswith(("Conv", "DepthwiseConv", "SeparableConv")):
            kernel = cfg.get("kernel_size")
            kernel = kernel if isinstance(kernel, list) else [kernel]
            size = 1
            for k in kernel:
                size *= _int(k)
            total += size * channels * max(filters, _int(cfg.get("depth_multiplier"))) + filters
        elif cls == "Embedding":
            total += _int(cfg.get("input_dim")) * _int(cfg.get("output_dim"))
        elif cls in ("LSTM", "GRU", "SimpleRNN", "LSTMCell", "GRUCell", "SimpleRNNCell"):
            gates = {"L": 4, "G": 3}.get(cls[0], 1)
            total += gates * units * (channels + units + 2)
        elif cls in ("BatchNormalization", "LayerNormalization", "GroupNormalization"):
            total += 4 * channels
    return total


def load_model(path, compile: bool = True) -> keras.Model:
    """Loads a `.keras` model saved by keras_vae, treating the file as untrusted.

    The archive is validated first (`inspect_archive`), then loaded by Keras
    with `safe_mode=True`; it is never retried with `safe_mode=False`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a loadable keras_vae model (corrupt,
            hostile, another class, or an incompatible keras_vae version).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No model file at {path}")
    _, stored = _inspect(path)
    budget = _WeightBudget(stored + MAX_UNSTORED_WEIGHTS)
    try:
        with budget:
            model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:
        if budget.refused:  # Keras may wrap the refusal: name it plainly
            raise ValueError(f"{path}: {budget.refused}") from None
        raise ValueError(f"Cannot load {path} as a keras_vae model: {clip(e)}") from e
    registered = keras.saving.get_registered_name(type(model))
    if not (isinstance(model, keras.Model) and registered.startswith("keras_vae>")):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a keras_vae model.")
    check_finite_weights(model, path)
    return model


class _WeightBudget(contextlib.AbstractContextManager):
    """Refuses, before it is allocated, any weight that takes the values built past `limit`.

    `_declared_weights` knows Keras's own layers; a keras_vae layer sizes
    its weights from its own config (a codebook, a mixture, pseudo-inputs),
    which a crafted file may set to anything. Every layer creates its
    weights through `keras.layers.Layer.add_weight`: while loading, that is
    wrapped to count the values of each weight before creating it. Loads
    are serialized (`_LOADING`), since the wrapper is the class's own.
    """

    def __init__(self, limit: int):
        self.limit, self.built, self.refused = int(limit), 0, None

    def __enter__(self):
        _LOADING.acquire()
        self.original = original = keras.layers.Layer.add_weight
        budget = self

        def add_weight(layer, shape=None, *args, **kwargs):
            size = 1
            for d in shape or ():
                size *= int(d) if d is not None else 1
            budget.built += size
            if budget.built > budget.limit:
                budget.refused = (
                    f"its config asks for a weight {tuple(shape)[:8]} in {clip(layer.name, 60)}, "
                    f"taking the values built to {budget.built:.3g}, but the file stores "
                    f"{budget.limit - MAX_UNSTORED_WEIGHTS:.3g}; refused before allocating it "
                    "(a config that lies about its sizes).")
                raise ValueError(budget.refused)
            return original(layer, shape, *args, **kwargs)

        keras.layers.Layer.add_weight = add_weight
        return self

    def __exit__(self, *exc):
        keras.layers.Layer.add_weight = self.original
        _LOADING.release()
        return False


_LOADING = threading.RLock()


def check_finite_weights(model: keras.Model, path=None) -> None:
    """Checks with numpy that every floating-point weight of `model` is finite.

    A model's outputs cannot tell: TensorFlow's fused graphs can turn a NaN
    weight into finite, plausible numbers. So every variable is read and
    checked here, once, when a model is loaded.

    Raises:
        ValueError: naming the first weight holding NaN or Inf values.
    """
    for variable in model.weights:
        if "float" not in str(variable.dtype):  # float16/32/64, bfloat16; not seeds, counters
            continue
        value = np.asarray(variable.numpy()).astype(np.float32)
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        if bad:
            where = f"{path}: " if path is not None else ""
            raise ValueError(
                f"{where}weight {variable.path!r} holds {bad} NaN/Inf value(s) of "
                f"{value.size}: the model diverged or the file was altered; refusing to use it."
            )
