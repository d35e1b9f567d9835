"""Export to SavedModel, ONNX and LiteRT: parity with Keras, manifest, edge samplers, refusals.

Conversions are slow, so one export of a tiny conv VAE (every graph, format and
precision) is shared by the tests of this module.
"""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import keras_vae
import keras_vae.export
from keras_vae import recipes
from keras_vae.export import parity, reader
from keras_vae.export.litert_format import op_names
from keras_vae.uses import pictures

ROOT = Path(__file__).resolve().parents[2]
EXPORT_SRC = ROOT / "export"
LATENT = 3



# ----------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared():
    """Exports made once for the whole module (filled lazily by the fixtures below)."""
    return {}


@pytest.fixture
def full(shared, make_vae, tmp_path_factory):
    """An untrained tiny conv VAE exported in every format and precision."""
    if "full" not in shared:
        model = make_vae("conv", latent_dim=LATENT)
        out = tmp_path_factory.mktemp("export") / "full"
        manifest = keras_vae.export.export(model, out, quantize=("fp16", "int8"))
        shared["full"] = model, out, manifest
    return shared["full"]


@pytest.fixture
def conditional(shared, make_vae, tmp_path_factory):
    """A conditional (4 classes) mlp VAE: decoder in ONNX and LiteRT (fp32, int8_full)."""
    if "conditional" not in shared:
        model = make_vae("mlp", latent_dim=LATENT, num_classes=4)
        out = tmp_path_factory.mktemp("export") / "conditional"
        manifest = keras_vae.export.export(
            model, out, formats="onnx,litert", quantize="int8_full", graphs=("decoder",),
            class_names=["zero", "one", "two", "three"])
        shared["conditional"] = model, out, manifest
    return shared["conditional"]


@pytest.fixture(scope="module")
def edge(tmp_path_factory, device_blocker):
    """The samplers and their modules copied alone to a 'device' folder, beside the blocker."""
    root = tmp_path_factory.mktemp("device")
    for name in ("sample_onnx.py", "sample_litert.py", "sampler.py", "reader.py", "images.py",
                 "recipes.py"):
        shutil.copy(EXPORT_SRC / name, root / name)
    (root / "blocker").symlink_to(device_blocker)
    return root


