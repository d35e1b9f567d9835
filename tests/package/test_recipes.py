"""The one label check (`keras_vae.recipes.check_labels`), shared by library, samplers and server."""

import numpy as np
import pytest

from keras_vae import data, recipes
from keras_vae.export import reader, sampler


def test_labels_are_checked_once_and_the_library_uses_that_check():
    assert data.check_labels is recipes.check_labels
    got = recipes.check_labels([0, 2.0, 1], 3)
    assert got.dtype == np.int32 and got.tolist() == [0, 2, 1]
    assert recipes.check_labels(np.array([[1], [0]]), 2, n=2).tolist() == [1, 0]
    for bad, message in [([0, 1.5], "must be integers in \\[0, 3\\)"),
                         ([True], "must be integers"),
                         ([0, 3, 7], r"must be in \[0, 3\); got \[3, 7\]"),
                         ([-1], r"-1 means the data has no labels"),
                         ([], "got none")]:
        with pytest.raises(ValueError, match=message):
            recipes.check_labels(bad, 3)
    with pytest.raises(ValueError, match=r"one label per image \(4 images\)"):
        recipes.check_labels([0, 1], 3, n=4)


def test_the_sampler_says_what_the_shared_check_says():
    manifest = {"num_classes": 3}
    assert sampler.class_labels(manifest, [2, 0], 5).tolist() == [2, 0, 2, 0, 2]
    with pytest.raises(reader.EdgeError) as refused:
        sampler.class_labels(manifest, [0, 5], 4)
    with pytest.raises(ValueError) as shared:
        recipes.check_labels([0, 5], 3, what="--class-ids")
    assert str(refused.value) == str(shared.value) == "--class-ids must be in [0, 3); got [5]"
