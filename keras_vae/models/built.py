"""Models whose networks exist at construction: compile defaults and optimizer state.

A subclassed model trained only through its own `train_step` is never
"built" by Keras, and Keras skips `compile_from_config` for models with a
custom `compile`: saving then loses the optimizer's state. `BuiltModel` holds
the three overrides that fix it once, for the VAE and every family beside it.
"""

from __future__ import annotations

import keras


class BuiltModel(keras.Model):
    """A `keras.Model` built at construction, with Adam(1e-3) as its default optimizer.

    Subclasses create every variable in `__init__` (functional sub-models)
    and set `self.built = True` there.
    """

    def compile(self, optimizer=None, **kwargs):
        """Compiles with Adam(1e-3) unless an optimizer is given."""
        if optimizer is None:
            optimizer = keras.optimizers.Adam(1e-3)
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        # Keras skips this for models with a custom `compile`; ours only adds
        # a default, so restore the optimizer and build its slots for loading.
        self.compile(**keras.saving.deserialize_keras_object(config))
        self.optimizer.build(self.trainable_variables)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy, Keras 3 averages the first batch across replicas
        # just to learn its shapes: that fails for (image, label) batches
        # under MultiWorkerMirroredStrategy and for a first batch split
        # unevenly. The model is built at construction; only the optimizer's
        # slots are missing.
        if getattr(self, "_compile_loss", None) or getattr(self, "_compile_metrics", None):
            return super()._maybe_symbolic_build(iterator, data_batch)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)


def as_model(obj) -> keras.Model:
    """A network given as a `keras.Model` or its serialized config (as `from_config` gets it).

    Raises:
        TypeError: `obj` is neither.
    """
    if isinstance(obj, dict):
        obj = keras.saving.deserialize_keras_object(obj)
    if not isinstance(obj, keras.Model):
        raise TypeError(f"Expected a keras.Model (or its config), got {type(obj).__name__}")
    return obj