def run_edge(edge, script, *args, **env):
    """Runs a sampler as a plain script where TensorFlow/Keras/keras_vae cannot be imported."""
    env = {"PYTHONPATH": str(edge / "blocker"), "PATH": "/usr/bin:/bin", "HOME": str(edge),
           **env}
    return subprocess.run([sys.executable, str(edge / script), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=edge, timeout=120)


def decode(model, z, labels=None):
    labels = None if labels is None else tf.constant(labels)
    return model.decode(tf.constant(z), labels).numpy()


def entry(manifest, graph, fmt, precision="fp32"):
    return reader.find_file(manifest, graph, fmt, precision)


# ------------------------------------------------------------------ parity


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_matches_keras(full, batch):
    model, out, _ = full
    rng = np.random.default_rng(batch)
    z = rng.standard_normal((batch, LATENT), dtype=np.float32)
    x = rng.random((batch, 8, 8, 1), dtype=np.float32)
    eps = rng.standard_normal((batch, LATENT), dtype=np.float32)

    decoder = ort.InferenceSession(str(out / "decoder.onnx"))
    assert [i.name for i in decoder.get_inputs()] == ["z"]
    assert [o.name for o in decoder.get_outputs()] == ["x"]
    np.testing.assert_allclose(decoder.run(["x"], {"z": z})[0], decode(model, z), atol=1e-5)

    encoder = ort.InferenceSession(str(out / "encoder.onnx"))
    mean, log_var = encoder.run(["z_mean", "z_log_var"], {"image": x})
    want_mean, want_log_var = model.encode(tf.constant(x))
    np.testing.assert_allclose(mean, want_mean.numpy(), atol=1e-5)
    np.testing.assert_allclose(log_var, want_log_var.numpy(), atol=1e-5)

    scorer = ort.InferenceSession(str(out / "scorer.onnx"))
    for noise in (eps, np.zeros_like(eps)):  # eps = 0: reconstruction at z_mean
        got = scorer.run(["negative_elbo"], {"image": x, "eps": noise})[0]
        want = model.negative_elbo(tf.constant(x), eps=tf.constant(noise)).numpy()
        assert got.shape == (batch,)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # eps = 0 really is the reconstruction at the posterior mean plus the KL.
    terms = model.elbo_terms(tf.constant(x), eps=tf.zeros((batch, LATENT)))
    np.testing.assert_allclose(
        scorer.run(None, {"image": x, "eps": np.zeros_like(eps)})[0],
        (terms["reconstruction_loss"] + terms["kl_loss"]).numpy(), rtol=1e-5)


@pytest.mark.parametrize("batch", [1, 6])
def test_litert_matches_keras(full, batch):
    model, out, manifest = full
    z = np.random.default_rng(batch).standard_normal((batch, LATENT), dtype=np.float32)
    want = decode(model, z)
    for precision in ("fp32", "fp16", "int8_dynamic", "int8_full"):
        path = out / entry(manifest, "decoder", "litert", precision)["path"]
        runner = Interpreter(model_path=str(path)).get_signature_runner("serving_default")
        got = runner(z=z)["x"]
        assert got.shape == (batch, 8, 8, 1) and got.dtype == np.float32
        if precision == "fp32":
            np.testing.assert_allclose(got, want, atol=1e-5)
        else:  # pixels in [0, 1]: peak 1
            assert parity.psnr(want, got, 1.0) >= parity.PSNR_BOUNDS[precision]
            assert np.abs(got - want).max() < 0.05
    x = np.random.default_rng(9).random((batch, 8, 8, 1), dtype=np.float32)
    runner = Interpreter(model_path=str(out / "encoder.tflite")).get_signature_runner()
    np.testing.assert_allclose(runner(image=x)["z_mean"],
                               model.encode(tf.constant(x))[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("batch", [1, 4])
def test_savedmodel_matches_keras(full, batch):
    model, out, _ = full
    z = np.random.default_rng(batch).standard_normal((batch, LATENT), dtype=np.float32)
    serve = tf.saved_model.load(str(out / "decoder_savedmodel")).signatures["serving_default"]
    np.testing.assert_allclose(serve(z=tf.constant(z))["x"].numpy(), decode(model, z), atol=1e-5)


def _conv_model(weight, strides=(1, 1), pads=(1, 1, 1, 1)):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], strides=list(strides),
                          pads=list(pads), kernel_shape=list(weight.shape[2:]))],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, weight.shape[1], 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None, None, None])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.full(weight.shape[0], 0.25, np.float32), "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_narrow_convs_become_exact_transposed_convs():
    from keras_vae.export.onnx_format import transpose_narrow_convs

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 30, 9, 9), dtype=np.float32)
    for out_channels, kernel, pads in ((1, 3, (1, 1, 1, 1)), (3, 5, (2, 1, 0, 2)),
                                       (1, 3, (0, 0, 0, 0))):
        w = rng.standard_normal((out_channels, 30, kernel, kernel), dtype=np.float32)
        proto = _conv_model(w, pads=pads)
        want = ort.InferenceSession(proto.SerializeToString()).run(["y"], {"x": x})[0]
        assert transpose_narrow_convs(proto) == 1
        onnx.checker.check_model(proto, full_check=True)
        assert [n.op_type for n in proto.graph.node] == ["ConvTranspose"]
        got = ort.InferenceSession(proto.SerializeToString()).run(["y"], {"x": x})[0]
        assert got.shape == want.shape
        # sums of 270-750 products of N(0, 1) values (|y| up to ~60): float32 rounding
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
        # numpy: the same correlation, computed directly
        padded = np.pad(x.astype(np.float64),
                        ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
        direct = np.zeros(want.shape)
        for i in range(want.shape[2]):
            for j in range(want.shape[3]):
                patch = padded[:, None, :, i:i + kernel, j:j + kernel]
                direct[:, :, i, j] = (patch * w).sum(axis=(2, 3, 4)) + 0.25
        np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-4)
    # Left alone: strided, wide (16 output channels), padded as wide as the kernel.
    for weight, strides, pads in ((rng.standard_normal((1, 30, 3, 3)), (2, 2), (1, 1, 1, 1)),
                                  (rng.standard_normal((16, 30, 3, 3)), (1, 1), (1, 1, 1, 1)),
                                  (rng.standard_normal((1, 30, 3, 3)), (1, 1), (3, 0, 0, 0))):
        proto = _conv_model(weight.astype(np.float32), strides=strides, pads=pads)
        assert transpose_narrow_convs(proto) == 0
        assert [n.op_type for n in proto.graph.node] == ["Conv"]


