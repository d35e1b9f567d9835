"""Fixtures of the serving tests: tiny exports, a TensorFlow-free 'device', running servers.

The export package is imported in one place, `export_pkg`.
"""

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
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
    """`serve.py` imported in this process (for its PNG codec and pure functions)."""
    import importlib

    return importlib.import_module(f"{export_pkg.__name__}.serve")


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


@pytest.fixture(scope="session")
def device(export_pkg, tmp_path_factory, device_blocker):
    """A folder holding only `serve.py`, `edge_io.py` and a TensorFlow/Keras blocker."""
    src = Path(export_pkg.__file__).parent
    root = tmp_path_factory.mktemp("device")
    for name in ("serve.py", "edge_io.py"):
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


class Server:
    """A `serve.py` subprocess on 127.0.0.1, with helpers to call it.

    The server picks its own free port (`--port 0`) and prints it: no other
    process on the machine can take the port between choosing and binding.
    """

    _count = 0

    def __init__(self, device: Path, export_dir: Path, flags=(), env: dict | None = None):
        Server._count += 1
        self.host = "127.0.0.1"
        self.log = device / f"server-{os.getpid()}-{Server._count}.log"
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(
                [sys.executable, str(device / "serve.py"), str(export_dir), "--port", "0",
                 *map(str, flags)],
                cwd=device, env={**_device_env(device), **(env or {})}, stdout=f,
                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        self.port = None
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.output()}")
            if self.port is None:
                found = re.search(r" on http://127\.0\.0\.1:(\d+) ", self.output())
                self.port = int(found[1]) if found else None
            if self.port is not None:
                with contextlib.suppress(OSError, http.client.HTTPException):
                    if self.call("GET", "/v2/health/ready", timeout=2)[0] == 200:
                        break
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"server not ready after 60 s: {self.output()}")
            time.sleep(0.1)
        self.url = f"{self.host}:{self.port}"

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def call(self, method: str, path: str, body=None, headers=None, timeout: float = 20):
        """`(status, headers (case-insensitive), body bytes)` of one request on its own
        connection."""
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, body=None, headers=None):
        status, _, raw = self.call(method, path, body, headers)
        return status, json.loads(raw)

    def stats(self) -> dict:
        return self.json("GET", "/v1/stats")[1]

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def start_server(device):
    """Factory: `start_server(export_dir, *flags, env=None) -> Server`, killed after the test."""
    servers = []

    def start(export_dir, *flags, env=None):
        server = Server(device, export_dir, flags, env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="module")
def server(device, tiny, calibrated):
    """The module's shared server over the calibrated tiny export (small limits)."""
    server = Server(device, calibrated, ["--max-examples", 32, "--max-body-bytes", 200_000,
                                         "--body-timeout-s", 1.0])
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
