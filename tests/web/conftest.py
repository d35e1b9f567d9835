"""Fixtures of the browser page's tests: where the page lives, a tiny export, a server for it.

The page's paths and the server are fixed in one place each: `WEB_DIR` (the folder
`export/web/` beside the device-side code) and the `page_server` fixture.
"""

import importlib.util
import json
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[2]
EXPORT_DIR = ROOT / "export"  # the device-side folder: edge_io.py, (serve.py,) web/
WEB_DIR = EXPORT_DIR / "web"
ORT_DIST = WEB_DIR / "node_modules" / "onnxruntime-web" / "dist"
CHROMIUM = Path(os.environ.get("KERAS_VAE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="session")
def web_dir() -> Path:
    return WEB_DIR


@pytest.fixture(scope="session")
def edge_io():
    """export/edge_io.py loaded from its file (numpy only; no TensorFlow import)."""
    spec = importlib.util.spec_from_file_location("_web_test_edge_io", EXPORT_DIR / "edge_io.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_model(model, out_dir: Path, **kwargs) -> dict:
    """ONNX export of a model: the one place the tests name the exporter."""
    import keras_vae.export

    return keras_vae.export.export(model, out_dir, formats="onnx", **kwargs)


def _tiny_vae(**kwargs):
    import keras_vae

    return keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                         arch_options={"hidden_units": [16]}, seed=0, **kwargs)


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory) -> Path:
    """An untrained 8x8x1 MLP VAE with a 3-dimensional latent space, exported to ONNX."""
    out = tmp_path_factory.mktemp("web") / "export"
    export_model(_tiny_vae(), out)
    return out


@pytest.fixture(scope="session")
def tiny_mixture_export(tmp_path_factory) -> Path:
    """The tiny VAE with a 3-component mixture prior away from the origin, exported to ONNX."""

    model = _tiny_vae(prior="mixture", prior_options={"components": 3, "seed": 1})
    means = np.array([[4.0, -2.0, 0.5], [-3.0, 3.0, 1.0], [0.0, 0.0, -4.0]], np.float32)
    model.prior.means.assign(means)
    out = tmp_path_factory.mktemp("web") / "export"
    export_model(model, out)
    return out


@pytest.fixture(scope="session")
def tiny_rgb_export(tmp_path_factory) -> Path:
    """A non-square RGB model: 6x10x3 images, a 2-dimensional latent space."""
    import keras_vae

    model = keras_vae.VAE(image_shape=(6, 10, 3), latent_dim=2, arch="mlp",
                          arch_options={"hidden_units": [16]}, seed=0)
    out = tmp_path_factory.mktemp("web") / "export"
    export_model(model, out)
    return out


@pytest.fixture(scope="session")
def tiny_conditional_export(tmp_path_factory) -> Path:
    """The same with 3 named classes: the decoder and scorer take an int32 `label`."""
    out = tmp_path_factory.mktemp("web") / "export"
    export_model(_tiny_vae(num_classes=3), out, class_names=["circle", "square", "star"])
    return out


# ---------------------------------------------------------------- the server

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".wasm": "application/wasm", ".json": "application/json", ".png": "image/png",
          ".onnx": "application/octet-stream"}


class OnnxScorer:
    """The export's scorer.onnx at eps = 0, with a threshold, as `POST /v1/score` answers."""

    def __init__(self, export_dir: Path, manifest: dict, threshold: float | None):
        import onnxruntime as ort

        entry = next(f for f in manifest["files"]
                     if (f["graph"], f["format"], f["precision"]) == ("scorer", "onnx", "fp32"))
        self.session = ort.InferenceSession(str(export_dir / entry["path"]),
                                            providers=["CPUExecutionProvider"])
        self.latent_dim = int(manifest["latent_dim"])
        self.shape = tuple(manifest["image"]["shape"])
        self.meaning = manifest["graphs"]["scorer"]["meaning"]
        self.threshold = threshold
        self.num_classes = int(manifest.get("num_classes") or 0)

    def scores(self, images, labels=None) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != self.shape:
            raise ValueError(f"images must have shape (n, {', '.join(map(str, self.shape))}), "
                             f"got {images.shape}")
        if not np.all((images >= 0) & (images <= 1)):
            raise ValueError("image values must be finite and in [0, 1]")
        feeds = {"image": images, "eps": np.zeros((len(images), self.latent_dim), np.float32)}
        if self.num_classes:
            labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
            if labels.shape != (len(images),) or np.any((labels < 0) | (labels >= self.num_classes)):
                raise ValueError(f"a conditional export needs one label in [0, {self.num_classes}) "
                                 "per image")
            feeds["label"] = labels.astype(np.int32)
        return self.session.run(None, feeds)[0]

    def answer(self, body: dict) -> dict:
        scores = self.scores(body["images"], body.get("labels"))
        flags = [None if self.threshold is None else bool(s > self.threshold) for s in scores]
        return {"scores": scores.tolist(), "threshold": self.threshold, "is_anomaly": flags,
                "score": self.meaning}


def _handler(export_dir: Path, manifest: dict, scorer: OnnxScorer):
    files = {entry["path"]: export_dir / entry["path"] for entry in manifest["files"]}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, status, body: bytes, content_type: str):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status, obj):
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _file(self, path: Path | None, root: Path):
            if path is None or not path.is_file() or root.resolve() not in path.resolve().parents:
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no such file: {self.path}"})
            self._send(HTTPStatus.OK, path.read_bytes(),
                       _TYPES.get(path.suffix, "application/octet-stream"))

        def do_GET(self):  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/":
                return self._file(WEB_DIR / "index.html", WEB_DIR)
            if path == "/manifest.json":
                return self._json(HTTPStatus.OK, manifest)
            if path.startswith("/web/"):
                return self._file(WEB_DIR / path[len("/web/"):], WEB_DIR)
            if path.startswith("/ort/"):
                return self._file(ORT_DIST / path[len("/ort/"):], ORT_DIST)
            if path.startswith("/files/"):
                return self._file(files.get(path[len("/files/"):]), export_dir)
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no route {path}"})

        def do_POST(self):  # noqa: N802
            if self.path != "/v1/score":
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                answer = scorer.answer(body)
            except (ValueError, KeyError, TypeError) as e:
                return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
            self._json(HTTPStatus.OK, answer)

    return Handler


class PageServer:
    """A test-only HTTP server of the page's URL contract on 127.0.0.1 (a free port)."""

    def __init__(self, export_dir: Path, threshold: float | None = None):
        self.export_dir = Path(export_dir)
        self.manifest = json.loads((self.export_dir / "manifest.json").read_text())
        self.scorer = OnnxScorer(self.export_dir, self.manifest, threshold)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0),
                                         _handler(self.export_dir, self.manifest, self.scorer))
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(scope="session")
def serve_page():
    """`serve_page(export_dir, threshold=None)`: a context manager serving the page and the
    export at `.url`, with its scorer at `.scorer` (swap here for export/serve.py)."""
    return PageServer


# --------------------------------------------------------------- the browser


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not found (apt-get install -y chromium)"
    if not (ORT_DIST / "ort.wasm.min.mjs").exists():
        return f"onnxruntime-web not installed in {WEB_DIR} (npm ci --prefix {WEB_DIR})"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is not installed (pip install playwright)"
    return None


@pytest.fixture(scope="session")
def browser():
    """Debian's headless Chromium driven by Playwright (never a downloaded browser)."""
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
