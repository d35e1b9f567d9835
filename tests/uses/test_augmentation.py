"""Generated datasets for augmentation, mixing with real data, and the worked example."""

from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from keras_vae.uses import augmentation


def _collect(ds):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


def test_generated_dataset_of_a_conditional_model(make_vae):
    model = make_vae("mlp", latent_dim=3, num_classes=4)
    ds = augmentation.generated_dataset(model, 10, batch_size=4, seed=3, class_ids=[1, 3])
    assert ds.element_spec[0].shape.as_list() == [None, 8, 8, 1]
    assert ds.element_spec[1].dtype == tf.int64
    assert [len(y) for _, y in ds] == [4, 4, 2]
    x, y = _collect(ds)
    np.testing.assert_array_equal(y, [1, 3] * 5)
    # the images are the model's samples for the same seed and classes
    np.testing.assert_allclose(x, model.sample(10, seed=3, class_ids=[1, 3]), atol=1e-6)
    # default: every class in turn
    _, y_all = _collect(augmentation.generated_dataset(model, 8, seed=0))
    np.testing.assert_array_equal(y_all, [0, 1, 2, 3, 0, 1, 2, 3])


def test_generated_dataset_binarized_and_unconditional(make_vae):
    model = make_vae("mlp", latent_dim=3)
    x, y = _collect(augmentation.generated_dataset(model, 50, seed=0, binarize=True))
    assert set(np.unique(x)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y, -1)
    means = model.sample(50, seed=0)
    # binary draws agree with the means on average
    assert abs(x.mean() - means.mean()) < 0.05


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n must be >= 1"),
    ({"n": 4, "class_ids": [4]}, r"class_ids must be in \[0, 4\)"),
])
def test_generated_dataset_bad_input(make_vae, kwargs, match):
    model = make_vae("mlp", latent_dim=3, num_classes=4)
    with pytest.raises(ValueError, match=match):
        augmentation.generated_dataset(model, **kwargs)
    with pytest.raises(ValueError, match="unconditional"):
        augmentation.generated_dataset(make_vae("mlp"), 4, class_ids=[1])


def test_mix_keeps_every_real_and_generated_example(make_vae, tiny_images):
    model = make_vae("mlp", latent_dim=3, num_classes=4)
    x_real, y_real = tiny_images
    real = tf.data.Dataset.from_tensor_slices((x_real, y_real)).batch(16)
    fake = augmentation.generated_dataset(model, 32, batch_size=8, seed=0, class_ids=[2])
    mixed = augmentation.mix(real, fake, generated_fraction=0.5, batch_size=10, seed=0)
    x, y = _collect(mixed)
    assert x.shape == (96, 8, 8, 1)
    assert Counter(y.tolist()) == Counter(y_real.tolist()) + Counter({2: 32})
    # every real image is there, in some order
    real_rows = {r.tobytes() for r in x_real}
    assert sum(r.tobytes() in real_rows for r in x) == 64
    # the sources are interleaved, not concatenated
    first = y[:32]
    is_fake = np.array([r.tobytes() not in real_rows for r in x[:32]])
    assert 0 < is_fake.sum() < 32 and (first[is_fake] == 2).all()


def test_mix_bad_input(make_vae, tiny_images):
    model = make_vae("mlp", latent_dim=3, num_classes=4)
    fake = augmentation.generated_dataset(model, 8, seed=0)
    with pytest.raises(ValueError, match="generated_fraction"):
        augmentation.mix(fake, fake, generated_fraction=1.5)
    images_only = tf.data.Dataset.from_tensor_slices(tiny_images[0]).batch(8)
    with pytest.raises(ValueError, match=r"real dataset must yield \(image, label\)"):
        augmentation.mix(images_only, fake)
    other = tf.data.Dataset.from_tensor_slices((np.zeros((4, 4, 4, 1), np.float32),
                                                np.zeros(4, np.int64))).batch(2)
    with pytest.raises(ValueError, match="differ"):
        augmentation.mix(other, fake)


@pytest.mark.slow
def test_augmentation_experiment_reports_both_accuracies():
    result = augmentation.augmentation_experiment(
        per_class=5, n_generated=500, vae_epochs=60, classifier_steps=300, test_size=400)
    print(result)
    assert result["n_labelled"] == 50 and result["n_test"] == 400
    # both classifiers learn from 50 labelled digits (chance is 0.1)
    assert result["accuracy_real"] > 0.6 and result["accuracy_augmented"] > 0.6
