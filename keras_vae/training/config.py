"""`RunConfig`: everything one training run needs, as one JSON-able object checked in one place.

`keras-vae train` builds it from its flags, `training.run(config)` executes it,
and `history.json` records it under `config`, so a run folder says how it was
made and `RunConfig.from_dict(history["config"])` makes it again.

Example:

>>> config = RunConfig("runs/digits", dataset="digits", epochs=5,
...                    model_config={"arch": "mlp", "latent_dim": 8})
>>> keras_vae.training.run(config).model.latent_dim
8
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import keras
import numpy as np

from keras_vae.data.pipeline import BINARIZE_MODES
from keras_vae.models import FAMILIES
from keras_vae.parts import distribute

# `mixed_precision` settings and the Keras dtype policy each names (True and
# "auto" pick float16 on a GPU, bfloat16 elsewhere).
MIXED_PRECISION = {"float16": "mixed_float16", "mixed_float16": "mixed_float16",
                   "bfloat16": "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16"}
NO_MIXED_PRECISION = (False, None, "none", "float32")
VERBOSITY = (0, 1, 2, "auto")


@dataclasses.dataclass
class RunConfig:
    """The settings of one training run: data, model, optimisation, and the run folder.

    Args:
        out: The run directory to create.
        dataset: A source for `keras_vae.data.load` (TFDS name, `digits`, path).
        split: Its split, e.g. `train[:7000]`.
        batch_size: The global batch size.
        validation_fraction: Fraction of the split held out for validation (0: none).
        binarize: `"dynamic"`, `"static"` or None (see `keras_vae.data.load`).
        data_dir: TFDS data directory.
        conditional: Condition the model on the data's labels.
        model: The model: a family name in `keras_vae.models.FAMILIES` (its
            class), a registered Keras model name (`"keras_vae>TCVAE"`), or
            such a class (stored by its name).
        model_config: The family's constructor arguments (`latent_dim`,
            `arch`, ...), JSON-able (Keras objects such as a KL schedule are
            stored serialized); `image_shape` comes from the data (as
            `num_classes` does when `conditional`), and `seed` defaults to `seed`.
        epochs: Total epochs (a resumed run only runs the missing ones).
        learning_rate: Adam learning rate.
        strategy: A name in `keras_vae.parts.distribute.STRATEGIES`.
        mixed_precision: False, True or `"auto"`, `"float16"` or `"bfloat16"`
            (see `keras_vae.training.precision_policy`).
        seed: The one seed of the run: global generators (set once, before
            the data pipelines, which derive their seeds from it), shuffling,
            binarization, the model's noise, the pictures.
        deterministic: Enable TensorFlow op determinism: same seed, same weights.
        resume: Back up each epoch to `backup_dir` (default `OUT.backup`) and
            continue from it when run again.
        backup_dir: The backup folder.
        checkpoint: A `.keras` file for the best finite epoch, or None.
        overwrite: Replace an existing `out`.
        verbose: Keras verbosity (0, 1, 2 or `"auto"`).

    Raises:
        ValueError: (at construction) a setting out of range, an unknown
            name (listing the valid ones), or a `model_config` that is not
            JSON-able or sets what the data decides.
    """

    out: str
    # data
    dataset: str = "digits"
    split: str = "train"
    batch_size: int = 64
    validation_fraction: float = 0.1
    binarize: str | None = "dynamic"
    data_dir: str | None = None
    conditional: bool = False
    # model
    model: str = "vae"
    model_config: dict = dataclasses.field(default_factory=dict)
    # optimisation
    epochs: int = 30
    learning_rate: float = 1e-3
    strategy: str = "default"
    mixed_precision: bool | str = False
    seed: int = 0
    deterministic: bool = False
    # run
    resume: bool = False
    backup_dir: str | None = None
    checkpoint: str | None = None
    overwrite: bool = False
    verbose: int | str = "auto"

    def __post_init__(self):
        for name in ("out", "dataset", "data_dir", "backup_dir", "checkpoint"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                setattr(self, name, os.fspath(value))
        if isinstance(self.model, type):
            self.model = model_name(self.model)
        self.model_config = _json_able(self.model_config)
        self.validate()

    def validate(self) -> None:
        """Checks every setting (called at construction).

        Raises:
            ValueError: naming the first bad setting.
        """
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"out must be a folder path, got {self.out!r}")
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset must be a source name or path, got {self.dataset!r}")
        _check_int("batch_size", self.batch_size, 1)
        _check_int("epochs", self.epochs, 1)
        _check_int("seed", self.seed, 0)
        if not _is_number(self.validation_fraction) or not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction!r}")
        if not _is_number(self.learning_rate) or not (
                math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a finite number > 0, got "
                             f"{self.learning_rate!r}")
        if self.binarize not in BINARIZE_MODES:
            raise ValueError(f"Unknown binarize {self.binarize!r}; valid: {list(BINARIZE_MODES)}")
        distribute.STRATEGIES.get(self.strategy)
        if (self.mixed_precision not in (*NO_MIXED_PRECISION, True, "auto")
                and self.mixed_precision not in MIXED_PRECISION):
            raise ValueError(f"Unknown mixed precision {self.mixed_precision!r}; valid: False, "
                             f"True, 'auto', {sorted(MIXED_PRECISION)}")
        if self.verbose not in VERBOSITY or isinstance(self.verbose, bool):
            raise ValueError(f"verbose must be one of {list(VERBOSITY)}, got {self.verbose!r}")
        if self.checkpoint is not None and not self.checkpoint.lower().endswith(".keras"):
            raise ValueError(f"checkpoint must be a .keras file, got {self.checkpoint!r}")
        self.model_class()

    def model_class(self) -> type:
        """The class `model` names.

        Raises:
            ValueError: an unknown name, listing the valid ones.
        """
        if self.model in FAMILIES:
            return FAMILIES[self.model].model_class
        cls = keras.saving.get_registered_object(self.model) if isinstance(
            self.model, str) else None
        if not (isinstance(cls, type) and issubclass(cls, keras.Model)):
            raise ValueError(f"Unknown model {self.model!r}; valid: {sorted(FAMILIES)} or a "
                             "registered Keras model name such as 'keras_vae>TCVAE'")
        return cls

    def to_dict(self) -> dict:
        """The settings as a JSON-able dict (what `history.json` records under `config`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, settings: dict) -> RunConfig:
        """A `RunConfig` from `to_dict`'s output (e.g. `history.json`'s `config`).

        Raises:
            ValueError: unknown keys, or a bad setting.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ValueError(f"Unknown run settings {unknown}; valid: {sorted(known)}")
        return cls(**settings)


def model_name(cls: type) -> str:
    """The name `RunConfig.model` stores for a model class: its family's, else its Keras name."""
    for name, family in FAMILIES.items():
        if family.model_class is cls:
            return name
    return keras.saving.get_registered_name(cls)


def _json_able(config) -> dict:
    """A JSON copy of `config`, Keras objects (a KL schedule, ...) serialized."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"model_config must be a dict, got {type(config).__name__}")

    def default(value):
        if hasattr(value, "get_config"):
            return keras.saving.serialize_keras_object(value)
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(type(value).__name__)

    try:
        return json.loads(json.dumps(config, default=default))
    except (TypeError, ValueError) as e:
        raise ValueError(f"model_config must be JSON-able (numbers, strings, lists, dicts or "
                         f"Keras objects); it holds a {e}") from None


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
