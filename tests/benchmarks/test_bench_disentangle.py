"""The disentanglement benchmark runs end to end (`--tiny`): both systems, the figures, pictures."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a subprocess training two models

ROOT = Path(__file__).resolve().parents[2]


def test_bench_disentangle_tiny(tmp_path):
    out = tmp_path / "disentangle.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    r = subprocess.run([sys.executable, "benchmarks/bench_disentangle.py", "--tiny", "--out",
                        str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads(out.read_text())
    for key in ("machine", "versions", "args", "load_average_before", "load_average_after"):
        assert key in result
    assert [row["system"] for row in result["rows"]] == ["vae", "tcvae"]
    for row in result["rows"]:
        assert 0 <= row["mig"] <= 1 and 0 <= row["dci_disentanglement"] <= 1
        assert set(row["mig_per_factor"]) == {"shape", "scale", "orientation", "posX", "posY"}
        # 64 x 64 binary images: the negative ELBO of a barely trained model is
        # near the 4096 * log 2 = 2839 nats of a coin flip per pixel.
        assert 100 < row["neg_elbo"] < 10_000 and math.isfinite(row["held_out_tc"])
        assert sorted(row["traversal_rows"]) == list(range(4))  # latent 4, every dim a row
        from PIL import Image

        picture = np.asarray(Image.open(tmp_path / row["traversal"]))
        # One row of 9 images (64 x 64) per latent dimension, 1-pixel gaps between.
        assert picture.shape[:2] == (4 * 64 + 3, 9 * 64 + 8)
        tile = picture[:64, :64]
        assert tile.min() < 255  # a decoded image, not the grid's blank gap colour
    vae, tcvae = result["rows"]
    assert vae["train_tc"] is None and tcvae["train_tc"] is not None  # only the TCVAE logs TC
    summary = {s["system"]: s for s in result["summary"]}
    assert summary["vae"]["mig_gain_vs_vae_mean"] == 0.0
    assert summary["tcvae"]["mig_gain_vs_vae_mean"] == pytest.approx(tcvae["mig"] - vae["mig"])
    assert "| system |" in r.stdout
