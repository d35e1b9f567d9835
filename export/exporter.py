"""The export dispatcher: every requested graph, format and precision, the manifest, the bundle.

An export directory is a self-contained bundle: the exported files, their
`manifest.json`, the device-side programs (`DEVICE_FILES`: the samplers, the
server and the numpy-only modules they import) with their sha256 in the manifest, and a short
README. Copy the folder to a device and run
`python sample_onnx.py . --n 16 --seed 0 --out grid.png` there.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

from keras_vae import files, saving
from keras_vae.export import calibration
from keras_vae.export import graphs as graphs_lib
from keras_vae.export import manifest as manifest_lib
from keras_vae.export.litert_format import export_litert
from keras_vae.export.onnx_format import export_onnx
from keras_vae.export.saved_model_format import export_saved_model
from keras_vae.models.family import CODES
from keras_vae.registry import Registry


@dataclasses.dataclass(frozen=True)
class Format:
    """An export format: its function, file suffix and the precisions it offers."""

    export: Callable
    suffix: str
    precisions: tuple


FORMATS = Registry("export format", {
    "savedmodel": Format(export_saved_model, "_savedmodel", ("fp32",)),
    "onnx": Format(export_onnx, ".onnx", ("fp32", "int8_dynamic")),
    # LiteRT, the runtime; its files keep the `.tflite` suffix.
    "litert": Format(export_litert, ".tflite", ("fp32", "fp16", "int8_dynamic", "int8_full")),
})
register = FORMATS.register
# Other names accepted for a format (`--formats tflite` is litert).
FORMAT_ALIASES = {"tflite": "litert"}
# Every quantized precision some format offers, in a stable order.
QUANTIZATIONS = tuple(dict.fromkeys(
    p for spec in FORMATS.values() for p in spec.precisions if p != "fp32"))
QUANTIZE_ALIASES = {"int8": ("int8_dynamic", "int8_full")}
# The device side of a bundle: numpy-only programs copied beside the files, with
# the modules they import (`recipes.py` is the library's own file, linked into
# export/), the server and its browser page too; onnxruntime-web's runtime files
# are not copied: `npm ci` in export/web, or a `web/ort/` folder beside the files.
DEVICE_FILES = ("recipes.py", "reader.py", "images.py", "sampler.py",
                "sample_onnx.py", "sample_litert.py", "serve.py", "protocol.py", "batcher.py",
                "service.py", "routes.py", "uploads.py", "workers.py", "http_limits.py",
                "web/index.html", "web/app.js", "web/npy_random.js", "web/style.css")
SOURCE = Path(__file__).resolve().parent


def format_name(name: str) -> str:
    """The registered name of format `name`: `"litert"` for its alias `"tflite"`."""
    return FORMAT_ALIASES.get(name, name) if isinstance(name, str) else name


def get(name: str) -> Format:
    """Returns the format registered under `name` (or one of `FORMAT_ALIASES`).

    Raises:
        ValueError: for an unknown name, listing the valid ones.
    """
    return FORMATS.get(format_name(name))


def filename(graph: str, fmt: str, precision: str = "fp32") -> str:
    """`decoder.onnx`, `decoder.int8_full.tflite`, `encoder_savedmodel`, ..."""
    tag = "" if precision == "fp32" else f".{precision}"
    return f"{graph}{tag}{get(fmt).suffix}"


def _names(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split(",")
    return [v.strip() for v in value if v and v.strip()]


def _quantizations(quantize, formats) -> list[str]:
    modes = []
    for name in _names(quantize):
        for mode in QUANTIZE_ALIASES.get(name, (name,)):
            if mode not in QUANTIZATIONS:
                raise ValueError(f"Unknown quantization {name!r}; valid names: "
                                 f"{sorted([*QUANTIZATIONS, *QUANTIZE_ALIASES])}")
            if not any(mode in get(f).precisions for f in formats):
                offered = sorted(f for f, spec in FORMATS.items() if mode in spec.precisions)
                raise ValueError(f"Quantization {mode!r} needs format {' or '.join(offered)}; "
                                 f"requested formats: {formats}")
            if mode not in modes:
                modes.append(mode)
    return modes


def export(model, out_dir, formats=("savedmodel", "onnx", "litert"), quantize=(), *,
           graphs=None, quantize_graphs=("decoder",),
           representative_z=None, representative_images=None, class_names=None,
           seed: int = 0, overwrite: bool = False, anomaly: dict | None = None) -> dict:
    """Exports a VAE's graphs in several formats, each proven against Keras, with a manifest.

    Every graph is exported in float32 in every format; each quantization is
    applied to the `quantize_graphs` in the formats that offer it (fp16 and
    int8_full: litert; int8_dynamic: litert and onnx). The directory appears
    only when every file passed its checks (it is built under a temporary
    name), with `manifest.json` describing the files, and the device-side
    programs (`DEVICE_FILES`) and a README beside them: a bundle to copy.

    Args:
        model: A `keras_vae.VAE`, or the path of a `.keras` file.
        out_dir: Directory to create.
        formats: Names from `FORMATS` (a list or a comma-separated string;
            `"tflite"` is accepted for `"litert"`).
        quantize: Names from `QUANTIZATIONS`, or `int8` for both int8 modes.
        graphs: Which of the model's graphs to export; None for every graph
            its family offers (`Family.graphs(model)`: a VAE has `decoder`,
            `encoder`, `scorer`; a VQ-VAE `decoder`, `encoder`, `prior`).
        quantize_graphs: The graphs that also get quantized files.
        representative_z: Latents calibrating int8_full decoders (default: prior draws).
        representative_images: Images calibrating int8_full encoders/scorers.
        class_names: Class names of a conditional model, for the manifest.
        seed: Seed of the parity inputs and default calibration data.
        overwrite: Replace an existing `out_dir`.
        anomaly: The scorer's anomaly threshold (`calibration.calibrate(...)`), stored
            as `manifest["anomaly"]` before the directory appears; needs the
            `scorer` graph among `graphs`.

    Returns:
        The manifest (also written to `out_dir/manifest.json`).

    Raises:
        ValueError: unknown format, graph or quantization names.
        FileExistsError: `out_dir` exists and `overwrite` is False.
        ExportError: a file failed its checks (nothing is left at `out_dir`).

    Example:

    >>> manifest = keras_vae.export.export(vae, "runs/demo/export", quantize="fp16,int8")
    >>> print(keras_vae.export.table(manifest))
    """
    if isinstance(model, (str, Path)):
        model = saving.load_model(model, compile=False)
    formats = list(dict.fromkeys(format_name(f) for f in _names(formats)))
    if not formats:
        raise ValueError(f"No export format given; valid names: {sorted(FORMATS)}")
    for fmt in formats:
        get(fmt)
    graph_names = list(graphs_lib.signatures(model)) if graphs is None else _names(graphs)
    for name in [*graph_names, *_names(quantize_graphs)]:
        graphs_lib.get(model, name)
    modes = _quantizations(quantize, formats)
    if anomaly is not None:
        anomaly = calibration.check(anomaly)
        if "scorer" not in graph_names:
            raise ValueError(f"An anomaly threshold is a threshold on the scorer's scores; "
                             f"export the 'scorer' graph too (graphs: {graph_names})")
    policy = graphs_lib.dtype_policy_of(model)
    model32 = graphs_lib.float32_model(model)
    options = {"representative_z": representative_z,
               "representative_images": representative_images, "seed": seed}
    entries = []
    with files.run_directory(out_dir, overwrite=overwrite) as tmp:
        for graph in graph_names:
            for fmt in formats:
                spec = get(fmt)
                precisions = ["fp32"]
                if graph in _names(quantize_graphs):
                    precisions += [m for m in modes if m in spec.precisions]
                for precision in precisions:
                    entries.append(spec.export(
                        model32, Path(tmp) / filename(graph, fmt, precision), graph=graph,
                        quantize=None if precision == "fp32" else precision, **options))
        manifest = manifest_lib.build(model32, entries, dtype_policy=policy,
                                      class_names=class_names)
        if anomaly is not None:
            manifest["anomaly"] = anomaly
        manifest["bundle"] = write_bundle(tmp, manifest)
        manifest_lib.write(manifest, tmp)
    return manifest


def write_bundle(directory, manifest: dict) -> list[dict]:
    """Copies the device-side programs and a README into an export directory.

    Returns:
        Their manifest entries (`path`, `size_bytes`, `sha256`).
    """
    directory = Path(directory)
    entries = []
    for name in DEVICE_FILES:
        if (SOURCE / name).is_file():
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SOURCE / name, directory / name)
            entries.append({**manifest_lib.file_entry(directory / name), "path": name})
    files.atomic_write(directory / "README.md", lambda f: f.write(bundle_readme(manifest)),
                       mode="w")
    return entries


def bundle_readme(manifest: dict) -> str:
    """The export folder's README: what is in it and how to run it on a device."""
    rows = "\n".join(f"| `{e['path']}` | {e['graph']} | {e['format']} | {e['precision']} |"
                     for e in manifest["files"])
    shape = "x".join(str(d) for d in manifest["image"]["shape"])
    if manifest["family"]["latent_kind"] == CODES:
        codes = manifest["codes"]
        latent = f"codes {'x'.join(map(str, codes['grid_shape']))} of {codes['codebook_size']}"
    else:
        latent = f"latent size\n{manifest['latent_dim']}"
    return f"""# keras-vae export

A {manifest["model"]["class"]} (`{manifest["model"]["arch"]}`, {latent}, images {shape}), exported by keras-vae
{manifest["keras_vae_version"]}. Every file below was loaded in its runtime and
checked against Keras before it was written; `manifest.json` holds the
shapes, checksums and parity figures.

| file | graph | format | precision |
| --- | --- | --- | --- |
{rows}

## On a device

This folder is all a device needs: copy it whole. The programs need Python 3
with numpy, plus onnxruntime (`sample_onnx.py`) or ai-edge-litert
(`sample_litert.py`); no TensorFlow, Keras or keras_vae. They check every file
against the sha256 in `manifest.json` before loading it.

```bash
python sample_onnx.py . --n 16 --seed 0 --out grid.png
python sample_onnx.py . --interpolate 0 1 --steps 8 --out path.png
python sample_litert.py . --precision int8_full --n 16 --out grid.png
python serve.py . --port 8000    # HTTP: Open Inference Protocol, /v1/score, the page at /
python serve.py . --workers 2     # one server process per core
```

`serve.py` also needs Starlette, uvicorn and Pillow (`pip install starlette uvicorn
python-multipart pillow`); its browser page needs onnxruntime-web's files in `web/ort/`
(`ort.wasm.min.mjs`, `ort-wasm-simd-threaded.mjs`, `ort-wasm-simd-threaded.wasm`
from the npm package's `dist/`).

The same `--seed` gives the same images as `vae.sample(n, seed=...)` in
keras_vae. onnxruntime's telemetry is switched off (`ORT_DISABLE_TELEMETRY=1`)
before it is imported.
"""