def test_decoder_last_conv_is_transposed_in_onnx(tmp_path):
    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=LATENT, arch="conv", seed=0,
                          arch_options={"filters": [16, 16], "dense_units": 8})
    manifest = keras_vae.export.export(model, tmp_path / "e", formats="onnx",
                                       graphs=("decoder", "scorer"))
    for e in manifest["files"]:
        proto = onnx.load(str(tmp_path / "e" / e["path"]))
        # the encoder's stride-2 convolutions stay; the 1-channel logits layer is transposed
        transposed = [n.name for n in proto.graph.node
                      if n.op_type == "ConvTranspose" and n.name.endswith("/transposed")]
        assert len(transposed) == 1, [n.name for n in proto.graph.node]
        assert e["rewrites"] == {"narrow_convs_transposed": 1}
    z = np.random.default_rng(1).standard_normal((5, LATENT), dtype=np.float32)
    decoder = next(e for e in manifest["files"] if e["graph"] == "decoder")
    got = ort.InferenceSession(str(tmp_path / "e" / decoder["path"])).run(["x"], {"z": z})[0]
    np.testing.assert_allclose(got, decode(model, z), atol=1e-5)


def test_int8_onnx_is_quantized_and_close(full):
    model, out, manifest = full
    e = entry(manifest, "decoder", "onnx", "int8_dynamic")
    ops = {node.op_type for node in onnx.load(str(out / e["path"])).graph.node}
    assert "MatMulInteger" in ops  # the dense layers are int8
    assert "ConvInteger" not in ops  # convolutions stay float32 (faster, closer)
    z = np.random.default_rng(0).standard_normal((7, LATENT), dtype=np.float32)
    got = ort.InferenceSession(str(out / e["path"])).run(["x"], {"z": z})[0]
    assert parity.psnr(decode(model, z), got, 1.0) >= parity.PSNR_BOUNDS["int8_dynamic"]


# ---------------------------------------------------------------- manifest


def test_manifest_describes_every_file(full):
    model, out, manifest = full
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["keras_vae_version"] == keras_vae.__version__
    assert manifest["latent_dim"] == LATENT and manifest["image"]["shape"] == [8, 8, 1]
    assert manifest["image"]["value_range"] == [0.0, 1.0]
    assert "not logits" in manifest["image"]["meaning"]
    assert manifest["num_classes"] == 0 and manifest["class_names"] is None
    assert manifest["model"]["exported_dtype"] == "float32"
    assert int(model.optimizer.iterations.numpy()) == 0  # never trained, never called

    expected = {f"{g}{s}" for g in ("decoder", "encoder", "scorer")
                for s in ("_savedmodel", ".onnx", ".tflite")}
    expected |= {"decoder.int8_dynamic.onnx", "decoder.fp16.tflite",
                 "decoder.int8_dynamic.tflite", "decoder.int8_full.tflite"}
    listed = {e["path"] for e in manifest["files"]}
    assert listed == expected
    bundle = {name.split("/")[0] for name in keras_vae.export.DEVICE_FILES} | {"README.md"}
    assert {p.name for p in out.iterdir()} == expected | bundle | {"manifest.json"}  # no temp

    for e in manifest["files"]:
        path = out / e["path"]
        if path.is_file():  # checksum recomputed independently of recipes
            assert e["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            assert e["size_bytes"] == path.stat().st_size
        else:
            assert e["sha256"] == recipes.sha256_of(path)
        assert all(s["dtype"] in ("float32", "int32") for s in e["inputs"] + e["outputs"])
        assert all(s["shape"][0] is None for s in e["inputs"] + e["outputs"])
        p = e["parity"]
        assert p["batch_sizes"] == [1, 7]
        if e["precision"] == "fp32":
            assert p["max_abs_error"] <= p["tolerance"]
            if e["graph"] == "decoder":  # images in [0, 1]: the absolute 1e-5
                assert p["tolerance"] == 1e-5
        else:
            assert p["psnr_db"] >= p["psnr_bound_db"] == parity.PSNR_BOUNDS[e["precision"]]

    dec = entry(manifest, "decoder", "onnx")
    assert dec["opset"] >= 17
    assert dec["inputs"] == [{"name": "z", "shape": [None, LATENT], "dtype": "float32"}]
    assert dec["outputs"] == [{"name": "x", "shape": [None, 8, 8, 1], "dtype": "float32"}]
    proto = onnx.load(str(out / dec["path"]))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    onnx.checker.check_model(proto, full_check=True)
    scorer = entry(manifest, "scorer", "litert")
    assert [i["name"] for i in scorer["inputs"]] == ["image", "eps"]
    assert scorer["outputs"] == [{"name": "negative_elbo", "shape": [None], "dtype": "float32"}]
    assert "eps = 0" in manifest["graphs"]["scorer"]["meaning"]


def test_litert_files_have_no_flex_or_custom_ops(full):
    _, out, _ = full
    files = sorted(out.glob("*.tflite"))
    assert len(files) == 6
    for path in files:
        data = path.read_bytes()
        ops = op_names(data)
        assert ops and all(op.isupper() and not op.startswith("CUSTOM") for op in ops), ops
        assert b"Flex" not in data
    # The op reader does see a Flex op: convert a graph that needs one.
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [tf.function(tf.math.erf, input_signature=[tf.TensorSpec((None,), tf.float32)])
         .get_concrete_function()])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS,
                                           tf.lite.OpsSet.SELECT_TF_OPS]
    flex = [op for op in op_names(converter.convert()) if op.startswith("CUSTOM:Flex")]
    assert flex


