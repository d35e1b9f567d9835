"""Every private name of Keras that keras_vae relies on, and the Keras versions it is tested on.

Keras gives no public hook for two things keras_vae needs:

- skipping the symbolic build `fit` runs on the first batch (`Trainer._maybe_symbolic_build`),
  which fails for models built at construction under a distribution strategy;
- telling `fit` which epoch a restored backup resumes from (`Trainer._initial_epoch`, as
  Keras's own `BackupAndRestore` does).

Only this module touches them. `tests/package/test_compat.py` fails on a Keras outside
`KERAS_VERSIONS` and when a name below has gone, so an upgrade is a decision, not a
silent change of behaviour.
"""

from __future__ import annotations

import re

import keras

# Tested Keras releases: at least the first, below the second (setup.py pins the same).
KERAS_VERSIONS = ("3.3", "3.16")

# The private names used here, by the Keras object that holds them.
PRIVATE_NAMES = {
    "keras.Model (method)": ("_maybe_symbolic_build",),
    "keras.Model (attribute of an instance)": ("_initial_epoch", "_compile_loss",
                                              "_compile_metrics"),
}


def release(version: str) -> tuple[int, ...]:
    """`"3.15.1"` -> `(3, 15, 1)`; a suffix like `.dev0` or `rc1` is dropped."""
    parts = []
    for piece in version.split("."):
        digits = re.match(r"\d*", piece).group()
        if not digits:
            break
        parts.append(int(digits))
        if digits != piece:  # "4rc1": the release ends here
            break
    return tuple(parts)


def keras_is_tested(version: str | None = None) -> bool:
    """Whether `version` (default: the installed Keras) lies in `KERAS_VERSIONS`."""
    low, high = (release(v) for v in KERAS_VERSIONS)
    return low <= release(version or keras.__version__) < high


def set_initial_epoch(model: keras.Model, epoch: int | None) -> None:
    """Makes the next `model.fit` start at `epoch` (None: at its `initial_epoch` argument)."""
    model._initial_epoch = epoch


def has_compiled_loss(model: keras.Model) -> bool:
    """Whether `model` was compiled with a Keras `loss` or `metrics` (which need a symbolic build)."""
    return bool(getattr(model, "_compile_loss", None) or getattr(model, "_compile_metrics", None))


class SkipsSymbolicBuild:
    """Mixin of a `keras.Model` built at construction: `fit` only builds its optimizers.

    Under a strategy, Keras 3 averages the first batch across replicas just
    to learn its shapes: that fails for (image, label) batches under
    `MultiWorkerMirroredStrategy` and for a first batch split unevenly. A
    model whose variables exist at construction only lacks its optimizers'
    slots, which `build_optimizers()` (of the class that mixes this in)
    creates inside the strategy's scope. A model compiled with a Keras loss
    or metrics still gets Keras's build.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if has_compiled_loss(self):
            return super()._maybe_symbolic_build(iterator, data_batch)
        with self.distribute_strategy.scope():
            self.build_optimizers()
