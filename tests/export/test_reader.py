"""The export folder is untrusted input to the device: the samplers read only what they check.

Every file a manifest names must be a regular file inside the folder (no
`..`, absolute path or symbolic link), read with a bounded size (a FIFO or a
huge file costs nothing), an ONNX file must not pull in external data, and
the manifest's whole layout is checked: each hostile folder gets exit 2, a
one-line message naming the problem and no traceback, and the messages never
reveal another file's size or checksum.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import keras_vae
import keras_vae.export
from keras_vae import recipes
from keras_vae.export import reader, sample_onnx

EXPORT_SRC = Path(reader.__file__).parent
# What a device needs beside the export's files to run sample_onnx.py.
SAMPLER_FILES = ("sample_onnx.py", "sampler.py", "reader.py", "images.py", "recipes.py")


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """A tiny mlp decoder exported to ONNX (the folder every hostile copy starts from)."""
    vae = keras_vae.VAE(image_shape=(8, 8, 1), latent_dim=3, arch="mlp",
                        arch_options={"hidden_units": [8]}, seed=0)
    out = tmp_path_factory.mktemp("export") / "good"
    keras_vae.export.export(vae, out, formats="onnx", graphs=("decoder",))
    return out


@pytest.fixture
def folder(export_dir, tmp_path):
    """A fresh copy of the good export, with a secret file beside it (outside the folder)."""
    copy = tmp_path / "export"
    shutil.copytree(export_dir, copy)
    secret = tmp_path / "secret.onnx"
    shutil.copyfile(copy / "decoder.onnx", secret)
    return copy


def manifest_of(folder):
    return json.loads((folder / "manifest.json").read_text())


def rewrite(folder, change):
    manifest = manifest_of(folder)
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def decoder_entry(manifest):
    return next(e for e in manifest["files"] if e["graph"] == "decoder")


def sample(folder, capsys, *extra):
    """Runs sample_onnx in-process; returns (exit code, stderr)."""
    out = folder.parent / "grid.png"
    code = sample_onnx.main([str(folder), "--n", "2", "--out", str(out), *extra])
    err = capsys.readouterr().err
    if code:
        assert not out.exists()
    return code, err


def refused(folder, capsys, message):
    code, err = sample(folder, capsys)
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert "error:" in err and message in err, err
    return err


def test_good_folder_samples(folder, capsys):
    code, err = sample(folder, capsys)
    assert code == 0, err
    assert (folder.parent / "grid.png").stat().st_size > 0


@pytest.mark.parametrize("name", ["../secret.onnx", "ABSOLUTE", "./decoder.onnx",
                                  "sub/../../secret.onnx", "", "decoder.onnx\\..",
                                  ".."])
def test_paths_outside_the_folder_are_refused(folder, capsys, name):
    secret = folder.parent / "secret.onnx"
    name = str(secret) if name == "ABSOLUTE" else name
    digest = hashlib.sha256(secret.read_bytes()).hexdigest()

    def change(m):
        e = decoder_entry(m)
        e["path"], e["size_bytes"], e["sha256"] = name, secret.stat().st_size, digest

    rewrite(folder, change)
    err = refused(folder, capsys, "manifest.json" if name else "path")
    assert str(secret.stat().st_size) not in err and digest[:8] not in err


def test_symlinked_file_is_refused(folder, capsys):
    (folder / "decoder.onnx").unlink()
    (folder / "decoder.onnx").symlink_to(folder.parent / "secret.onnx")
    refused(folder, capsys, "symbolic link")


def test_symlinked_subfolder_is_refused(folder, capsys):
    outside = folder.parent / "outside"
    outside.mkdir()
    shutil.move(folder / "decoder.onnx", outside / "decoder.onnx")
    (folder / "sub").symlink_to(outside)
    rewrite(folder, lambda m: decoder_entry(m).update(path="sub/decoder.onnx"))
    refused(folder, capsys, "symbolic link")


def test_symlinked_manifest_is_refused(folder, capsys):
    real = folder.parent / "manifest.json"
    shutil.move(folder / "manifest.json", real)
    (folder / "manifest.json").symlink_to(real)
    refused(folder, capsys, "symbolic link")


@pytest.mark.parametrize("which", ["decoder.onnx", "manifest.json"])
def test_fifo_does_not_hang(folder, which, tmp_path):
    """A FIFO in place of a file: refused at once, in a process that would otherwise block."""
    device = tmp_path / "device"
    device.mkdir()
    for name in SAMPLER_FILES:
        shutil.copy(EXPORT_SRC / name, device / name)
    (folder / which).unlink()
    os.mkfifo(folder / which)
    start = time.monotonic()
    r = subprocess.run([sys.executable, str(device / "sample_onnx.py"), str(folder), "--n", "2",
                        "--out", str(tmp_path / "g.png")], capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert time.monotonic() - start < 30
    assert r.returncode == 2 and "not a regular file" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_directory_in_place_of_the_decoder_is_refused(folder, capsys):
    (folder / "decoder.onnx").unlink()
    (folder / "decoder.onnx").mkdir()
    refused(folder, capsys, "not a regular file")


def test_reads_are_bounded(folder, capsys, monkeypatch):
    size = (folder / "decoder.onnx").stat().st_size
    # A manifest that declares more than the cap: refused before a byte is read.
    rewrite(folder, lambda m: decoder_entry(m).update(size_bytes=3 << 30))
    refused(folder, capsys, "larger than the 2048 MiB")
    # A file over the cap, whatever the manifest says.
    rewrite(folder, lambda m: decoder_entry(m).update(size_bytes=size))
    monkeypatch.setattr(reader, "MAX_FILE_BYTES", size - 1)
    refused(folder, capsys, "larger than")


def test_oversized_manifest_is_refused(folder, capsys):
    manifest = manifest_of(folder)
    manifest["padding"] = "x" * (reader.MAX_MANIFEST_BYTES + 1)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    refused(folder, capsys, "larger than")


def test_messages_reveal_no_sizes_or_checksums(folder, capsys):
    path = folder / "decoder.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    entry = decoder_entry(manifest_of(folder))
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    err = refused(folder, capsys, "truncated")
    for secret in (str(path.stat().st_size), str(entry["size_bytes"]), actual[:8],
                   entry["sha256"][:8]):
        assert secret not in err
    # Same size, one byte changed: the checksum message quotes no digest.
    rewrite(folder, lambda m: decoder_entry(m).update(size_bytes=path.stat().st_size))
    err = refused(folder, capsys, "SHA-256")
    assert actual[:8] not in err and entry["sha256"][:8] not in err


def test_onnx_external_data_is_refused(folder, capsys):
    proto = onnx.load(str(folder / "decoder.onnx"))
    onnx.save_model(proto, str(folder / "decoder.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    assert (folder / "weights.bin").exists()
    path = folder / "decoder.onnx"
    rewrite(folder, lambda m: decoder_entry(m).update(
        size_bytes=path.stat().st_size, sha256=recipes.sha256_of(path)))
    refused(folder, capsys, "external data")


def test_onnx_external_data_check_on_real_files(export_dir):
    content = (export_dir / "decoder.onnx").read_bytes()
    assert reader.onnx_uses_external_data(content) is False
    with pytest.raises(reader.EdgeError, match="well-formed"):
        reader.onnx_uses_external_data(content[: len(content) // 2])
    # A tensor in a node attribute (a Constant) with data_location=EXTERNAL is found too.
    tensor = onnx.helper.make_tensor("c", onnx.TensorProto.FLOAT, [1], [1.0])
    tensor.data_location = onnx.TensorProto.EXTERNAL
    node = onnx.helper.make_node("Constant", [], ["y"], value=tensor)
    graph = onnx.helper.make_graph(
        [node], "g", [], [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    assert reader.onnx_uses_external_data(onnx.helper.make_model(graph).SerializeToString())


def _deep(n):
    return "[" * n + "]" * n


def _mixture(**changes):
    """A change that gives the export a 2-component mixture prior, with `changes` to its table."""
    table = {"type": "mixture", "weights": [0.5, 0.5], "means": [[0.0] * 3, [1.0] * 3],
             "log_vars": [[0.0] * 3, [-1.0] * 3], **changes}
    return lambda m: m.update(prior=table)


def _codes(grid_shape=(2, 2), codebook_size=8):
    """A change that declares the export a code-grid model with this grid and codebook."""
    def change(m):
        m.pop("family")
        m.update(latent_dim=None, prior={"type": recipes.AUTOREGRESSIVE_CODES, "graph": None,
                                         "grid_shape": list(grid_shape),
                                         "codebook_size": codebook_size})
    return change


def _decoder_of_codes(m):
    """A VQ-VAE's decoder (it takes code grids) in a manifest relabelled as a normal-prior VAE."""
    decoder_entry(m)["inputs"] = [{"name": "indices", "shape": [None, 2, 2], "dtype": "int32"}]