def _transposed_conv_numpy(x, kernel, bias):
    """TensorFlow's 3x3 stride-2 `same` transposed convolution by scattering, in float64.

    Input pixel (i, j) adds `x[i, j] . kernel[t, u]` to output (2i + t, 2j + u);
    `same` crops the output to its first 2H x 2W pixels.
    """
    batch, height, width, _ = x.shape
    out = np.zeros((batch, 2 * height + 1, 2 * width + 1, kernel.shape[2]))
    for t in range(3):
        for u in range(3):
            out[:, t:t + 2 * height:2, u:u + 2 * width:2] += np.einsum(
                "bhwi,oi->bhwo", x.astype(np.float64), kernel[t, u].astype(np.float64))
    return out[:, :2 * height, :2 * width] + bias


def test_subpixel_form_equals_transposed_conv():
    from keras_vae.export import subpixel

    rng = np.random.default_rng(0)
    for height, width, filters in ((7, 7, 5), (4, 6, 1)):
        x = rng.standard_normal((2, height, width, 3), dtype=np.float32)
        layer = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same",
                                             activation="relu")
        layer.build(x.shape)
        layer.bias.assign(rng.standard_normal(filters).astype(np.float32))
        kernel, bias = (np.asarray(v) for v in (layer.kernel, layer.bias))
        want = np.maximum(_transposed_conv_numpy(x, kernel, bias), 0)
        np.testing.assert_allclose(np.asarray(layer(x)), want, atol=1e-5)  # the reference is TF's
        assert subpixel.applies(layer)
        with subpixel.transposed_convs_as_subpixel([layer, layer]) as switched:
            got = np.asarray(layer(x))
        assert switched == 1 and "call" not in vars(layer)  # its own call is back
        assert got.shape == (2, 2 * height, 2 * width, filters)
        np.testing.assert_allclose(got, want, atol=1e-5)
    for other in (keras.layers.Conv2DTranspose(4, 3, strides=1, padding="same"),
                  keras.layers.Conv2DTranspose(4, 5, strides=2, padding="same"),
                  keras.layers.Conv2DTranspose(4, 3, strides=2, padding="valid"),
                  keras.layers.Conv2D(4, 3)):
        assert not subpixel.applies(other)


def test_litert_decoder_has_no_transposed_convs(full):
    model, out, manifest = full
    decoder = entry(manifest, "decoder", "litert")
    assert decoder["rewrites"] == {"transposed_convs_as_subpixel": 2}
    assert "TRANSPOSE_CONV" not in decoder["ops"] and "DEPTH_TO_SPACE" in decoder["ops"]
    # the ONNX decoder keeps ConvTranspose, which onnxruntime runs faster
    onnx_ops = {n.op_type for n in onnx.load(str(out / "decoder.onnx")).graph.node}
    assert "ConvTranspose" in onnx_ops and "DepthToSpace" not in onnx_ops
    # the layers run their own `call` again after the export
    assert not any("call" in vars(layer) for layer in model.decoder.layers)


