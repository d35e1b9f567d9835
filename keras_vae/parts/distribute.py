"""Distribution strategies by name: one device, several GPUs, several machines.

`get("mirrored")` replicates the model on every local GPU (or on the given
devices); `get("multiworker")` on every GPU of every machine listed in the
`TF_CONFIG` environment variable. Build and compile the model inside
`strategy.scope()`; `VAE.train_step` then divides the summed per-example loss
by the *global* batch and the optimizer sums gradients across replicas, so a
step on N replicas equals one step on one device with the same global batch.

The step mechanics are helpers any `train_step` calls (a model with its own
step, such as a VAE-GAN with two optimizers, reuses them instead of copying):
`average_loss` (the per-example loss summed locally over the *global* batch
size), `global_batch_size`, and `step_logs` (metric results shaped so Keras
can reduce them across workers).

Example:

>>> strategy = keras_vae.parts.distribute.get("mirrored")
>>> with strategy.scope():
...     vae = keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=16)
...     vae.compile(keras.optimizers.Adam(1e-3))
>>> vae.fit(keras_vae.data.load("digits", batch_size=256), epochs=5)
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from keras_vae.registry import Registry


def _default(devices=None):
    if devices:
        raise ValueError("The 'default' strategy runs on one device; use 'mirrored' for a list.")
    return tf.distribute.get_strategy()


def _mirrored(devices=None):
    return tf.distribute.MirroredStrategy(devices=devices)


def _multiworker(devices=None):
    if devices:
        raise ValueError("'multiworker' uses every local GPU (or the CPU); do not pass devices.")
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as e:
        raise RuntimeError(
            f"Cannot start MultiWorkerMirroredStrategy: {e}. Create it before any other "
            "TensorFlow work in the process, and set TF_CONFIG on every worker (see "
            "docs/scaling.md)."
        ) from e


STRATEGIES = Registry("strategy", {"default": _default, "mirrored": _mirrored,
                                   "multiworker": _multiworker})
register = STRATEGIES.register


def get(identifier="default", devices: list[str] | None = None) -> tf.distribute.Strategy:
    """Returns a `tf.distribute.Strategy` from a name (or passes a strategy through).

    Args:
        identifier: `"default"` (no distribution), `"mirrored"` (all local
            GPUs, or `devices`), `"multiworker"` (all workers in `TF_CONFIG`),
            or a `tf.distribute.Strategy`.
        devices: For `"mirrored"`, devices such as `["/gpu:0", "/gpu:1"]`.

    Returns:
        The strategy. For `"multiworker"`, call this before any other
        TensorFlow operation in the process.

    Raises:
        ValueError: for an unknown name, listing the valid ones.
        RuntimeError: a multi-worker strategy that cannot start.
    """
    if isinstance(identifier, tf.distribute.Strategy):
        return identifier
    return STRATEGIES.get(identifier)(devices)


def task(strategy: tf.distribute.Strategy | None = None) -> tuple[str | None, int]:
    """`(task_type, task_id)` of this process: `(None, 0)` outside a cluster."""
    strategy = strategy or tf.distribute.get_strategy()
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.task_type is not None:
        return resolver.task_type, int(resolver.task_id or 0)
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and "task" in config:
        return config["task"].get("type"), int(config["task"].get("index", 0))
    return None, 0


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """Whether this process writes shared files (models, pictures, history).

    The chief is the `chief` task, or `worker` 0 when the cluster has no
    chief, or the only process when there is no cluster.
    """
    task_type, task_id = task(strategy)
    if task_type in (None, "chief"):
        return True
    if task_type == "worker" and task_id == 0:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
        return "chief" not in cluster
    return False


def worker_tag(strategy: tf.distribute.Strategy | None = None) -> str:
    """A short name for this process, e.g. `worker-1`, for per-worker files."""
    task_type, task_id = task(strategy)
    return "local" if task_type is None else f"{task_type}-{task_id}"


def distribute_options(strategy: tf.distribute.Strategy) -> tf.data.Options:
    """`tf.data` options that shard a pipeline by element across workers.

    In-memory pipelines have no files to shard by, so each worker reads the
    same stream and keeps its own share of the (global) batches.
    """
    options = tf.data.Options()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA)
    return options


# ------------------------------------------------------- step mechanics


def global_batch_size(per_example):
    """Examples in the global batch: the local batch summed over replicas (an int32 tensor).

    All-reduced rather than assumed, so an uneven last batch is counted exactly.
    """
    local = tf.cast(tf.shape(per_example)[0], tf.float32)
    total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, local)
    return tf.cast(total, tf.int32)


def average_loss(per_example):
    """The scalar loss of a replica: its per-example losses summed, over the *global* batch.

    With gradients summed across replicas (what the optimizers do under a
    strategy) this is the gradient of the global mean, the same step as on
    one device. Outside a strategy it is the plain mean.

    Example:

    >>> with tf.GradientTape() as tape:
    ...     loss = keras_vae.parts.distribute.average_loss(model.per_example_loss(terms))
    """
    return tf.nn.compute_average_loss(per_example,
                                      global_batch_size=global_batch_size(per_example))


def step_logs(metrics) -> dict:
    """`{name: result}` of Keras metrics, as a `train_step`/`test_step` returns them.

    Under `MultiWorkerMirroredStrategy` Keras 3 reduces step outputs across
    workers along axis 0, which a scalar lacks (tensorflow/tensorflow#72388):
    each result gets one there.
    """
    logs = {m.name: m.result() for m in metrics}
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        logs = {name: tf.reshape(value, (1,)) for name, value in logs.items()}
    return logs
