"""Training runs that scale and survive: strategy, precision, seeds, resumable backups.

`run(RunConfig(out, dataset=..., model_config=...))` is everything
`keras-vae train` does, callable from a notebook: it loads the data, builds
and fits the model (through `train`), and writes the run directory
atomically: `model.keras`, `history.json`, `samples.png` and
`reconstructions.png`.

`train(make_model, data, ...)` builds and compiles the model inside a
`tf.distribute` strategy scope, under an optional mixed-precision policy,
with seeded (optionally op-deterministic) randomness, and fits it with:

- `Backup`: a `BackupAndRestore` whose backups are written atomically, are
  checksummed, keep the previous epoch as a fallback, are never overwritten
  with non-finite weights, and fail loudly when unreadable (never a silent
  restart from epoch 0);
- `keras.callbacks.TerminateOnNaN`: a diverging run stops, and `train`
  raises `TrainingDiverged` instead of returning NaN weights;
- `FiniteCheckpoint`: an atomically written `.keras` of the best finite epoch.

Example:

>>> result = keras_vae.training.train(
...     lambda: keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=8, arch="mlp"),
...     keras_vae.data.load("digits", batch_size=64), epochs=5,
...     strategy="mirrored", mixed_precision=True, backup_dir="runs/digits.backup")
>>> result.model.sample(4, seed=0).shape
(4, 8, 8, 1)
>>> keras_vae.training.run(keras_vae.training.RunConfig(
...     "runs/digits", dataset="digits", epochs=5,
...     model_config={"arch": "mlp", "latent_dim": 8}))
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from keras_vae import compat, files, saving
from keras_vae import data as data_lib
from keras_vae.models import FAMILIES
from keras_vae.parts import distribute
from keras_vae.training.config import MIXED_PRECISION, NO_MIXED_PRECISION, RunConfig
from keras_vae.uses import pictures

BACKUP_FORMAT = 1
# The model families `run` (and `keras-vae train --model`) builds.
MODELS = FAMILIES.model_classes()  # {name: class}, a view of keras_vae.models.FAMILIES


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN or infinite during training."""


class TrainResult(NamedTuple):
    """What `train` returns: the fitted model, its `History`, and seconds spent in `fit`."""

    model: keras.Model
    history: keras.callbacks.History
    seconds: float


