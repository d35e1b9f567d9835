"""A model with NaN or Inf weights is refused on load, so evaluate, sample and export exit 2.

TensorFlow's fused graphs can turn a NaN weight into finite, plausible
numbers (before this check, `evaluate` printed them and `sample` wrote a
garbage PNG, both exiting 0): the weights themselves are checked with numpy.
"""

import keras
import numpy as np
import pytest

import keras_vae
from keras_vae import cli, saving


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    keras.utils.set_random_seed(0)
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                        arch_options={"hidden_units": [8]}, seed=0)
    vae.compile()
    x = np.random.default_rng(0).random((16, 8, 8, 1), dtype=np.float32)
    vae.fit(x, batch_size=8, epochs=1, verbose=0)
    return vae, saving.save_model(vae, tmp_path_factory.mktemp("good") / "model.keras")


def _poisoned(vae, path, value, which):
    """Saves `vae` with one entry of one kernel set to `value`; restores the weight."""
    kernels = [w for w in vae.weights if "kernel" in w.path]
    variable = kernels[which]
    original = variable.numpy()
    poisoned = original.copy()
    poisoned.flat[poisoned.size // 2] = value
    variable.assign(poisoned)
    try:
        return saving.save_model(vae, path), variable.path
    finally:
        variable.assign(original)


def test_good_model_loads(good):
    _, path = good
    assert isinstance(saving.load_model(path), keras_vae.VAE)


@pytest.mark.parametrize("value, which", [(np.nan, 0), (np.inf, -1), (-np.inf, 1)],
                         ids=["nan-encoder", "inf-decoder", "minus-inf"])
def test_non_finite_weights_are_refused(good, tmp_path, capsys, value, which):
    vae, _ = good
    path, name = _poisoned(vae, tmp_path / "bad.keras", value, which)
    with pytest.raises(ValueError, match=rf"weight '{name}' holds 1 NaN/Inf value\(s\)"):
        saving.load_model(path)
    for argv in (["evaluate", str(path), "--split", "train[:32]"],
                 ["sample", str(path), "--out", str(tmp_path / "s.png")],
                 ["export", str(path), "--formats", "onnx", "--out", str(tmp_path / "e")]):
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "NaN/Inf" in err and "Traceback" not in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.keras"]


def test_check_finite_weights_on_a_live_model(good):
    vae, _ = good
    saving.check_finite_weights(vae)  # no error
    variable = vae.weights[0]
    original = variable.numpy()
    variable.assign(np.full_like(original, np.nan))
    try:
        with pytest.raises(ValueError, match=f"holds {original.size} NaN/Inf"):
            saving.check_finite_weights(vae)
    finally:
        variable.assign(original)
