"""The benchmarks' one data loader (`benchmarks/digits.py`) and where they put pictures."""

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import digits, machine  # noqa: E402


def _args(**kwargs):
    return argparse.Namespace(**{"tiny": False, "data": "/nowhere", **kwargs})


def test_splits_of_the_shared_digits_and_of_sklearn_digits():
    assert digits.splits("digits") == ("train[:1500]", "train[1500:]")
    assert digits.splits("/data/mnist-8k") == ("train[:7000]", "train[7000:]")
    assert digits.source_splits(_args(tiny=True)) == ("digits", "train[:1500]", "train[1500:]")
    assert digits.source_splits(_args(data="/data/mnist-8k")) == (
        "/data/mnist-8k", "train[:7000]", "train[7000:]")


def test_missing_names_the_folder_unless_tiny_or_present(tmp_path):
    assert digits.missing(_args()) == "the shared digits are not at /nowhere"
    assert digits.missing(_args(tiny=True)) is None
    (tmp_path / "images-idx3-ubyte.gz").write_bytes(b"")
    assert digits.missing(_args(data=str(tmp_path))) is None
    assert digits.mnist_source("digits") == "digits"


def test_heldout_is_the_test_set_of_the_sample_quality_benchmarks():
    import keras_vae

    x = digits.heldout("digits")
    assert x.shape == (297, 8, 8, 1) and set(np.unique(x)) <= {0.0, 1.0}
    # `digits.load`'s test set (batches of 100, with labels): the same digits, bit for bit.
    test = keras_vae.data.load("digits", "train[1500:]", batch_size=100, binarize="static",
                               shuffle=False, seed=0)
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b, _ in test]), x)
    assert digits.heldout("digits", n=5).shape == (5, 8, 8, 1)
    images, labels = digits.training_arrays("digits")
    assert images.shape == (1500, 8, 8, 1) and labels.shape == (1500,)


def test_frechet_note_says_against_what():
    assert digits.frechet_note(2000, "grey training digits").endswith(
        "not Inception FID; against 2000 grey training digits")


def test_pictures_go_to_pictures_else_beside_out_else_results(tmp_path, monkeypatch):
    chosen = machine.pictures_folder(_args(pictures=str(tmp_path / "p"), out=None))
    assert chosen == tmp_path / "p" and chosen.is_dir()
    beside = machine.pictures_folder(_args(pictures=None, out=str(tmp_path / "r" / "x.json")))
    assert beside == tmp_path / "r" and beside.is_dir()
    monkeypatch.setattr(machine, "RESULTS", tmp_path / "results")
    assert machine.pictures_folder(_args(pictures=None, out=None)) == tmp_path / "results"