def test_subpixel_interleaves_after_the_activation(make_vae):
    # int8 files quantize each CONV_2D output; with bias and ReLU before the depth-to-space
    # the converter fuses them and the range quantized is the post-ReLU one (a trained demo
    # decoder: 41.9 dB PSNR, against 37.2 dB with the interleave first).
    from keras_vae.export import graphs

    traced = graphs.trace(make_vae("conv", latent_dim=LATENT), "decoder", subpixel=True)
    ops = traced.concrete.graph.get_operations()
    interleaves = [op for op in ops if op.type == "DepthToSpace"]
    assert len(interleaves) == traced.rewrites["transposed_convs_as_subpixel"] == 2
    assert all(op.inputs[0].op.type == "Relu" for op in interleaves)


# ----------------------------------------------------------- edge samplers


def test_blocker_really_blocks(edge):
    env = {"PYTHONPATH": str(edge / "blocker"), "PATH": "/usr/bin:/bin"}
    for module in ("tensorflow", "keras", "keras_vae", "keras_vae.export", "tf2onnx"):
        r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                           text=True, env=env, timeout=60)
        assert r.returncode != 0 and "test blocker" in r.stderr, module


@pytest.mark.parametrize("script,precision", [("sample_onnx.py", "fp32"),
                                              ("sample_litert.py", "fp32"),
                                              ("sample_litert.py", "int8_full")])
def test_samplers_match_keras_without_tensorflow(full, edge, tmp_path, script, precision):
    model, out, _ = full
    npy = tmp_path / "images.npy"
    r = run_edge(edge, script, out, "--n", 5, "--seed", 3, "--precision", precision,
                 "--out", npy)
    assert r.returncode == 0, r.stderr
    want = decode(model, keras_vae.prior_z(5, LATENT, seed=3))
    np.testing.assert_allclose(want, model.sample(5, seed=3), atol=1e-6)
    got = np.load(npy)
    if precision == "fp32":
        np.testing.assert_allclose(got, want, atol=1e-5)
    else:
        assert parity.psnr(want, got, 1.0) >= parity.PSNR_BOUNDS[precision]

    png = tmp_path / "grid.png"
    r = run_edge(edge, script, out, "--n", 5, "--seed", 3, "--precision", precision,
                 "--out", png)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    picture = np.asarray(Image.open(png))
    scale = 64 // 8
    expected = pictures.grid(want)  # the library's own grid of the Keras images
    assert picture.shape == tuple(s * scale for s in expected.shape)
    diff = np.abs(picture[::scale, ::scale].astype(int) - expected.astype(int))
    assert diff.max() <= (1 if precision == "fp32" else 8)


def test_litert_sampler_reads_manifests_that_name_the_format_tflite(full, edge, tmp_path):
    model, out, manifest = full
    assert {e["format"] for e in manifest["files"]} == {"savedmodel", "onnx", "litert"}
    old = _copy(out, tmp_path)

    def name_tflite(m):
        for e in m["files"]:
            e["format"] = "tflite" if e["format"] == "litert" else e["format"]

    _rewrite_manifest(old, name_tflite)
    for folder, npy in ((out, tmp_path / "new.npy"), (old, tmp_path / "old.npy")):
        r = run_edge(edge, "sample_litert.py", folder, "--n", 3, "--seed", 1, "--out", npy)
        assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "old.npy"), np.load(tmp_path / "new.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "old.npy"),
                               decode(model, keras_vae.prior_z(3, LATENT, seed=1)), atol=1e-5)


def test_tflite_is_another_name_of_the_litert_format():
    assert "litert" in keras_vae.export.FORMATS and "tflite" not in keras_vae.export.FORMATS
    assert keras_vae.export.get("tflite") is keras_vae.export.get("litert")
    assert keras_vae.export.filename("decoder", "tflite", "int8_full") == "decoder.int8_full.tflite"
    assert keras_vae.export.filename("decoder", "litert") == "decoder.tflite"
    assert keras_vae.export.export_tflite is keras_vae.export.export_litert
    with pytest.raises(ValueError, match="valid names: .*'litert'"):
        keras_vae.export.get("lite")


