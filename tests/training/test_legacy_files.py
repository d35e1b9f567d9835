"""Model files written by an earlier layout of the package load and give the same numbers."""

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_vae import saving

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


def inputs_for(signature, n=4, seed=1) -> dict:
    """The inputs `make_legacy.py` fed each graph: the same draws in the same order."""
    rng = np.random.default_rng(seed)
    feed = {}
    for name, shape, dtype in signature.inputs:
        if "int" in dtype:
            low, high = (signature.input_ranges or {}).get(name, (0, 3))
            feed[name] = rng.integers(low, high, (n, *shape)).astype(dtype)
        elif name == "x":
            feed[name] = rng.random((n, *shape)).astype(dtype)
        else:
            feed[name] = rng.standard_normal((n, *shape)).astype(dtype)
    return feed


def test_every_family_has_a_legacy_file():
    assert set(EXPECTED) == {"vae_mixture", "tcvae", "vqvae", "vaegan"}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_legacy_file_loads_and_every_graph_gives_the_same_numbers(kind):
    model = saving.load_model(LEGACY / f"{kind}.keras")
    graphs = model.export_graphs()
    assert set(graphs) == set(EXPECTED[kind]["graphs"])
    for name, signature in graphs.items():
        feed = {k: keras.ops.convert_to_tensor(v) for k, v in inputs_for(signature).items()}
        got = signature.fn(**feed)
        want = EXPECTED[kind]["graphs"][name]
        assert set(got) == set(want), name
        for output, values in want.items():
            np.testing.assert_allclose(np.asarray(got[output]), np.asarray(values),
                                       rtol=1e-6, atol=1e-6, err_msg=f"{kind} {name} {output}")
