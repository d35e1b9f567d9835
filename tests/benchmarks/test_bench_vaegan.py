"""The VAE-GAN benchmark runs end to end (`--tiny`): both systems, finite figures, the picture."""

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # a subprocess training two models

ROOT = Path(__file__).resolve().parents[2]


def test_bench_vaegan_tiny(run_bench, tmp_path):
    result, stdout = run_bench("bench_vaegan", timeout=600)
    assert [row["system"] for row in result["rows"]] == ["vae", "vaegan"]
    for row in result["rows"]:
        assert np.isfinite(row["frechet"]) and 0 <= row["precision"] <= 1
        assert row["images_per_s"] > 0 and np.isfinite(row["negative_elbo"])
    assert {"d_loss", "g_loss", "feature_loss"} <= set(result["rows"][1]["final_train"])
    assert "| system |" in stdout
    picture = tmp_path / "samples_0.png"
    from PIL import Image

    width, height = Image.open(picture).size
    assert width > 2 * height  # two 8x8 grids of 8x8 digits side by side, with a gap
