"""Models whose networks exist at construction: config, compile defaults and optimizer state.

`Configurable` writes each hyperparameter once: a class declares its
constructor arguments in `CONFIG_KEYS` and one `get_config`/`from_config`
reads them. `BuiltModel` adds the version stamp of every saved keras_vae
model, and holds the overrides that keep a subclassed model's optimizer
state across saving: a model trained only through its own `train_step` is
never "built" by Keras, and Keras skips `compile_from_config` for models with
a custom `compile`.
"""

from __future__ import annotations

import keras

from keras_vae import compat, saving
from keras_vae.version import __version__


class Configurable:
    """Mixin: `get_config` and `from_config` from the constructor arguments a class declares.

    Each class lists in `CONFIG_KEYS` the constructor arguments it adds (its
    subclasses' lists are appended to its own), and in `NESTED_CONFIG_KEYS`
    those holding Keras objects, which are stored with
    `keras.saving.serialize_keras_object` and rebuilt by `from_config`. The
    value of a key is the attribute of that name (`config_value` maps the
    others); tuples are stored as lists.

    Example:

    >>> class Scale(Configurable, keras.layers.Layer):
    ...     CONFIG_KEYS = ("factor",)
    ...     def __init__(self, factor=2.0, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.factor = factor
    >>> Scale(3.0).get_config()["factor"]
    3.0
    """

    CONFIG_KEYS: tuple[str, ...] = ()
    NESTED_CONFIG_KEYS: tuple[str, ...] = ()

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        """Every declared key, base classes' first."""
        return _declared(cls, "CONFIG_KEYS")

    @classmethod
    def nested_config_keys(cls) -> tuple[str, ...]:
        """The declared keys whose values are Keras objects (or None)."""
        return _declared(cls, "NESTED_CONFIG_KEYS")

    def config_value(self, key: str):
        """The constructor argument `key` of this object (default: the attribute `key`)."""
        return getattr(self, key)

    def get_config(self):
        config = super().get_config()
        nested = self.nested_config_keys()
        for key in self.config_keys():
            value = self.config_value(key)
            if key in nested and value is not None and not isinstance(value, dict):
                value = keras.saving.serialize_keras_object(value)
            elif isinstance(value, tuple):
                value = list(value)
            config[key] = value
        return config

    @classmethod
    def from_config(cls, config):
        return super().from_config(cls.deserialize_nested(config))

    @classmethod
    def deserialize_nested(cls, config: dict) -> dict:
        """A copy of `config` with the serialized Keras objects of its nested keys rebuilt."""
        config = dict(config)
        for key in cls.nested_config_keys():
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return config


def _declared(cls, name: str) -> tuple[str, ...]:
    keys = []
    for klass in reversed(cls.__mro__):
        keys += [k for k in vars(klass).get(name, ()) if k not in keys]
    return tuple(keys)


class BuiltModel(Configurable, compat.SkipsSymbolicBuild, keras.Model):
    """A `keras.Model` built at construction, with Adam(1e-3) as its default optimizer.

    Subclasses create every variable in `__init__` (functional sub-models),
    set `self.built = True` there, and declare their constructor arguments in
    `CONFIG_KEYS` (see `Configurable`). The saved config carries the
    keras_vae version, which `from_config` checks. `fit` builds only the
    optimizers (`build_optimizers`, see `compat.SkipsSymbolicBuild`).
    """

    def get_config(self):
        return {
            # First, so it shows in Keras's error when keras_vae is not imported.
            "keras_vae": {"version": __version__,
                          "note": "import keras_vae before keras.saving.load_model"},
            **super().get_config(),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        saving.check_version(config.pop("keras_vae", {}).get("version"))
        # The constructor directly: these models are never functional, so
        # `keras.Model.from_config` has nothing to add.
        return cls(**cls.deserialize_nested(config))

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

    def build_optimizers(self):
        """Creates the optimizer's slots for the trainable variables, once."""
        if self.optimizer is not None and not self.optimizer.built:
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
