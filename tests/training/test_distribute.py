"""tf.distribute: the strategy registry, and replica equivalence on 2 logical CPUs.

Logical devices must be configured before TensorFlow initializes, so the
MirroredStrategy runs happen in a fresh subprocess.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import tensorflow as tf

from keras_vae.parts import distribute

pytestmark = pytest.mark.slow  # subprocesses, several processes or benchmarks

MIRRORED_SCRIPT = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from keras import ops
    import keras_vae
    from keras_vae import training

    class DataNoise(keras.layers.Layer):
        """eps as a fixed function of each example's posterior mean: the same
        per example whatever replica it lands on (unlike a seeded stream)."""
        def call(self, z_mean):
            return ops.stop_gradient(ops.sin(7.0 * z_mean + 0.3))

    class NaiveVAE(keras_vae.VAE):
        """The classic bug: the *local* mean, so N replicas take N-times steps."""
        def train_step(self, data):
            x, labels, target = keras_vae.data.unpack_batch(data, self.num_classes)
            with tf.GradientTape() as tape:
                terms = self.elbo_terms(x, labels, target, training=True)
                per_example = self.per_example_loss(terms)
                loss = ops.mean(per_example)
            grads = tape.gradient(loss, self.trainable_variables)
            self.optimizer.apply(grads, self.trainable_variables)
            return self._update_metrics(per_example, terms)

    x_all = np.random.default_rng(0).random((21, 8, 8, 1), dtype=np.float32)

    def run(devices, x, batch_size, cls=keras_vae.VAE):
        def make_model():
            m = cls(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                    arch_options={"hidden_units": [16]}, seed=0)
            m.sampling = DataNoise()
            m.compile(keras.optimizers.SGD(0.05))
            return m
        strategy = strategies[len(devices)]
        ds = tf.data.Dataset.from_tensor_slices(x).batch(batch_size)
        model, history, _ = training.train(make_model, ds, epochs=1, strategy=strategy,
                                           seed=0, verbose=0)
        return model, history.history

    one, two = ["/cpu:0"], ["/cpu:0", "/cpu:1"]
    # One strategy per device set, reused: separate strategies over the same
    # devices would reuse collective instance keys.
    strategies = {1: tf.distribute.MirroredStrategy(one), 2: tf.distribute.MirroredStrategy(two)}
    out = {}
    # The initial weights and the loss they give (the reference for the logged loss).
    keras.utils.set_random_seed(0)
    m0 = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                       arch_options={"hidden_units": [16]}, seed=0)
    m0.sampling = DataNoise()
    w0 = [v.numpy() for v in m0.trainable_variables]
    x = x_all[:18]
    out["initial_loss"] = float(np.mean(m0.per_example_loss(m0.elbo_terms(x))))
    # One step on a global batch of 18 (9 per replica); then 21 examples in
    # batches of 9, 9 and 3, split 5/4, 5/4 and 2/1 across the replicas.
    for name, x, batch in (("one_step", x_all[:18], 18), ("uneven", x_all, 9)):
        m1, h1 = run(one, x, batch)
        m2, h2 = run(two, x, batch)
        assert m2.distribute_strategy.num_replicas_in_sync == 2
        w1 = [v.numpy() for v in m1.trainable_variables]
        w2 = [v.numpy() for v in m2.trainable_variables]
        out[name] = {
            "weight_error": max(float(np.abs(a - b).max()) for a, b in zip(w1, w2)),
            "moved": max(float(np.abs(a - b).max()) for a, b in zip(w0, w1)),
            "loss_1": h1["loss"][0], "loss_2": h2["loss"][0],
            "kl_1": h1["kl_loss"][0], "kl_2": h2["kl_loss"][0],
            "eval_1": m1.evaluate(x, batch_size=9, verbose=0, return_dict=True)["loss"],
            "eval_2": m2.evaluate(x, batch_size=9, verbose=0, return_dict=True)["loss"],
        }
    n1, _ = run(one, x_all[:18], 18, NaiveVAE)
    n2, _ = run(two, x_all[:18], 18, NaiveVAE)
    out["naive_weight_error"] = max(
        float(np.abs(a.numpy() - b.numpy()).max())
        for a, b in zip(n1.trainable_variables, n2.trainable_variables))
    print("RESULT" + json.dumps(out))

''')


def run_script(script, tmp_path, timeout=240, env=None):
    path = tmp_path / "script.py"
    path.write_text(script)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    proc = subprocess.run([sys.executable, str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_get_names_and_errors():
    assert distribute.get("default") is tf.distribute.get_strategy()
    s = tf.distribute.get_strategy()
    assert distribute.get(s) is s
    with pytest.raises(ValueError, match=r"valid names: \['default', 'mirrored', 'multiworker'\]"):
        distribute.get("tpu")
    with pytest.raises(ValueError, match="one device"):
        distribute.get("default", devices=["/cpu:0"])


def test_chief_outside_a_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.task() == (None, 0)
    assert distribute.is_chief()
    assert distribute.worker_tag() == "local"


def test_mirrored_two_replicas_match_one(tmp_path):
    out = run_script(MIRRORED_SCRIPT, tmp_path)
    for case in ("one_step", "uneven"):
        r = out[case]
        assert r["moved"] > 1e-3, "the step must actually change the weights"
        # Replica equivalence: same weights after the same global batches.
        assert r["weight_error"] < 1e-5, r
        # The logged loss (a Mean over per-example values) ignores the replica count.
        assert r["loss_2"] == pytest.approx(r["loss_1"], rel=1e-5)
        assert r["kl_2"] == pytest.approx(r["kl_1"], rel=1e-4, abs=1e-6)
        assert r["eval_2"] == pytest.approx(r["eval_1"], rel=1e-5)
    # One step on the whole batch logs the mean per-example loss at the initial weights.
    assert out["one_step"]["loss_1"] == pytest.approx(out["initial_loss"], rel=1e-5)
    # The same comparison catches a train_step that averages per replica.
    assert out["naive_weight_error"] > 100 * out["one_step"]["weight_error"] + 1e-4
