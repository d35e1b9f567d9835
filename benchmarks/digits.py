"""The digits the benchmarks train and score on, and the sample-quality reference.

The shared MNIST digits (`../shared/data/mnist-8k`) split 7,000 for training
and 1,000 held out; sklearn's 8x8 `digits` split 1,500 / 297 (with `--tiny`,
or where the shared digits are absent). `load(args)` gives what the
sample-quality benchmarks share: the held-out digits binarized once, the grey
training digits the samples are compared with, and the feature network that
compares them.

>>> from benchmarks import digits
>>> data = digits.load(args)
>>> data.sample_quality(model, seed=0)   # {"frechet": ..., "precision": ..., "recall": ...}

It imports `machine` (the repository root) and nothing else of the benchmarks.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from benchmarks.machine import ROOT

MNIST_8K = Path(os.environ.get("KERAS_VAE_MNIST_8K", ROOT.parent / "shared" / "data" / "mnist-8k"))
SAMPLE_N = 2000  # real and generated images compared per system


def present(folder: str | os.PathLike) -> bool:
    """Whether `folder` holds the shared MNIST digits."""
    return (Path(folder) / "images-idx3-ubyte.gz").exists()


def mnist_source(prefer: str | None = None) -> str:
    """The data source of the benchmarks: `prefer`, else the shared MNIST digits, else `digits`."""
    if prefer:
        return prefer
    if present(MNIST_8K):
        return str(MNIST_8K)
    print(f"note: shared MNIST digits not found at {MNIST_8K}; using sklearn 'digits' (8x8)",
          file=sys.stderr)
    return "digits"


def splits(source: str) -> tuple[str, str]:
    """Train and held-out splits: 7,000 / 1,000 of the shared MNIST digits (1,500 / 297 of `digits`)."""
    if source == "digits":
        return "train[:1500]", "train[1500:]"
    return "train[:7000]", "train[7000:]"


def source_splits(args) -> tuple[str, str, str]:
    """`(source, training split, held-out split)`: sklearn's 8x8 digits with `args.tiny`,
    else `args.data`."""
    source = "digits" if args.tiny else str(args.data)
    return (source, *splits(source))


def missing(args) -> str | None:
    """What stops a run on `args.data`: the shared digits are not there (None with `--tiny`)."""
    if args.tiny or present(args.data):
        return None
    return f"the shared digits are not at {args.data}"


def training_arrays(source: str):
    """`(images, labels)` of the training split of `source`: grey float32 in [0, 1], int64."""
    import keras_vae

    return keras_vae.data.load_arrays(source, splits(source)[0])


def heldout(source: str, n: int | None = None) -> np.ndarray:
    """The held-out digits, binarized once (seed 0), as `(n, h, w, c)`."""
    import keras_vae

    ds = keras_vae.data.load(source, splits(source)[1], batch_size=1000, binarize="static",
                             seed=0, shuffle=False, with_labels=False)
    x = np.concatenate([b.numpy() for b in ds])
    return x[:n] if n else x


def frechet_note(count: int, reference: str = "training digits") -> str:
    """What a benchmark's `frechet` figure is, for its JSON `notes`."""
    return ("Frechet distance in the features of a small classifier trained on the training "
            f"digits (keras_vae.evaluation.quality), not Inception FID; against {count} "
            f"{reference}")


@dataclasses.dataclass(frozen=True)
class Digits:
    """The held-out digits and the sample-quality reference of one benchmark run.

    Attributes:
        source: The data source (`digits` or the shared digits' folder).
        train_split: The training split of `source`.
        test_split: The held-out split of `source`.
        n_train: Number of training digits.
        test: The held-out digits binarized once (seed 0): `(image, label)`
            batches of 100, in order.
        reference: `(min(SAMPLE_N, n_train), h, w, c)` grey training digits
            (a seeded pick) that samples are compared with.
        extractor: The feature network that compares them
            (`keras_vae.evaluation.quality.feature_extractor`, trained on the
            grey training digits).
    """

    source: str
    train_split: str
    test_split: str
    n_train: int
    test: object
    reference: np.ndarray
    extractor: object

    def sample_quality(self, model, seed: int) -> dict:
        """Frechet distance, precision and recall of `model.sample` against `reference`.

        In the features of `extractor` (not Inception FID), with as many
        samples as reference images: the same reference and feature network
        for every system of a run.

        Returns:
            `{"frechet", "precision", "recall"}`.
        """
        import keras_vae

        figures = keras_vae.evaluation.quality.sample_metrics(
            model, self.reference, extractor=self.extractor, n=len(self.reference), seed=seed)
        return {"frechet": figures["fid"], "precision": figures["precision"],
                "recall": figures["recall"]}


def load(args) -> Digits:
    """The digits of a run (`args.tiny`, `args.data`) and their sample-quality reference.

    The feature network trains for 2 epochs with `--tiny`, else 20, and is
    cached by `keras_vae.evaluation.quality`.
    """
    import keras_vae

    source, train_split, test_split = source_splits(args)
    test = keras_vae.data.load(source, test_split, batch_size=100, binarize="static",
                               shuffle=False, seed=0)
    grey, labels = training_arrays(source)
    extractor = keras_vae.evaluation.quality.feature_extractor(grey, labels, seed=0,
                                                               epochs=2 if args.tiny else 20)
    pick = np.random.default_rng(0).choice(len(grey), min(SAMPLE_N, len(grey)), replace=False)
    return Digits(source=source, train_split=train_split, test_split=test_split,
                  n_train=len(grey), test=test, reference=grey[pick], extractor=extractor)
