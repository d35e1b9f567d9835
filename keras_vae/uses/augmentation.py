"""Data augmentation with generated samples: a dataset of (conditional) samples to mix with real data.

Example:

>>> fake = keras_vae.uses.augmentation.generated_dataset(cvae, 2000, class_ids=range(10))
>>> train = keras_vae.uses.augmentation.mix(real_train, fake, generated_fraction=0.5)
>>> classifier.fit(train, epochs=20)
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from keras_vae import data as data_lib
from keras_vae.models.vae import VAE


def generated_dataset(model, n: int, batch_size: int = 64, seed: int | None = 0,
                      class_ids=None, binarize: bool = False) -> tf.data.Dataset:
    """A batched `tf.data.Dataset` of `(image, label)` drawn from a VAE's prior.

    Args:
        model: A trained `VAE`; conditional models generate the classes asked for.
        n: Number of examples.
        batch_size: Examples per batch.
        seed: Seed of z (numpy's Generator, as `VAE.sample`) and of binarization.
        class_ids: For a conditional model, the classes to generate, cycled
            over the `n` examples (default: every class in turn). Must be
            None for an unconditional model, whose labels are -1 (unknown).
        binarize: Draw binary pixels from the image means (Bernoulli models),
            instead of the means themselves.

    Returns:
        Batches of `(image float32 (b, *image_shape), label int64 (b,))`, the
        element structure of `keras_vae.data.load`.

    Raises:
        ValueError: n < 1, class ids the model does not know, class ids for an
            unconditional model.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if model.num_classes and class_ids is None:
        class_ids = range(model.num_classes)
    if class_ids is not None:
        class_ids = list(class_ids)
    images = model.sample(n, seed=seed, class_ids=class_ids)  # (n, *image_shape)
    # The labels `sample` cycles over (it validates the ids); -1 when unconditional.
    class_labels = data_lib.class_labels(n, class_ids, model.num_classes)
    if class_labels is None:
        labels = np.full(n, -1, np.int64)
    else:
        labels = class_labels.astype(np.int64)
    if binarize:
        rng = np.random.default_rng(None if seed is None else seed + 1)
        images = (rng.random(images.shape, dtype=np.float32) < images).astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images.astype(np.float32), labels))
    return data_lib.prefetched(ds.batch(batch_size))


def _unbatched_pairs(ds, name):
    spec = ds.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(
            f"The {name} dataset must yield (image, label) batches; got element spec {spec}."
        )
    return ds.unbatch().map(lambda x, y: (tf.cast(x, tf.float32), tf.cast(y, tf.int64)))


def mix(real: tf.data.Dataset, generated: tf.data.Dataset, generated_fraction: float = 0.5,
        batch_size: int = 64, seed: int = 0) -> tf.data.Dataset:
    """Mixes batched real and generated `(image, label)` datasets example by example.

    Each example is drawn from `generated` with probability
    `generated_fraction` (`tf.data.Dataset.sample_from_datasets`) until both
    are exhausted, so one pass covers every real and every generated example.

    Returns:
        A batched dataset of `(image, label)`.

    Raises:
        ValueError: a fraction outside [0, 1], datasets without labels or of
            different image shapes.
    """
    if not 0.0 <= generated_fraction <= 1.0:
        raise ValueError(f"generated_fraction must be in [0, 1], got {generated_fraction}")
    real = _unbatched_pairs(real, "real")
    generated = _unbatched_pairs(generated, "generated")
    shapes = (real.element_spec[0].shape, generated.element_spec[0].shape)
    if not shapes[0].is_compatible_with(shapes[1]):
        raise ValueError(f"Real images {shapes[0]} and generated images {shapes[1]} differ.")
    mixed = tf.data.Dataset.sample_from_datasets(
        [real, generated], weights=[1.0 - generated_fraction, generated_fraction], seed=seed,
        stop_on_empty_dataset=False)
    return data_lib.prefetched(mixed.batch(batch_size))


