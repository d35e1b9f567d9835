"""Shared fixtures: quiet TensorFlow, fixed seeds, tiny models, the shared MNIST digits."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import contextlib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MNIST_8K = Path(os.environ.get("KERAS_VAE_MNIST_8K", ROOT.parent / "shared/data/mnist-8k"))


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


DEVICE_BLOCKER = '''
import os
import sys

class _Block:
    """TensorFlow, Keras, tf2onnx and keras_vae unimportable, like on a phone or a server
    without them; `BLOCK_MODULES=PIL,orjson` blocks those top-level names too."""

    blocked = {"tensorflow", "keras", "tf2onnx", "tf_keras"} | {
        name for name in os.environ.get("BLOCK_MODULES", "").split(",") if name}

    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in self.blocked or top.startswith("keras_vae"):
            raise ImportError(f"{name} is not installed on this machine (test blocker)")
        return None

sys.meta_path.insert(0, _Block())
'''


@pytest.fixture(scope="session")
def device_blocker(tmp_path_factory):
    """A folder whose `sitecustomize.py` blocks the training stack: put it on PYTHONPATH of
    a device-side process (samplers, server) to prove it runs without TensorFlow."""
    folder = tmp_path_factory.mktemp("blocker")
    (folder / "sitecustomize.py").write_text(DEVICE_BLOCKER)
    return folder


@pytest.fixture
def mnist8k_dir():
    """The shared 8,000 real MNIST digits; skipped where the folder is absent."""
    if not (MNIST_8K / "images-idx3-ubyte.gz").exists():
        pytest.skip(f"shared MNIST digits not found at {MNIST_8K}")
    return MNIST_8K


@pytest.fixture
def tiny_images():
    """64 random 8x8x1 images in [0, 1] with labels 0..3."""
    rng = np.random.default_rng(0)
    return rng.random((64, 8, 8, 1), dtype=np.float32), rng.integers(0, 4, 64)


@pytest.fixture
def make_vae():
    """Factory of small VAEs for 8x8x1 images."""
    import keras_vae

    def factory(arch="mlp", latent_dim=3, **kwargs):
        kwargs.setdefault("image_shape", (8, 8, 1))
        if arch == "mlp":
            kwargs.setdefault("arch_options", {"hidden_units": [16]})
        elif arch in ("conv", "resnet"):
            kwargs.setdefault("arch_options", {"filters": [4, 8], "dense_units": 16})
        model = keras_vae.VAE(latent_dim=latent_dim, arch=arch, seed=0, **kwargs)
        model.compile()
        return model

    return factory


class ServeProcess:
    """A `serve.py` subprocess on 127.0.0.1 (`--port 0`), with helpers to call it.

    The server picks its own free port and prints it: no other process on the
    machine can take the port between choosing and binding.

    Args:
        script: The `serve.py` to run (a device folder's copy, or export/serve.py).
        export_dir: The export it serves.
        flags: More command-line flags.
        env: The process environment.
        log_dir: Where its output goes (`.output()` reads it).
    """

    _count = 0

    def __init__(self, script: Path, export_dir: Path, flags=(), env: dict | None = None,
                 log_dir: Path | None = None):
        ServeProcess._count += 1
        self.host = "127.0.0.1"
        log_dir = Path(log_dir or script.parent)
        self.log = log_dir / f"server-{os.getpid()}-{ServeProcess._count}.log"
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(
                [sys.executable, str(script), str(export_dir), "--port", "0", *map(str, flags)],
                cwd=log_dir, env=env, stdout=f, stderr=subprocess.STDOUT)
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


@pytest.fixture(scope="session")
def serve_process():
    """`ServeProcess`: `serve_process(script, export_dir, flags, env, log_dir)` starts one."""
    return ServeProcess