def test_sampler_interpolates_between_seeds(full, edge, tmp_path):
    model, out, _ = full
    r = run_edge(edge, "sample_onnx.py", out, "--interpolate", 4, 9, "--steps", 5,
                 "--out", tmp_path / "path.npy")
    assert r.returncode == 0, r.stderr
    z = recipes.interpolate(4, 9, 5, LATENT)
    a, b = keras_vae.prior_z(1, LATENT, seed=4)[0], keras_vae.prior_z(1, LATENT, seed=9)[0]
    np.testing.assert_array_equal(z[0], a)
    np.testing.assert_array_equal(z[-1], b)
    # Spherical: the midpoint is (a + b) / (2 cos(omega / 2)), longer than the linear one.
    omega = np.arccos(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    np.testing.assert_allclose(z[2], (a + b) / (2 * np.cos(omega / 2)), rtol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "path.npy"), decode(model, z), atol=1e-5)


def test_sampler_without_pillow_writes_npy(full, edge, tmp_path):
    model, out, _ = full
    r = run_edge(edge, "sample_onnx.py", out, "--n", 2, "--seed", 1,
                 "--out", tmp_path / "g.png", BLOCK_MODULES="PIL")
    assert r.returncode == 0, r.stderr
    assert "Pillow is not installed" in r.stderr and not (tmp_path / "g.png").exists()
    np.testing.assert_allclose(np.load(tmp_path / "g.npy"),
                               decode(model, keras_vae.prior_z(2, LATENT, seed=1)), atol=1e-5)


def test_conditional_export_and_sampling(conditional, edge, tmp_path):
    model, out, manifest = conditional
    assert manifest["num_classes"] == 4
    assert manifest["class_names"] == ["zero", "one", "two", "three"]
    dec = entry(manifest, "decoder", "litert", "int8_full")
    assert dec["inputs"][1] == {"name": "label", "shape": [None], "dtype": "int32"}
    z = keras_vae.prior_z(6, LATENT, seed=2)
    labels = np.resize(np.array([1, 3], np.int32), 6)
    want = decode(model, z, labels)
    assert np.abs(want - decode(model, z, 3 - labels)).max() > 1e-4  # labels matter
    for script in ("sample_onnx.py", "sample_litert.py"):
        r = run_edge(edge, script, out, "--n", 6, "--seed", 2, "--class-ids", 1, 3,
                     "--out", tmp_path / f"{script}.npy")
        assert r.returncode == 0, r.stderr
        np.testing.assert_allclose(np.load(tmp_path / f"{script}.npy"), want, atol=1e-5)
    r = run_edge(edge, "sample_onnx.py", out, "--n", 2)
    assert r.returncode == 2 and "--class-ids" in r.stderr and "zero, one" in r.stderr
    r = run_edge(edge, "sample_onnx.py", out, "--n", 2, "--class-ids", 4)
    assert r.returncode == 2 and "[0, 4)" in r.stderr


# ------------------------------------------------------- broken exports


