"""The export directory behind the routes: checked files, onnxruntime sessions, limits, checks.

A device module of the server: numpy, onnxruntime and the device modules
beside it (`reader` for the manifest and verified reads, `protocol`,
`batcher`), never TensorFlow or keras_vae. A `Service` opens the fp32 ONNX
`decoder`, `encoder` and `scorer` of an export (the bytes checked against the
manifest's SHA-256 are the bytes onnxruntime loads), gives each a `Batcher`,
and holds the value checks every route applies (NaN/Inf, pixel range,
labels, examples per request).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

if __package__:
    from keras_vae import recipes

    from . import batcher, protocol, reader
    from .protocol import ServeError
    from .reader import EdgeError
else:  # run from an export folder: the server's modules sit beside this file
    import batcher
    import protocol
    import reader
    import recipes
    from protocol import ServeError
    from reader import EdgeError

log = logging.getLogger("keras_vae.serve")

GRAPHS = ("decoder", "encoder", "scorer")
HERE = Path(__file__).resolve().parent


@dataclasses.dataclass
class Limits:
    """The service's settings (each one a command-line flag).

    Attributes:
        max_batch: Most examples one onnxruntime call runs; 1 turns coalescing
            off (every request is its own call).
        batch_window_ms: How long the first waiting request may wait for
            others to join its call. 0 (the default) adds no latency: the
            requests that queued while the previous call ran join it.
        max_queue: Requests per model admitted and not yet answered; the next
            one is refused with 503 and `Retry-After`.
        max_examples: Most examples (images, codes) in one request (413 above).
        max_body_bytes: Largest request body, after decompression (413 above).
        body_timeout_s: Time a client has to send its whole body (408 after).
        threads: onnxruntime intra-op threads per session (0: its default). Two
            spread a coalesced call over two cores; a lone batch-1 call gains
            nothing from them (benchmarks/README.md, section 5).
        parallel_runs: onnxruntime calls per model that may run at once.
    """

    max_batch: int = 64
    batch_window_ms: float = 0.0
    max_queue: int = 256
    max_examples: int = 256
    max_body_bytes: int = 8 << 20
    body_timeout_s: float = 10.0
    threads: int = 2
    parallel_runs: int = 1

    def check(self) -> None:
        """Raises `EdgeError` for settings that make no sense."""
        for name in ("max_batch", "max_queue", "max_examples", "max_body_bytes",
                     "parallel_runs"):
            if getattr(self, name) < 1:
                raise EdgeError(f"--{name.replace('_', '-')} must be >= 1, "
                                f"got {getattr(self, name)}")
        if self.batch_window_ms < 0 or not math.isfinite(self.batch_window_ms):
            raise EdgeError(f"--batch-window-ms must be >= 0, got {self.batch_window_ms}")
        if self.body_timeout_s <= 0:
            raise EdgeError(f"--body-timeout-s must be > 0, got {self.body_timeout_s}")
        if self.threads < 0:
            raise EdgeError(f"--threads must be >= 0, got {self.threads}")


class Model:
    """One exported graph in an onnxruntime session, with its protocol metadata.

    Args:
        name: The graph's name (`decoder`, `encoder`, `scorer`).
        path: The ONNX file (for messages; the bytes loaded are `content`).
        entry: The file's manifest entry (input/output names, dtypes, shapes).
        content: The file's bytes as `reader.read_verified` checked them: the
            session runs exactly what was checked.
        threads: onnxruntime intra-op threads (0: onnxruntime's default).

    Raises:
        EdgeError: a dtype the protocol cannot name, external data, a file
            onnxruntime cannot open, inputs the manifest lists but the file lacks.
    """

    def __init__(self, name: str, path: Path, entry: dict, content: bytes, threads: int = 1):
        self.name = name
        self.path = path
        try:
            self.inputs = [protocol.TensorSpec.from_manifest(s) for s in entry["inputs"]]
            self.outputs = [protocol.TensorSpec.from_manifest(s) for s in entry["outputs"]]
        except ValueError as e:
            raise EdgeError(f"{path}: {e}") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        if threads != 1:  # idle pool threads must not spin on the cores the event loop needs
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if reader.onnx_uses_external_data(content):
            raise EdgeError(f"{entry['path']} keeps tensors in external data files, "
                            "which the manifest's checksum does not cover; refused.")
        try:
            self.session = ort.InferenceSession(content, options,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise EdgeError(f"onnxruntime cannot load {path}: {first}") from None
        have = {i.name for i in self.session.get_inputs()}
        missing = [s.name for s in self.inputs if s.name not in have]
        if missing:
            raise EdgeError(f"{path} lacks the inputs {missing} that the manifest lists")
        self.output_names = [s.name for s in self.outputs]

    def run(self, feeds: dict) -> list:
        """One onnxruntime call; returns the outputs in manifest order."""
        return self.session.run(self.output_names, feeds)

    def warm_up(self) -> None:
        """Runs one example of zeros, so the first request is not the slow one."""
        self.run({s.name: np.zeros((1, *s.shape[1:]), s.dtype) for s in self.inputs})

    def metadata(self) -> dict:
        """The model metadata response of the protocol."""
        return {"name": self.name, "versions": [protocol.MODEL_VERSION],
                "platform": "onnxruntime_onnx",
                "inputs": [s.metadata() for s in self.inputs],
                "outputs": [s.metadata() for s in self.outputs]}


class Service:
    """The export directory behind the routes: models, batchers, limits, anomaly threshold.

    Args:
        export_dir: A keras-vae export directory with fp32 ONNX files.
        limits: The `Limits` (defaults if None).
        web_dir: The page's folder (default: `web/` beside this file).

    Raises:
        EdgeError: no manifest, one `reader.check_manifest` refuses (what a
            sampler refuses), a file whose size or SHA-256 differs from the
            manifest, a VQ-VAE export, no ONNX graph to serve, a file
            onnxruntime cannot open, a decoder whose images for prior draws
            leave the declared value range (`reader.probe_decoder`).
    """

    def __init__(self, export_dir, limits: Limits | None = None, web_dir=None):
        self.export_dir = Path(export_dir)
        self.limits = limits or Limits()
        self.limits.check()
        self.web_dir = Path(web_dir) if web_dir else HERE / "web"
        self.manifest = reader.read_manifest(self.export_dir)
        if reader.is_code_model(self.manifest):
            raise EdgeError(
                f"{self.export_dir} is a VQ-VAE export (discrete code grids, no z); this "
                "service serves exports with continuous latents. Sample it with "
                "sample_onnx.py.")
        self.prior = self.manifest.get("prior")  # what /v1/sample.png draws z from
        self.image_shape = tuple(int(d) for d in self.manifest["image"]["shape"])
        self.latent_dim = int(self.manifest["latent_dim"])
        self.num_classes = int(self.manifest.get("num_classes") or 0)
        value_range = self.manifest["image"].get("value_range")
        self.value_range = None if value_range is None else tuple(map(float, value_range))
        self.anomaly = self.manifest.get("anomaly")
        self.files = self._verify_files()
        self.models = {}
        for graph in GRAPHS:
            try:
                entry = reader.find_file(self.manifest, graph, "onnx", "fp32")
            except EdgeError:
                continue
            model = Model(graph, self.export_dir / entry["path"], entry,
                          reader.read_verified(self.export_dir, entry), self.limits.threads)
            model.warm_up()
            self.models[graph] = model
        if not self.models:
            raise EdgeError(
                f"{self.export_dir} has no fp32 ONNX decoder, encoder or scorer to serve; "
                "export with formats including 'onnx'.")
        decoder = self.models.get("decoder")
        if decoder is not None:  # refused at start, on the draws a sampler checks
            x = decoder.output_names.index("x") if "x" in decoder.output_names else 0
            reader.probe_decoder(self.manifest, lambda feeds: decoder.run(feeds)[x],
                                 decoder.path.name)
        window = self.limits.batch_window_ms / 1e3
        self.batchers = {name: batcher.Batcher(m, self.limits.max_batch, window,
                                               self.limits.max_queue, self.limits.parallel_runs)
                         for name, m in self.models.items()}
        self.errors = collections.Counter()  # HTTP status -> count of refused requests
        self.worker = {"index": 0, "workers": 1, "pid": os.getpid()}  # see `workers.Workers`

    def _verify_files(self) -> dict:
        """Checks size and SHA-256 of every file of the manifest; returns the servable ones.

        A changed file stops the start; a listed file that is absent (an
        export copied in part) is only skipped, unless it is an fp32 ONNX
        graph this server would run.
        """
        files = {}
        for entry in self.manifest["files"]:
            path = self.export_dir / entry["path"]
            served = entry.get("format") == "onnx" and entry.get("precision") == "fp32"
            if not path.exists() and not served:
                log.warning("%s is listed in the manifest but absent; not served", path)
                continue
            if not (served and entry.get("graph") in GRAPHS):  # those: when read to load
                reader.verify_file(self.export_dir, entry)
            if path.is_file():
                files[entry["path"]] = path
        return files

    # ------------------------------------------------------------ inputs

    def model(self, name: str, version: str | None = None) -> Model:
        """The served model `name` (404 for an unknown name or version)."""
        if name not in self.models:
            raise ServeError(404, f"unknown model {name!r}; this server has "
                                  f"{', '.join(self.models)}")
        if version not in (None, "", protocol.MODEL_VERSION):
            raise ServeError(404, f"model {name!r} has no version {version!r} "
                                  f"(it has {protocol.MODEL_VERSION})")
        return self.models[name]

    def check_examples(self, n: int, what: str = "examples") -> None:
        protocol.check_examples(n, self.limits.max_examples, what)

    def check_values(self, x: np.ndarray, where: str, pixels: bool = True) -> None:
        """Refuses NaN/Inf, and for `pixels` values outside the manifest's range (400)."""
        bad = ~np.isfinite(x)
        if bad.any():
            raise ServeError(400, f"{where} contains {int(bad.sum())} NaN/Inf values (first at "
                                  f"index {tuple(int(i) for i in np.argwhere(bad)[0])})")
        if pixels and self.value_range is not None and x.size:
            lo, hi = float(x.min()), float(x.max())
            if lo < self.value_range[0] or hi > self.value_range[1]:
                hint = " (looks like 0..255 pixels: divide by 255)" if 1 < hi <= 255 else ""
                raise ServeError(400, f"{where} has values in [{lo:g}, {hi:g}] outside the "
                                      f"model's range {list(self.value_range)}{hint}")

    def check_labels(self, labels, n: int, where: str) -> np.ndarray | None:
        """int32 labels `(n,)` for a conditional model (None otherwise), range-checked."""
        if not self.num_classes:
            if labels is not None:
                raise ServeError(400, f"{where}: this model is unconditional; drop the labels")
            return None
        if labels is None:
            names = self.manifest.get("class_names")
            hint = f" ({', '.join(map(str, names))})" if names else ""
            raise ServeError(400, f"{where}: this conditional model needs class labels in "
                                  f"[0, {self.num_classes}){hint}")
        labels = np.asarray(labels)
        if labels.ndim > 1:
            raise ServeError(400, f"{where}: labels must be a list of integers, got shape "
                                  f"{list(labels.shape)}")
        if labels.size == 1 and n > 1:  # one label for every example
            labels = np.repeat(labels.reshape(-1), n)
        if labels.size != n:
            raise ServeError(400, f"{where}: {labels.size} labels for {n} examples")
        try:
            return recipes.check_labels(labels, self.num_classes, n, what=f"{where}: labels")
        except ValueError as e:
            raise ServeError(400, str(e)) from None

    def parse_infer(self, model: Model, body: bytes,
                    header_length: str | None) -> protocol.InferRequest:
        """An inference request for `model`, its values checked.

        Raises:
            ServeError: 400 naming what is malformed or out of range, 413 for
                too many examples.
        """
        request = protocol.parse_infer(model.inputs, model.outputs, body, header_length,
                                       self.limits.max_examples, model.name)
        n = len(next(iter(request.feeds.values())))
        for name, array in request.feeds.items():
            if array.dtype.kind == "f":
                self.check_values(array, f"input {name!r}", pixels=name == "image")
            elif name == "label":
                self.check_labels(array, n, f"input {name!r}")
        return request

    # ------------------------------------------------------- keras-vae

    def score_inputs(self, images: np.ndarray, labels) -> dict:
        """Scorer feeds for checked images: eps = 0 (the posterior mean)."""
        n = len(images)
        feeds = {"image": images, "eps": np.zeros((n, self.latent_dim), np.float32)}
        labels = self.check_labels(labels, n, "labels")
        if labels is not None:
            feeds["label"] = labels
        return feeds

    def images_from_json(self, value, where: str = "images") -> np.ndarray:
        """`(n, *image_shape)` float32 from a nested list (one image or a batch)."""
        try:
            x = np.asarray(value)
        except (ValueError, TypeError):
            raise ServeError(400, f"'{where}' is ragged (rows of different lengths)") from None
        if x.dtype.kind not in "iuf":
            raise ServeError(400, f"'{where}' must hold numbers, got "
                                  f"{'ragged or mixed values' if x.dtype == object else x.dtype}")
        x = x.astype(np.float32)
        shape = self.image_shape
        squeezed = shape[:-1] if shape[-1] == 1 else None
        if x.shape == shape or (squeezed and x.shape == squeezed):
            x = x[None]
        if squeezed and x.shape[1:] == squeezed:
            x = x[..., None]
        if x.shape[1:] != shape:
            raise ServeError(400, f"'{where}' has shape {list(x.shape)}; the model takes images "
                                  f"of shape {list(shape)} (or a batch of them)")
        if len(x) < 1:
            raise ServeError(400, f"'{where}' is empty")
        self.check_examples(len(x), "images")
        self.check_values(x, f"'{where}'")
        return x
