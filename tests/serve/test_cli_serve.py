"""`keras-vae export --calibrate` then `keras-vae serve`: the whole path a user types."""

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import keras_vae
from keras_vae.export import calibration

pytestmark = pytest.mark.slow  # subprocesses: the CLI and a server

CLI = [sys.executable, "-m", "keras_vae.cli"]


def test_export_calibrates_and_serve_runs_without_tensorflow(tmp_path):
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                        arch_options={"hidden_units": [16]}, seed=0)
    keras_vae.saving.save_model(vae, tmp_path / "m.keras")
    out = tmp_path / "export"
    done = subprocess.run([*CLI, "export", str(tmp_path / "m.keras"), "--formats", "onnx",
                           "--calibrate", "digits", "--calibrate-split", "train[:300]",
                           "--quantile", "0.9", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    anomaly = json.loads((out / "manifest.json").read_text())["anomaly"]
    x, _ = keras_vae.data.load_arrays("digits", "train[:300]")
    scores = calibration.scores(vae, x)
    assert anomaly["threshold"] == pytest.approx(np.quantile(scores, 0.9), rel=1e-4)
    assert anomaly["calibration_examples"] == 300 and "Anomaly threshold" in done.stdout
    # The bundle carries the server and the page.
    assert (out / "serve.py").is_file() and (out / "web" / "index.html").is_file()

    log = tmp_path / "serve.log"
    with open(log, "w") as f:
        server = subprocess.Popen([*CLI, "serve", str(out), "--port", "0"], stdout=f,
                                  stderr=subprocess.STDOUT)
    try:
        port, deadline = None, time.monotonic() + 90
        while port is None and time.monotonic() < deadline:
            found = re.search(r" on http://127\.0\.0\.1:(\d+) ", log.read_text())
            port = int(found[1]) if found else None
            assert server.poll() is None, log.read_text()
            time.sleep(0.2)
        assert port, log.read_text()
        base = f"http://127.0.0.1:{port}"
        stats = json.loads(urllib.request.urlopen(f"{base}/v1/stats", timeout=10).read())
        assert stats["tensorflow_imported"] is False
        body = json.dumps({"images": x[:4].tolist()}).encode()
        request = urllib.request.Request(f"{base}/v1/score", body,
                                         {"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=10).read())
        np.testing.assert_allclose(answer["scores"], scores[:4], rtol=1e-4)
        assert answer["threshold"] == pytest.approx(anomaly["threshold"])
        assert answer["is_anomaly"] == [bool(s > anomaly["threshold"]) for s in answer["scores"]]
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, log.read_text()
    assert Path(log).read_text()


# Imported first by every Python process started with this folder on PYTHONPATH: notes
# each attempt to import the training stack in the file named by $IMPORT_LOG, then refuses it.
IMPORT_HOOK = '''
import os
import sys


class _Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tf2onnx"):
            with open(os.environ["IMPORT_LOG"], "a") as log:
                log.write(f"{os.getpid()} {name}\\n")
            raise ImportError(f"{name} refused by the test's import hook")
        return None


sys.meta_path.insert(0, _Refuse())
'''


def test_console_script_serves_without_ever_importing_tensorflow(tiny, tmp_path):
    script = Path(sys.executable).with_name("keras-vae")
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable} (pip install -e .)")
    _, export_dir = tiny
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(IMPORT_HOOK)
    imports = tmp_path / "imports.log"
    log = tmp_path / "serve.log"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(hook),
           "IMPORT_LOG": str(imports), "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as f:
        server = subprocess.Popen([str(script), "serve", str(export_dir), "--port", "0"],
                                  stdout=f, stderr=subprocess.STDOUT, env=env)
    try:
        port, deadline = None, time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            found = re.search(r" on http://127\.0\.0\.1:(\d+) ", log.read_text())
            port = int(found[1]) if found else None
            assert server.poll() is None, log.read_text()
            time.sleep(0.1)
        assert port, log.read_text()
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/stats",
                                                  timeout=10).read())
        assert stats["tensorflow_imported"] is False
        assert stats["worker"]["pid"] == server.pid  # the console script exec'd the server
        assert set(stats["models"]) == {"decoder", "encoder", "scorer"}
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0, log.read_text()
    # Neither the console script's process nor the server tried to import the stack.
    assert not imports.exists(), imports.read_text()
