"""Training: `model.fit` with the checks and files a run needs.

- `config`: `RunConfig`, the settings of one run (data, model, optimisation, run
  folder), JSON-able and checked in one place;
- `trainer`: `train` (fit with finite checks, backups and resumption) and `run`
  (everything `keras-vae train` does with a `RunConfig`: data, model, fit, run
  folder, history, pictures);
- `callbacks`: Keras callbacks that write reconstructions and samples during `fit`.
"""

from keras_vae.training import config, callbacks, trainer  # noqa: I001 (in dependency order)
from keras_vae.training.config import RunConfig
from keras_vae.training.trainer import (
    BACKUP_FORMAT,
    MODELS,
    Backup,
    FiniteCheckpoint,
    RunResult,
    TrainingDiverged,
    TrainResult,
    precision_policy,
    run,
    save_model_on_chief,
    set_seed,
    train,
)

__all__ = ["BACKUP_FORMAT", "MODELS", "Backup", "FiniteCheckpoint", "RunConfig", "RunResult",
           "TrainResult", "TrainingDiverged", "callbacks", "config", "precision_policy", "run",
           "save_model_on_chief", "set_seed", "train", "trainer"]
