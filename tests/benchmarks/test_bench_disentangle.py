"""The disentanglement benchmark runs end to end (`--tiny`): both systems, the figures, pictures."""

import math
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a subprocess training two models

ROOT = Path(__file__).resolve().parents[2]


def test_bench_disentangle_tiny(run_bench, tmp_path):
    result, stdout = run_bench("bench_disentangle")
    assert [row["system"] for row in result["rows"]] == ["vae", "tcvae"]
    for row in result["rows"]:
        assert 0 <= row["mig"] <= 1 and 0 <= row["dci_disentanglement"] <= 1
        assert set(row["mig_per_factor"]) == {"shape", "scale", "orientation", "posX", "posY"}
        # 64 x 64 binary images: the negative ELBO of a barely trained model is
        # near the 4096 * log 2 = 2839 nats of a coin flip per pixel.
        assert 100 < row["negative_elbo"] < 10_000 and math.isfinite(row["held_out_tc"])
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
    assert "| system |" in stdout