# ------------------------------------------------------------ worked example


def _classifier(image_shape, num_classes, seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input(image_shape),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(num_classes),
    ])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def _stratified_subset(labels, per_class, rng):
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per_class]
             for c in np.unique(labels)]
    return np.sort(np.concatenate(picks))


def augmentation_experiment(per_class: int = 10, n_generated: int = 2000,
                            vae_epochs: int = 300, classifier_steps: int = 1500,
                            latent_dim: int = 8, test_size: int = 500, seed: int = 0,
                            verbose: int = 0) -> dict:
    """Classifier accuracy with and without VAE augmentation on a small labelled `digits` set.

    The last `test_size` digits (shuffled once by `seed`) are the test set.
    From the rest, `per_class` labelled examples per class train (1) a
    conditional MLP VAE and (2) a small dense classifier, once on the real
    examples only and once on a half-real, half-generated stream from
    `mix`; both classifiers take the same number of optimizer steps. Nothing
    is tuned on the test set. Whichever wins is reported as measured: with
    the defaults, seeds 0, 1, 2 gave 0.924 / 0.888 / 0.874 without and
    0.920 / 0.892 / 0.876 with augmentation (5 per class: 0.876 / 0.842 /
    0.852 vs 0.866 / 0.846 / 0.856), i.e. no gain beyond noise: the samples
    of a VAE trained on the same 100 digits add little they do not hold.

    Returns:
        Dict with `accuracy_real`, `accuracy_augmented` (test accuracies),
        `n_labelled`, `n_generated`, `n_test`.
    """
    x, y = data_lib.load_arrays("digits")  # (1797, 8, 8, 1) in [0, 1], labels 0..9
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    x_test, y_test = x[-test_size:], y[-test_size:]
    pool_x, pool_y = x[:-test_size], y[:-test_size]
    idx = _stratified_subset(pool_y, per_class, rng)
    x_small, y_small = pool_x[idx], pool_y[idx]
    num_classes = int(y.max()) + 1
    batch = 32

    keras.utils.set_random_seed(seed)
    vae = VAE(image_shape=x.shape[1:], latent_dim=latent_dim, arch="mlp",
              arch_options={"hidden_units": [128]}, num_classes=num_classes, seed=seed)
    vae.compile(keras.optimizers.Adam(2e-3))

    def real_stream():
        ds = tf.data.Dataset.from_tensor_slices((x_small, y_small.astype(np.int64)))
        return ds.shuffle(len(x_small), seed=seed, reshuffle_each_iteration=True)

    # One long Keras epoch of `vae_epochs` passes (per-epoch overhead dominates tiny data).
    vae.fit(real_stream().batch(batch).repeat(), epochs=1, verbose=verbose,
            steps_per_epoch=vae_epochs * -(-len(x_small) // batch))

    baseline = _classifier(x.shape[1:], num_classes, seed)
    baseline.fit(real_stream().repeat().batch(batch), steps_per_epoch=classifier_steps,
                 epochs=1, verbose=verbose)

    fake = generated_dataset(vae, n_generated, batch_size=batch, seed=seed,
                             class_ids=range(num_classes))
    real = real_stream().repeat().batch(batch)  # repeated: half of every batch stays real
    augmented = _classifier(x.shape[1:], num_classes, seed)
    augmented.fit(mix(real, fake.repeat(), 0.5, batch_size=batch, seed=seed),
                  steps_per_epoch=classifier_steps, epochs=1, verbose=verbose)

    def accuracy(model):
        logits = model.predict(x_test, batch_size=256, verbose=0)
        return float(np.mean(np.argmax(logits, axis=-1) == y_test))

    return {
        "accuracy_real": accuracy(baseline),
        "accuracy_augmented": accuracy(augmented),
        "n_labelled": len(x_small),
        "n_generated": n_generated,
        "n_test": len(x_test),
    }