LAYOUTS = {
    "manifest a list": (lambda m: None, "[]", "not a keras-vae manifest"),
    "files not a list": (lambda m: m.update(files="decoder.onnx"), None, "'files' must be"),
    "entry not an object": (lambda m: m.update(files=[3]), None, "files[0] must be"),
    "size as text": (lambda m: decoder_entry(m).update(size_bytes="12"), None,
                     "files[0].size_bytes"),
    "negative size": (lambda m: decoder_entry(m).update(size_bytes=-1), None,
                      "files[0].size_bytes"),
    "short sha256": (lambda m: decoder_entry(m).update(sha256="abc"), None, "files[0].sha256"),
    "path a number": (lambda m: decoder_entry(m).update(path=7), None, "files[0].path"),
    "no inputs": (lambda m: decoder_entry(m).pop("inputs"), None, "files[0].inputs"),
    "input shape text": (lambda m: decoder_entry(m)["inputs"][0].update(shape="(1, 3)"), None,
                         "files[0].inputs[0]"),
    "no latent_dim": (lambda m: m.pop("latent_dim"), None, "'latent_dim'"),
    "latent_dim text": (lambda m: m.update(latent_dim="3"), None, "'latent_dim'"),
    "latent_dim huge": (lambda m: m.update(latent_dim=10 ** 12), None, "'latent_dim'"),
    "latent_dim bool": (lambda m: m.update(latent_dim=True), None, "'latent_dim'"),
    "no image": (lambda m: m.pop("image"), None, "'image'"),
    "image shape negative": (lambda m: m["image"].update(shape=[-8, 8, 1]), None,
                             "'image.shape'"),
    "image shape huge": (lambda m: m["image"].update(shape=[100000, 100000, 1]), None,
                         "'image.shape'"),
    "num_classes negative": (lambda m: m.update(num_classes=-1), None, "'num_classes'"),
    "class_names numbers": (lambda m: m.update(class_names=[1, 2]), None, "'class_names'"),
    "prior a string": (lambda m: m.update(prior="normal"), None, "'prior'"),
    "graphs a list": (lambda m: m.update(graphs=[]), None, "'graphs'"),
    "family a string": (lambda m: m.update(family="vae"), None, "'family'"),
    "family unknown kind": (lambda m: m.update(family={"name": "vae", "latent_kind": "z"}),
                            None, "'family'"),
    "family relabelled as codes": (
        lambda m: m.update(family={"name": "vqvae", "latent_kind": "codes"}), None,
        "the family and the prior disagree"),
    "bundle entry broken": (lambda m: m["bundle"][0].update(sha256=None), None,
                            "bundle[0].sha256"),
    "mixture mean NaN": (_mixture(means=[[float("nan"), 0.0, 0.0], [1.0] * 3]), None,
                         "non-finite means"),
    "mixture mean inf": (_mixture(means=[[float("inf"), 0.0, 0.0], [1.0] * 3]), None,
                         "non-finite means"),
    "mixture log_var -inf": (_mixture(log_vars=[[float("-inf"), 0.0, 0.0], [0.0] * 3]), None,
                             "non-finite log_vars"),
    "mixture weight NaN": (_mixture(weights=[float("nan"), 1.0]), None, "non-finite weights"),
    "mixture weights negative": (_mixture(weights=[-1.0, 1.0]), None, "non-negative weights"),
    "mixture means as text": (_mixture(means=[["0", "0", "0"], [1.0] * 3]), None,
                              "holding numbers"),
    "mixture means ragged": (_mixture(means=[[0.0], [1.0] * 3]), None, "holding numbers"),
    "mixture mean huge": (_mixture(means=[[1e30, 0.0, 0.0], [1.0] * 3]), None, "means beyond"),
    "mixture log_var huge": (_mixture(log_vars=[[500.0, 0.0, 0.0], [0.0] * 3]), None,
                             "log_vars beyond"),
    "mixture of no components": (_mixture(weights=[]), None, "1 to 4096 weights"),
    "code grid negative": (_codes((-2, 2)), None, "code grid must be"),
    "code grid zero": (_codes((0, 2)), None, "code grid must be"),
    "code grid huge": (_codes((1000, 1000)), None, "at most 4096 cells"),
    "code grid of three sizes": (_codes((2, 2, 2)), None, "code grid must be"),
    "code grid as text": (_codes(("2", "2")), None, "code grid must be"),
    "codebook 0": (_codes(codebook_size=0), None, "codebook size must be"),
    "codebook -3": (_codes(codebook_size=-3), None, "codebook size must be"),
    "codebook huge": (_codes(codebook_size=1 << 40), None, "codebook size must be"),
    "codebook float": (_codes(codebook_size=8.0), None, "codebook size must be"),
    "codes with a latent_dim": (lambda m: (_codes()(m), m.update(latent_dim=3)), None,
                                "'latent_dim'"),
    "codes entry on continuous latents": (
        lambda m: m.update(codes={"grid_shape": [2, 2], "codebook_size": 8}), None, "'codes'"),
    "decoder of codes relabelled": (_decoder_of_codes, None, "family was relabelled"),
    "decoder of another latent size": (
        lambda m: decoder_entry(m)["inputs"][0].update(shape=[None, 5]), None, "latent size"),
    "value_range inverted": (lambda m: m["image"].update(value_range=[1.0, 0.0]), None,
                             "'image.value_range'"),
    "value_range NaN": (lambda m: m["image"].update(value_range=[0.0, float("nan")]), None,
                        "'image.value_range'"),
    "graph value_range text": (lambda m: m["graphs"]["decoder"].update(value_range="0..1"),
                               None, "'graphs.decoder'"),
    "graph value_range differs": (lambda m: m["graphs"]["decoder"].update(
        value_range=[0.0, 5.0]), None, "'graphs.decoder.value_range'"),
    "anomaly threshold NaN": (lambda m: m.update(anomaly={"threshold": float("nan")}), None,
                              "'anomaly'"),
    "deeply nested": (lambda m: None, '{"a": ' + _deep(100_000) + "}", "not valid JSON"),
    "not utf-8": (lambda m: None, b"\xff\xfe{}", "not valid JSON"),
    "huge integer": (lambda m: None, '{"manifest_version": 2, "latent_dim": ' + "9" * 5000 + "}",
                     "not valid JSON"),
}


