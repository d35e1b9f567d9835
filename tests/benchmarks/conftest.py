"""Fixtures of the benchmark tests: a benchmark script run on its `--tiny` setting."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_bench(tmp_path):
    """`run_bench(script, *flags, timeout=300) -> (result JSON, stdout)`.

    Runs `benchmarks/{script}.py --tiny --out ...` in a subprocess from the repository
    root; it must exit 0 and write the JSON every benchmark writes (machine, versions,
    threads, load before and after, arguments, rows).
    """

    def run(script, *flags, timeout=300):
        out = tmp_path / f"{script}.json"
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), "--tiny", "--out",
             str(out), *map(str, flags)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        result = json.loads(out.read_text())
        for key in ("machine", "versions", "threads", "load_average_before",
                    "load_average_after", "args", "rows"):
            assert key in result, f"{script}: missing {key!r}"
        assert result["machine"]["cores"] >= 1
        assert result["versions"]["tensorflow"]
        return result, proc.stdout

    return run