# ------------------------------------------------------------------ set-up


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seeds Python, numpy and TensorFlow; optionally makes TensorFlow ops deterministic.

    Args:
        seed: The seed of every global random generator.
        deterministic: Also call `tf.config.experimental.enable_op_determinism()`
            (process-wide and permanent; ops without a deterministic kernel
            then raise instead of running). Two runs with the same seed then
            give bit-identical weights on the same hardware.
    """
    keras.utils.set_random_seed(int(seed))
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def precision_policy(mixed_precision: bool | str = False) -> str:
    """The Keras dtype policy name for a `mixed_precision` setting.

    Args:
        mixed_precision: False (`"float32"`), True or `"auto"`
            (`"mixed_float16"` when a GPU is visible, else `"mixed_bfloat16"`),
            `"float16"`/`"mixed_float16"`, or `"bfloat16"`/`"mixed_bfloat16"`.

    Raises:
        ValueError: for any other value.
    """
    if mixed_precision in NO_MIXED_PRECISION:
        return "float32"
    if mixed_precision in (True, "auto"):
        return "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"Unknown mixed precision {mixed_precision!r}; valid: False, True, 'auto', "
            f"{sorted(MIXED_PRECISION)}"
        )
    return MIXED_PRECISION[mixed_precision]


def _all_finite(model) -> bool:
    return all(bool(np.all(np.isfinite(keras.ops.convert_to_numpy(v))))
               for v in model.weights)


def _finite_loss(logs) -> bool:
    loss = (logs or {}).get("loss")
    return loss is None or bool(np.isfinite(loss))


def save_model_on_chief(model: keras.Model, path, strategy=None) -> Path | None:
    """Saves `model` atomically on the chief; other workers save to a scratch file.

    Every worker must take part: reading a model's (synchronized) metric
    variables under a multi-worker strategy is a collective operation.

    Returns:
        `path` on the chief, None elsewhere.
    """
    if distribute.is_chief(strategy):
        return saving.save_model(model, path)
    with files.scratch_directory() as scratch:
        saving.save_model(model, scratch / Path(path).name)
    return None


# ---------------------------------------------------------------- callbacks


class Backup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that never loses a good state nor restarts silently from zero.

    At the end of each epoch with a finite loss and finite weights, the
    weights (with the optimizer's state and the noise generator's state) go
    to `epoch-<n>.weights.h5` through a temporary file and a rename, and
    `state.json` (also replaced atomically) records the last two epochs
    with their SHA-256. A process killed at any moment leaves a consistent
    backup. At the start of `fit`, the newest backup whose checksum matches
    and that loads is restored and training continues from the epoch after
    it; an older one is used, with a warning, if the newest is corrupt.

    Under a multi-worker strategy each worker keeps its own sub-folder.

    Args:
        backup_dir: Folder for the backup (only this callback writes there).
        delete_checkpoint: Delete the folder when `fit` completes. A run
            stopped by non-finite values always keeps it.

    Raises:
        RuntimeError: (in `fit`) the folder holds files but no readable
            backup: delete it to start from scratch.
    """

    def __init__(self, backup_dir, delete_checkpoint: bool = True):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=delete_checkpoint)
        self.root = Path(backup_dir)
        self.diverged = False
        self.restored_epoch = 0

    @property
    def folder(self) -> Path:
        strategy = self.model.distribute_strategy if self.model is not None else None
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            return self.root / distribute.worker_tag(strategy)
        return self.root

    @property
    def state_path(self) -> Path:
        return self.folder / "state.json"

    def on_train_begin(self, logs=None):
        self.diverged = False
        self.restored_epoch = 0
        self._restore()

    def _restore(self):
        folder = self.folder
        if not folder.exists() or not any(folder.iterdir()):
            return
        try:
            state = json.loads(self.state_path.read_text())
            entries = list(state["epochs"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RuntimeError(
                f"The backup in {folder} is unreadable ({type(e).__name__}: {e}); refusing "
                "to restart from epoch 0 silently. Delete the folder to start from scratch."
            ) from None
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        problems = []
        for entry in sorted(entries, key=lambda e: -int(e["epoch"])):
            path = folder / entry["file"]
            problem = None
            if not path.is_file():
                problem = "missing"
            elif files.sha256_of(path) != entry["sha256"]:
                problem = "checksum mismatch (corrupt or partly written)"
            else:
                try:
                    self.model.load_weights(path)
                except Exception as e:  # h5py/OSError/ValueError on a damaged file
                    problem = f"{type(e).__name__}: {e}"
            if problem is None:
                if problems:
                    warnings.warn(
                        f"keras_vae: newer backups in {folder} are unusable "
                        f"({'; '.join(problems)}); resuming from epoch {entry['epoch']}.",
                        stacklevel=2)
                self.restored_epoch = int(entry["epoch"])
                compat.set_initial_epoch(self.model, self.restored_epoch)
                return
            problems.append(f"{entry['file']}: {problem}")
        raise RuntimeError(
            f"No usable backup in {folder}: {'; '.join(problems) or 'no entries'}. Refusing "
            "to restart from epoch 0 silently; delete the folder to start from scratch."
        )

    def on_epoch_end(self, epoch, logs=None):
        if not _finite_loss(logs) or not _all_finite(self.model):
            self.diverged = True  # keep the last good backup as it is
            return
        self.write_backup(epoch + 1)

    def write_backup(self, epoch: int) -> None:
        """Writes the backup after `epoch` completed epochs; keeps the one before it."""
        folder = self.folder
        folder.mkdir(parents=True, exist_ok=True)
        epoch = int(epoch)
        name = f"epoch-{epoch:05d}.weights.h5"
        with files.staged(folder / name) as tmp:
            self.model.save_weights(tmp, overwrite=True)
        entries = [{"epoch": epoch, "file": name, "sha256": files.sha256_of(folder / name)}]
        try:
            old = json.loads(self.state_path.read_text())["epochs"]
            entries += [e for e in old if int(e["epoch"]) < epoch][:1]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        files.write_json({"format": BACKUP_FORMAT, "epochs": entries}, self.state_path, indent=1)
        keep = {e["file"] for e in entries} | {"state.json"}
        for f in folder.glob("epoch-*.weights.h5"):
            if f.name not in keep:
                f.unlink(missing_ok=True)

    def on_train_batch_end(self, batch, logs=None):
        pass  # epoch granularity only

    def on_train_end(self, logs=None):
        compat.set_initial_epoch(self.model, None)
        if self.delete_checkpoint and not self.diverged and self.root.exists():
            shutil.rmtree(self.folder, ignore_errors=True)
            try:  # other workers may still be deleting their sub-folders
                self.root.rmdir()
            except OSError:
                pass


class FiniteCheckpoint(keras.callbacks.Callback):
    """Saves the model to a `.keras` file atomically after each improving, finite epoch.

    Args:
        path: The `.keras` file (on the chief; other workers write scratch copies).
        monitor: Log to minimize; `val_loss` falls back to `loss` when absent.
        save_best_only: Save only when `monitor` improves.
    """

    def __init__(self, path, monitor: str = "val_loss", save_best_only: bool = True):
        super().__init__()
        self.path = Path(path)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.best = np.inf

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor, logs.get("loss"))
        if value is None or not np.isfinite(value) or not _all_finite(self.model):
            return  # never overwrite a good checkpoint with NaN weights
        if self.save_best_only and value >= self.best:
            return
        self.best = float(value)
        save_model_on_chief(self.model, self.path, self.model.distribute_strategy)


# ------------------------------------------------------------------- train


def train(make_model: Callable[[], keras.Model] | keras.Model, data,
          validation_data=None, *, epochs: int = 10, learning_rate: float = 1e-3,
          strategy="default", mixed_precision: bool | str = False, seed: int | None = 0,
          deterministic: bool = False, backup_dir=None, checkpoint_path=None,
          callbacks=(), verbose: int | str = "auto") -> TrainResult:
    """Builds, compiles and fits a model with distribution, precision and fault tolerance.

    Args:
        make_model: A function returning the (uncompiled or compiled) model;
            it runs inside the strategy's scope and under the precision
            policy. A model instance is accepted when built in that scope.
        data: Training data for `fit` (a dataset of `(image, label)` batches
            or an image array); batches are *global* batches.
        validation_data: Optional validation data.
        epochs: Total epochs (a resumed run only runs the missing ones).
        learning_rate: Adam learning rate when `make_model` returns an
            uncompiled model.
        strategy: A name from `keras_vae.parts.distribute.STRATEGIES` or a strategy.
        mixed_precision: See `precision_policy`. The loss, KL and posterior
            stay float32; float16 gets dynamic loss scaling.
        seed: Seed of every global generator (None leaves them alone).
        deterministic: Enable TensorFlow op determinism (see `set_seed`).
        backup_dir: Folder for `Backup`: a killed run started again with the
            same folder continues after its last completed epoch.
        checkpoint_path: A `.keras` file for `FiniteCheckpoint`.
        callbacks: More Keras callbacks.
        verbose: Keras verbosity.

    Returns:
        `TrainResult(model, history, seconds)`.

    Raises:
        TrainingDiverged: the loss or weights became non-finite (the backup
            and checkpoint keep the last finite epoch).
        ValueError: an unknown strategy or precision, or a model built
            outside the strategy's scope.
    """
    strategy = distribute.get(strategy)
    if seed is not None:
        set_seed(seed, deterministic)
    elif deterministic:
        tf.config.experimental.enable_op_determinism()
    backup = None
    policy = precision_policy(mixed_precision)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        with strategy.scope():
            model = make_model() if callable(make_model) and not isinstance(
                make_model, keras.Model) else make_model
            if model.distribute_strategy is not strategy:
                raise ValueError(
                    "The model was built outside the strategy's scope: pass a function that "
                    "builds it (make_model), so train() can build it inside strategy.scope()."
                )
            if model.dtype_policy.name != policy:
                raise ValueError(
                    f"The model's dtype policy is {model.dtype_policy.name!r}, not {policy!r}: "
                    "pass a function that builds it, so train() sets the policy first."
                )
            if not getattr(model, "compiled", False) or model.optimizer is None:
                model.compile(keras.optimizers.Adam(learning_rate))
        options = distribute.distribute_options(strategy)
        if isinstance(data, tf.data.Dataset):
            data = data.with_options(options)
        if isinstance(validation_data, tf.data.Dataset):
            validation_data = validation_data.with_options(options)
        backup = Backup(backup_dir) if backup_dir else None
        extra = [backup] if backup else []
        extra.append(keras.callbacks.TerminateOnNaN())
        if checkpoint_path:
            extra.append(FiniteCheckpoint(checkpoint_path))
        start = time.perf_counter()
        history = model.fit(data, validation_data=validation_data, epochs=epochs,
                            callbacks=[*extra, *callbacks], verbose=verbose)
        seconds = time.perf_counter() - start
    finally:
        keras.config.set_dtype_policy(previous_policy)
    losses = history.history.get("loss", [])
    if (losses and not np.isfinite(losses[-1])) or not _all_finite(model):
        kept = ""
        if backup is not None and backup.state_path.exists():
            kept = f" The last finite epoch is kept in {backup.folder} (resume from it)."
        raise TrainingDiverged(
            f"Training diverged: the loss became {losses[-1] if losses else 'NaN'} in epoch "
            f"{history.epoch[-1] + 1 if history.epoch else 1}; no model was written.{kept} "
            "Lower the learning rate."
        )
    return TrainResult(model, history, seconds)


# --------------------------------------------------------------------- run


class RunResult(NamedTuple):
    """What `run` returns: the fitted model, its `History`, seconds in `fit`, the run folder."""

    model: keras.Model
    history: keras.callbacks.History
    seconds: float
    out: Path | None


def run(config: RunConfig, *, record: dict | None = None) -> RunResult:
    """Trains a model on a data source and writes a run directory: `keras-vae train` in Python.

    The run directory is built under a temporary name and appears only when
    everything in it is written: `model.keras`, `history.json` (the history,
    seconds of training, the run's `config` and `record`), `samples.png` (64
    prior samples, every class in turn for a conditional model) and
    `reconstructions.png`. Under a multi-worker strategy only the chief
    writes it; every worker trains.

    Args:
        config: The run's settings (data, model, optimisation, run folder);
            see `RunConfig`.
        record: More JSON-able notes stored in `history.json` under `args`
            (the command line stores its flags there).

    Returns:
        `RunResult(model, history, seconds, out)`; `out` is None on non-chief workers.

    Raises:
        FileExistsError: `config.out` exists and `config.overwrite` is False
            (before any work).
        ValueError: bad data, model settings or unknown names.
        TrainingDiverged: the loss or weights became non-finite.

    Example:

    >>> result = run(RunConfig("runs/digits", dataset="digits", epochs=5,
    ...                        model_config={"arch": "mlp", "latent_dim": 8}))
    >>> result.model.latent_dim
    8
    """
    if not isinstance(config, RunConfig):
        raise TypeError(f"run takes a RunConfig, got {type(config).__name__}: "
                        "run(RunConfig(out, dataset=..., ...))")
    out, seed = config.out, config.seed
    model_class = config.model_class()
    # First: a multi-worker strategy must start before any other TensorFlow op.
    strategy = distribute.get(config.strategy)
    chief = distribute.is_chief(strategy)  # other workers write to a scratch folder
    folder = (files.run_directory(out, overwrite=config.overwrite) if chief
              else files.scratch_directory())
    with folder as tmp:
        # Before the data: TF derives pipeline seeds from the global seed too.
        set_seed(seed, config.deterministic)
        validation = config.validation_fraction
        loaded = data_lib.load(config.dataset, config.split, batch_size=config.batch_size,
                               validation_fraction=validation, binarize=config.binarize,
                               seed=seed, data_dir=config.data_dir)
        train_ds, val_ds = loaded if validation > 0 else (loaded, None)
        model_config = {"seed": seed, **config.model_config,
                        "image_shape": tuple(train_ds.element_spec[0].shape[1:])}
        if config.conditional:
            model_config["num_classes"] = data_lib.count_classes(train_ds)

        def make_model():  # runs inside the strategy's scope, under the precision policy
            return model_class(**model_config)

        backup_dir = config.backup_dir or os.path.normpath(out) + ".backup"
        model, history, seconds = train(
            make_model, train_ds, val_ds, epochs=config.epochs,
            learning_rate=config.learning_rate, strategy=strategy,
            mixed_precision=config.mixed_precision, seed=None,
            deterministic=False,  # seeded (and made deterministic) once, above
            backup_dir=backup_dir if config.resume else None,
            checkpoint_path=config.checkpoint, verbose=config.verbose)
        saving.save_model(model, tmp / "model.keras")  # every worker takes part
        if not chief:
            return RunResult(model, history, seconds, None)
        files.write_json({"history": history.history, "seconds": seconds,
                          "config": config.to_dict(), "args": record or {}},
                         tmp / "history.json")
        num_classes = getattr(model, "num_classes", 0)
        class_ids = list(range(num_classes)) if num_classes else None
        pictures.save_grid(model.sample(64, seed=seed, class_ids=class_ids),
                           tmp / "samples.png")
        x, y = (t.numpy() for t in next(iter((val_ds or train_ds).unbatch().batch(32))))
        labels = y if num_classes else None
        pictures.save_reconstructions(x, model.reconstruct(x, labels),
                                      tmp / "reconstructions.png")
    return RunResult(model, history, seconds, Path(out))
