"""Saving and loading models: atomic `.keras` files, validated before Keras reads them."""

from __future__ import annotations

import json
import re
import warnings
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np

from keras_vae import files
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


# Zip members a `.keras` file may hold, and the config modules it may name.
_MEMBERS = re.compile(r"^(config\.json|metadata\.json|model\.weights\.(h5|npz)|assets/.+)$")
_MODULES = re.compile(
    r"^(keras|builtins|keras_vae(\..+)?|keras(\.src)?\.(layers|initializers|regularizers|"
    r"constraints|activations|optimizers|losses|metrics|models|dtype_policies|quantizers|"
    r"random|ops)(\..+)?)$"
)
_MAX_CONFIG_BYTES = 64 << 20


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

    Checks that the file is a zip whose members are only a `.keras` file's
    (no `../` or absolute names), that its config names no Lambda layer, no
    Python lambda and no module outside Keras's modelling modules and
    keras_vae, that its top-level object is a keras_vae model, and that its
    keras_vae version is compatible (`check_version`).

    Raises:
        ValueError: naming the first problem found.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename
                parts = name.replace("\\", "/").split("/")
                if (name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]
                        or not _MEMBERS.match(name)):
                    raise ValueError(
                        f"{path} holds an unexpected or unsafe member {name!r} (a .keras file "
                        "holds config.json, metadata.json, model.weights.h5 and assets/); "
                        "refusing to load it."
                    )
            info = zf.getinfo("config.json") if "config.json" in zf.namelist() else None
            if info is None:
                raise ValueError(f"{path} has no config.json: not a .keras model file.")
            if info.file_size > _MAX_CONFIG_BYTES:
                raise ValueError(f"{path}: config.json is {info.file_size} bytes; refusing.")
            raw = zf.read(info)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error, NotImplementedError) as e:
        raise ValueError(
            f"{path} is not a readable .keras file (a zip archive): {e}. It may be truncated "
            "or corrupt, or not a model file at all."
        ) from None
    try:
        config = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"{path}: config.json is not valid JSON ({e}).") from None
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
                f"{path} refers to {module}.{class_name}: a module outside Keras's layers and "
                "keras_vae, refused (loading it could run arbitrary code)."
            )
        registered = node.get("registered_name")
        if isinstance(module, str) and module.startswith("keras_vae") and not (
                isinstance(registered, str) and registered.startswith("keras_vae>")):
            raise ValueError(f"{path} names {module}.{class_name} without its registered name.")
    registered = config.get("registered_name")
    if not (isinstance(registered, str) and registered.startswith("keras_vae>")):
        raise ValueError(
            f"{path} holds a {config.get('class_name')!r} ({config.get('module')}), not a "
            "keras_vae model."
        )
    inner = config.get("config") if isinstance(config.get("config"), dict) else {}
    stamp = inner.get("keras_vae")
    check_version(stamp.get("version") if isinstance(stamp, dict) else None)
    return config


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
    inspect_archive(path)
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:
        raise ValueError(f"Cannot load {path} as a keras_vae model: {e}") from e
    registered = keras.saving.get_registered_name(type(model))
    if not (isinstance(model, keras.Model) and registered.startswith("keras_vae>")):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a keras_vae model.")
    check_finite_weights(model, path)
    return model


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
        value = np.asarray(keras.ops.convert_to_numpy(variable)).astype(np.float32)
        bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
        if bad:
            where = f"{path}: " if path is not None else ""
            raise ValueError(
                f"{where}weight {variable.path!r} holds {bad} NaN/Inf value(s) of "
                f"{value.size}: the model diverged or the file was altered; refusing to use it."
            )
