"""The sampling benchmark runs end to end (`--tiny`) and reports consistent figures."""

import math
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses, several processes or benchmarks

ROOT = Path(__file__).resolve().parents[2]

RUNTIMES = [
    "keras predict", "keras tf.function", "keras tf.function XLA", "savedmodel",
    "onnxruntime fp32", "onnxruntime int8_dynamic",
    "litert fp32", "litert fp16", "litert int8_dynamic", "litert int8_full",
]


def test_bench_sampling_tiny(run_bench):
    result, stdout = run_bench("bench_sampling", timeout=600)
    assert [row["runtime"] for row in result["rows"]] == RUNTIMES
    assert "onnxruntime fp32 batch 1" in stdout and "| runtime |" in stdout

    # The tiny conv decoder (latent 4, filters [4, 8], 8x8x1; dense 16 is the encoder's), by hand:
    # z (4) -> 2x2x8 grid, deconv 8->8 at 2x2, deconv 8->4 at 4x4, conv 4->1 at 8x8
    flops = 2 * (4 * 32 + 2 * 2 * 9 * 8 * 8 + 4 * 4 * 9 * 8 * 4 + 8 * 8 * 9 * 4 * 1)
    assert result["decoder_flops_per_sample"] == flops == 18688
    peak = result["matmul_peak"]["gflops"]
    assert peak > 0.1 and result["matmul_peak"]["threads"] == 1

    for row in result["rows"]:
        assert all(math.isfinite(v) and v > 0 for v in (
            row["b1_ms"], row["b16_ms_per_sample"], row["b16_samples_per_s"]))
        assert row["b16_samples_per_s"] * row["b16_ms_per_sample"] / 1e3 == pytest.approx(1)
        assert row["fraction_of_peak"] == pytest.approx(
            flops * row["b16_samples_per_s"] / 1e9 / peak)
        quantized = "fp16" in row["runtime"] or "int8" in row["runtime"]
        tolerance = 0.05 if quantized else 1e-5
        assert row["max_abs_vs_keras"] <= tolerance, row
    targets = result["targets"]
    speedup = result["rows"][0]["b1_ms"] / targets["onnxruntime_fp32_b1_ms"]
    assert targets["onnxruntime_b1_speedup_vs_predict"] == pytest.approx(speedup)
    assert targets["measured_compute_floor_ms"] == pytest.approx(flops / (peak * 1e9) * 1e3)
    assert result["versions"]["onnxruntime"] and result["load_average_before"] is not None
    yardstick = result["yardstick"]
    paired = yardstick["paired_b1_ms"]
    assert len(paired["ours"]) == len(paired["kerasio"]) == 7
    ratios = sorted(a / b for a, b in zip(paired["ours"], paired["kerasio"]))
    assert yardstick["paired_ratio_median"] == pytest.approx(ratios[3])
    assert yardstick["paired_ratio_range"] == pytest.approx([ratios[0], ratios[-1]])
    assert yardstick["b1_ms"] == pytest.approx(sorted(paired["kerasio"])[3])
    assert targets["onnxruntime_fp32_b1_vs_kerasio_decoder"] == yardstick["paired_ratio_median"]
