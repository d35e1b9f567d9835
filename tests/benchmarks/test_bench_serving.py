"""`benchmarks/bench_serving.py` runs end to end on its `--tiny` setting (so it cannot rot)."""

import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_serving_tiny(run_bench):
    pytest.importorskip("flask")
    pytest.importorskip("uvicorn")
    result, stdout = run_bench("bench_serving", timeout=600)
    assert "targets" in result
    rows = {(r["system"], r["task"]): r for r in result["rows"]}
    assert set(rows) == {(s, t) for s in ("ours", "ours-binary", "ours-one-worker",
                                          "ours-no-coalescing", "flask-predict")
                         for t in ("decode", "score")}
    assert result["setup"]["ours_flags"][-2:] == ["--workers", "2"]
    for (system, task), row in rows.items():
        assert row["failures"] == 0, row
        assert row["requests"] > 0
        for key in ("requests_per_s", "p50_ms", "p99_ms"):
            assert math.isfinite(row[key]) and row[key] > 0, (system, task, key, row[key])
        assert row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
        if system != "flask-predict":
            assert row["speedup_vs_flask"] > 0
    # Without coalescing every request is one onnxruntime call; with it, never more.
    for task in ("decode", "score"):
        assert rows["ours-no-coalescing", task]["requests_per_onnx_call"] == 1
        assert rows["ours", task]["requests_per_onnx_call"] >= 1
        assert rows["ours-binary", task]["requests_per_onnx_call"] >= 1
        assert rows["ours-one-worker", task]["requests_per_onnx_call"] >= 1
        # CPU of the supervisor and its workers, not of the supervisor alone (~0).
        assert rows["ours", task]["server_cpu_per_request_ms"] > 0.05
    assert "| ours | decode |" in stdout
