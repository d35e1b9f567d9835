"""The Keras private names keras_vae relies on: fail loudly on an untested Keras."""

import inspect
import re
from pathlib import Path

import keras
import numpy as np

from keras_vae import compat

ROOT = Path(__file__).resolve().parents[2]


def _tiny_model():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", loss="mse")
    return model


def test_installed_keras_is_a_tested_release():
    assert compat.keras_is_tested(), (
        f"Keras {keras.__version__} is outside the tested releases {compat.KERAS_VERSIONS} "
        "of keras_vae.compat: check every name in compat.PRIVATE_NAMES against it, then "
        "widen KERAS_VERSIONS (and setup.py's pin).")


def test_the_tested_range_is_the_installed_pin():
    low, high = compat.KERAS_VERSIONS
    assert f'"keras>={low},<{high}"' in (ROOT / "setup.py").read_text()


def test_version_arithmetic():
    assert compat.release("3.15.1") == (3, 15, 1)
    assert compat.release("3.16.0.dev2025") == (3, 16, 0)
    assert compat.release("3.4rc1") == (3, 4)
    assert compat.keras_is_tested("3.3.0") and compat.keras_is_tested("3.15.9")
    assert not compat.keras_is_tested("3.16.0") and not compat.keras_is_tested("3.2.1")
    assert not compat.keras_is_tested("4.0.0")


def test_private_names_still_exist_and_mean_the_same():
    build = keras.Model._maybe_symbolic_build
    assert list(inspect.signature(build).parameters) == ["self", "iterator", "data_batch"]
    model = _tiny_model()
    for name in compat.PRIVATE_NAMES["keras.Model (attribute of an instance)"]:
        assert hasattr(model, name), f"keras.Model instances lost {name}"
    # `fit` reads `_initial_epoch` (where a restored backup resumes) and calls the build.
    fit = inspect.getsource(type(model).fit)
    assert "self._initial_epoch" in fit and "self._maybe_symbolic_build" in fit
    assert compat.has_compiled_loss(model)
    plain = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    plain.compile("sgd")
    assert not compat.has_compiled_loss(plain)


def test_set_initial_epoch_makes_fit_resume():
    model = _tiny_model()
    x, y = np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32)
    compat.set_initial_epoch(model, 2)
    history = model.fit(x, y, epochs=3, verbose=0)
    assert history.epoch == [2]
    compat.set_initial_epoch(model, None)
    assert model.fit(x, y, epochs=2, verbose=0).epoch == [0, 1]


def test_no_other_module_touches_the_private_names():
    names = [n for group in compat.PRIVATE_NAMES.values() for n in group]
    pattern = re.compile(r"\.(" + "|".join(names) + r")\b")
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "keras_vae").rglob("*.py")
                 if p.name != "compat.py" and pattern.search(p.read_text())]
    assert offenders == []
