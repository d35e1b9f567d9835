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
