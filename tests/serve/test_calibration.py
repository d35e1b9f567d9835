"""The anomaly threshold (`export/calibration.py`) against the exported ONNX scorer.

The threshold is computed in Keras; the service compares onnxruntime's
scores with it, so both must compute the same number: numpy's quantile of
the onnxruntime scorer's scores (eps = 0) on the same images.
"""

import json

import numpy as np
import onnxruntime as ort
import pytest
import tensorflow as tf


@pytest.fixture(scope="module")
def calibration(export_pkg):
    import importlib

    return importlib.import_module(f"{export_pkg.__name__}.calibration")


def _onnx_scores(export_dir, images, labels=None):
    session = ort.InferenceSession(str(export_dir / "scorer.onnx"),
                                   providers=["CPUExecutionProvider"])
    feeds = {"image": images, "eps": np.zeros((len(images), 3), np.float32)}
    if labels is not None:
        feeds["label"] = labels.astype(np.int32)
    return session.run(None, feeds)[0]


def _digits(n=300):
    """Real 8x8 digits in [0, 1] (sklearn's), the shape of the tiny exports."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:n, ..., None] / 16.0).astype(np.float32), d.target[:n] % 4


@pytest.mark.parametrize("quantile", [0.5, 0.99, 1.0])
def test_threshold_is_numpys_quantile_of_onnxruntime_scores(calibration, tiny, quantile):
    model, export_dir = tiny
    x, _ = _digits()
    entry = calibration.calibrate(model, x, quantile=quantile, batch_size=64,
                                  source="sklearn digits[:300]")
    want = float(np.quantile(_onnx_scores(export_dir, x).astype(np.float64), quantile))
    assert entry["threshold"] == pytest.approx(want, rel=1e-4)
    assert entry == {"score": "negative_elbo", "eps": "zeros", "threshold": entry["threshold"],
                     "quantile": quantile, "calibration_examples": 300,
                     "calibration_source": "sklearn digits[:300]"}
    # The per-example scores agree too, not only their quantile.
    np.testing.assert_allclose(calibration.scores(model, x), _onnx_scores(export_dir, x),
                               rtol=1e-4)


def test_conditional_and_dataset_inputs(calibration, conditional):
    model, export_dir = conditional
    x, y = _digits(100)
    entry = calibration.calibrate(model, x, quantile=0.9, labels=y)
    want = float(np.quantile(_onnx_scores(export_dir, x, y), 0.9))
    assert entry["threshold"] == pytest.approx(want, rel=1e-4)
    dataset = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int32))).batch(32)
    assert calibration.calibrate(model, dataset, quantile=0.9)["threshold"] == pytest.approx(
        entry["threshold"], rel=1e-6)
    with pytest.raises(ValueError, match="needs labels"):
        calibration.calibrate(model, x)


def test_refusals(calibration, tiny):
    model, _ = tiny
    x, _ = _digits(10)
    for quantile in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="quantile must be in"):
            calibration.calibrate(model, x, quantile=quantile)
    with pytest.raises(ValueError, match="divide by 255"):
        calibration.calibrate(model, x * 16)
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        calibration.calibrate(model, bad)


def test_export_stores_the_threshold_inside_the_atomic_directory(calibration, export_pkg, tiny,
                                                                 tmp_path, server_module):
    model, _ = tiny
    x, _ = _digits(50)
    entry = calibration.calibrate(model, x, quantile=0.95, source="digits")
    out = tmp_path / "export"
    manifest = export_pkg.export(model, out, formats="onnx", anomaly=entry)
    stored = json.loads((out / "manifest.json").read_text())
    assert stored["anomaly"] == entry == manifest["anomaly"]
    reader = server_module("reader")
    for file_entry in reader.read_manifest(out)["files"]:
        reader.verify_file(out, file_entry)
    for bad, message in [({**entry, "threshold": float("nan")}, "finite threshold"),
                         ({**entry, "threshold": True}, "finite threshold"),
                         ({**entry, "quantile": 1.5}, r"quantile must be in \(0, 1\]"),
                         ([entry], "the dict calibrate")]:
        with pytest.raises(ValueError, match=message):
            export_pkg.export(model, tmp_path / "refused", formats="onnx", anomaly=bad)
        assert not (tmp_path / "refused").exists()  # checked before any work
    with pytest.raises(ValueError, match="export the 'scorer' graph"):
        export_pkg.export(model, tmp_path / "refused", formats="onnx", graphs="decoder",
                          anomaly=entry)
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_trained_model_served_flags_inverted_digits(calibration, export_pkg, mnist8k_dir,
                                                    tmp_path, start_server):
    """Real digits: a model trained on them, calibrated on held-out ones, served."""
    import keras_vae
    from keras_vae import data

    train = data.load(str(mnist8k_dir), "train[:7000]", batch_size=128, shuffle=True, seed=0)
    model = keras_vae.VAE(image_shape=(28, 28, 1), latent_dim=8, arch="mlp", seed=0)
    model.compile()
    model.fit(train, epochs=5, verbose=0)
    x, _ = data.load_arrays(str(mnist8k_dir), "train[7000:]")
    out = tmp_path / "export"
    entry = calibration.calibrate(model, x[:500], quantile=0.99, source="mnist-8k val")
    export_pkg.export(model, out, formats="onnx", anomaly=entry)

    server = start_server(out)
    held_out = x[500:700]  # never seen in training or calibration
    status, normal = server.json("POST", "/v1/score", {"images": held_out.tolist()})
    assert status == 200 and normal["threshold"] == entry["threshold"]
    status, inverted = server.json("POST", "/v1/score", {"images": (1 - held_out).tolist()})
    assert status == 200
    # About 1% of normal digits exceed the 0.99 quantile; every inverted digit does.
    assert np.mean(normal["is_anomaly"]) <= 0.05
    assert all(inverted["is_anomaly"])
    np.testing.assert_allclose(normal["scores"], calibration.scores(model, held_out), rtol=1e-4)
