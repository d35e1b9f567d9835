"""Fixtures of the browser page's tests: where the page lives, a tiny export, a server for it.

The page's paths and the server are fixed in one place each: `WEB_DIR` (the folder
`export/web/` beside the device-side code) and the `serve_page` fixture (the service itself,
`export/serve.py`).
"""

import importlib.util
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[2]
EXPORT_DIR = ROOT / "export"  # the device-side folder: recipes.py, (serve.py,) web/
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
def recipes():
    """export/recipes.py loaded from its file (numpy only; no TensorFlow import)."""
    spec = importlib.util.spec_from_file_location("_web_test_recipes", EXPORT_DIR / "recipes.py")
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


class OnnxScorer:
    """The export's scorer.onnx at eps = 0 called directly with onnxruntime: the reference
    the page's scores (answered by the service) are held to."""

    def __init__(self, export_dir: Path, manifest: dict):
        import onnxruntime as ort

        entry = next(f for f in manifest["files"]
                     if (f["graph"], f["format"], f["precision"]) == ("scorer", "onnx", "fp32"))
        self.session = ort.InferenceSession(str(export_dir / entry["path"]),
                                            providers=["CPUExecutionProvider"])
        self.latent_dim = int(manifest["latent_dim"])
        self.num_classes = int(manifest.get("num_classes") or 0)

    def scores(self, images, labels=None) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        feeds = {"image": images, "eps": np.zeros((len(images), self.latent_dim), np.float32)}
        if self.num_classes:
            feeds["label"] = np.asarray(labels, dtype=np.int32)
        return self.session.run(None, feeds)[0]


class PageServer:
    """`export/serve.py`, the real service, serving `export_dir` and the page of `WEB_DIR`.

    With a `threshold`, the service runs over a copy of the export whose manifest holds it
    (as `keras-vae export --calibrate` writes it). `.url` is the page, `.scorer` the
    reference scorer (onnxruntime called directly, not through the service).
    """

    def __init__(self, serve_process, workdir: Path, export_dir: Path,
                 threshold: float | None = None):
        self.export_dir = Path(export_dir)
        self.manifest = json.loads((self.export_dir / "manifest.json").read_text())
        self.scorer = OnnxScorer(self.export_dir, self.manifest)
        served = self.export_dir
        if threshold is not None:
            served = workdir / "export"
            shutil.copytree(self.export_dir, served)
            manifest = {**self.manifest, "anomaly": {
                "score": "negative_elbo", "eps": "zeros", "threshold": float(threshold),
                "quantile": None, "calibration_examples": 0,
                "calibration_source": "a fixed test threshold"}}
            (served / "manifest.json").write_text(json.dumps(manifest))
        self._start = lambda: serve_process(
            EXPORT_DIR / "serve.py", served, ["--web-dir", WEB_DIR],
            {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}, log_dir=workdir)
        self.process = None

    def __enter__(self):
        self.process = self._start()
        self.url = f"http://127.0.0.1:{self.process.port}/"
        return self

    def __exit__(self, *exc):
        self.process.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def serve_page(serve_process, tmp_path_factory):
    """`serve_page(export_dir, threshold=None)`: a context manager running the service
    (`export/serve.py`) over the export, the page at `.url`, the reference scorer at
    `.scorer`."""

    def start(export_dir, threshold=None):
        return PageServer(serve_process, tmp_path_factory.mktemp("page"), export_dir, threshold)

    return start


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
