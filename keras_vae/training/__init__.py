"""Training: `model.fit` with the checks and files a run needs.

- `trainer`: `train` (fit with finite checks, backups and resumption) and `run`
  (everything `keras-vae train` does: data, model, fit, run folder, history, pictures);
- `callbacks`: Keras callbacks that write reconstructions and samples during `fit`.
"""

from keras_vae.training import callbacks, trainer  # noqa: I001 (in dependency order)
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

__all__ = ["BACKUP_FORMAT", "MODELS", "Backup", "FiniteCheckpoint", "RunResult",
           "TrainResult", "TrainingDiverged", "callbacks", "precision_policy", "run",
           "save_model_on_chief", "set_seed", "train", "trainer"]
