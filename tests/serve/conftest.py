"""Fixtures of the serving tests: tiny exports, a TensorFlow-free 'device', running servers.

The export package is imported in one place, `export_pkg`.
"""

import json
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

LATENT = 3
IMAGE_SHAPE = (8, 8, 1)
CLASSES = 4



@pytest.fixture(scope="session")
def export_pkg():
    """The export package, `keras_vae.export`."""
    import keras_vae.export

    return keras_vae.export


@pytest.fixture(scope="session")
def serve_lib(export_pkg):
    """`serve.py` imported in this process (the app's assembly and its pure functions)."""
    import importlib

    return importlib.import_module(f"{export_pkg.__name__}.serve")


@pytest.fixture(scope="session")
def server_module(export_pkg):
    """Factory: `server_module("uploads")` imports one of the server's modules here."""
    import importlib

    return lambda name: importlib.import_module(f"{export_pkg.__name__}.{name}")


@pytest.fixture(scope="session")
def recipes():
    """The numpy recipes the server and the library share (`keras_vae.recipes`)."""
    from keras_vae import recipes

    return recipes


def _tiny_vae(**kwargs):
    import keras_vae

    return keras_vae.VAE(image_shape=IMAGE_SHAPE, latent_dim=LATENT, arch="mlp",
                         arch_options={"hidden_units": [16]}, seed=0, **kwargs)


@pytest.fixture(scope="session")
def tiny(export_pkg, tmp_path_factory):
    """`(model, export_dir)`: an untrained tiny mlp VAE with decoder, encoder, scorer in ONNX."""
    model = _tiny_vae()
    out = tmp_path_factory.mktemp("serve") / "export"
    export_pkg.export(model, out, formats="onnx", graphs=("decoder", "encoder", "scorer"))
    return model, out


@pytest.fixture(scope="session")
def conditional(export_pkg, tmp_path_factory):
    """`(model, export_dir)`: the same with 4 classes (every graph takes `label`)."""
    model = _tiny_vae(num_classes=CLASSES)
    out = tmp_path_factory.mktemp("serve") / "conditional"
    export_pkg.export(model, out, formats="onnx", graphs=("decoder", "encoder", "scorer"),
                      class_names=["a", "b", "c", "d"])
    return model, out


def device_programs(export_pkg):
    """The Python files an export folder carries (`DEVICE_FILES`): the server among them."""
    return [name for name in export_pkg.DEVICE_FILES if name.endswith(".py")]


@pytest.fixture(scope="session")
def device(export_pkg, tmp_path_factory, device_blocker):
    """A folder holding only the device programs (server, samplers) and a TensorFlow blocker."""
    src = Path(export_pkg.__file__).parent
    root = tmp_path_factory.mktemp("device")
    for name in device_programs(export_pkg):
        shutil.copy(src / name, root / name)
    (root / "blocker").symlink_to(device_blocker)
    return root


@pytest.fixture(scope="session")
def device_env(device):
    """The environment of a process on the 'device' (TensorFlow, Keras, keras_vae blocked)."""
    return _device_env(device)


def _device_env(device: Path) -> dict:
    return {"PYTHONPATH": str(device / "blocker"), "PATH": "/usr/bin:/bin",
            "HOME": str(device), "ORT_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}


def _server(serve_process, device, export_dir, flags=(), env=None):
    """`serve.py` of the 'device' folder (TensorFlow blocked) over `export_dir`."""
    return serve_process(device / "serve.py", export_dir, flags,
                         {**_device_env(device), **(env or {})}, log_dir=device)


@pytest.fixture
def start_server(device, serve_process):
    """Factory: `start_server(export_dir, *flags, env=None) -> Server`, killed after the test."""
    servers = []

    def start(export_dir, *flags, env=None):
        server = _server(serve_process, device, export_dir, flags, env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def server(device, tiny, calibrated, serve_process):
    """The module's shared server over the calibrated tiny export (small limits)."""
    server = _server(serve_process, device, calibrated,
                     ["--max-examples", 32, "--max-body-bytes", 200_000, "--body-timeout-s", 1.0])
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def calibrated(tiny, tmp_path_factory):
    """A copy of the tiny export with an anomaly threshold in its manifest.

    The threshold is the median score of 16 random images under the ONNX
    scorer, so some inputs fall on each side of it.
    """
    _, export_dir = tiny
    out = tmp_path_factory.mktemp("serve") / "calibrated"
    shutil.copytree(export_dir, out)
    import onnxruntime as ort

    scorer = ort.InferenceSession(str(out / "scorer.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((16, *IMAGE_SHAPE), dtype=np.float32)
    scores = scorer.run(None, {"image": x, "eps": np.zeros((16, LATENT), np.float32)})[0]
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["anomaly"] = {"score": "negative_elbo", "eps": "zeros",
                           "threshold": float(np.median(scores)), "quantile": 0.5,
                           "calibration_examples": 16, "calibration_source": "test images"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out
