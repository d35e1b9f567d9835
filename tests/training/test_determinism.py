"""`--seed` and `--deterministic`: the same seed gives bit-identical weights.

Op determinism is process-wide and permanent, so the runs happen in a
subprocess (three `keras-vae train` calls: seed 5, seed 5, seed 6), with
shuffling and dynamic binarization on, as in a real run.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # subprocesses, several processes or benchmarks

SCRIPT = textwrap.dedent('''
    import json, sys
    from keras_vae import cli, saving

    weights = {}
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        code = cli.main(["train", "--dataset", "digits", "--split", "train[:320]",
                         "--arch", "mlp", "--latent-dim", "2", "--epochs", "2",
                         "--batch-size", "32", "--seed", str(seed), "--deterministic",
                         "--verbose", "0", "--out", f"run-{name}"])
        assert code == 0
        model = saving.load_model(f"run-{name}/model.keras")
        weights[name] = [w.tolist() for w in model.get_weights()]
    print("RESULT" + json.dumps(weights))
''')


def test_same_seed_same_weights(tmp_path):
    (tmp_path / "script.py").write_text(SCRIPT)
    proc = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    weights = {k: [np.array(w) for w in v] for k, v in json.loads(line[6:]).items()}
    a, b, c = weights["a"], weights["b"], weights["c"]
    assert len(a) == len(b) == len(c) > 4
    for wa, wb in zip(a, b):
        np.testing.assert_array_equal(wa, wb)  # bit-identical
    # A different seed gives a different model (so the comparison can fail).
    assert max(float(np.abs(wa - wc).max()) for wa, wc in zip(a, c)) > 1e-3
    history_a = json.loads((tmp_path / "run-a" / "history.json").read_text())
    history_b = json.loads((tmp_path / "run-b" / "history.json").read_text())
    assert history_a["history"] == history_b["history"]
