"""The VAE-GAN benchmark runs end to end (`--tiny`): both systems, finite figures, the picture."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a subprocess training two models

ROOT = Path(__file__).resolve().parents[2]


def test_bench_vaegan_tiny(tmp_path):
    out = tmp_path / "vaegan.json"
    r = subprocess.run([sys.executable, "benchmarks/bench_vaegan.py", "--tiny", "--out",
                        str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert [row["system"] for row in result["rows"]] == ["vae", "vaegan"]
    for row in result["rows"]:
        assert np.isfinite(row["frechet"]) and 0 <= row["precision"] <= 1
        assert row["images_per_s"] > 0 and np.isfinite(row["neg_elbo"])
    assert {"d_loss", "g_loss", "feature_loss"} <= set(result["rows"][1]["final_train"])
    assert "| system |" in r.stdout
    picture = tmp_path / "samples_0.png"
    from PIL import Image

    width, height = Image.open(picture).size
    assert width > 2 * height  # two 8x8 grids of 8x8 digits side by side, with a gap
