"""Fault tolerance: SIGKILL mid-epoch and resume; corrupt, partial and missing backups."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import keras
import numpy as np
import pytest

from keras_vae import files, training

RUN = textwrap.dedent('''
    import json, sys, time
    import keras
    import numpy as np
    import tensorflow as tf
    import keras_vae
    from keras_vae import training

    EPOCHS, STEPS, KILL_EPOCH, KILL_BATCH = 5, 6, 2, 2
    x = np.random.default_rng(0).random((16 * STEPS, 8, 8, 1), dtype=np.float32)

    def make_model():
        return keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                             arch_options={"hidden_units": [16]}, seed=0)

    def optimizer_state(model):
        return {v.path: v.numpy() for v in model.optimizer.variables}

    class Probe(keras.callbacks.Callback):
        def __init__(self, tag, kill):
            super().__init__()
            self.tag, self.kill, self.epoch = tag, kill, 0

        def on_train_begin(self, logs=None):  # after Backup has restored
            np.savez(f"{self.tag}-begin.npz", **optimizer_state(self.model))

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            np.savez(f"{self.tag}-epoch{epoch}.npz", **optimizer_state(self.model))

        def on_train_batch_end(self, batch, logs=None):
            if self.kill and self.epoch == KILL_EPOCH and batch == KILL_BATCH:
                print("KILL ME", flush=True)
                time.sleep(600)

    def run(tag, backup, kill=False):
        ds = tf.data.Dataset.from_tensor_slices(x).batch(16)  # fixed order, 6 steps
        model, history, _ = training.train(
            make_model, ds, epochs=EPOCHS, seed=0, deterministic=True, backup_dir=backup,
            callbacks=[Probe(tag, kill)], verbose=0)
        np.savez(f"{tag}-final.npz", *model.get_weights())
        with open(f"{tag}-history.json", "w") as f:
            json.dump({"epoch": history.epoch, **history.history}, f)

    if sys.argv[1] == "victim":
        run("victim", "backup", kill=True)
    else:
        run("resumed", "backup")    # continues the killed run
        run("full", None)           # the same run, never interrupted
''')


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(tmp_path):
    (tmp_path / "run.py").write_text(RUN)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    victim = subprocess.Popen([sys.executable, "run.py", "victim"], cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 180
        for line in victim.stdout:
            if "KILL ME" in line or time.time() > deadline:
                break
        assert victim.poll() is None, "the training process ended before the kill point"
        victim.send_signal(signal.SIGKILL)  # mid-epoch 3 (index 2), after 3 of its 6 steps
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL

    # The backup holds the last completed epoch (2 epochs done), written whole.
    state = json.loads((tmp_path / "backup" / "state.json").read_text())
    assert [e["epoch"] for e in state["epochs"]] == [2, 1]
    assert not list((tmp_path / "backup").glob(".partial*"))

    proc = subprocess.run([sys.executable, "run.py", "resume"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    resumed = json.loads((tmp_path / "resumed-history.json").read_text())
    full = json.loads((tmp_path / "full-history.json").read_text())
    # Continues from the last completed epoch: only epochs 3..5 run again,
    # so nothing is lost beyond the interrupted epoch.
    assert resumed["epoch"] == [2, 3, 4]
    assert full["epoch"] == [0, 1, 2, 3, 4]
    epochs_lost = len(resumed["epoch"]) + 2 - len(full["epoch"])
    assert epochs_lost == 0

    # Optimizer state intact: Adam's step count and moments at the restart
    # equal those at the end of the victim's last completed epoch.
    begin = np.load(tmp_path / "resumed-begin.npz")
    saved = np.load(tmp_path / "victim-epoch1.npz")
    assert sorted(begin.files) == sorted(saved.files)
    iteration = next(k for k in begin.files if k.endswith("iteration"))
    assert int(begin[iteration]) == 2 * 6
    for key in begin.files:
        np.testing.assert_array_equal(begin[key], saved[key], err_msg=key)

    # As good as the uninterrupted run: with a fixed data order and the noise
    # generator's state in the backup, it is the same run.
    assert resumed["loss"] == pytest.approx(full["loss"][2:], rel=1e-6)
    final_r = np.load(tmp_path / "resumed-final.npz")
    final_f = np.load(tmp_path / "full-final.npz")
    for key in final_f.files:
        np.testing.assert_allclose(final_r[key], final_f[key], rtol=0, atol=1e-6)
    # A completed run deletes its backup.
    assert not (tmp_path / "backup").exists()


# ------------------------------------------------------------- in-process


def _model():
    import keras_vae

    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                          arch_options={"hidden_units": [8]}, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    return model


@pytest.fixture
def images():
    return np.random.default_rng(1).random((32, 8, 8, 1), dtype=np.float32)


def _fit(model, images, backup_dir, epochs):
    backup = training.Backup(backup_dir, delete_checkpoint=False)
    history = model.fit(images, batch_size=16, epochs=epochs, callbacks=[backup], verbose=0)
    return history, backup


@pytest.mark.slow
def test_corrupt_latest_backup_falls_back_to_previous(tmp_path, images):
    backup_dir = tmp_path / "backup"
    _fit(_model(), images, backup_dir, epochs=3)
    state = json.loads((backup_dir / "state.json").read_text())
    assert [e["epoch"] for e in state["epochs"]] == [3, 2]
    latest = backup_dir / state["epochs"][0]["file"]
    data = bytearray(latest.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = b"\0" * 64
    latest.write_bytes(bytes(data))

    model = _model()
    with pytest.warns(UserWarning, match=r"checksum mismatch.*resuming from epoch 2"):
        history, backup = _fit(model, images, backup_dir, epochs=5)
    assert backup.restored_epoch == 2
    assert history.epoch == [2, 3, 4]  # resumed from epoch 2, not from 0


def test_unusable_backup_fails_loudly(tmp_path, images):
    backup_dir = tmp_path / "backup"
    _fit(_model(), images, backup_dir, epochs=2)
    for f in backup_dir.glob("epoch-*.weights.h5"):
        f.write_bytes(f.read_bytes()[:100])  # truncated
    with pytest.raises(RuntimeError, match="No usable backup.*Refusing to restart from epoch 0"):
        _fit(_model(), images, backup_dir, epochs=4)

    (backup_dir / "state.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="unreadable.*refusing to restart from epoch 0"):
        _fit(_model(), images, backup_dir, epochs=4)

    (backup_dir / "state.json").unlink()  # weights without a state file
    with pytest.raises(RuntimeError, match="unreadable"):
        _fit(_model(), images, backup_dir, epochs=4)


@pytest.mark.slow
def test_interrupted_save_keeps_the_previous_backup(tmp_path, images, monkeypatch):
    backup_dir = tmp_path / "backup"
    model = _model()
    _fit(model, images, backup_dir, epochs=1)
    before = (backup_dir / "state.json").read_text()
    weights_before = model.get_weights()

    real_save = keras.Model.save_weights

    def dies_halfway(self, filepath, *args, **kwargs):
        real_save(self, filepath, *args, **kwargs)
        with open(filepath, "r+b") as f:  # a half-written file, then the crash
            f.truncate(os.path.getsize(filepath) // 2)
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(keras.Model, "save_weights", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        _fit(model, images, backup_dir, epochs=2)
    monkeypatch.undo()
    assert (backup_dir / "state.json").read_text() == before
    assert sorted(p.name for p in backup_dir.iterdir()) == ["epoch-00001.weights.h5",
                                                             "state.json"]
    fresh = _model()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="keras_vae")  # no fallback needed
        history, backup = _fit(fresh, images, backup_dir, epochs=2)
    assert backup.restored_epoch == 1 and history.epoch == [1]
    # It continued from the epoch-1 weights, not from a fresh initialization.
    first_layer = 0
    assert not np.array_equal(fresh.get_weights()[first_layer], _model().get_weights()[first_layer])
    assert len(weights_before) == len(fresh.get_weights())


def test_empty_backup_folder_starts_fresh(tmp_path, images):
    (tmp_path / "backup").mkdir()
    history, backup = _fit(_model(), images, tmp_path / "backup", epochs=2)
    assert backup.restored_epoch == 0 and history.epoch == [0, 1]


def test_run_directory_removes_partials_of_killed_runs(tmp_path):

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".run.partial-{files.HOST}-{dead.pid}-abc123"
    live = tmp_path / f".run.partial-{files.HOST}-{os.getpid()}-def456"
    other_host = tmp_path / f".run.partial-elsewhere-{dead.pid}-ghi789"
    for d in (stale, live, other_host):
        (d / "model.keras").parent.mkdir()
        (d / "model.keras").write_bytes(b"half")
    with files.run_directory(tmp_path / "run") as tmp:
        (tmp / "model.keras").write_bytes(b"whole")
    assert not stale.exists()  # its process is gone
    assert live.exists() and other_host.exists()  # may still be in use
    assert (tmp_path / "run" / "model.keras").read_bytes() == b"whole"