def _copy(out, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    return broken


def _rewrite_manifest(directory, change):
    manifest = json.loads((directory / "manifest.json").read_text())
    change(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def _truncate(directory, name, refresh_manifest):
    path = directory / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    if refresh_manifest:  # a consistent manifest: the runtime itself must fail cleanly
        def change(m):
            e = next(e for e in m["files"] if e["path"] == name)
            e["size_bytes"], e["sha256"] = path.stat().st_size, recipes.sha256_of(path)
        _rewrite_manifest(directory, change)


def _flip_byte(directory, name):
    data = bytearray((directory / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (directory / name).write_bytes(bytes(data))


def _set_latent(directory, n):
    _rewrite_manifest(directory, lambda m: m.update(latent_dim=n))


def _set_dtype(directory, name):
    def change(m):
        next(e for e in m["files"] if e["path"] == name)["inputs"][0]["dtype"] = "float16"
    _rewrite_manifest(directory, change)


BREAKAGES = {
    "truncated onnx": ("sample_onnx.py", lambda d: _truncate(d, "decoder.onnx", False),
                       "truncated"),
    "truncated onnx, manifest updated": (
        "sample_onnx.py", lambda d: _truncate(d, "decoder.onnx", True), "cannot load"),
    "truncated tflite": ("sample_litert.py", lambda d: _truncate(d, "decoder.tflite", False),
                         "truncated"),
    "truncated tflite, manifest updated": (
        "sample_litert.py", lambda d: _truncate(d, "decoder.tflite", True), "cannot load"),
    "changed byte": ("sample_litert.py", lambda d: _flip_byte(d, "decoder.tflite"), "SHA-256"),
    "missing file": ("sample_onnx.py", lambda d: (d / "decoder.onnx").unlink(), "missing"),
    "missing manifest": ("sample_onnx.py", lambda d: (d / "manifest.json").unlink(),
                         "No manifest.json"),
    "corrupt manifest": ("sample_litert.py",
                         lambda d: (d / "manifest.json").write_text("{not json"), "not valid"),
    "wrong latent size": ("sample_onnx.py", lambda d: _set_latent(d, LATENT + 1),
                          "latent size"),
    "wrong dtype": ("sample_litert.py", lambda d: _set_dtype(d, "decoder.tflite"), "float16"),
    "missing precision": ("sample_onnx.py",
                          lambda d: _rewrite_manifest(d, lambda m: m["files"].clear()),
                          "has no decoder"),
}


@pytest.mark.parametrize("case", sorted(BREAKAGES))
def test_samplers_fail_cleanly(full, edge, tmp_path, case):
    _, out, _ = full
    script, breakage, message = BREAKAGES[case]
    broken = _copy(out, tmp_path)
    breakage(broken)
    r = run_edge(edge, script, broken, "--n", 2, "--out", tmp_path / "g.png")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "error:" in r.stderr
    assert message in r.stderr, r.stderr
    assert not (tmp_path / "g.png").exists()


def test_manifest_of_another_model_is_refused(full, make_vae, edge, tmp_path):
    _, out, _ = full
    keras.utils.set_random_seed(1)
    other = keras_vae.export.export(make_vae("conv", latent_dim=LATENT), tmp_path / "other",
                                    formats="onnx", graphs="decoder")
    broken = _copy(out, tmp_path)
    (broken / "manifest.json").write_text(json.dumps(other))
    r = run_edge(edge, "sample_onnx.py", broken, "--n", 2)
    assert r.returncode == 2 and "another export" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------ refusals and models


@keras.saving.register_keras_serializable(package="keras_vae_tests")
class AlwaysNoisy(keras.layers.Layer):
    """Adds N(0, 1) noise even at inference: not exportable."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(0)

    def call(self, x):
        return x + keras.random.normal(keras.ops.shape(x), seed=self.seed_generator)


def test_refuses_decoder_with_random_ops(make_vae, tmp_path):
    base = make_vae("mlp", latent_dim=LATENT)
    z = keras.Input((LATENT,), name="z")
    logits = keras.layers.Reshape((8, 8, 1))(keras.layers.Dense(64)(AlwaysNoisy()(z)))
    model = keras_vae.VAE(base.encoder, keras.Model([z], logits, name="decoder"))
    for fn, name in ((keras_vae.export.export_onnx, "decoder.onnx"),
                     (keras_vae.export.export_litert, "decoder.tflite"),
                     (keras_vae.export.export_saved_model, "decoder_savedmodel")):
        with pytest.raises(keras_vae.export.ExportError, match="random ops.*Random"):
            fn(model, tmp_path / name)
        assert list(tmp_path.iterdir()) == []  # nothing written, not even a temp file
    with pytest.raises(keras_vae.export.ExportError, match="random ops"):
        keras_vae.export.export(model, tmp_path / "all", formats="onnx")
    assert not (tmp_path / "all").exists()
    # The encoder and scorer of that model are deterministic and do export.
    e = keras_vae.export.export_onnx(model, tmp_path / "encoder.onnx", graph="encoder")
    assert e["parity"]["max_abs_error"] <= 1e-5


def test_untrained_model_exports(make_vae, tmp_path):
    model = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=2, arch="mlp",
                          arch_options={"hidden_units": [8]})  # never compiled or called
    e = keras_vae.export.export_onnx(model, tmp_path / "decoder.onnx")
    z = keras_vae.prior_z(3, 2, seed=0)
    got = ort.InferenceSession(str(tmp_path / "decoder.onnx")).run(["x"], {"z": z})[0]
    np.testing.assert_allclose(got, decode(model, z), atol=1e-5)
    assert e["sha256"] == recipes.sha256_of(tmp_path / "decoder.onnx")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_model_exports_float32(make_vae, tmp_path, policy):
    keras.config.set_dtype_policy(policy)
    try:
        model = make_vae("mlp", latent_dim=LATENT)
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.decoder.layers[-2].compute_dtype == policy.removeprefix("mixed_")
    manifest = keras_vae.export.export(model, tmp_path / "mixed", formats="onnx,litert",
                                       graphs="decoder")
    assert manifest["model"]["trained_dtype_policy"] == policy
    proto = onnx.load(str(tmp_path / "mixed" / "decoder.onnx"))
    half = (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)
    kinds = {t.data_type for t in proto.graph.initializer}
    assert onnx.TensorProto.FLOAT in kinds and not kinds & set(half)
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
               for v in [*proto.graph.input, *proto.graph.output])
    casts = {a.i for n in proto.graph.node if n.op_type == "Cast" for a in n.attribute}
    assert not casts & set(half)
    tflite = op_names((tmp_path / "mixed" / "decoder.tflite").read_bytes())
    assert "CAST" not in tflite and "DEQUANTIZE" not in tflite
    # float32 copy of the weights: the export is near the float16 model, exact in float32.
    z = keras_vae.prior_z(4, LATENT, seed=0)
    got = ort.InferenceSession(str(tmp_path / "mixed" / "decoder.onnx")).run(["x"], {"z": z})[0]
    np.testing.assert_allclose(got, decode(model, z), atol=2e-2)  # bfloat16: 8-bit mantissa
    w = [layer.get_weights() for layer in model.decoder.layers if layer.get_weights()]
    h = np.maximum(z @ w[0][0] + w[0][1], 0)
    np.testing.assert_allclose(got.reshape(4, -1), 1 / (1 + np.exp(-(h @ w[1][0] + w[1][1]))),
                               atol=1e-5)


def test_bad_arguments_are_named(full, tmp_path):
    model = full[0]
    with pytest.raises(ValueError, match="valid names.*onnx"):
        keras_vae.export.export(model, tmp_path / "a", formats="pdf")
    with pytest.raises(ValueError, match="needs format litert"):
        keras_vae.export.export(model, tmp_path / "b", formats="onnx", quantize="fp16")
    with pytest.raises(ValueError, match="float32 only"):
        keras_vae.export.export_saved_model(model, tmp_path / "c", quantize="int8_full")
    with pytest.raises(ValueError, match="valid names"):
        keras_vae.export.export_onnx(model, tmp_path / "d.onnx", graph="generator")
    with pytest.raises(FileExistsError):
        keras_vae.export.export(model, full[1], formats="onnx")
    assert list(tmp_path.iterdir()) == []


def test_failed_check_leaves_no_file(full, tmp_path, monkeypatch):
    monkeypatch.setattr(parity, "FP32_TOLERANCE", -1.0)  # every comparison now fails
    with pytest.raises(keras_vae.export.ExportError, match="tolerance"):
        keras_vae.export.export_litert(full[0], tmp_path / "decoder.tflite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_export_prints_table(full, tmp_path, capsys):
    from keras_vae import cli, saving

    saving.save_model(full[0], tmp_path / "model.keras")
    code = cli.main(["export", str(tmp_path / "model.keras"), "--formats", "onnx,tflite",
                     "--quantize", "fp16", "--graphs", "decoder", "--out",
                     str(tmp_path / "export")])
    printed = capsys.readouterr().out
    assert code == 0, printed
    for name in ("decoder.onnx", "decoder.tflite", "decoder.fp16.tflite", "max abs err"):
        assert name in printed
    manifest = reader.read_manifest(tmp_path / "export")
    assert len(manifest["files"]) == 3
    # `tflite` names the litert format; the manifest says litert.
    assert sorted(e["format"] for e in manifest["files"]) == ["litert", "litert", "onnx"]
    code = cli.main(["export", str(tmp_path / "model.keras"), "--formats", "pdf",
                     "--out", str(tmp_path / "x")])
    assert code == 2 and "valid names" in capsys.readouterr().err
