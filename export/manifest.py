"""The `manifest.json` that describes an export directory, and its summary table.

Layout (version 2), read by the edge samplers through `reader.read_manifest`:

- `keras_vae_version`, `created_utc`, `versions` (converters and runtimes);
- `model`: class, name, architecture, likelihood, the dtype policy it was
  trained with and `exported_dtype` (always float32);
- `family`: the model family's `name` and `latent_kind`, `"continuous"` (z
  drawn from `prior`) or `"codes"` (grids of discrete codes); exports without
  it are continuous unless `prior.type` is `"autoregressive_codes"`;
- `latent_dim` and `prior`: the prior's table (`{"type": "standard_normal"}`
  or a Gaussian mixture), from which `recipes.sample_prior` draws exactly the
  z that Keras draws for the same seed; a VQ-VAE has `latent_dim` null,
  `codes` (grid shape, codebook size) and `prior` `{"type":
  "autoregressive_codes", "graph": "prior" or null, ...}`, drawn by
  `recipes.autoregressive_codes`;
- `image`: shape, dtype, `value_range` ([0, 1] or null) and what `x` means;
- `num_classes` and `class_names` (conditional models);
- `graphs`: each graph's inputs, outputs, meaning and `value_range` (the
  `[low, high]` its float outputs lie in, checked at export and at load, or null);
- `files`: one entry per file: path, format, graph, precision, opset or
  converter, runtime, input/output names, shapes and dtypes, size, sha256 and
  the parity figures against Keras;
- `bundle`: the device-side files copied beside them (samplers, server,
  the numpy-only modules they import), each with its size and sha256.
"""

from __future__ import annotations

import datetime
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import keras

from keras_vae import files
from keras_vae.export import reader
from keras_vae.export.errors import ExportError
from keras_vae.export.reader import MANIFEST, MANIFEST_VERSION
from keras_vae.models.family import family_of
from keras_vae.version import __version__

_PACKAGES = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert", "numpy")


def build(model: keras.Model, entries: list, *, dtype_policy: str = "float32",
          class_names=None) -> dict:
    """The manifest of `entries` exported from `model`.

    Args:
        model: The exported VAE.
        entries: File entries returned by the `export_*` functions.
        dtype_policy: The policy the model was trained with (`mixed_float16`
            models are exported in float32).
        class_names: Names of the classes of a conditional model (defaults to
            `model.class_names` when it exists).
    """
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if class_names is None:
        class_names = getattr(model, "class_names", None)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with "
                             f"{num_classes} classes")
    family = family_of(model)
    signatures = family.graphs(model)
    decoder = signatures.get("decoder")
    value_range = decoder.value_range if decoder is not None else None
    likelihood = getattr(model.likelihood, "name_in_registry", type(model.likelihood).__name__)
    graphs = {}
    for entry in entries:
        signature = signatures[entry["graph"]]
        graphs[entry["graph"]] = {
            "inputs": entry["inputs"], "outputs": entry["outputs"], "meaning": signature.meaning,
            "value_range": None if signature.value_range is None
            else [float(v) for v in signature.value_range]}
    return {
        "manifest_version": MANIFEST_VERSION,
        "keras_vae_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {name: _version(name) for name in _PACKAGES},
        "model": {
            "class": type(model).__name__,
            "name": model.name,
            "arch": getattr(model, "arch", None),
            "likelihood": likelihood,
            "trained_dtype_policy": dtype_policy,
            "exported_dtype": "float32",
        },
        "family": family.manifest_entry(),
        **family.manifest_latents(model),
        "image": {
            "shape": [int(d) for d in model.image_shape],
            "dtype": "float32",
            "value_range": None if value_range is None else list(value_range),
            "meaning": decoder.meaning if decoder is not None else None,
        },
        "num_classes": num_classes,
        "class_names": class_names,
        "graphs": graphs,
        "files": entries,
    }


def latents(model: keras.Model) -> dict:
    """The manifest's `latent_dim` and `prior` (and more) for `model`, as its family describes them.

    A VAE gives its latent size and the table of the prior it samples from
    (its `sampling_prior` when set); a VQ-VAE `latent_dim` null, its code grid
    and its autoregressive prior.
    """
    return family_of(model).manifest_latents(model)


def write(manifest: dict, directory) -> Path:
    """Writes `directory/manifest.json` atomically, once the device programs' check passes.

    The manifest is checked as a reader will see it (through JSON) by
    `reader.check_manifest`, the one check of the samplers and the server:
    an export never writes a manifest they refuse.

    Raises:
        ExportError: the check's one-line reason.
    """
    try:
        reader.check_manifest(json.loads(json.dumps(manifest)))
    except reader.EdgeError as e:
        raise ExportError(f"the export's own manifest fails the device check: {e}") from None
    return files.write_json(manifest, Path(directory) / MANIFEST)


def file_entry(path, **fields) -> dict:
    """A manifest entry: the file's name, size and SHA-256, then `fields`."""
    path = Path(path)
    return {"path": path.name, "size_bytes": files.size_of(path),
            "sha256": files.sha256_of(path), **fields}


def table(manifest: dict) -> str:
    """A text table of the exported files: format, precision, size and parity."""
    rows = [("file", "format", "precision", "size", "max abs err", "PSNR dB", "bound")]
    for e in manifest["files"]:
        p = e["parity"]
        bound = (f"<= {p['tolerance']:.1e}" if "tolerance" in p
                 else f">= {p['psnr_bound_db']:g} dB")
        psnr = "inf" if p["psnr_db"] is None else f"{p['psnr_db']:.1f}"
        rows.append((e["path"], e["format"], e["precision"], _size(e["size_bytes"]),
                     f"{p['max_abs_error']:.2e}", psnr, bound))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB"):
        if n < 1000 or unit == "MB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None