@pytest.mark.parametrize("case", sorted(LAYOUTS))
def test_manifest_layout_is_checked(folder, capsys, case):
    change, raw, message = LAYOUTS[case]
    if raw is None:
        rewrite(folder, change)
    elif isinstance(raw, bytes):
        (folder / "manifest.json").write_bytes(raw)
    else:
        (folder / "manifest.json").write_text(raw)
    err = refused(folder, capsys, message)
    assert len(err) < 600


def test_a_huge_declared_code_grid_is_refused_fast(folder, capsys):
    """A 1000x1000 grid would run the prior a million times: refused before any work."""
    rewrite(folder, _codes((1000, 1000), 512))
    start = time.monotonic()
    refused(folder, capsys, "at most 4096 cells")
    assert time.monotonic() - start < 2


def test_good_manifest_passes_the_check_unchanged(folder):
    manifest = manifest_of(folder)
    assert reader.check_manifest(manifest) is manifest
    assert manifest["graphs"]["decoder"]["value_range"] == manifest["image"]["value_range"] \
        == [0.0, 1.0]


def test_savedmodel_folder_is_checked_without_following_links(tmp_path):
    folder = tmp_path / "export"
    (folder / "model_savedmodel" / "variables").mkdir(parents=True)
    (folder / "model_savedmodel" / "saved_model.pb").write_bytes(b"graph")
    (folder / "model_savedmodel" / "variables" / "v.data").write_bytes(b"weights" * 10)
    entry = {"path": "model_savedmodel", "size_bytes": recipes.size_of(
        folder / "model_savedmodel"), "sha256": recipes.sha256_of(folder / "model_savedmodel")}
    assert reader.verify_file(folder, entry) == (folder / "model_savedmodel").resolve()
    (tmp_path / "elsewhere").write_bytes(b"secret")
    (folder / "model_savedmodel" / "variables" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(reader.EdgeError, match="link or special file"):
        reader.verify_file(folder, entry)


def test_samplers_opt_out_of_onnxruntime_telemetry(tmp_path):
    """sample_onnx sets ORT_DISABLE_TELEMETRY=1 before onnxruntime is imported."""
    script = (f"import os, sys; sys.path.insert(0, {str(EXPORT_SRC)!r}); import sample_onnx; "
              "assert 'onnxruntime' not in sys.modules; "
              "print(os.environ.get('ORT_DISABLE_TELEMETRY'))")
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       env=env, timeout=60, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_prior_draws_unchanged(folder):
    """The checks change nothing about what a good folder gives."""
    manifest = reader.read_manifest(folder)
    np.testing.assert_array_equal(
        recipes.sample_prior(manifest["prior"], 4, 3, 0),
        np.random.default_rng(0).standard_normal((4, 3), dtype=np.float32))


@pytest.mark.parametrize("prior, message", [
    ({"type": "mixture", "weights": [1.0]}, "mixture prior"),
    ({"type": "vamp"}, "Unknown prior 'vamp'"),
])
def test_a_prior_table_the_recipes_refuse_is_a_one_line_error(folder, capsys, prior, message):
    """`recipes.sample_prior` raises a plain ValueError; the sampler reports it like the rest."""
    rewrite(folder, lambda m: m.update(prior=prior))
    refused(folder, capsys, message)


@pytest.mark.parametrize("written", ["litert", "tflite"])
@pytest.mark.parametrize("asked", ["litert", "tflite"])
def test_find_file_takes_tflite_and_litert_for_each_other(written, asked):
    manifest = {"files": [
        {"path": "decoder.onnx", "graph": "decoder", "format": "onnx", "precision": "fp32"},
        {"path": "decoder.tflite", "graph": "decoder", "format": written, "precision": "fp32"},
    ]}
    assert reader.find_file(manifest, "decoder", asked, "fp32")["path"] == "decoder.tflite"
    assert reader.find_file(manifest, "decoder", "onnx", "fp32")["path"] == "decoder.onnx"
    with pytest.raises(reader.EdgeError, match=f"no decoder in {asked} at precision int8_full; "
                                               f"it has: .*decoder/{written}/fp32"):
        reader.find_file(manifest, "decoder", asked, "int8_full")
