"""Bad and hostile inputs: each fails with a clear error, runs nothing, writes nothing stray.

Model files are untrusted input: a `.keras` is a zip whose `config.json`
names classes and modules to instantiate. Data files get truncated. Learning
rates get mistyped. Each case asserts the error names the problem, and that
no file appears outside the run directory (none at all for a refused file).
"""

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_vae
from keras_vae import cli, saving, training
from keras_vae.parts.posterior import LOG_VAR_MAX, LOG_VAR_MIN, DiagonalGaussian

ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def good_model(saved_vae):
    """The path of a small trained VAE saved by keras_vae (tests/training/conftest.py)."""
    return saved_vae[1]


def rewrite(src, dst, change=None, extra=()):
    """Copies a .keras zip, editing its config with `change` and adding `extra` members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "config.json" and change is not None:
                config = json.loads(data)
                change(config)
                data = json.dumps(config).encode()
            zout.writestr(item, data)
        for name, data in extra:
            zout.writestr(name, data)
    return dst


def snapshot(*roots):
    return {p for root in roots for p in Path(root).rglob("*")}


def refused(path, match, tmp_path):
    """Loads `path` expecting a ValueError matching `match`, and no new file anywhere near."""
    before = snapshot(tmp_path, tmp_path.parent)
    with pytest.raises(ValueError, match=match):
        saving.load_model(path)
    assert snapshot(tmp_path, tmp_path.parent) == before
    # The command line says the same in one line and writes no picture.
    out = tmp_path / "samples.png"
    assert cli.main(["sample", str(path), "--out", str(out)]) == 2
    assert not out.exists()


def set_likelihood(obj):
    def change(config):
        config["config"]["likelihood"] = obj
    return change


# ------------------------------------------------------------- model files


def test_good_model_loads(good_model):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="keras_vae")
        model = saving.load_model(good_model)
    assert isinstance(model, keras_vae.VAE)
    assert model.sample(2, seed=0).shape == (2, 8, 8, 1)


def test_lambda_layer_is_refused(good_model, tmp_path):
    marker = tmp_path / "pwned"
    payload = eval(f"lambda x: (open({str(marker)!r}, 'w').write('pwned'), x)[1]")
    layer = keras.saving.serialize_keras_object(keras.layers.Lambda(payload, name="evil"))
    assert layer["class_name"] == "Lambda"

    def change(config):
        config["config"]["encoder"]["config"]["layers"].append(layer)

    path = rewrite(good_model, tmp_path / "lambda.keras", change)
    refused(path, "contains a Lambda", tmp_path)
    assert not marker.exists()


def test_python_lambda_object_is_refused(good_model, tmp_path):
    path = rewrite(good_model, tmp_path / "fn.keras", set_likelihood(
        {"class_name": "__lambda__", "config": {"value": "ZZZZ", "defaults": None,
                                                "closure": None}}))
    refused(path, "__lambda__", tmp_path)


def test_arbitrary_module_is_refused(good_model, tmp_path):
    marker = tmp_path / "pwned"
    path = rewrite(good_model, tmp_path / "os.keras", set_likelihood(
        {"module": "os", "class_name": "system", "registered_name": "system",
         "config": {"command": f"touch {marker}"}}))
    refused(path, r"refers to os\.system", tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [
    {"module": "keras.utils", "class_name": "get_file", "registered_name": None,
     "config": {"fname": "x", "origin": "http://127.0.0.1:9/x"}},
    {"module": "keras.utils", "class_name": "function", "registered_name": "function",
     "config": "get_file"},
    {"module": "keras.src.utils.file_utils", "class_name": "get_file", "registered_name": None,
     "config": {"fname": "x", "origin": "http://127.0.0.1:9/x"}},
], ids=["class", "function", "private-module"])
def test_get_file_is_refused(good_model, tmp_path, obj):
    obj = json.loads(json.dumps(obj).replace('"x"', json.dumps(str(tmp_path / "fetched"))))
    path = rewrite(good_model, tmp_path / "get_file.keras", set_likelihood(obj))
    refused(path, r"refers to keras\.(src\.utils\.file_utils|utils)\.", tmp_path)
    assert not (tmp_path / "fetched").exists()


@pytest.mark.parametrize("member", ["../x", "assets/../../x", "/tmp/x", "evil.py"])
def test_unsafe_zip_member_is_refused(good_model, tmp_path, member):
    run = tmp_path / "run"
    run.mkdir()
    path = rewrite(good_model, run / "zipslip.keras", extra=[(member, b"payload")])
    before = snapshot(tmp_path, tmp_path.parent)
    with pytest.raises(ValueError, match=f"unexpected or unsafe member '{member}'"):
        saving.load_model(path)
    assert snapshot(tmp_path, tmp_path.parent) == before
    assert not (tmp_path / "x").exists() and not (run / "x").exists()


@pytest.mark.parametrize("damage", ["truncated", "text", "empty", "no-config"])
def test_truncated_or_non_zip_file_is_refused(good_model, tmp_path, damage):
    path = tmp_path / "bad.keras"
    if damage == "truncated":
        path.write_bytes(good_model.read_bytes()[: good_model.stat().st_size // 2])
    elif damage == "text":
        path.write_text("this is not a model\n")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("metadata.json", "{}")
    match = "has no config.json" if damage == "no-config" else "not a readable .keras file"
    refused(path, match, tmp_path)


def test_model_of_another_class_is_refused(tmp_path):
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    other.save(tmp_path / "sequential.keras")
    refused(tmp_path / "sequential.keras", r"holds a 'Sequential'.*not a keras_vae model",
            tmp_path)


@pytest.mark.parametrize("version, outcome", [
    ("9.0.0", "refuse"), ("0.2.0", "refuse"), ("0.1.99", "warn"), (None, "warn")])
def test_keras_vae_version_is_checked(good_model, tmp_path, version, outcome):
    def change(config):
        if version is None:
            del config["config"]["keras_vae"]
        else:
            config["config"]["keras_vae"]["version"] = version

    path = rewrite(good_model, tmp_path / "versioned.keras", change)
    if outcome == "refuse":
        refused(path, f"saved by keras_vae {version}, and this is keras_vae "
                      f"{keras_vae.__version__}: an incompatible release", tmp_path)
    else:
        with pytest.warns(UserWarning, match="keras_vae"):
            model = saving.load_model(path)
        assert isinstance(model, keras_vae.VAE)


@pytest.mark.slow
def test_plain_keras_without_keras_vae_says_to_import_it(good_model, tmp_path):
    script = textwrap.dedent(f'''
        import sys
        import keras
        keras.saving.load_model({str(good_model)!r})
        assert "keras_vae" not in sys.modules
    ''')
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode != 0
    assert "Could not locate class 'VAE'" in proc.stderr
    assert "import keras_vae before keras.saving.load_model" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_loader_never_retries_without_safe_mode(good_model, tmp_path, monkeypatch):
    calls = []

    def fake_load(path, *args, **kwargs):
        calls.append(kwargs)
        raise ValueError("Requested the deserialization of a Lambda layer")

    monkeypatch.setattr(keras.saving, "load_model", fake_load)
    with pytest.raises(ValueError, match="Cannot load .* as a keras_vae model"):
        saving.load_model(good_model)
    assert calls == [{"compile": True, "safe_mode": True}]


# -------------------------------------------------------------------- data


def _write_idx(directory, n=40, truncate_images=False, n_labels=None, gz=True):
    directory.mkdir()
    rng = np.random.default_rng(0)
    images = struct.pack(">BBBBIII", 0, 0, 8, 3, n, 8, 8) + rng.integers(
        0, 256, n * 64, dtype=np.uint8).tobytes()
    labels = struct.pack(">BBBBI", 0, 0, 8, 1, n_labels or n) + bytes(n_labels or n)
    if truncate_images and not gz:
        images = images[: len(images) - 100]
    opener = gzip.open if gz else open
    suffix = ".gz" if gz else ""
    with opener(directory / f"train-images-idx3-ubyte{suffix}", "wb") as f:
        f.write(images)
    with opener(directory / f"train-labels-idx1-ubyte{suffix}", "wb") as f:
        f.write(labels)
    if truncate_images and gz:
        path = directory / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:-40])  # cut the gzip stream
    return directory


def _train_fails(tmp_path, dataset, match, capsys, *extra):
    out = tmp_path / "run"
    before = snapshot(tmp_path)
    code = cli.main(["train", "--dataset", str(dataset), "--arch", "mlp", "--latent-dim", "2",
                     "--epochs", "1", "--batch-size", "16", "--verbose", "0",
                     "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "keras-vae train: error:" in err
    assert re.search(match, err), err
    # No run directory, no half-written one, nothing else.
    assert snapshot(tmp_path) == before
    return err


def test_truncated_gzip_idx_names_the_file(tmp_path, capsys):
    data = _write_idx(tmp_path / "idx", truncate_images=True)
    _train_fails(tmp_path, data, r"Cannot read IDX file .*train-images-idx3-ubyte\.gz.*"
                                 r"truncated or corrupt", capsys)


def test_idx_shorter_than_its_header_names_the_file(tmp_path, capsys):
    data = _write_idx(tmp_path / "idx", truncate_images=True, gz=False)
    _train_fails(tmp_path, data, r"IDX file .*train-images-idx3-ubyte is truncated or padded: "
                                 r"its header says \(40, 8, 8\) \(2560 bytes", capsys)


def test_idx_label_count_mismatch(tmp_path, capsys):
    data = _write_idx(tmp_path / "idx", n_labels=39)
    _train_fails(tmp_path, data, r"train-labels-idx1-ubyte\.gz has 39 labels for 40 images",
                 capsys)


def test_idx_cut_inside_its_header(tmp_path, capsys):
    data = _write_idx(tmp_path / "idx", gz=False)
    path = data / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:9])  # magic + 1.25 of its 3 dimensions
    _train_fails(tmp_path, data, r"train-images-idx3-ubyte is truncated inside its header "
                                 r"\(9 bytes\)", capsys)


def test_idx_of_the_wrong_rank_or_too_many_files(tmp_path, capsys):
    data = _write_idx(tmp_path / "idx")
    images = data / "train-images-idx3-ubyte.gz"
    shutil.copy(data / "train-labels-idx1-ubyte.gz", images)  # labels named as images
    _train_fails(tmp_path, data, r"train-images-idx3-ubyte\.gz holds a 1-d array, not "
                                 r"\(n, height, width\) images", capsys)
    shutil.rmtree(data)
    data = _write_idx(tmp_path / "idx")
    shutil.copy(data / "train-labels-idx1-ubyte.gz", data / "t10k-labels-idx1-ubyte.gz")
    _train_fails(tmp_path, data, r"at most one '\*idx1\*' label file", capsys)


def test_corrupt_image_in_folder_names_the_file(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    for i in range(8):
        Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(folder / "a" / f"{i}.png")
    (folder / "a" / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _train_fails(tmp_path, folder, r"Corrupt or unreadable image .*a/5\.png", capsys)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_pixels_are_refused(tmp_path, capsys, bad):
    x = np.random.default_rng(0).random((32, 8, 8), dtype=np.float32)
    x[3, 2, 1] = bad
    np.savez(tmp_path / "bad.npz", x=x)
    _train_fails(tmp_path, tmp_path / "bad.npz", r"1 NaN/Inf values \(first at index "
                                                 r"\(3, 2, 1, 0\)\)", capsys)
    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                          arch_options={"hidden_units": [8]})
    model.compile()
    with pytest.raises(ValueError, match="NaN/Inf"):
        model.fit(x[..., None], epochs=1, verbose=0)
    ds = tf.data.Dataset.from_tensor_slices(x[..., None]).batch(8)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="keras_vae: images contain NaN or Inf"):
        model.fit(ds, epochs=1, verbose=0)


# ------------------------------------------------------------- divergence


def test_learning_rate_1e30_fails_and_writes_no_model(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--dataset", "digits", "--split", "train[:256]", "--arch", "mlp",
                     "--latent-dim", "2", "--epochs", "3", "--batch-size", "32",
                     "--learning-rate", "1e30", "--resume", "--verbose", "0",
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Training diverged: the loss became nan in epoch 1; no model was written" in err
    assert "Lower the learning rate" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run, no NaN backup


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    """Epoch 1 trains normally; epoch 2 jumps to lr 1e30 and diverges."""
    x = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
    schedule = keras.callbacks.LearningRateScheduler(lambda e, lr: 1e-3 if e == 0 else 1e30)
    saved = {}

    class Remember(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                saved["weights"] = self.model.get_weights()

    def make_model():
        return keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                             arch_options={"hidden_units": [8]}, seed=0)

    with pytest.raises(training.TrainingDiverged, match=r"loss became nan in epoch 2.*"
                                                        r"last finite epoch is kept"):
        training.train(make_model, tf.data.Dataset.from_tensor_slices(x).batch(16), epochs=4,
                       backup_dir=tmp_path / "backup", checkpoint_path=tmp_path / "best.keras",
                       callbacks=[schedule, Remember()], verbose=0)
    best = saving.load_model(tmp_path / "best.keras")
    for a, b in zip(best.get_weights(), saved["weights"]):
        np.testing.assert_array_equal(a, b)  # epoch 1's weights, not NaN
    state = json.loads((tmp_path / "backup" / "state.json").read_text())
    assert [e["epoch"] for e in state["epochs"]] == [1]
    restored = make_model()
    restored.compile()
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(tmp_path / "backup" / state["epochs"][0]["file"])
    assert all(np.all(np.isfinite(w)) for w in restored.get_weights())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup", "best.keras"]


def test_overwrite_with_a_diverging_run_keeps_the_old_model(tmp_path, good_model, capsys):
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(good_model, out / "model.keras")
    before = (out / "model.keras").read_bytes()
    code = cli.main(["train", "--dataset", "digits", "--split", "train[:128]", "--arch", "mlp",
                     "--latent-dim", "2", "--epochs", "1", "--learning-rate", "1e30",
                     "--verbose", "0", "--overwrite", "--out", str(out)])
    assert code == 2 and "diverged" in capsys.readouterr().err
    assert (out / "model.keras").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# ---------------------------------------------------------- log-variance


@pytest.mark.parametrize("raw", [1e3, -1e3])
def test_extreme_log_variance_gives_finite_kl(raw):
    q = DiagonalGaussian(np.zeros((2, 3), "float32"), np.full((2, 3), raw, "float32"))
    clamped = LOG_VAR_MAX if raw > 0 else LOG_VAR_MIN
    expected = 0.5 * (np.exp(clamped) - 1.0 - clamped)  # KL per dim at the clamp
    kl = keras.ops.convert_to_numpy(q.kl())
    assert np.all(np.isfinite(kl))
    np.testing.assert_allclose(kl, expected, rtol=1e-6)


@pytest.mark.parametrize("raw", [1e3, -1e3])
def test_encoder_emitting_extreme_log_variance_trains_finitely(raw):
    keras.utils.set_random_seed(0)
    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                          arch_options={"hidden_units": [8]}, seed=0)
    head = model.encoder.get_layer("z_log_var")
    kernel, _ = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.full(2, raw, "float32")])
    x = np.random.default_rng(0).random((8, 8, 8, 1), dtype=np.float32)
    _, log_var = model.encode(x)
    assert np.all(keras.ops.convert_to_numpy(log_var) == (LOG_VAR_MAX if raw > 0
                                                          else LOG_VAR_MIN))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.negative_elbo(x))
    grads = tape.gradient(loss, model.trainable_variables)
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in grads if g is not None)


# --------------------------------------------------------------- samplers


@pytest.mark.skipif(not (ROOT / "export" / "sample_onnx.py").exists(),
                    reason="the edge samplers are not there yet")
def test_sampler_given_a_truncated_model_exits_cleanly(tmp_path):
    import keras_vae.export

    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                          arch_options={"hidden_units": [8]}, seed=0)
    out = tmp_path / "export"
    keras_vae.export.export(model, out, formats=("onnx",), graphs=("decoder",))
    onnx_file = out / "decoder.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[: onnx_file.stat().st_size // 2])
    for name in ("sample_onnx.py", "sampler.py", "reader.py", "images.py", "recipes.py"):
        shutil.copy(ROOT / "export" / name, tmp_path / name)
    proc = subprocess.run([sys.executable, "sample_onnx.py", str(out), "--n", "2",
                           "--out", "grid.png"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "error:" in proc.stderr
    assert "decoder.onnx" in proc.stderr
    assert not (tmp_path / "grid.png").exists()
