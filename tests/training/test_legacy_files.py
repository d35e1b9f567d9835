"""Model files written by an earlier layout of the package load and give the same numbers."""

import importlib.util
import json
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_vae import saving

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())
# The script that wrote the files feeds the graphs; the test feeds them the same inputs.
_spec = importlib.util.spec_from_file_location("make_legacy", LEGACY / "make_legacy.py")
make_legacy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_legacy)


def test_every_family_has_a_legacy_file():
    assert set(EXPECTED) == {"vae_mixture", "tcvae", "vqvae", "vaegan"}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_legacy_file_loads_and_every_graph_gives_the_same_numbers(kind):
    model = saving.load_model(LEGACY / f"{kind}.keras")
    graphs = model.export_graphs()
    assert set(graphs) == set(EXPECTED[kind]["graphs"])
    for name, signature in graphs.items():
        feed = {k: keras.ops.convert_to_tensor(v) for k, v in make_legacy.inputs_for(signature).items()}
        got = signature.fn(**feed)
        want = EXPECTED[kind]["graphs"][name]
        assert set(got) == set(want), name
        for output, values in want.items():
            np.testing.assert_allclose(np.asarray(got[output]), np.asarray(values),
                                       rtol=1e-6, atol=1e-6, err_msg=f"{kind} {name} {output}")
